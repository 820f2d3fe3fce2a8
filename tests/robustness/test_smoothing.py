"""Randomized smoothing: abstains where it should, radius matches the closed form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from modelguard.errors import BadInputError
from modelguard.keys import generate_key
from modelguard.robustness.certificate import certify, check_rerun, load_certificate
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.evaluate import evaluate_model_dir
from modelguard.robustness.smoothing import ABSTAIN, SmoothedClassifier, SmoothingConfig

SIGMA = 0.25


def binary_linear() -> tuple[nn.Module, torch.Tensor, float]:
    """f(x) = [0, w.x + b]: class 1 iff w.x + b > 0; returns the model, w and b."""
    torch.manual_seed(0)
    w = torch.randn(64)
    b = 0.1
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(64), w]))
        model[1].bias.copy_(torch.tensor([0.0, b]))
    return model, w, b


def test_certified_radius_matches_the_closed_form_on_a_linear_model() -> None:
    # For a linear f, P(f(x + e) = 1) = Phi((w.x + b) / (sigma ||w||)) exactly, so the true
    # radius sigma * PhiInv(p_A) is the distance |w.x + b| / ||w|| to the decision boundary.
    model, w, b = binary_linear()
    smoothed = SmoothedClassifier(model, num_classes=2, sigma=SIGMA, batch_size=5000, seed=0)
    n, alpha = 20000, 0.001
    for distance in (0.1, 0.2, 0.3):  # p_A = Phi(distance / sigma): 0.66, 0.79, 0.88
        x = (-b * w / w.norm() ** 2 + distance * w / w.norm()).view(1, 8, 8)
        closed = float((w @ x.flatten() + b) / w.norm())
        label, radius = smoothed.certify(x, n0=100, n=n, alpha=alpha)
        assert label == 1
        # CERTIFY's p_A is a 1 - alpha lower bound: the radius sits just below the truth,
        # by at most the interval's half-width mapped through PhiInv.
        p = norm.cdf(closed / SIGMA)
        slack = SIGMA * 4.5 * np.sqrt(p * (1 - p) / n) / norm.pdf(norm.ppf(p))
        assert closed - slack <= radius <= closed + 1e-3


def test_abstains_on_the_decision_boundary_and_predicts_away_from_it() -> None:
    model, w, b = binary_linear()
    smoothed = SmoothedClassifier(model, num_classes=2, sigma=SIGMA, seed=1)
    on_boundary = (-b * w / w.norm() ** 2).view(1, 8, 8)  # w.x + b = 0: p_A = 1/2
    assert smoothed.certify(on_boundary, n0=100, n=2000, alpha=0.001) == (ABSTAIN, 0.0)
    assert smoothed.predict(on_boundary, n=2000, alpha=0.001) == ABSTAIN
    far = on_boundary + (1.0 * w / w.norm()).view(1, 8, 8)  # 4 sigma away: p_A ~ 1
    assert smoothed.predict(far, n=200, alpha=0.001) == 1
    label, radius = smoothed.certify(far, n0=100, n=2000, alpha=0.001)
    # every sample agrees: p_A's lower bound is alpha^(1/n), the radius is capped by n
    assert label == 1 and radius == pytest.approx(SIGMA * norm.ppf(0.001 ** (1 / 2000)))


def test_config_is_validated_and_round_trips() -> None:
    with pytest.raises(BadInputError):
        SmoothingConfig(sigma=0).validated()
    with pytest.raises(BadInputError):
        SmoothingConfig(alpha=1.5).validated()
    config = SmoothingConfig(sigma=0.5, n=200, radii=[0.5, 0.0])
    assert SmoothingConfig.from_dict(config.to_dict()) == config.validated()


def test_certified_section_stands_apart_in_the_certificate(
    digits_model_dir: Path, tmp_path: Path
) -> None:
    config = EvalConfig(
        attacks=["fgsm"],
        eps=[0.1],
        limit=12,
        soundness=False,
        smoothing=SmoothingConfig(sigma=0.25, n0=20, n=200, radii=[0.0, 0.25, 0.5]),
    )
    result = evaluate_model_dir(digits_model_dir, config)
    assert result.certified is not None
    certified = result.certified["randomized_smoothing"]
    assert certified is not None and "smoothed classifier" in certified["describes"]
    accuracies = [r["certified_accuracy"] for r in certified["certified_accuracy"]]
    assert accuracies == sorted(accuracies, reverse=True)  # larger radius, fewer certified
    assert accuracies[0] <= result.clean_accuracy + 0.2
    assert "certified" not in result.results_dict()  # never mixed with empirical numbers
    key = generate_key()
    issued = certify(result, key, tmp_path, record=False)
    cert = load_certificate(issued.path, [key.public_key()])
    assert cert.predicate["certified"]["randomized_smoothing"]["config"]["sigma"] == 0.25
    assert "certified" not in cert.predicate["summary"]
    assert check_rerun(cert, evaluate_model_dir(digits_model_dir, cert.config)) == []
    report = json.loads(json.dumps(result.to_dict()))
    assert report["certified"]["randomized_smoothing"]["norm"] == "l2"
