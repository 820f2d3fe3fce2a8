"""Data sets in [0, 1] with stable digests; model directories that round-trip to ONNX."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from modelguard import zoo
from modelguard.errors import BadInputError, FormatError, UnsafeModelError
from modelguard.modelcard import ModelCard, export_model_dir, load_model_dir
from modelguard.robustness.data import Dataset, digits_split, load_dataset


def test_digits_split_is_deterministic_and_in_range() -> None:
    train_a, test_a = digits_split(0)
    train_b, test_b = digits_split(0)
    assert (len(train_a), len(test_a)) == (1437, 360)
    assert test_a.digest == test_b.digest and train_a.digest == train_b.digest
    assert test_a.digest != train_a.digest
    assert float(test_a.x.min()) >= 0.0 and float(test_a.x.max()) <= 1.0


def test_digest_changes_with_one_pixel() -> None:
    test = load_dataset("digits")
    x = test.x.copy()
    x[0, 0, 0, 0] = 1.0 - x[0, 0, 0, 0]
    assert Dataset(x, test.y, test.classes, "edited").digest != test.digest


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.full((4, 1, 8, 8), 2.0, np.float32), np.zeros(4, np.int64), "[0, 1]"),
        (np.zeros((4, 1, 8, 8), np.float32), np.zeros(3, np.int64), "one label per input"),
        (np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 2, 11]), "labels must lie"),
        (np.zeros((4, 1, 8, 8), np.int64), np.zeros(4, np.int64), "floating point"),
    ],
)
def test_bad_data_is_refused(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(
        BadInputError, match="labels must lie" if "labels" in message else None
    ) as error:
        Dataset(x, y, [str(i) for i in range(10)], "bad")
    assert message in str(error.value)


def test_npz_round_trip(tmp_path) -> None:
    path = tmp_path / "d.npz"
    np.savez(
        path, x=np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32), y=np.arange(5)
    )
    data = load_dataset(str(path))
    assert len(data) == 5
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(FormatError):
        load_dataset(str(tmp_path / "bad.npz"))
    with pytest.raises(BadInputError):
        load_dataset(str(tmp_path / "missing.npz"))


def test_model_dir_round_trip_matches_onnx(tmp_path) -> None:
    torch.manual_seed(0)
    model = zoo.digits_cnn(width=4)
    export_model_dir(
        model,
        tmp_path,
        factory="digits_cnn",
        kwargs={"width": 4},
        input_shape=(1, 8, 8),
        classes=[str(i) for i in range(10)],
        name="t",
    )
    rebuilt, card = load_model_dir(tmp_path)
    x = torch.rand(3, 1, 8, 8)
    session = ort.InferenceSession(str(tmp_path / card.onnx), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(onnx_out, rebuilt(x).detach().numpy(), atol=1e-4)


def test_model_card_refuses_untrusted_factory_and_escaping_paths(tmp_path) -> None:
    card = ModelCard(factory="os:system", kwargs={}, input_shape=[1, 8, 8], classes=["a"])
    card.save(tmp_path)
    with pytest.raises(UnsafeModelError, match="outside modelguard.zoo"):
        load_model_dir(tmp_path)
    data = card.to_dict()
    data["weights"] = "../secret.safetensors"
    (tmp_path / "modelguard.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="inside the model directory"):
        ModelCard.load(tmp_path)
