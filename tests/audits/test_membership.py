"""Membership inference: an overfit model leaks, a regularized one much less, a stranger none."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from modelguard import zoo
from modelguard.audits.membership import (
    MembershipConfig,
    audit_membership,
    roc_metrics,
    scaled_confidence,
)
from modelguard.audits.training import Recipe, logits
from modelguard.modelcard import batches, seed_everything
from modelguard.robustness.data import Dataset, digits_split

MEMBERS = 100


def _fit(
    data: Dataset,
    epochs: int,
    *,
    hidden: int = 128,
    weight_decay: float = 0.0,
    label_smoothing: float = 0.0,
) -> nn.Module:
    generator = seed_everything(0)
    model = zoo.digits_mlp(hidden=hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=weight_decay)
    for _ in range(epochs):
        model.train()
        for xb, yb in batches(data, 32, generator):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb, label_smoothing=label_smoothing).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def split() -> dict[str, Dataset]:
    train, test = digits_split()
    members = train.subset(MEMBERS)
    return {
        "members": members,
        "nonmembers": test,
        "reference": Dataset(train.x[600:800], train.y[600:800], train.classes, "reference"),
        # the regularized model trains on the members plus 600 other examples
        "broad": Dataset(
            np.concatenate([members.x, train.x[800:1400]]),
            np.concatenate([members.y, train.y[800:1400]]),
            train.classes,
            "broad",
        ),
        "strangers": Dataset(train.x[200:400], train.y[200:400], train.classes, "strangers"),
    }


def _auc(model: nn.Module, split: dict[str, Dataset]) -> dict[str, float]:
    result = audit_membership(
        lambda x: logits(model, x),
        Recipe("digits_mlp", epochs=60),
        split["members"],
        split["nonmembers"],
        MembershipConfig(reference_models=4, seed=0),
        reference=split["reference"],
    )
    assert result.split["members"] == MEMBERS and result.split["nonmembers_audited"] == 360
    return result.summary()


def test_overfit_model_leaks_clearly_more_than_a_regularized_one(split: dict[str, Dataset]) -> None:
    overfit = _auc(_fit(split["members"], 300, hidden=256), split)
    regular = _auc(_fit(split["broad"], 30, weight_decay=0.5, label_smoothing=0.3), split)
    assert overfit["auc"] >= regular["auc"] + 0.1, (overfit, regular)
    assert overfit["reference_auc"] > 0.7, overfit


def test_model_never_trained_on_the_members_gives_auc_near_half(split: dict[str, Dataset]) -> None:
    stranger = _auc(_fit(split["strangers"], 300, hidden=256), split)
    assert abs(stranger["loss_auc"] - 0.5) < 0.1, stranger
    assert abs(stranger["reference_auc"] - 0.5) < 0.1, stranger


def test_reference_population_defaults_to_half_the_nonmembers(split: dict[str, Dataset]) -> None:
    model = _fit(split["members"], 20)
    result = audit_membership(
        lambda x: logits(model, x),
        Recipe("digits_mlp", epochs=5),
        split["members"],
        split["nonmembers"],
        MembershipConfig(reference_models=2, seed=7),
    )
    reference = result.split["nonmember_reference_indices"]
    assert len(reference) == 180 and result.split["nonmembers_audited"] == 180
    assert result.split["reference_population"] == 180
    again = audit_membership(
        lambda x: logits(model, x),
        Recipe("digits_mlp", epochs=5),
        split["members"],
        split["nonmembers"],
        MembershipConfig(reference_models=2, seed=7),
    )
    assert again.attacks == result.attacks  # seeded: the same split and reference models


def test_roc_metrics_on_known_scores() -> None:
    perfect = roc_metrics(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
    assert perfect["auc"] == 1.0 and perfect["tpr_at_0.01_fpr"] == 1.0
    inverted = roc_metrics(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert inverted["auc"] == 0.0 and inverted["tpr_at_0.001_fpr"] == 0.0


def test_scaled_confidence_is_the_logit_of_the_true_class_probability() -> None:
    z = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 2])
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    own = p[np.arange(2), y]
    assert np.allclose(scaled_confidence(z, y), np.log(own) - np.log(1 - own))
