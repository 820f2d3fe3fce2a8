"""Label-flip poisoning audit: confident learning finds the flips, cleaning recovers accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from modelguard.audits.poisoning import PoisoningConfig, audit_poisoning, flip_labels
from modelguard.audits.training import Recipe
from modelguard.errors import BadInputError
from modelguard.robustness.data import load_dataset


def test_flip_labels_moves_exactly_the_chosen_fraction_to_other_classes() -> None:
    y = np.arange(1000) % 10
    noisy, flipped = flip_labels(y, 0.1, 10, seed=3)
    assert len(flipped) == 100
    assert np.all(noisy[flipped] != y[flipped])
    untouched = np.setdiff1d(np.arange(1000), flipped)
    assert np.array_equal(noisy[untouched], y[untouched])
    again, same = flip_labels(y, 0.1, 10, seed=3)
    assert np.array_equal(again, noisy) and np.array_equal(same, flipped)


def test_ten_percent_flips_on_digits_are_found_and_cleaning_recovers_accuracy() -> None:
    config = PoisoningConfig(
        simulate_flip=0.1, seed=0, retrain=True, test="digits", retrain_epochs=100
    )
    result = audit_poisoning("digits:train", Recipe("digits_mlp", epochs=40), config)
    sim = result.simulation
    assert sim is not None and sim["flipped"] == round(0.1 * 1437)
    assert sim["precision"] >= 0.8, sim
    assert sim["recall"] >= 0.8, sim
    # the flagged indices are what precision/recall were computed on
    _, flipped = flip_labels(load_dataset("digits:train").y, 0.1, 10, 0)
    assert len(np.intersect1d(result.flagged, flipped)) == sim["true_positives"]
    retrain = result.retrain
    assert retrain is not None
    accuracy = {k: v["accuracy"] for k, v in retrain["accuracy"].items()}
    lost = accuracy["clean"] - accuracy["poisoned"]
    assert lost > 0.02, accuracy  # the flips really hurt a model that fits them
    recovered = (accuracy["cleaned"] - accuracy["poisoned"]) / lost
    assert recovered >= 0.5, accuracy


def test_clean_labels_are_rarely_flagged() -> None:
    result = audit_poisoning(
        "digits:train", Recipe("digits_mlp", epochs=40), PoisoningConfig(seed=0, limit=600)
    )
    assert result.simulation is None
    assert result.issue_rate < 0.05, result.summary()


@pytest.mark.parametrize(
    "kwargs",
    [{"folds": 1}, {"simulate_flip": 1.5}, {"retrain": True}, {"filter_by": "magic"}],
)
def test_bad_configs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadInputError):
        PoisoningConfig(**kwargs)  # type: ignore[arg-type]
