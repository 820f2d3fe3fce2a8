"""FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015).

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.fgsm import FGSM
>>> FGSM(linear_classifier(), eps=0.1)(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

One step ``x' = clip_[0,1](x + eps * sign(grad_x J(x, y)))`` (untargeted) or
``x - eps * sign(grad_x J(x, t))`` (targeted). The paper used eps = 0.25 on MNIST in [0, 1];
it has no other hyperparameter. ``loss`` is an extension: ``"margin"`` uses the C&W logit margin.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import (
    LOSSES,
    Attack,
    Classifier,
    attack_objective,
    input_gradient,
)


class FGSM(Attack):
    name: ClassVar[str] = "fgsm"
    norm = "linf"

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.25,
        targeted: bool = False,
        seed: int = 0,
        loss: str = "ce",
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if loss not in LOSSES:
            raise BadInputError(f"fgsm: unknown loss {loss!r} (expected one of {LOSSES})")
        self.loss = loss

    def hyperparameters(self) -> dict[str, Any]:
        return {"loss": self.loss}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        self.queries += int(x.shape[0])
        grad, _ = input_gradient(
            self.model,
            x,
            lambda z: attack_objective(z, y, loss=self.loss, targeted=self.targeted),
        )
        return x + self.eps * grad.sign()
