"""Defenses: one file per family, one entry point (:func:`apply_defense`) for ``harden``.

>>> from modelguard.modelcard import ModelCard
>>> from modelguard.zoo import digits_mlp
>>> from modelguard.robustness.data import load_dataset
>>> from modelguard.robustness.defenses import apply_defense
>>> card = ModelCard("modelguard.zoo:digits_mlp", {}, [1, 8, 8], [str(i) for i in range(10)])
>>> out = apply_defense("squeeze", digits_mlp(), card, load_dataset("digits:train"),
...                     {"bits": 3, "median": 3})
>>> out.factory
'modelguard.robustness.defenses.wrappers:squeezed'

Methods (``--method``): ``pgd-at``, ``fgsm-at``, ``fast-at`` (:mod:`.adversarial`),
``trades`` (:mod:`.trades`), ``distill`` (:mod:`.distillation`), ``augment``
(:mod:`.augmentation`), ``squeeze`` (:mod:`.preprocessing`), ``detector`` (:mod:`.detector`),
``ensemble`` (:mod:`.ensemble`). Training methods start from the parent's weights
(``init="parent"``, fine-tuning) unless ``init="scratch"``; distillation always trains
teacher and student from scratch. Every option a method does not take is refused.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from modelguard import zoo
from modelguard.errors import BadInputError
from modelguard.modelcard import ModelCard
from modelguard.robustness.data import Dataset
from modelguard.robustness.defenses import wrappers
from modelguard.robustness.defenses.adversarial import (
    AdversarialSettings,
    TrainingRun,
    fast_at,
    fgsm_at,
    pgd_at,
)
from modelguard.robustness.defenses.augmentation import Augmentation
from modelguard.robustness.defenses.detector import (
    REJECT_CLASS,
    SqueezeDetector,
    calibrate_threshold,
    scores,
)
from modelguard.robustness.defenses.distillation import defensive_distillation
from modelguard.robustness.defenses.trades import TradesSettings, trades
from modelguard.robustness.defenses.training import TrainSettings, cross_entropy_step, fit
from modelguard.robustness.progress import ProgressHook

WRAPPERS = "modelguard.robustness.defenses.wrappers"
TRAIN_OPTIONS = ("epochs", "lr", "batch_size", "seed", "schedule")
ADV_OPTIONS = ("eps", "steps", "alpha", "warmup")


@dataclass
class Defended:
    """A defended model plus everything the ledger and the model card record about it."""

    method: str
    model: nn.Module
    factory: str
    kwargs: dict[str, Any]
    classes: list[str]
    hyperparameters: dict[str, Any]
    train_seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        epochs = [r["seconds"] for r in self.history if "seconds" in r]
        return {
            "method": self.method,
            "factory": self.factory,
            "hyperparameters": self.hyperparameters,
            "train_seconds": self.train_seconds,
            "epochs_run": len(epochs),
            "seconds_per_epoch": sum(epochs) / len(epochs) if epochs else None,
            "report": self.report,
        }


@dataclass
class _Request:
    parent: nn.Module
    card: ModelCard
    train: Dataset
    options: dict[str, Any]
    members: Sequence[tuple[nn.Module, ModelCard]]
    progress: ProgressHook | None = None

    def pick(self, cls: Callable[..., Any], names: Sequence[str]) -> Any:
        return cls(**{n: self.options[n] for n in names if n in self.options})

    def start_model(self) -> nn.Module:
        init = self.options.get("init", "parent")
        if init == "parent":
            return copy.deepcopy(self.parent)
        if init == "scratch":
            torch.manual_seed(int(self.options.get("seed", 0)))
            return zoo.build(self.card.factory, self.card.kwargs)
        raise BadInputError(f"--init must be 'parent' or 'scratch', got {init!r}")

    def same_arch(self, model: nn.Module, hyper: dict[str, Any], **rest: Any) -> Defended:
        return Defended(
            model=model,
            factory=self.card.factory,
            kwargs=dict(self.card.kwargs),
            classes=list(self.card.classes),
            hyperparameters=hyper,
            train_seconds=0.0,
            method="",
            **rest,
        )


def _adversarial(
    trainer: Callable[..., TrainingRun], extra: Sequence[str]
) -> Callable[[_Request], Defended]:
    def run(req: _Request) -> Defended:
        adv = req.pick(AdversarialSettings, (*ADV_OPTIONS, *extra))
        settings = req.pick(TrainSettings, TRAIN_OPTIONS)
        result = trainer(req.start_model(), req.train, adv, settings, req.progress)
        hyper = {
            **adv.to_dict(),
            **settings.to_dict(),
            "init": req.options.get("init", "parent"),
        }
        report = {"overfitting_guard": result.guard} if result.guard else {}
        return req.same_arch(result.model, hyper, history=result.history, report=report)

    return run


def _trades(req: _Request) -> Defended:
    cfg = req.pick(TradesSettings, ("eps", "steps", "alpha", "beta"))
    settings = req.pick(TrainSettings, TRAIN_OPTIONS)
    result = trades(req.start_model(), req.train, cfg, settings, req.progress)
    hyper = {**cfg.to_dict(), **settings.to_dict(), "init": req.options.get("init", "parent")}
    return req.same_arch(result.model, hyper, history=result.history)


def _distill(req: _Request) -> Defended:
    settings = req.pick(TrainSettings, TRAIN_OPTIONS)
    temperature = float(req.options.get("temperature", 50.0))
    factory = zoo.resolve_factory(req.card.factory)
    model, history = defensive_distillation(
        factory,
        req.card.kwargs,
        req.train,
        temperature=temperature,
        settings=settings,
        progress=req.progress,
    )
    hyper = {"temperature": temperature, "deployed_temperature": 1.0, **settings.to_dict()}
    return req.same_arch(model, hyper, history=history, report={"init": "scratch"})


def _augment(req: _Request) -> Defended:
    augmentation = req.pick(Augmentation, ("noise_std", "max_shift", "scale"))
    settings = req.pick(TrainSettings, TRAIN_OPTIONS)
    generator = torch.Generator().manual_seed(settings.seed + 1)

    def step(m: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return cross_entropy_step(m, augmentation(x, generator), y, epoch)

    model = req.start_model()
    history = fit(model, req.train, settings, step, progress=req.progress)
    hyper = {
        **augmentation.to_dict(),
        **settings.to_dict(),
        "init": req.options.get("init", "parent"),
    }
    return req.same_arch(model, hyper, history=history)


def _squeeze_kwargs(req: _Request) -> dict[str, Any]:
    bits = req.options.get("bits", 3)
    # No median by default: a 3x3 median on 8x8 digits costs ~15 points of clean accuracy.
    median = req.options.get("median")
    return {
        "base": wrappers.spec(req.card.factory, req.card.kwargs),
        "bits": None if bits is None else int(bits),
        "median": None if median is None else int(median),
    }


def _wrapped(req: _Request, factory: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build the wrapper from its card spec, then copy the parent's weights into it."""
    model = zoo.build(factory, kwargs)
    base = model.base if hasattr(model, "base") else None
    if not isinstance(base, nn.Module):
        raise BadInputError(f"{factory} has no wrapped base model")
    base.load_state_dict(req.parent.state_dict())
    return model.eval()


