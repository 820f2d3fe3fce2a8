"""Targeted Fast Adaptive Boundary attack, FAB-T (Croce & Hein, ICML 2020, "Minimally
distorted adversarial examples with a fast adaptive boundary attack"), Linf and L2.

>>> import torch
>>> from modelguard.zoo import digits_mlp
>>> from modelguard.robustness.attacks.fab import FABT
>>> attack = FABT(digits_mlp(), eps=float("inf"), steps=5, n_targets=2)
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

A minimum-norm attack. For each target ``t`` among the top ``n_targets`` other classes (by
clean logit; all targets run in one batch), it linearizes the decision boundary ``g = z_t - z_y = 0`` at the current
iterate ``x_k`` and computes the minimal-norm steps ``d_k`` (from ``x_k``) and ``d_0`` (from the
original ``x_0``) onto that hyperplane inside the box [0, 1], exactly (the box-constrained
projection below). Then

``x_{k+1} = clip((1 - a)(x_k + eta d_k) + a (x_0 + eta d_0))``,
``a = min(||d_0|| / (||d_k|| + ||d_0||), alpha_max)``;

when ``x_{k+1}`` is misclassified it is kept if it is the closest adversarial point so far, and
the iterate moves back towards the original: ``x_{k+1} = (1 - beta) x_0 + beta x_{k+1}``.
The result is, per example, the closest adversarial point over all targets (the original
input where none was found); the evaluation projects it into each eps ball and re-checks it.

Box-constrained projection: the minimal ``||d||_p`` with ``w . d = r`` and
``-x <= d <= 1 - x`` is ``d = clip(s * u, -x, 1 - x)`` with ``u = w sign(r)`` (L2) or
``sign(w) sign(r)`` (Linf) for the smallest ``s >= 0`` that reaches ``w . d = r`` (found by
doubling then bisection; ``w . d`` is monotone in ``s``); when no ``s`` reaches it, the
saturated step.

Paper defaults (AutoAttack "standard" FAB-T): 100 steps, 9 targets, eta = 1.05,
beta = 0.9, alpha_max = 0.1, 1 restart from the original point.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier, flat_norm

DOUBLINGS = 64
BISECTIONS = 24


def boundary_projection(x: Tensor, w: Tensor, r: Tensor, norm: str) -> Tensor:
    """Minimal-norm ``d`` (Linf or L2) with ``w . d = r`` per example and ``x + d`` in [0, 1]."""
    shape = (-1, *([1] * (x.dim() - 1)))
    direction = r.sign().view(shape) * (w if norm == "l2" else w.sign())
    low, high = -x, 1.0 - x
    target = r.abs()

    def reach(s: Tensor) -> tuple[Tensor, Tensor]:
        d = torch.clamp(s.view(shape) * direction, low, high)
        return d, (r.sign().view(shape) * w * d).flatten(1).sum(dim=1)

    scale = (w * direction).flatten(1).sum(dim=1).clamp_min(1e-30)
    hi = target / scale  # the unconstrained solution: a lower bound on s
    for _ in range(DOUBLINGS):
        _, got = reach(hi)
        short = got < target
        if not bool(short.any()):
            break
        hi = torch.where(short, hi * 2, hi)
    lo = hi / 2
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        _, got = reach(mid)
        enough = got >= target
        hi = torch.where(enough, mid, hi)
        lo = torch.where(enough, lo, mid)
    d, _ = reach(hi)
    return torch.where((r == 0).view(shape), torch.zeros_like(d), d)


class FABT(Attack):
    name: ClassVar[str] = "fab-t"
    minimum_norm: ClassVar[bool] = True
    threat_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    takes_norm: ClassVar[bool] = True
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = float("inf"),
        targeted: bool = False,
        seed: int = 0,
        norm: str = "linf",
        steps: int = 100,
        n_targets: int = 9,
        eta: float = 1.05,
        beta: float = 0.9,
        alpha_max: float = 0.1,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if norm not in ("linf", "l2"):
            raise BadInputError(f"fab-t: unknown norm {norm!r} (expected 'linf' or 'l2')")
        if int(steps) < 1 or int(n_targets) < 1:
            raise BadInputError("fab-t: steps and n_targets must be >= 1")
        if not (eta >= 1 and 0 < beta < 1 and 0 <= alpha_max < 1):
            raise BadInputError("fab-t: need eta >= 1, 0 < beta < 1, 0 <= alpha_max < 1")
        self.norm = norm
        self.steps = int(steps)
        self.n_targets = int(n_targets)
        self.eta, self.beta, self.alpha_max = float(eta), float(beta), float(alpha_max)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "n_targets": self.n_targets,
            "eta": self.eta,
            "beta": self.beta,
            "alpha_max": self.alpha_max,
        }

    def _p(self) -> float:
        return float("inf") if self.norm == "linf" else 2.0

    def _boundary(self, x: Tensor, y: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(g = z_t - z_y, its input gradient, predicted class) at ``x``."""
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(xg)
            g = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(
                1
            )
            (grad,) = torch.autograd.grad(g.sum(), [xg])
        self.queries += int(x.shape[0])
        return g.detach(), grad.detach(), logits.detach().argmax(1)

    def run_target(self, x0: Tensor, y: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """FAB towards ``target``: (closest adversarial point, its norm; inf when none)."""
        shape = (-1, *([1] * (x0.dim() - 1)))
        best_x = x0.clone()
        best_norm = torch.full((x0.shape[0],), float("inf"), device=x0.device)
        x = x0.clone()
        p = self._p()
        for _ in range(self.steps):
            g, w, predicted = self._boundary(x, y, target)
            fooled = predicted != y
            if bool(fooled.any()):  # x itself is adversarial (the start may be)
                dist = flat_norm(x - x0, p)
                closer = fooled & (dist < best_norm)
                best_norm = torch.where(closer, dist, best_norm)
                best_x = torch.where(closer.view(shape), x, best_x)
            r0 = -g - (w * (x0 - x)).flatten(1).sum(dim=1)
            both = boundary_projection(
                torch.cat([x, x0]), torch.cat([w, w]), torch.cat([-g, r0]), self.norm
            )
            d_k, d_0 = both[: x.shape[0]], both[x.shape[0] :]
            n_k, n_0 = flat_norm(d_k, p), flat_norm(d_0, p)
            alpha = torch.clamp(n_0 / (n_k + n_0).clamp_min(1e-12), 0.0, self.alpha_max)
            a = alpha.view(shape)
            x_new = torch.clamp(
                (1 - a) * (x + self.eta * d_k) + a * (x0 + self.eta * d_0), 0.0, 1.0
            )
            with torch.no_grad():
                new_pred = self.logits(x_new).argmax(1)
            adversarial = new_pred != y
            dist = flat_norm(x_new - x0, p)
            closer = adversarial & (dist < best_norm)
            best_norm = torch.where(closer, dist, best_norm)
            best_x = torch.where(closer.view(shape), x_new, best_x)
            x = torch.where(
                adversarial.view(shape), (1 - self.beta) * x0 + self.beta * x_new, x_new
            )
        return best_x, best_norm

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            clean = self.logits(x)
        classes = clean.shape[1]
        ranked = clean.argsort(dim=1, descending=True)
        best_x = x.clone()
        best_norm = torch.full((x.shape[0],), float("inf"), device=x.device)
        already = ranked[:, 0] != y  # misclassified clean: the input itself, norm 0
        best_norm[already] = 0.0
        todo = (~already).nonzero().squeeze(1)
        ranks = min(self.n_targets, classes - 1)
        if todo.numel() == 0:
            return best_x
        # Every (example, target) pair in one batch: one pass per step for all targets.
        pick = todo.repeat(ranks)
        targets = ranked[todo, 1 : ranks + 1].T.reshape(-1)
        found_x, found_norm = self.run_target(x[pick], y[pick], targets)
        by_target = found_norm.view(ranks, -1)
        closest = by_target.argmin(dim=0)
        norms = by_target.gather(0, closest[None]).squeeze(0)
        chosen = found_x.view(ranks, todo.numel(), *x.shape[1:])[
            closest, torch.arange(todo.numel())
        ]
        found = torch.isfinite(norms)
        best_norm[todo[found]] = norms[found]
        best_x[todo[found]] = chosen[found]
        return best_x
