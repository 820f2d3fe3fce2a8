"""Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), Linf and L2, cross-entropy or DLR loss.

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.apgd import APGD
>>> attack = APGD(linear_classifier(), eps=0.1, steps=10, seed=0)
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

PGD with momentum whose step size needs no tuning: it starts at ``2 * eps`` and is halved at
checkpoints ``w_j = ceil(p_j * steps)``, ``p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``, whenever since the last checkpoint

1. the loss grew on fewer than ``rho`` (0.75) of the steps, or
2. the step size was not halved at the last checkpoint and the best loss did not improve;

after a halving the iterate restarts from the best point found so far. The update is
``z = P(x_k + eta * step(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))``
with ``a = 0.75`` (1 on the first step), ``step = sign`` (Linf) or ``g / ||g||_2`` (L2), and
``P`` the projection on the eps ball intersected with [0, 1].

Losses: ``ce`` (cross-entropy) and ``dlr``, the Difference of Logits Ratio
``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` (pi sorts the logits in decreasing order),
invariant to shifting and rescaling the logits, so a saturated softmax or a temperature can
not mask it (needs >= 3 classes). ``eot_iter > 1`` averages the gradient over that many
forward passes (expectation over transformation, for randomized defenses). Each example
returns its highest-margin iterate over all steps and restarts (an adversarial one whenever
any was found); ``restarts`` re-run only the examples still not fooled.

Paper defaults (AutoAttack "standard"): 100 steps, 1 restart for APGD-CE, rho = 0.75.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier, flat_norm, margin, project

APGD_LOSSES = ("ce", "dlr")


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD may halve its step size (the paper's ``w_j``)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # round() first: 0.22 * 100 is 22.000000000000004 in binary floating point
    return sorted({math.ceil(round(v * steps, 9)) for v in p if v <= 1} - {0})


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example untargeted DLR loss (higher = closer to misclassified)."""
    if logits.shape[1] < 3:
        raise BadInputError("the DLR loss needs at least 3 classes")
    ordered, _ = logits.sort(dim=1, descending=True)
    # margin = max_{i != y} z_i - z_y, so this is -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)
    return margin(logits, y, targeted=False) / (ordered[:, 0] - ordered[:, 2] + 1e-12)


