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


def _centred_rectangles(rows: int, cols: int, device: torch.device) -> Tensor:
    """The paper's L2 window pattern: nested rectangles weighted 1/k^2, unit L2 norm."""
    delta = torch.zeros(rows, cols, device=device)
    top, left = rows // 2, cols // 2
    for k in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[
            max(top, 0) : min(top + 2 * k + 1, rows), max(left, 0) : min(left + 2 * k + 1, cols)
        ] += 1.0 / (k + 1) ** 2
        top, left = top - 1, left - 1
    return delta / delta.norm().clamp_min(1e-12)


class SquareAttackL2(SquareAttack):
    """Square attack in L2 (the paper's section 3.2).

    Starts from a grid of ``s x s`` tiles (``s = h // 5``) each holding the paper's "meta"
    pattern (two opposite-signed stacks of centred rectangles) with random per-channel signs,
    scaled to ``||delta||_2 = eps``. Each query picks two random windows of side ``s`` on the
    ``p`` schedule (odd, >= 3): the second window's perturbation mass is moved into the first,
    added to a fresh random pattern there, and the whole perturbation is rescaled to norm eps;
    the candidate is kept when the margin loss decreases (or the example becomes misclassified).
    Paper defaults (AutoAttack): 5,000 queries, p_init = 0.8.
    """

    name: ClassVar[str] = "square-l2"
    norm = "l2"

    def __init__(self, model: Classifier, *, eps: float = 2.0, **kwargs: Any) -> None:
        kwargs.setdefault("p_init", 0.8)
        super().__init__(model, eps=eps, **kwargs)

    def _pattern(self, side: int, device: torch.device) -> Tensor:
        """Two opposite-signed halves of centred rectangles, transposed at random; unit norm."""
        upper = side // 2
        delta = torch.cat(
            [
                _centred_rectangles(upper, side, device),
                -_centred_rectangles(side - upper, side, device),
            ]
        )
        if bool(torch.rand(1, generator=self.generator, device=device) > 0.5):
            delta = delta.T
        return delta / delta.norm().clamp_min(1e-12)

    def _unit(self, delta: Tensor) -> Tensor:
        return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)

    def _signs(self, shape: tuple[int, ...], device: torch.device) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=self.generator, device=device)
        return (2 * bits - 1).to(torch.float32)

    @torch.no_grad()
    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if x.dim() != 4 or min(x.shape[2:]) < 5:
            raise BadInputError(f"square-l2: needs images of at least 5x5, got {tuple(x.shape)}")
        n, c, h, w = x.shape
        device = x.device
        self.example_queries = torch.zeros(n, dtype=torch.long, device=device)
        if self.eps == 0:
            return x.clone()
        tile = h // 5
        start = (h - tile * 5) // 2
        init = torch.zeros_like(x)
        for top in range(start, start + tile * (h // tile), tile):
            for left in range(start, start + tile * (w // tile), tile):
                if top + tile > h or left + tile > w:
                    continue
                init[:, :, top : top + tile, left : left + tile] += self._pattern(
                    tile, device
                ).view(1, 1, tile, tile) * self._signs((n, c, 1, 1), device)
        x_best = torch.clamp(x + self._unit(init) * self.eps, 0.0, 1.0)
        logits = self.logits(x_best)
        loss_min = self._loss(logits, y)
        margin_best = margin(logits, y, self.targeted)
        self.example_queries += 1
        for iteration in range(self.n_queries - 1):
            idx = (margin_best <= 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_curr, x_best_curr = x[idx], x_best[idx]
            delta = x_best_curr - x_curr
            p = p_selection(self.p_init, iteration, self.n_queries)
            side = max(round(math.sqrt(p * h * w)), 3)
            side = min(side + (1 - side % 2), h - 1 if (h - 1) % 2 else h - 2)
            top, left, top2, left2 = (
                int(v) for v in torch.randint(0, h - side, (4,), generator=self.generator)
            )
            window_1 = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
            window_2 = (
                slice(None), slice(None), slice(top2, top2 + side), slice(left2, left2 + side)
            )  # fmt: skip
            mask = torch.zeros_like(x_curr)
            mask[window_1] = 1.0
            mask[window_2] = 1.0
            norm_image = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            norm_windows = (delta * mask).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            old = delta[window_1]
            old_norm = old.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
            fresh = self._pattern(side, device).view(1, 1, side, side) * self._signs(
                (idx.numel(), c, 1, 1), device
            )
            fresh = fresh + old / (old_norm + 1e-12)
            budget = (
                torch.clamp(self.eps**2 - norm_image**2, min=0.0) / c + norm_windows**2
            ).sqrt()
            fresh = (
                fresh
                / fresh.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
                * budget
            )
            delta[window_2] = 0.0
            delta[window_1] = fresh
            x_new = torch.clamp(x_curr + self._unit(delta) * self.eps, 0.0, 1.0)
            logits = self.logits(x_new)
            loss = self._loss(logits, y[idx])
            new_margin = margin(logits, y[idx], self.targeted)
            improved = (loss < loss_min[idx]) | (new_margin > 0)
            better = idx[improved]
            loss_min[better] = loss[improved]
            margin_best[better] = new_margin[improved]
            x_best[better] = x_new[improved]
            self.example_queries[idx] += 1
        return x_best
