"""The whole pipeline on the embedded default (scikit-learn's bundled digits), end to end.

>>> from modelguard.demo import run_demo
>>> summary = run_demo("build/demo")          # doctest: +SKIP

Each stage prints what it did in a line or two a newcomer can follow, and records its
figures in the summary (``modelguard demo --json`` prints it).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from modelguard import zoo
from modelguard.modelcard import accuracy, export_model_dir, seed_everything, train_classifier
from modelguard.robustness.data import digits_split

DEMO_SEED = 0


@dataclass
class DemoContext:
    workdir: Path
    console: Console
    summary: dict[str, Any] = field(default_factory=dict)

    def say(self, message: str) -> None:
        self.console.print(message)

    def path(self, *parts: str) -> Path:
        return self.workdir.joinpath(*parts)


def stage_train(ctx: DemoContext) -> None:
    train, test = digits_split(DEMO_SEED)
    started = time.perf_counter()
    seed_everything(DEMO_SEED)  # before construction: the initial weights come from the seed too
    model = train_classifier(zoo.digits_cnn(), train, epochs=15, seed=DEMO_SEED)
    seconds = time.perf_counter() - started
    clean = accuracy(model, test)
    export_model_dir(
        model,
        ctx.path("model"),
        factory="modelguard.zoo:digits_cnn",
        input_shape=(1, 8, 8),
        classes=train.classes,
        name="digits-cnn",
        version="1",
    )
    ctx.summary["train"] = {
        "train_examples": len(train),
        "test_examples": len(test),
        "test_accuracy": clean,
        "seconds": round(seconds, 2),
        "model_dir": str(ctx.path("model")),
    }
    ctx.say(
        f"[bold]1. Train[/] a small CNN on {len(train)} bundled digits in {seconds:.1f} s: "
        f"test accuracy {clean:.1%}; exported to {ctx.path('model')} "
        "(model.onnx, model.safetensors, modelguard.json)"
    )


STAGES: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("train", stage_train),
]


def run_demo(workdir: str | Path, *, console: Console | None = None) -> dict[str, Any]:
    """Run every stage in a fresh ``workdir``; return the summary."""
    root = Path(workdir)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    ctx = DemoContext(root.resolve(), console or Console(quiet=True))
    started = time.perf_counter()
    for _name, stage in STAGES:
        stage(ctx)
    ctx.summary["seconds"] = round(time.perf_counter() - started, 1)
    ctx.summary["workdir"] = str(ctx.workdir)
    return ctx.summary
