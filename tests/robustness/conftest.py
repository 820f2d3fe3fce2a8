"""One small digits CNN per session (trained in a few seconds), exported as a model directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from modelguard.modelcard import export_model_dir, train_classifier
from modelguard.robustness.data import digits_split
from modelguard.zoo import digits_cnn

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="session", autouse=True)
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CPU, OpenMP oversubscription makes these tiny
    models several times slower (results do not depend on it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory: pytest.TempPathFactory, single_torch_thread: None) -> Path:
    torch.manual_seed(0)
    train, _ = digits_split()
    model = train_classifier(digits_cnn(width=16), train, epochs=6, seed=0)
    directory = tmp_path_factory.mktemp("digits") / "digits-cnn"
    export_model_dir(
        model,
        directory,
        factory="digits_cnn",
        kwargs={"width": 16},
        input_shape=(1, 8, 8),
        classes=CLASSES,
        name="digits-cnn",
        version="1",
    )
    return directory
