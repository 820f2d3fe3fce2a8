"""Targeted Auto-PGD, APGD-T (Croce & Hein, ICML 2020), Linf and L2: the targeted DLR loss
against each of the top-k other classes in turn.

>>> import torch
>>> from modelguard.zoo import digits_mlp
>>> from modelguard.robustness.attacks.apgdt import APGDT
>>> attack = APGDT(digits_mlp(), eps=0.1, steps=5, n_targets=2, seed=0)
>>> attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1])).shape
torch.Size([2, 1, 8, 8])

For ``target`` = the 2nd, 3rd, ..., (``n_targets`` + 1)-th highest clean logit of each example,
runs APGD (:mod:`modelguard.robustness.attacks.apgd`: same step-size schedule, checkpoints and
momentum) ascending the targeted DLR loss ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``;
all targets of all examples run as one batch (on small models the per-step overhead, not the
arithmetic, is the cost), and each example keeps its highest-margin result over the targets.
Restarts re-run only the examples no target has fooled. The goal stays untargeted (any
misclassification counts); the target only steers the search, which is what makes it strong
on models whose untargeted loss landscape is flat. Needs >= 4 classes.

Paper defaults (AutoAttack "standard"): 100 steps, 1 restart, 9 target classes (CIFAR-10).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.apgd import APGD
from modelguard.robustness.attacks.base import Classifier


class APGDT(APGD):
    name: ClassVar[str] = "apgd-t"
    supports_targeted: ClassVar[bool] = False

    def __init__(self, model: Classifier, *, n_targets: int = 9, **kwargs: Any) -> None:
        kwargs.setdefault("loss", "dlr")
        if kwargs["loss"] != "dlr":
            raise BadInputError("apgd-t: the targeted attack uses the DLR loss")
        super().__init__(model, **kwargs)
        if int(n_targets) < 1:
            raise BadInputError("apgd-t: n_targets must be >= 1")
        self.n_targets = int(n_targets)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "n_targets": self.n_targets}

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        with torch.no_grad():
            clean = self.logits(x)
        classes = clean.shape[1]
        if classes < 4:
            raise BadInputError(f"apgd-t needs at least 4 classes, the model has {classes}")
        ranked = clean.argsort(dim=1, descending=True)
        # An example whose clean prediction is already wrong may rank y itself among its
        # targets: aim at its top class instead (which is not y).
        ranked[:, 1:] = torch.where(ranked[:, 1:] == y[:, None], ranked[:, :1], ranked[:, 1:])
        ranks = min(self.n_targets, classes - 1)
        best_x = x.clone()
        best_margin = torch.full((x.shape[0],), float("-inf"), device=x.device)
        for _ in range(self.restarts):
            idx = (best_margin <= 0).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            # Every (example, target) pair in one batch: one pass per step for all targets.
            pick = idx.repeat(ranks)
            targets = ranked[idx, 1 : ranks + 1].T.reshape(-1)
            found_x, found_margin = self.run_once(x[pick], y[pick], targets)
            by_target = found_margin.view(ranks, -1)
            top = by_target.argmax(dim=0)
            margins = by_target.gather(0, top[None]).squeeze(0)
            chosen = found_x.view(ranks, idx.numel(), *x.shape[1:])[top, torch.arange(idx.numel())]
            better = margins > best_margin[idx]
            best_margin[idx[better]] = margins[better]
            best_x[idx[better]] = chosen[better]
        return best_x
