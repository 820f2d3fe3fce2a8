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
``early_stop=True`` stops spending steps on an example once it is fooled (its best point is
already adversarial, so robust accuracy is unchanged); the evaluation uses it, adversarial
training should not.

Variants in this file (one registry entry each):
``pgd-l2``: the L2 threat model; ``pgd-margin``: the Carlini-Wagner logit-margin loss
(Carlini & Wagner 2017, "CW-Linf" in the robustness literature), which a saturated or
temperature-scaled softmax can not mask; ``bim``: the basic iterative method (Kurakin,
Goodfellow & Bengio 2017): no random start, alpha = 1/255,
steps = min(eps*255 + 4, 1.25 * eps*255).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    threat_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    takes_norm: ClassVar[bool] = True

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
        early_stop: bool = False,
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
        self.early_stop = bool(early_stop)
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
            "early_stop": self.early_stop,
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

    def _objective(self, y: Tensor) -> Callable[[Tensor], Tensor]:
        return lambda logits: attack_objective(logits, y, loss=self.loss, targeted=self.targeted)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        best_x = x.clone()
        best_margin = torch.full((x.shape[0],), float("-inf"), device=x.device)
        shape = (-1, *([1] * (x.dim() - 1)))

        def keep_best(idx: Tensor | None, candidate: Tensor, logits: Tensor) -> None:
            if idx is None:
                current = margin(logits, y, self.targeted)
                better = current > best_margin
                torch.where(better, current, best_margin, out=best_margin)
                torch.where(better.view(shape), candidate, best_x, out=best_x)
                return
            current = margin(logits, y[idx], self.targeted)
            better = current > best_margin[idx]
            best_margin[idx[better]] = current[better]
            best_x[idx[better]] = candidate[better]

        for _ in range(self.restarts):
            x_adv = x.clone()
            if self.random_start and self.eps > 0:
                x_adv = project(self._random_start(x), x, self.eps, self.norm)
            idx: Tensor | None = None
            for _ in range(self.steps):
                if self.early_stop:
                    idx = (best_margin <= 0).nonzero().squeeze(1)
                    if idx.numel() == 0:
                        break
                xa, ya, x0 = (x_adv, y, x) if idx is None else (x_adv[idx], y[idx], x[idx])
                grad, logits = input_gradient(self.model, xa, self._objective(ya))
                self.queries += int(xa.shape[0])
                keep_best(idx, xa, logits)
                stepped = project(xa + self.alpha * self._step(grad), x0, self.eps, self.norm)
                if idx is None:
                    x_adv = stepped
                else:
                    x_adv[idx] = stepped
            if self.early_stop:
                idx = (best_margin <= 0).nonzero().squeeze(1)
            with torch.no_grad():
                final = x_adv if idx is None else x_adv[idx]
                if final.shape[0]:
                    keep_best(idx, final, self.logits(final))
        return best_x


class PGDL2(PGD):
    name: ClassVar[str] = "pgd-l2"
    threat_norms: ClassVar[tuple[str, ...]] = ("l2",)
    takes_norm: ClassVar[bool] = False

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
    threat_norms: ClassVar[tuple[str, ...]] = ("linf",)  # Kurakin et al.: Linf, 1/255 steps
    takes_norm: ClassVar[bool] = False

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