def _squeeze(req: _Request) -> Defended:
    factory = f"{WRAPPERS}:squeezed"
    kwargs = _squeeze_kwargs(req)
    model = _wrapped(req, factory, kwargs)
    hyper = {"bits": kwargs["bits"], "median": kwargs["median"], "gradients": "bpda"}
    return Defended("", model, factory, kwargs, list(req.card.classes), hyper, 0.0)


def _detector(req: _Request) -> Defended:
    factory = f"{WRAPPERS}:squeeze_detector"
    fpr = float(req.options.get("fpr", 0.05))
    kwargs = {**_squeeze_kwargs(req), "threshold": 0.0}
    probe = _wrapped(req, factory, kwargs)
    assert isinstance(probe, SqueezeDetector)
    # Calibrated on the training data: clean scores of unseen data run a little higher, so the
    # evaluation reports the false-positive rate measured on its own (test) data as well.
    kwargs["threshold"] = calibrate_threshold(scores(probe, req.train.x), fpr)
    model = _wrapped(req, factory, kwargs)
    hyper = {
        "bits": kwargs["bits"],
        "median": kwargs["median"],
        "target_false_positive_rate": fpr,
        "threshold": kwargs["threshold"],
        "calibration_data": req.train.digest,
    }
    return Defended("", model, factory, kwargs, [*req.card.classes, REJECT_CLASS], hyper, 0.0)


