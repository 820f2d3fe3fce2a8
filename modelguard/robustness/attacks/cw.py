"""Carlini-Wagner L2 with a binary search over the constant c (Carlini & Wagner, S&P 2017).

>>> import math, torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.cw import CarliniWagnerL2
>>> attack = CarliniWagnerL2(linear_classifier(), eps=math.inf, steps=20, binary_search_steps=2)
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

Minimises ``||x' - x||_2^2 + c * max(Z_y - max_{j != y} Z_j, -kappa)`` (untargeted; targeted
uses ``max_{j != t} Z_j - Z_t``) over ``x' = (tanh(w) + 1) / 2`` with Adam, and searches c
per example: halve the bracket after a success, multiply c by 10 while no upper bound is
known. Every example keeps its smallest successful perturbation over all iterations and
all search steps; an example never fooled comes back unchanged.

Paper defaults: 9 binary-search steps, 10,000 Adam iterations, lr = 0.01, initial c = 1e-3,
kappa = 0, abort early. Defaults here are cheaper (5 search steps x 100 iterations, initial
c = 1e-2) because they already find near-minimal perturbations on small inputs; the
certificate records whatever was used. A minimum-norm attack: with a finite ``eps`` the
result is projected into the L2 ball.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier, margin

NO_UPPER_BOUND = 1e10


class CarliniWagnerL2(Attack):
    name: ClassVar[str] = "cw"
    norm = "l2"
    minimum_norm: ClassVar[bool] = True
    threat_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")  # projected into either ball

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = float("inf"),
        targeted: bool = False,
        seed: int = 0,
        binary_search_steps: int = 5,
        steps: int = 100,
        lr: float = 0.01,
        initial_const: float = 1e-2,
        kappa: float = 0.0,
        abort_early: bool = True,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if int(binary_search_steps) < 1 or int(steps) < 1:
            raise BadInputError("cw: binary_search_steps and steps must be >= 1")
        if lr <= 0 or initial_const <= 0 or kappa < 0:
            raise BadInputError("cw: lr and initial_const must be > 0, kappa >= 0")
        self.binary_search_steps = int(binary_search_steps)
        self.steps = int(steps)
        self.lr = float(lr)
        self.initial_const = float(initial_const)
        self.kappa = float(kappa)
        self.abort_early = bool(abort_early)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "binary_search_steps": self.binary_search_steps,
            "steps": self.steps,
            "lr": self.lr,
            "initial_const": self.initial_const,
            "kappa": self.kappa,
            "abort_early": self.abort_early,
        }

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        n = x.shape[0]
        w0 = torch.atanh((2 * x - 1) * (1 - 1e-6))
        const = torch.full((n,), self.initial_const, device=x.device)
        lower = torch.zeros(n, device=x.device)
        upper = torch.full((n,), NO_UPPER_BOUND, device=x.device)
        best_l2 = torch.full((n,), float("inf"), device=x.device)
        best_x = x.clone()
        check_every = max(1, self.steps // 10)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=x.device)
            previous = float("inf")
            for step in range(self.steps):
                with torch.enable_grad():
                    x_adv = (torch.tanh(w) + 1) / 2
                    logits = self.model(x_adv)
                    l2sq = (x_adv - x).flatten(1).pow(2).sum(dim=1)
                    # margin() > 0 means success; C&W's f is its negation clamped at -kappa
                    f = torch.clamp(-margin(logits, y, self.targeted), min=-self.kappa)
                    loss = (l2sq + const * f).sum()
                    optimizer.zero_grad()
                    loss.backward()
                optimizer.step()
                self.queries += n
                with torch.no_grad():
                    hit = margin(logits, y, self.targeted) > 0
                    l2 = l2sq.sqrt()
                    better = hit & (l2 < best_l2)
                    best_l2[better] = l2[better]
                    best_x[better] = x_adv.detach()[better]
                    found |= hit
                if self.abort_early and step % check_every == check_every - 1:
                    if loss.item() > previous * 0.9999:
                        break
                    previous = loss.item()
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            const = torch.where(upper < NO_UPPER_BOUND / 10, (lower + upper) / 2, const * 10)
        return best_x
