"""Interval bound propagation: exact on linear models, sound on ReLU nets, refuses the unknown."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks import build_attack
from modelguard.robustness.attacks.base import margin
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.evaluate import evaluate_model_dir
from modelguard.robustness.ibp import certified_mask, margin_lower_bounds


def test_bounds_are_exact_for_a_linear_model_away_from_the_box() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = 0.3 + 0.4 * torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
        v = model[1].weight[y] - model[1].weight[1 - y]
        clean = -margin(model(x), y, targeted=False)  # z_y - z_other > 0
    eps = 0.02
    bound = margin_lower_bounds(model, x, y, eps).gather(1, (1 - y)[:, None]).squeeze(1)
    # min of a linear margin over the Linf ball: clean - eps * ||v||_1 (box not binding)
    assert torch.allclose(bound, clean - eps * v.abs().sum(1), atol=1e-4)
    certified = certified_mask(model, x, y, eps=eps)
    assert torch.equal(certified, clean > eps * v.abs().sum(1))


def test_bounds_are_sound_against_a_strong_attack_on_a_relu_net() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10),
    )  # fmt: skip
    x = torch.rand(64, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 0.01
    bounds = margin_lower_bounds(model, x, y, eps)
    x_adv = build_attack("apgd-ce", model, eps=eps, steps=30)(x, y)
    with torch.no_grad():
        logits = model(x_adv)
        reached = logits.gather(1, y[:, None]) - logits  # z_y - z_j at the attack's point
    # no point of the ball can go below the certified lower bound
    finite = torch.isfinite(bounds)
    assert bool((reached[finite] >= bounds[finite] - 1e-5).all())
    assert certified_mask(model, x, y, eps=0.0).all()  # eps 0: the clean margins themselves


def test_unsupported_layers_are_refused() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 2))
    with pytest.raises(BadInputError, match="Tanh"):
        certified_mask(model, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), eps=0.1)


def test_ibp_is_its_own_certified_section(digits_model_dir: Path) -> None:
    config = EvalConfig(attacks=["fgsm"], eps=[0.0, 0.01, 0.1], limit=30, soundness=False, ibp=True)
    result = evaluate_model_dir(digits_model_dir, config)
    assert result.certified is not None
    ibp = result.certified["ibp"]
    accs = [r["certified_accuracy"] for r in ibp["certified_accuracy"]]
    assert accs[0] == pytest.approx(result.clean_accuracy)  # eps 0: correct = certified
    assert accs == sorted(accs, reverse=True)
    # certified never exceeds what the attacks leave
    assert accs[2] <= result.worst_case_accuracy(0.1)
    with pytest.raises(BadInputError, match="linf"):
        EvalConfig(attacks=["fgsm"], eps=[0.5], norm="l2", ibp=True).resolved()
