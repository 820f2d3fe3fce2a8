"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter, ICML 2019).

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.smoothing import SmoothedClassifier
>>> smoothed = SmoothedClassifier(linear_classifier(), num_classes=10, sigma=0.25)
>>> label, radius = smoothed.certify(torch.rand(1, 8, 8), n0=100, n=1000, alpha=0.001)

What is certified is the **smoothed** classifier ``g(x) = argmax_c P(f(x + e) = c)``,
``e ~ N(0, sigma^2 I)``, not the base model ``f``: a deployment that wants the guarantee must
answer with ``g`` (sample noise and take the majority, :meth:`SmoothedClassifier.predict`), and
the certificate's ``certified`` section says so. CERTIFY (the paper's algorithm 1):

1. draw ``n0`` noisy copies, take the most frequent class ``c_A`` (selection);
2. draw ``n`` fresh copies, count ``c_A``; ``p_A`` = the one-sided ``1 - alpha`` Clopper-Pearson
   lower bound of that count;
3. if ``p_A < 1/2`` abstain; else ``g`` predicts ``c_A`` and is constant within the L2 ball of
   radius ``R = sigma * PhiInv(p_A)`` around ``x`` (with probability >= ``1 - alpha`` over the
   sampling).

PREDICT (algorithm 2) returns the top class when a two-sided binomial test of the top two
counts rejects at ``alpha``, else abstains. Certified accuracy at radius ``r`` is the fraction
of examples that CERTIFY classifies correctly with ``R >= r`` (an abstention counts as wrong).
These are **certified** numbers, never mixed with the empirical (attack-based) ones: they
live in their own ``certified`` section of the report and the certificate.

Noise is added in input space ([0, 1] inputs, no clipping, as in the paper), seeded.
Paper settings (ImageNet/CIFAR-10): n0 = 100, n = 100,000, alpha = 0.001, sigma in
{0.12, 0.25, 0.5, 1.0}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import eval_mode, model_device
from modelguard.robustness.config import SmoothingConfig
from modelguard.robustness.stats import Proportion, one_sided_lower

ABSTAIN = -1


class SmoothedClassifier:
    """``g`` around a base classifier ``f`` (any callable mapping a batch to logits)."""

    def __init__(
        self,
        model: Callable[[Tensor], Tensor],
        *,
        num_classes: int,
        sigma: float,
        batch_size: int = 1000,
        seed: int = 0,
    ) -> None:
        if not sigma > 0:
            raise BadInputError(f"smoothing sigma must be > 0, got {sigma}")
        self.model = model
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.batch_size = int(batch_size)
        self.device = model_device(model)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def counts(self, x: Tensor, num: int) -> np.ndarray:
        """How often each class wins on ``num`` noisy copies of one example ``x`` (no batch axis)."""
        totals = np.zeros(self.num_classes, dtype=np.int64)
        remaining = int(num)
        x = x.to(self.device, torch.float32)
        with torch.no_grad(), eval_mode(self.model):
            while remaining > 0:
                size = min(self.batch_size, remaining)
                batch = x.unsqueeze(0).expand(size, *x.shape)
                noise = torch.randn(batch.shape, generator=self.generator, device=self.device)
                predicted = self.model(batch + self.sigma * noise).argmax(1).cpu().numpy()
                totals += np.bincount(predicted, minlength=self.num_classes)[: self.num_classes]
                remaining -= size
        return totals

    def certify(self, x: Tensor, *, n0: int, n: int, alpha: float) -> tuple[int, float]:
        """CERTIFY: ``(class, L2 radius)``, or ``(ABSTAIN, 0.0)``."""
        from scipy.stats import norm

        top = int(self.counts(x, n0).argmax())
        count = int(self.counts(x, n)[top])
        p_lower = one_sided_lower(count, n, alpha)
        if p_lower < 0.5:
            return ABSTAIN, 0.0
        return top, float(self.sigma * norm.ppf(p_lower))

    def predict(self, x: Tensor, *, n: int, alpha: float) -> int:
        """PREDICT: the smoothed classifier's answer, or ABSTAIN when the vote is too close."""
        from scipy.stats import binomtest

        counts = self.counts(x, n)
        first, second = np.argsort(counts)[::-1][:2]
        top, runner = int(counts[first]), int(counts[second])
        if binomtest(top, top + runner, 0.5).pvalue > alpha:
            return ABSTAIN
        return int(first)


def certify_dataset(
    model: Callable[[Tensor], Tensor],
    x: np.ndarray,
    y: np.ndarray,
    config: SmoothingConfig,
    *,
    num_classes: int,
    seed: int,
    model_name: str,
) -> dict[str, Any]:
    """CERTIFY every example; certified accuracy (with n and 95% CI) at each radius."""
    config = config.validated()
    if config.limit is not None:
        x, y = x[: config.limit], y[: config.limit]
    smoothed = SmoothedClassifier(
        model,
        num_classes=num_classes,
        sigma=config.sigma,
        batch_size=config.batch_size,
        seed=seed,
    )
    labels, radii = [], []
    for example in x:
        label, radius = smoothed.certify(
            torch.from_numpy(example), n0=config.n0, n=config.n, alpha=config.alpha
        )
        labels.append(label)
        radii.append(radius)
    predicted, radius_array = np.array(labels), np.array(radii)
    correct = predicted == y
    rows = []
    for r in config.radii:
        hits = int((correct & (radius_array >= r)).sum())
        rows.append(
            {
                "radius": r,
                "certified_accuracy": hits / len(y) if len(y) else 0.0,
                "certified": Proportion.of(correct=hits, n=len(y)).to_dict(),
            }
        )
    return {
        "describes": "the smoothed classifier g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c) "
        f"built on the {model_name} model, not the base model itself",
        "norm": "l2",
        "config": config.to_dict(),
        "n": int(len(y)),
        "abstained": int((predicted == ABSTAIN).sum()),
        "median_radius_of_correct": float(np.median(radius_array[correct]))
        if correct.any()
        else None,
        "certified_accuracy": rows,
    }
