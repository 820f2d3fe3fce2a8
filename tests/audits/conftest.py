"""Small models for the audits: a digits MLP exported as a model directory, and a signing key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelguard.keys import PrivateKey, generate_key
from modelguard.modelcard import export_model_dir, seed_everything, train_classifier
from modelguard.robustness.data import digits_split
from modelguard.zoo import digits_mlp

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread: the machine is small and shared; results do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def export_mlp(model: torch.nn.Module, directory: Path, name: str = "digits-mlp") -> Path:
    export_model_dir(
        model,
        directory,
        factory="digits_mlp",
        input_shape=(1, 8, 8),
        classes=CLASSES,
        name=name,
        version="1",
    )
    return directory


@pytest.fixture(scope="session")
def mlp_dir(tmp_path_factory: pytest.TempPathFactory, single_torch_thread: None) -> Path:
    """A digits MLP trained on the first 200 training examples (its members)."""
    train, _ = digits_split()
    seed_everything(0)
    model = train_classifier(digits_mlp(), train.subset(200), epochs=20, seed=0)
    return export_mlp(model, tmp_path_factory.mktemp("mlp") / "digits-mlp")


@pytest.fixture(scope="session")
def key() -> PrivateKey:
    return generate_key()
