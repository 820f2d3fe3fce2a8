"""MI-FGSM, the momentum iterative FGSM (Dong et al., CVPR 2018).

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.mifgsm import MIFGSM
>>> MIFGSM(linear_classifier(), eps=0.1)(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

``g <- mu * g + grad / ||grad||_1``; ``x <- Proj(x + alpha * sign(g))``, no random start.
Paper defaults: mu = 1.0, 10 iterations, alpha = eps / steps (eps = 16/255 on ImageNet).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import (
    Attack,
    Classifier,
    attack_objective,
    flat_norm,
    input_gradient,
    linf_project,
)


class MIFGSM(Attack):
    name: ClassVar[str] = "mifgsm"
    norm = "linf"

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 16 / 255,
        targeted: bool = False,
        seed: int = 0,
        steps: int = 10,
        decay: float = 1.0,
        alpha: float | None = None,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if int(steps) < 1:
            raise BadInputError("mifgsm: steps must be >= 1")
        self.steps = int(steps)
        self.decay = float(decay)
        self.alpha = float(alpha) if alpha is not None else self.eps / self.steps

    def hyperparameters(self) -> dict[str, Any]:
        return {"steps": self.steps, "decay": self.decay, "alpha": self.alpha}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        momentum = torch.zeros_like(x)
        x_adv = x.clone()
        shape = (-1, *([1] * (x.dim() - 1)))
        for _ in range(self.steps):
            grad, _ = input_gradient(
                self.model,
                x_adv,
                lambda z: attack_objective(z, y, loss="ce", targeted=self.targeted),
            )
            self.queries += int(x.shape[0])
            momentum = self.decay * momentum + grad / flat_norm(grad, 1).clamp_min(1e-12).view(
                shape
            )
            x_adv = linf_project(x_adv + self.alpha * momentum.sign(), x, self.eps)
        return x_adv
