"""What the audits train and query: an architecture plus a training recipe, and the audited model.

>>> from modelguard.audits.training import Recipe
>>> from modelguard.robustness.data import load_dataset
>>> model = Recipe("digits_mlp", epochs=1).train(load_dataset("digits:train").subset(64), seed=0)
>>> probabilities(model, load_dataset("digits").x[:2]).shape                  # doctest: +SKIP
(2, 10)

The audits retrain the audited architecture (cross-validation folds, reference models), so
they need its factory: a model directory's card names it, or the user names one (``--arch``,
trusted because the user named it, as for ``eval --arch``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelguard import zoo
from modelguard.errors import BadInputError
from modelguard.modelcard import seed_everything, train_classifier
from modelguard.robustness.data import Dataset


@dataclass(frozen=True)
class Recipe:
    """An architecture factory and how to train it (Adam, cross-entropy, seeded batches)."""

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    lr: float = 2e-3
    batch_size: int = 64
    trusted: bool = False  # the user named the factory explicitly (--arch)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise BadInputError("epochs and batch size must be >= 1 and the learning rate > 0")

    def build(self, seed: int) -> nn.Module:
        """A fresh model whose initial weights come from ``seed``."""
        seed_everything(seed)
        return zoo.build(zoo.factory_name(self.factory), self.kwargs, trusted=self.trusted)

    def train(self, data: Dataset, *, seed: int) -> nn.Module:
        return train_classifier(
            self.build(seed),
            data,
            epochs=self.epochs,
            lr=self.lr,
            batch_size=self.batch_size,
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["factory"] = zoo.factory_name(self.factory)
        return out


def logits(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's logits as float64, in eval mode, without gradients."""
    model.eval()
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            outs.append(model(torch.from_numpy(x[start : start + batch_size])).double().numpy())
    return np.concatenate(outs, axis=0)


def probabilities(model: nn.Module, x: np.ndarray) -> np.ndarray:
    z = logits(model, x)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return np.asarray(p / p.sum(axis=1, keepdims=True))


def dataset_info(data: Dataset, spec: str) -> dict[str, Any]:
    """How an attestation names a data set: the spec given, its name, digest and size."""
    return {"spec": spec, "name": data.name, "digest": data.digest, "count": len(data)}


@dataclass
class AuditedModel:
    """A model directory under audit: its rebuilt PyTorch model, its recipe and its identity."""

    model: nn.Module
    recipe: Recipe
    info: dict[str, Any]


def load_audited_model(
    path: str | os.PathLike[str],
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    epochs: int = 30,
    lr: float = 2e-3,
    batch_size: int = 64,
) -> AuditedModel:
    """Load a model directory (``modelguard.json``); ``arch`` overrides (and trusts) its factory."""
    from modelguard.modelcard import load_model_dir
    from modelguard.robustness.loaders import model_identity

    directory = Path(path)
    if not directory.is_dir():
        raise BadInputError("expected a model directory (with modelguard.json)", path=str(path))
    factory = zoo.factory_name(arch) if arch else None
    model, card = load_model_dir(directory, trusted_factory=factory)
    recipe = Recipe(
        factory or card.factory,
        dict(arch_kwargs) if arch_kwargs is not None else dict(card.kwargs),
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        trusted=factory is not None,
    )
    identity = model_identity(directory)
    info = {
        "name": card.name,
        "version": card.version,
        "path": str(directory),
        "factory": recipe.to_dict()["factory"],
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return AuditedModel(model, recipe, info)
