"""Feature-squeezing detection (Xu et al. 2018, "Feature Squeezing: Detecting Adversarial
Examples in Deep Neural Networks"), evaluated against an attack that knows the detector.

>>> import torch
>>> from modelguard.zoo import digits_cnn
>>> from modelguard.robustness.defenses.detector import SqueezeDetector
>>> detector = SqueezeDetector(digits_cnn(), bits=3, median=3, threshold=0.5)
>>> detector(torch.zeros(2, 1, 8, 8)).shape  # 10 class logits + 1 "reject" logit
torch.Size([2, 11])

The score of an input is the largest L1 distance between the model's softmax on the input
and on each squeezed version of it. Inputs scoring above a threshold are rejected; the
threshold is the (1 - fpr) quantile of the scores of clean calibration data, so about
``fpr`` of clean inputs are rejected. The deployed model (and its ONNX graph) has one extra
output, "reject", whose logit exceeds every class logit exactly when the score exceeds the
threshold; a plain accuracy evaluation therefore counts a rejection as an error (pessimistic).

:func:`evaluate_detector` reports the false-positive rate, the ROC AUC of the score (clean vs
adversarial), and robust accuracy where an adversarial input counts as defended only if it is
rejected or classified correctly, under an adaptive PGD that maximises the classification
margin loss minus ``lambda * max(0, score - threshold)`` with BPDA through the squeezers
(Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected"); lambda = 0 is the
detector-unaware attack. An example counts as defended only if every lambda failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness.data import Dataset
from modelguard.robustness.defenses.preprocessing import squeezers

REJECT_CLASS = "reject"
REJECT_SCALE = 100.0  # reject logit = max class logit + REJECT_SCALE * (score - threshold)
ADAPTIVE_LAMBDAS = (0.0, 1.0, 10.0, 100.0)


class SqueezeDetector(nn.Module):
    def __init__(
        self,
        base: nn.Module,
        *,
        threshold: float,
        bits: int | None = None,
        median: int | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.squeezers = nn.ModuleList(squeezers(bits, median))
        self.threshold = float(threshold)

    def score_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.base(x)
        probs = F.softmax(logits, dim=1)
        distances = [
            (probs - F.softmax(self.base(squeeze(x)), dim=1)).abs().sum(dim=1)
            for squeeze in self.squeezers
        ]
        return torch.stack(distances, dim=1).max(dim=1).values, logits

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_and_logits(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score, logits = self.score_and_logits(x)
        reject = logits.max(dim=1, keepdim=True).values + REJECT_SCALE * (
            score.unsqueeze(1) - self.threshold
        )
        return torch.cat([logits, reject], dim=1)


def scores(detector: SqueezeDetector, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    detector.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(detector.score(torch.from_numpy(x[start : start + batch_size])).numpy())
    return np.concatenate(out)


def calibrate_threshold(clean_scores: np.ndarray, fpr: float) -> float:
    """The threshold that rejects a fraction ``fpr`` of these clean scores."""
    if not 0.0 < fpr < 1.0:
        raise BadInputError(f"--fpr must lie in (0, 1), got {fpr}")
    return float(np.quantile(clean_scores, 1.0 - fpr, method="higher"))


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Largest wrong logit minus the true logit (> 0 means misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    return wrong - true


def adaptive_attack(
    detector: SqueezeDetector,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    alpha: float,
    lam: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Linf PGD from a random start; returns per example whether it was ever fooled
    (misclassified and not rejected) during the run."""
    delta = (torch.rand(x.shape, generator=generator) * 2 - 1) * eps
    delta = ((x + delta).clamp(0, 1) - x).detach()
    fooled = torch.zeros(len(y), dtype=torch.bool)
    for _ in range(steps + 1):
        delta.requires_grad_(True)
        score, logits = detector.score_and_logits(x + delta)
        with torch.no_grad():
            fooled |= (logits.argmax(dim=1) != y) & (score <= detector.threshold)
        objective = _margin(logits, y).clamp(max=10.0) - lam * (score - detector.threshold).clamp(
            min=0
        )
        (grad,) = torch.autograd.grad(objective.sum(), delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        delta = ((x + delta).clamp(0, 1) - x).detach()
    return fooled


def evaluate_detector(
    detector: SqueezeDetector,
    data: Dataset,
    *,
    eps: Sequence[float],
    steps: int = 40,
    seed: int = 0,
    lambdas: Sequence[float] = ADAPTIVE_LAMBDAS,
) -> dict[str, Any]:
    """FPR, ROC AUC and detector-aware robust accuracy per eps (see the module docstring)."""
    from sklearn.metrics import roc_auc_score

    detector.eval()
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    with torch.no_grad():
        clean_scores, logits = detector.score_and_logits(x)
    rejected = clean_scores > detector.threshold
    correct = logits.argmax(dim=1) == y
    report: dict[str, Any] = {
        "threshold": detector.threshold,
        "clean_false_positive_rate": float(rejected.float().mean()),
        "clean_accuracy_accepted_and_correct": float((correct & ~rejected).float().mean()),
        "attack": {"kind": "adaptive-pgd-linf-bpda", "steps": steps, "lambdas": list(lambdas)},
        "per_eps": {},
    }
    for e in eps:
        generator = torch.Generator().manual_seed(seed)
        alpha = 2.5 * e / steps
        fooled_any = torch.zeros(len(y), dtype=torch.bool)
        per_lambda: dict[str, float] = {}
        for lam in lambdas:
            fooled = adaptive_attack(
                detector, x, y, eps=e, steps=steps, alpha=alpha, lam=lam, generator=generator
            )
            per_lambda[str(lam)] = float((~fooled).float().mean())
            fooled_any |= fooled
        # ROC AUC: clean inputs vs the detector-unaware attack's adversarial inputs.
        adv = _pgd_examples(detector, x, y, eps=e, steps=steps, alpha=alpha, seed=seed)
        with torch.no_grad():
            adv_scores = detector.score(adv)
        labels = np.concatenate([np.zeros(len(y)), np.ones(len(y))])
        auc = float(
            roc_auc_score(labels, np.concatenate([clean_scores.numpy(), adv_scores.numpy()]))
        )
        report["per_eps"][str(e)] = {
            "roc_auc": auc,
            "detection_rate_unaware": float((adv_scores > detector.threshold).float().mean()),
            "robust_accuracy_per_lambda": per_lambda,
            "robust_accuracy_worst_case": float((~fooled_any).float().mean()),
        }
    return report


def _pgd_examples(
    detector: SqueezeDetector,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    steps: int,
    alpha: float,
    seed: int,
) -> torch.Tensor:
    """Detector-unaware margin PGD on the classifier alone (for the ROC curve)."""
    from modelguard.robustness.attacks.pgd import PGD

    attack = PGD(detector.base, eps=eps, alpha=alpha, steps=steps, loss="margin", seed=seed)
    return attack(x, y).detach()
