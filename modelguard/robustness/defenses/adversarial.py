"""Adversarial training: Goodfellow's FGSM mixture, Madry's PGD-AT and fast FGSM-AT.

>>> from modelguard.zoo import digits_cnn
>>> from modelguard.robustness.data import load_dataset
>>> from modelguard.robustness.defenses.adversarial import AdversarialSettings, pgd_at
>>> from modelguard.robustness.defenses.training import TrainSettings
>>> run = pgd_at(digits_cnn(), load_dataset("digits:train").subset(64),
...              AdversarialSettings(eps=0.1, steps=3), TrainSettings(epochs=1))
>>> len(run.history)
1

- ``fgsm-at``: Goodfellow, Shlens & Szegedy 2015, the mixed objective
  ``a * J(x, y) + (1 - a) * J(x + eps * sign(grad_x J(x, y)), y)`` (paper: a = 0.5).
- ``pgd-at``: Madry et al. 2018: minimise the loss at the PGD adversary of each batch
  (paper, MNIST: eps 0.3, 40 steps of 0.01, random start; here ``steps`` with the step size
  ``2.5 * eps / steps``).
- ``fast-at``: Wong, Rice & Kolter 2020, "Fast is better than free": one FGSM step of
  ``1.25 * eps`` from a uniformly random start. Single-step training can overfit
  catastrophically (robustness to PGD collapses within an epoch while FGSM accuracy soars);
  the guard measures PGD accuracy on a held-out batch before training and after every epoch
  and, when it falls by more than ``guard_drop`` below its best, stops and rolls back to the
  best pre-collapse weights (the paper's early-stopping check). Without a collapse the model
  of the best guard epoch is returned as well.

Adversarial examples come from the evaluation's attacks (:mod:`modelguard.robustness.attacks`);
``warmup`` epochs ramp eps linearly from ``eps / warmup`` to eps (curriculum, which keeps
small models from stalling at chance on the first epochs).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.fgsm import FGSM
from modelguard.robustness.attacks.pgd import PGD
from modelguard.robustness.data import Dataset
from modelguard.robustness.defenses.training import TrainSettings, fit
from modelguard.robustness.progress import ProgressHook


@dataclass(frozen=True)
class AdversarialSettings:
    eps: float = 0.1
    steps: int = 7  # pgd-at inner PGD steps (fast-at and fgsm-at take one step)
    alpha: float | None = None  # step size; None: 2.5*eps/steps (PGD), 1.25*eps (fast-at)
    warmup: int = 0  # epochs of linear eps ramp-up
    mix: float = 0.5  # fgsm-at: weight of the clean loss
    guard_size: int = 128  # fast-at: held-out examples for the overfitting guard (one batch)
    guard_steps: int = 5  # collapse is abrupt (PGD accuracy falls to ~0): PGD-5 sees it
    guard_drop: float = 0.2  # collapse: guard PGD accuracy falls this far below its best
    random_start: bool = True  # fast-at: False is plain FGSM from x (Wong et al.'s ablation)

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1:
            raise BadInputError(f"--eps must be in (0, 1], got {self.eps}")
        if self.steps < 1:
            raise BadInputError(f"--steps must be >= 1, got {self.steps}")
        if self.alpha is not None and not self.alpha > 0:
            raise BadInputError(f"--alpha must be > 0, got {self.alpha}")
        if self.warmup < 0 or not 0 <= self.mix <= 1:
            raise BadInputError("--warmup must be >= 0 and the mix weight in [0, 1]")

    def eps_at(self, epoch: int) -> float:
        if self.warmup <= 0 or epoch >= self.warmup:
            return self.eps
        return self.eps * (epoch + 1) / self.warmup

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingRun:
    model: nn.Module
    history: list[dict[str, Any]]
    guard: dict[str, Any] = field(default_factory=dict)


def _seed(settings: TrainSettings, epoch: int) -> int:
    return settings.seed * 1000 + epoch


def pgd_at(
    model: nn.Module,
    train: Dataset,
    adv: AdversarialSettings,
    settings: TrainSettings,
    progress: ProgressHook | None = None,
) -> TrainingRun:
    attacks: dict[int, PGD] = {}

    def step(m: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch not in attacks:
            eps = adv.eps_at(epoch)
            alpha = adv.alpha if adv.alpha is not None else 2.5 * eps / adv.steps
            attacks[epoch] = PGD(
                m, eps=eps, alpha=alpha, steps=adv.steps, seed=_seed(settings, epoch)
            )
        x_adv = attacks[epoch](x, y)
        return F.cross_entropy(m(x_adv), y)

    return TrainingRun(model, fit(model, train, settings, step, progress=progress))


def fgsm_at(
    model: nn.Module,
    train: Dataset,
    adv: AdversarialSettings,
    settings: TrainSettings,
    progress: ProgressHook | None = None,
) -> TrainingRun:
    def step(m: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        x_adv = FGSM(m, eps=adv.eps_at(epoch))(x, y)
        return adv.mix * F.cross_entropy(m(x), y) + (1 - adv.mix) * F.cross_entropy(m(x_adv), y)

    return TrainingRun(model, fit(model, train, settings, step, progress=progress))


def guard_accuracy(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int
) -> float:
    """PGD (cross-entropy, random start, fixed seed) accuracy on the held-out guard batch."""
    x_adv = PGD(model, eps=eps, steps=steps, seed=0)(x, y)
    with torch.no_grad():
        return float((model(x_adv).argmax(dim=1) == y).float().mean())


def fast_at(
    model: nn.Module,
    train: Dataset,
    adv: AdversarialSettings,
    settings: TrainSettings,
    progress: ProgressHook | None = None,
) -> TrainingRun:
    if not 0 < adv.guard_size < len(train):
        raise BadInputError(
            f"the overfitting guard needs 0 < guard_size < {len(train)} training examples"
        )
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))
    held = order[: adv.guard_size].numpy()
    rest = order[adv.guard_size :].numpy()
    guard_x = torch.from_numpy(train.x[held])
    guard_y = torch.from_numpy(train.y[held])
    fit_on = Dataset(train.x[rest], train.y[rest], train.classes, f"{train.name}-guarded")

    attacks: dict[int, PGD] = {}
    # Epoch -1 is the starting point: fine-tuning a robust parent must not end less robust.
    initial = guard_accuracy(model, guard_x, guard_y, adv.eps, adv.guard_steps)
    best: dict[str, Any] = {
        "accuracy": initial,
        "epoch": -1,
        "state": copy.deepcopy(model.state_dict()),
    }
    guard: dict[str, Any] = {
        "size": adv.guard_size,
        "steps": adv.guard_steps,
        "initial_accuracy": initial,
        "collapsed": False,
    }

    def step(m: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        if epoch not in attacks:
            eps = adv.eps_at(epoch)
            alpha = adv.alpha if adv.alpha is not None else 1.25 * eps
            attacks[epoch] = PGD(
                m,
                eps=eps,
                alpha=alpha,
                steps=1,
                random_start=adv.random_start,
                seed=_seed(settings, epoch),
            )
        return F.cross_entropy(m(attacks[epoch](x, y)), y)

    def after_epoch(epoch: int, m: nn.Module, record: dict[str, Any]) -> bool:
        accuracy = guard_accuracy(m, guard_x, guard_y, adv.eps, adv.guard_steps)
        record["guard_pgd_accuracy"] = accuracy
        if accuracy >= best["accuracy"]:
            best.update(accuracy=accuracy, epoch=epoch, state=copy.deepcopy(m.state_dict()))
            return False
        if accuracy < best["accuracy"] - adv.guard_drop:
            guard.update(collapsed=True, collapse_epoch=epoch, collapse_accuracy=accuracy)
            return True
        return False

    history = fit(model, fit_on, settings, step, after_epoch, progress=progress)
    if best["epoch"] != history[-1]["epoch"]:
        model.load_state_dict(best["state"])
    guard.update(restored_epoch=best["epoch"], restored_accuracy=best["accuracy"])
    model.eval()
    return TrainingRun(model, history, guard)