def _ensemble(req: _Request) -> Defended:
    members: list[tuple[nn.Module, ModelCard]] = [(req.parent, req.card), *req.members]
    extra = int(req.options.get("members", 0) or 0)
    settings = req.pick(TrainSettings, TRAIN_OPTIONS)
    history: list[dict[str, Any]] = []
    for index in range(extra):
        torch.manual_seed(settings.seed + 1 + index)
        member = zoo.build(req.card.factory, req.card.kwargs)
        seeded = TrainSettings(**{**settings.to_dict(), "seed": settings.seed + 1 + index})
        trained = fit(
            member,
            req.train,
            seeded,
            cross_entropy_step,
            progress=req.progress,
            label=f"train member {index + 1}/{extra}",
        )
        history += [{"member": index + 1, **r} for r in trained]
        members.append((member, req.card))
    if len(members) < 2:
        raise BadInputError(
            "an ensemble needs --members N (new members to train) or member model dirs"
        )
    factory = f"{WRAPPERS}:ensemble"
    kwargs = {"members": [wrappers.spec(card.factory, card.kwargs) for _, card in members]}
    model = zoo.build(factory, kwargs)
    for slot, (member, _) in zip(model.members, members, strict=True):  # type: ignore[arg-type]
        slot.load_state_dict(member.state_dict())
    hyper = {
        "members": len(members),
        "trained_members": extra,
        **(settings.to_dict() if extra else {}),
    }
    return Defended("", model.eval(), factory, kwargs, list(req.card.classes), hyper, 0.0, history)


METHODS: dict[str, tuple[Callable[[_Request], Defended], tuple[str, ...]]] = {
    "pgd-at": (_adversarial(pgd_at, ()), (*ADV_OPTIONS, *TRAIN_OPTIONS, "init")),
    "fgsm-at": (_adversarial(fgsm_at, ("mix",)), ("eps", "warmup", "mix", *TRAIN_OPTIONS, "init")),
    "fast-at": (
        _adversarial(fast_at, ("guard_size", "guard_steps", "guard_drop")),
        (
            "eps",
            "alpha",
            "warmup",
            "guard_size",
            "guard_steps",
            "guard_drop",
            *TRAIN_OPTIONS,
            "init",
        ),
    ),
    "trades": (_trades, ("eps", "steps", "alpha", "beta", *TRAIN_OPTIONS, "init")),
    "distill": (_distill, ("temperature", *TRAIN_OPTIONS)),
    "augment": (_augment, ("noise_std", "max_shift", "scale", *TRAIN_OPTIONS, "init")),
    "squeeze": (_squeeze, ("bits", "median")),
    "detector": (_detector, ("bits", "median", "fpr")),
    "ensemble": (_ensemble, ("members", *TRAIN_OPTIONS)),
}


def apply_defense(
    method: str,
    parent: nn.Module,
    card: ModelCard,
    train: Dataset,
    options: Mapping[str, Any] | None = None,
    *,
    members: Sequence[tuple[nn.Module, ModelCard]] = (),
    progress: ProgressHook | None = None,
) -> Defended:
    """Defend ``parent`` (left untouched) with ``method``; options a method does not take are
    refused. ``progress`` hears training batches done/total (:mod:`..progress`)."""
    if method not in METHODS:
        raise BadInputError(f"unknown defense {method!r} (known: {', '.join(METHODS)})")
    run, accepted = METHODS[method]
    given = {k: v for k, v in dict(options or {}).items() if v is not None}
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        flags = ", ".join("--" + name.replace("_", "-") for name in unknown)
        raise BadInputError(f"{method} does not take {flags}")
    started = time.perf_counter()
    defended = run(_Request(parent, card, train, given, members, progress))
    defended.train_seconds = time.perf_counter() - started
    defended.method = method
    defended.model.eval()
    return defended


__all__ = ["METHODS", "Defended", "apply_defense"]
