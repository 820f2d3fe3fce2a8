"""The training loop every training-time defense shares: seeded batches, Adam, per-epoch cost.

>>> from modelguard.zoo import digits_mlp
>>> from modelguard.robustness.data import load_dataset
>>> from modelguard.robustness.defenses.training import TrainSettings, fit, cross_entropy_step
>>> history = fit(digits_mlp(), load_dataset("digits:train").subset(64), TrainSettings(epochs=1),
...               cross_entropy_step)
>>> len(history)
1

A defense supplies ``step(model, x, y, epoch) -> loss`` (it may craft adversarial inputs
inside) and optionally ``after_epoch(epoch, model, record) -> stop?``; ``fit`` does the rest,
reporting batches done/total to a :data:`~modelguard.robustness.progress.ProgressHook`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelguard.errors import BadInputError
from modelguard.modelcard import seed_everything
from modelguard.robustness import distributed
from modelguard.robustness.data import Dataset
from modelguard.robustness.progress import ProgressHook

Step = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]
AfterEpoch = Callable[[int, nn.Module, dict[str, Any]], bool]
SCHEDULES = ("constant", "onecycle")


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 15
    lr: float = 2e-3
    batch_size: int = 64
    seed: int = 0
    schedule: str = "constant"  # "onecycle": linear warm-up to lr, then down (Wong et al. 2020)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise BadInputError(f"--epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise BadInputError(f"--lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            raise BadInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.schedule not in SCHEDULES:
            raise BadInputError(f"--schedule must be one of {', '.join(SCHEDULES)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cross_entropy_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epoch: int
) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def fit(
    model: nn.Module,
    train: Dataset,
    settings: TrainSettings,
    step: Step,
    after_epoch: AfterEpoch | None = None,
    progress: ProgressHook | None = None,
    label: str = "train",
) -> list[dict[str, Any]]:
    """Train in place; returns one record per epoch (seconds, mean loss, what hooks add).

    ``progress`` hears ``("<label> epoch e/E, batches", done, total)`` after every batch."""
    generator = seed_everything(settings.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    steps_per_epoch = distributed.steps_per_epoch(len(train), settings.batch_size)
    all_steps = settings.epochs * steps_per_epoch
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=settings.lr,
            total_steps=all_steps,
            pct_start=0.4,
            anneal_strategy="linear",
            cycle_momentum=False,
        )
        if settings.schedule == "onecycle"
        else None
    )
    history: list[dict[str, Any]] = []
    trained = distributed.fit_model(model)  # DDP under torchrun, else the model itself
    for epoch in range(settings.epochs):
        started = time.perf_counter()
        total, count = 0.0, 0
        stage = f"{label} epoch {epoch + 1}/{settings.epochs}, batches"
        for index, (xb, yb) in enumerate(
            distributed.epoch_batches(train, settings.batch_size, generator, epoch, settings.seed)
        ):
            model.train()
            loss = step(trained, xb, yb, epoch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += float(loss.detach()) * len(yb)
            count += len(yb)
            if progress is not None:
                progress(stage, epoch * steps_per_epoch + index + 1, all_steps)
        model.eval()
        record: dict[str, Any] = {
            "epoch": epoch,
            "seconds": time.perf_counter() - started,
            "loss": total / max(count, 1),
        }
        history.append(record)
        if after_epoch is not None and after_epoch(epoch, model, record):
            break
    model.eval()
    return history