def targeted_dlr_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Per-example targeted DLR: ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``."""
    if logits.shape[1] < 4:
        raise BadInputError("the targeted DLR loss needs at least 4 classes")
    ordered, _ = logits.sort(dim=1, descending=True)
    own = logits.gather(1, y[:, None]).squeeze(1)
    aim = logits.gather(1, target[:, None]).squeeze(1)
    return -(own - aim) / (ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12)


class APGD(Attack):
    name: ClassVar[str] = "apgd-ce"
    threat_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    takes_norm: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = True

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.3,
        targeted: bool = False,
        seed: int = 0,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        norm: str = "linf",
        rho: float = 0.75,
        eot_iter: int = 1,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if norm not in ("linf", "l2"):
            raise BadInputError(f"{self.name}: unknown norm {norm!r} (expected 'linf' or 'l2')")
        if loss not in APGD_LOSSES:
            raise BadInputError(f"{self.name}: unknown loss {loss!r} (expected ce or dlr)")
        if int(steps) < 1 or int(restarts) < 1 or int(eot_iter) < 1:
            raise BadInputError(f"{self.name}: steps, restarts and eot_iter must be >= 1")
        if not 0 < rho <= 1:
            raise BadInputError(f"{self.name}: rho must lie in (0, 1]")
        self.norm = norm
        self.loss = loss
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.rho = float(rho)
        self.eot_iter = int(eot_iter)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "restarts": self.restarts,
            "loss": self.loss,
            "rho": self.rho,
            "eot_iter": self.eot_iter,
        }

    # -- pieces shared with APGD-T ---------------------------------------------------------
    def _losses(self, y: Tensor, target: Tensor | None) -> Callable[[Tensor], Tensor]:
        """Per-example loss the attacker ascends."""
        if target is not None:
            return lambda logits: targeted_dlr_loss(logits, y, target)
        if self.loss == "dlr":
            return lambda logits: dlr_loss(logits, y)
        if self.targeted:
            return lambda logits: -nn.functional.cross_entropy(logits, y, reduction="none")
        return lambda logits: nn.functional.cross_entropy(logits, y, reduction="none")

    def _gradient(
        self, x: Tensor, loss_fn: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(mean gradient over ``eot_iter`` passes, per-example loss, logits of the last pass)."""
        grad = torch.zeros_like(x)
        loss_sum = torch.zeros(x.shape[0], device=x.device)
        logits = x.new_empty(0)
        for _ in range(self.eot_iter):
            xg = x.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = self.model(xg)
                loss = loss_fn(logits)
                (g,) = torch.autograd.grad(loss.sum(), [xg])
            grad += g.detach()
            loss_sum += loss.detach()
            self.queries += int(x.shape[0])
        return grad / self.eot_iter, loss_sum / self.eot_iter, logits.detach()

    def _start(self, x: Tensor) -> Tensor:
        shape = (-1, *([1] * (x.dim() - 1)))
        if self.norm == "linf":
            t = 2 * torch.rand(x.shape, generator=self.generator, device=x.device) - 1
            t = t / t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(shape)
        else:
            t = torch.randn(x.shape, generator=self.generator, device=x.device)
            t = t / flat_norm(t, 2).clamp_min(1e-12).view(shape)
        return torch.clamp(x + self.eps * t, 0.0, 1.0)

    def _step(self, grad: Tensor) -> Tensor:
        if self.norm == "linf":
            return grad.sign()
        return grad / flat_norm(grad, 2).clamp_min(1e-12).view(-1, *([1] * (grad.dim() - 1)))

    def run_once(self, x: Tensor, y: Tensor, target: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One APGD run from a random start: (best-margin iterate, its margin) per example.

        The margin is the untargeted one against ``y`` (targeted runs aim at ``target`` but
        succeed by misclassifying), or the targeted one when the attack itself is targeted.
        """
        loss_fn = self._losses(y, target)
        shape = (-1, *([1] * (x.dim() - 1)))
        n = x.shape[0]

        def attack_margin(logits: Tensor) -> Tensor:
            return margin(logits, y, self.targeted)

        x_adv = self._start(x) if self.eps > 0 else x.clone()
        grad, loss, logits = self._gradient(x_adv, loss_fn)
        best_margin = attack_margin(logits)
        best_x = x_adv.clone()
        loss_best = loss.clone()
        x_max, grad_max = x_adv.clone(), grad.clone()
        eta = torch.full((n,), 2.0 * self.eps, device=x.device)
        marks = set(checkpoints(self.steps))
        last_mark = 0
        increases = torch.zeros(n, device=x.device)
        loss_at_mark = loss_best.clone()
        halved_at_mark = torch.ones(n, dtype=torch.bool, device=x.device)
        x_prev = x_adv.clone()
        prev_loss = loss.clone()
        for k in range(self.steps):
            with torch.no_grad():
                z = project(x_adv + eta.view(shape) * self._step(grad), x, self.eps, self.norm)
                a = 0.75 if k > 0 else 1.0
                candidate = x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev)
                x_prev = x_adv
                x_adv = project(candidate, x, self.eps, self.norm)
            grad, loss, logits = self._gradient(x_adv, loss_fn)
            with torch.no_grad():
                current = attack_margin(logits)
                better = current > best_margin
                best_margin = torch.where(better, current, best_margin)
                best_x = torch.where(better.view(shape), x_adv, best_x)
                increases += (loss > prev_loss).float()
                prev_loss = loss
                improved = loss > loss_best
                loss_best = torch.where(improved, loss, loss_best)
                x_max = torch.where(improved.view(shape), x_adv, x_max)
                grad_max = torch.where(improved.view(shape), grad, grad_max)
                step = k + 1
                if step in marks:
                    too_few = increases < self.rho * (step - last_mark)
                    stalled = ~halved_at_mark & (loss_best <= loss_at_mark)
                    halve = too_few | stalled
                    eta = torch.where(halve, eta / 2, eta)
                    x_adv = torch.where(halve.view(shape), x_max, x_adv)
                    grad = torch.where(halve.view(shape), grad_max, grad)
                    halved_at_mark = halve
                    loss_at_mark = loss_best.clone()
                    increases.zero_()
                    last_mark = step
        return best_x, best_margin

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        best_x = x.clone()
        best_margin = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.restarts):
            idx = (best_margin <= 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            found_x, found_margin = self.run_once(x[idx], y[idx])
            better = found_margin > best_margin[idx]
            best_margin[idx[better]] = found_margin[better]
            best_x[idx[better]] = found_x[better]
        return best_x


class APGDDLR(APGD):
    name: ClassVar[str] = "apgd-dlr"
    supports_targeted: ClassVar[bool] = False

    def __init__(self, model: Classifier, **kwargs: Any) -> None:
        kwargs.setdefault("loss", "dlr")
        super().__init__(model, **kwargs)
