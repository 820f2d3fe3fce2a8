"""DeepFool, multi-class, L2 (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016).

>>> import math, torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.deepfool import DeepFool
>>> DeepFool(linear_classifier(), eps=math.inf)(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

A minimum-norm attack: at each step it linearises the classifier around the current point
and moves to the nearest linearised decision boundary,
``r = (|f_l| + 1e-4) / ||w_l||^2 * w_l`` with ``l = argmin_{k != k0} |f_k| / ||w_k||``,
``f_k = z_k - z_k0``, ``w_k = grad z_k - grad z_k0``. The accumulated perturbation is scaled
by ``1 + overshoot`` to cross the boundary. Paper defaults: overshoot = 0.02, at most 50
iterations, all classes as candidates. Untargeted only. With a finite ``eps`` the result is
projected into the L2 ball of radius eps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier, flat_norm


class DeepFool(Attack):
    name: ClassVar[str] = "deepfool"
    norm = "l2"
    minimum_norm: ClassVar[bool] = True
    threat_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")  # projected into either ball
    supports_targeted: ClassVar[bool] = False

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = float("inf"),
        targeted: bool = False,
        seed: int = 0,
        steps: int = 50,
        overshoot: float = 0.02,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if int(steps) < 1 or overshoot < 0:
            raise BadInputError("deepfool: steps must be >= 1 and overshoot >= 0")
        self.steps = int(steps)
        self.overshoot = float(overshoot)

    def hyperparameters(self) -> dict[str, Any]:
        return {"steps": self.steps, "overshoot": self.overshoot}

    def _jacobian(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(N, C)`` and their input Jacobian ``(N, C, *x.shape[1:])``."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            rows = [
                torch.autograd.grad(logits[:, k].sum(), [x], retain_graph=True)[0]
                for k in range(logits.shape[1])
            ]
        self.queries += int(x.shape[0])
        return logits.detach(), torch.stack(rows, dim=1)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        r_total = torch.zeros_like(x)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        shape = (-1, *([1] * (x.dim() - 1)))
        for _ in range(self.steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_adv = torch.clamp(x[idx] + (1 + self.overshoot) * r_total[idx], 0.0, 1.0)
            logits, jac = self._jacobian(x_adv)
            label = y[idx]
            fooled = logits.argmax(dim=1) != label
            active[idx[fooled]] = False
            keep = ~fooled
            if not bool(keep.any()):
                break
            idx, logits, jac, label = idx[keep], logits[keep], jac[keep], label[keep]
            rows = torch.arange(idx.numel(), device=x.device)
            f = logits - logits[rows, label][:, None]  # (n, C)
            w = jac - jac[rows, label][:, None]  # (n, C, ...)
            w_norm = w.flatten(2).norm(dim=2)  # (n, C)
            distance = f.abs() / w_norm.clamp_min(1e-12)
            distance[rows, label] = float("inf")
            best = distance.argmin(dim=1)
            w_best = w[rows, best]
            scale = (f[rows, best].abs() + 1e-4) / flat_norm(w_best, 2).pow(2).clamp_min(1e-12)
            r_total[idx] = r_total[idx] + scale.view(shape) * w_best
        return torch.clamp(x + (1 + self.overshoot) * r_total, 0.0, 1.0)
