"""Transfer attack: craft on a surrogate PyTorch model, replay on the target (Papernot et al.
2016, "Transferability in Machine Learning"; Tramer et al. 2018 for its use against masking).

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.transfer import TransferAttack
>>> target, surrogate = linear_classifier(), linear_classifier()
>>> attack = TransferAttack(target, eps=0.1, surrogate=surrogate, base="fgsm")
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

The target is only queried once per example to score the replayed example, so it may be
an ONNX Runtime session (:class:`~modelguard.robustness.onnx_model.OnnxClassifier`). The
surrogate runs any gradient attack from the registry (default PGD with the margin loss,
which transfers better than cross-entropy); ``base_params`` are passed to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier


class TransferAttack(Attack):
    name: ClassVar[str] = "transfer"
    norm = "linf"
    score_based: ClassVar[bool] = True
    threat_norms: ClassVar[tuple[str, ...]] = ("linf", "l2")  # its base attack's, checked below

    @classmethod
    def threat_params(cls, params: dict[str, Any], norm: str) -> dict[str, Any]:
        """The base attack runs in the threat model's norm (or is refused, as on its own)."""
        from modelguard.robustness.attacks import ATTACKS

        base = str(params.get("base", "pgd-margin"))
        if base not in ATTACKS:
            raise BadInputError(f"transfer: unknown base attack {base!r}")
        base_params = ATTACKS[base].threat_params(dict(params.get("base_params") or {}), norm)
        return {**params, "base_params": base_params}

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.3,
        targeted: bool = False,
        seed: int = 0,
        surrogate: nn.Module | None = None,
        base: str = "pgd-margin",
        base_params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        from modelguard.robustness.attacks import ATTACKS, build_attack

        if not isinstance(surrogate, nn.Module):
            raise BadInputError("transfer: needs a surrogate PyTorch model (surrogate=...)")
        if base not in ATTACKS or ATTACKS[base].score_based or ATTACKS[base].minimum_norm:
            raise BadInputError(f"transfer: base {base!r} must be an eps-bounded gradient attack")
        self.surrogate = surrogate
        self.base = base
        self.base_params = dict(base_params or {})
        self.crafter = build_attack(
            base, surrogate, eps=eps, targeted=targeted, seed=seed, **self.base_params
        )
        self.norm = self.crafter.norm

    def hyperparameters(self) -> dict[str, Any]:
        crafter = self.crafter.config()
        return {"base": self.base, "base_config": crafter}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self.crafter(x, y)
        with torch.no_grad():
            self.logits(x_adv)  # the one query that scores the replay on the target
        return x_adv
