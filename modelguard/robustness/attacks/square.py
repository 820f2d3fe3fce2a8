"""Square attack, Linf, score-based (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020).

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.square import SquareAttack
>>> attack = SquareAttack(linear_classifier(), eps=0.1, n_queries=50)
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

Needs only output scores, so ``model`` may be any callable returning logits, in particular
an ONNX Runtime session wrapped by :class:`modelguard.robustness.onnx_model.OnnxClassifier`;
it never asks for a gradient. Starts from vertical stripes of +-eps, then each query
proposes one random square window whose values are set to +-eps (per channel) and keeps
it when the loss (margin loss untargeted, cross-entropy targeted) decreases. The window
side shrinks on the paper's schedule of ``p`` (fraction of pixels changed) as queries are
spent; an example stops being queried once it is fooled.

Paper defaults: 10,000 queries, p_init = 0.05 (ImageNet/CIFAR-10). On 8x8 inputs a 5%
window is less than one pixel, so the default here is p_init = 0.3 with 1,000 queries.
``queries`` counts forward passes per example (summed); ``example_queries`` holds the
count of the last call per example.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier, margin

MAX_RESAMPLES = 100
SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
            (6000, 128), (8000, 256), (10000, 512))  # fmt: skip


def p_selection(p_init: float, iteration: int, n_queries: int) -> float:
    """The paper's piecewise-constant schedule, rescaled to a budget of ``n_queries``."""
    it = int(iteration / n_queries * 10000)
    if it <= 10:
        return p_init
    for bound, divisor in SCHEDULE:
        if it <= bound:
            return p_init / divisor
    return p_init / 512


class SquareAttack(Attack):
    name: ClassVar[str] = "square"
    norm = "linf"
    score_based: ClassVar[bool] = True

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.3,
        targeted: bool = False,
        seed: int = 0,
        n_queries: int = 1000,
        p_init: float = 0.3,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if int(n_queries) < 1 or not 0 < p_init <= 1:
            raise BadInputError("square: n_queries must be >= 1 and 0 < p_init <= 1")
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.example_queries = torch.zeros(0, dtype=torch.long)

    def hyperparameters(self) -> dict[str, Any]:
        return {"n_queries": self.n_queries, "p_init": self.p_init}

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if self.targeted:
            return nn.functional.cross_entropy(logits, y, reduction="none")
        return -margin(logits, y, targeted=False)

    def _signs(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=self.generator, device=device)
        return (2 * bits - 1).to(torch.float32) * self.eps

    @torch.no_grad()
    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4:
            raise BadInputError(f"square: needs image inputs (N, C, H, W), got {tuple(x.shape)}")
        n, c, h, w = x.shape
        device = x.device
        self.example_queries = torch.zeros(n, dtype=torch.long, device=device)
        if self.eps == 0:
            return x.clone()
        x_best = torch.clamp(x + self._signs((n, c, 1, w), device), 0.0, 1.0)
        logits = self.logits(x_best)
        loss_min = self._loss(logits, y)
        margin_best = margin(logits, y, self.targeted)
        self.example_queries += 1
        rows = torch.arange(h, device=device).view(1, 1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, 1, w)
        for iteration in range(self.n_queries - 1):
            idx = (margin_best <= 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            k = idx.numel()
            x_curr, x_best_curr = x[idx], x_best[idx]
            deltas = x_best_curr - x_curr
            p = p_selection(self.p_init, iteration, self.n_queries)
            side = min(max(round(math.sqrt(p * c * h * w / c)), 1), h - 1)
            top = torch.randint(0, h - side, (k, 1, 1, 1), generator=self.generator, device=device)
            left = torch.randint(0, w - side, (k, 1, 1, 1), generator=self.generator, device=device)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            values = self._signs((k, c, 1, 1), device)
            for _ in range(MAX_RESAMPLES):
                candidate = torch.where(window, values, deltas)
                moved = (torch.clamp(x_curr + candidate, 0, 1) - x_best_curr).abs() >= 1e-7
                stale = ~(moved & window).flatten(1).any(dim=1)
                if not bool(stale.any()):
                    break
                values = torch.where(
                    stale.view(-1, 1, 1, 1), self._signs((k, c, 1, 1), device), values
                )
            x_new = torch.clamp(x_curr + torch.where(window, values, deltas), 0.0, 1.0)
            logits = self.logits(x_new)
            loss = self._loss(logits, y[idx])
            improved = loss < loss_min[idx]
            better = idx[improved]
            loss_min[better] = loss[improved]
            margin_best[better] = margin(logits, y[idx], self.targeted)[improved]
            x_best[better] = x_new[improved]
            self.example_queries[idx] += 1
        return x_best
