"""Projected gradient descent (Madry et al., ICLR 2018) in Linf and L2, plus its variants.

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.pgd import PGD
>>> attack = PGD(linear_classifier(), eps=0.1, steps=10, restarts=2, seed=0)
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

Iterates ``x <- Proj_{B(x0, eps) cap [0,1]}(x + alpha * step(grad))`` where step is
``sign(g)`` (Linf) or ``g / ||g||_2`` (L2), from a uniformly random start in the ball, with
``restarts`` independent runs. Unlike the paper's plain last iterate, every example keeps
its best point over all iterations and restarts (highest attack margin, as in Croce & Hein
2020's APGD), so more steps or restarts can never make the attack weaker.

Paper defaults (MNIST, [0,1] inputs): eps = 0.3, alpha = 0.01, 40 steps (100 for eval),
random start, cross-entropy loss. Here ``alpha`` defaults to Madry's rule of thumb
``2.5 * eps / steps`` so one budget of steps can reach the far side of the ball.

Variants in this file (one registry entry each):
``pgd-l2``: the L2 threat model; ``pgd-margin``: the Carlini-Wagner logit-margin loss
(Carlini & Wagner 2017, "CW-Linf" in the robustness literature), which a saturated or
temperature-scaled softmax can not mask; ``bim``: the basic iterative method (Kurakin,
Goodfellow & Bengio 2017): no random start, alpha = 1/255,
steps = min(eps*255 + 4, 1.25 * eps*255).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import (
    LOSSES,
    Attack,
    Classifier,
    attack_objective,
    flat_norm,
    input_gradient,
    margin,
    project,
)


class PGD(Attack):
    name: ClassVar[str] = "pgd"

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.3,
        targeted: bool = False,
        seed: int = 0,
        alpha: float | None = None,
        steps: int = 40,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        norm: str = "linf",
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if norm not in ("linf", "l2"):
            raise BadInputError(f"{self.name}: unknown norm {norm!r} (expected 'linf' or 'l2')")
        if loss not in LOSSES:
            raise BadInputError(f"{self.name}: unknown loss {loss!r} (expected one of {LOSSES})")
        if int(steps) < 1 or int(restarts) < 1:
            raise BadInputError(f"{self.name}: steps and restarts must be >= 1")
        self.norm = norm
        self.loss = loss
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.random_start = bool(random_start)
        self.alpha = float(alpha) if alpha is not None else 2.5 * self.eps / self.steps
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise BadInputError(f"{self.name}: alpha must be a finite number >= 0")

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "restarts": self.restarts,
            "loss": self.loss,
        }

    def _random_start(self, x: Tensor) -> Tensor:
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=self.generator, device=x.device)
            return x + (2 * noise - 1) * self.eps
        direction = torch.randn(x.shape, generator=self.generator, device=x.device)
        direction = direction / flat_norm(direction, 2).clamp_min(1e-12).view(
            -1, *([1] * (x.dim() - 1))
        )
        dims = x[0].numel()
        radius = torch.rand(x.shape[0], generator=self.generator, device=x.device) ** (1 / dims)
        return x + direction * (self.eps * radius).view(-1, *([1] * (x.dim() - 1)))

    def _step(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / flat_norm(grad, 2).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        best_x = x.clone()
        best_margin = torch.full((x.shape[0],), float("-inf"), device=x.device)

        def keep_best(candidate: Tensor, logits: Tensor) -> None:
            current = margin(logits, y, self.targeted)
            better = current > best_margin
            best_margin[better] = current[better]
            best_x[better] = candidate[better]

        def objective(logits: Tensor) -> Tensor:
            return attack_objective(logits, y, loss=self.loss, targeted=self.targeted)

        for _ in range(self.restarts):
            x_adv = x.clone()
            if self.random_start and self.eps > 0:
                x_adv = project(self._random_start(x), x, self.eps, self.norm)
            for _ in range(self.steps):
                grad, logits = input_gradient(self.model, x_adv, objective)
                self.queries += int(x.shape[0])
                keep_best(x_adv, logits)
                x_adv = project(x_adv + self.alpha * self._step(grad), x, self.eps, self.norm)
            with torch.no_grad():
                keep_best(x_adv, self.logits(x_adv))
        return best_x


class PGDL2(PGD):
    name: ClassVar[str] = "pgd-l2"

    def __init__(self, model: Classifier, *, eps: float = 2.0, **kwargs: Any) -> None:
        kwargs.setdefault("norm", "l2")
        super().__init__(model, eps=eps, **kwargs)


class PGDMargin(PGD):
    name: ClassVar[str] = "pgd-margin"

    def __init__(self, model: Classifier, **kwargs: Any) -> None:
        kwargs.setdefault("loss", "margin")
        super().__init__(model, **kwargs)


class BIM(PGD):
    name: ClassVar[str] = "bim"

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.3,
        alpha: float | None = None,
        steps: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("random_start", False)
        if steps is None:
            steps = max(1, int(min(eps * 255 + 4, 1.25 * eps * 255)))
        super().__init__(
            model, eps=eps, alpha=1 / 255 if alpha is None else alpha, steps=steps, **kwargs
        )
