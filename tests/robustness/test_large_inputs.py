"""Beyond 8x8: 3-channel 32x32 inputs through .npz and image folders, a small ResNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modelguard.modelcard import export_model_dir, train_classifier
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.data import Dataset, load_dataset
from modelguard.robustness.evaluate import evaluate_model_dir
from modelguard.zoo import resnet_small

CLASSES = ["a", "b", "c", "d"]


def colour_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four classes told apart by which colour channel (or none) is bright: learnable fast."""
    rng = np.random.default_rng(seed)
    y = np.arange(count) % len(CLASSES)
    x = rng.uniform(0.0, 0.4, size=(count, 3, 32, 32)).astype(np.float32)
    for i, label in enumerate(y):
        if label < 3:
            x[i, label] += 0.5
    return np.clip(x, 0, 1), y.astype(np.int64)


def test_image_folder_loads_rgb_as_three_channels_and_gray_as_one(tmp_path: Path) -> None:
    x, y = colour_images(8)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = tmp_path / "rgb" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (np.transpose(image, (1, 2, 0)) * 255).round().astype(np.uint8)
        Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
        gray = tmp_path / "gray" / CLASSES[label]
        gray.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[:, :, 0], "L").save(gray / f"{i}.png")
    rgb = load_dataset(str(tmp_path / "rgb"))
    assert rgb.x.shape == (8, 3, 32, 32) and rgb.classes == CLASSES
    first = np.flatnonzero(rgb.y == 0)[0]
    expected = (np.transpose(x[0], (1, 2, 0)) * 255).round() / 255
    assert np.allclose(np.transpose(rgb.x[first], (1, 2, 0)), expected, atol=1e-6)
    assert load_dataset(str(tmp_path / "gray")).x.shape == (8, 1, 32, 32)


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("cifar-like")
    x, y = colour_images(96)
    train = Dataset(x, y, CLASSES, "train")
    model = train_classifier(resnet_small(num_classes=4, width=8), train, epochs=6, seed=0)
    directory = tmp / "resnet"
    export_model_dir(
        model, directory, factory="resnet_small", kwargs={"num_classes": 4, "width": 8},
        input_shape=(3, 32, 32), classes=CLASSES, name="resnet", version="1",
    )  # fmt: skip
    test_x, test_y = colour_images(12, seed=1)
    np.savez(tmp / "test.npz", x=test_x, y=test_y)
    return directory, tmp / "test.npz"


def test_resnet_on_32x32_rgb_npz_runs_the_quick_profile_with_parity(
    resnet_dir: tuple[Path, Path],
) -> None:
    directory, data = resnet_dir
    config = EvalConfig(
        attacks=["quick"],
        eps=[4 / 255],
        data=str(data),
        soundness=False,
        attack_params={
            "apgd-ce": {"steps": 5},
            "apgd-t": {"steps": 5, "n_targets": 2},
            "fab-t": {"steps": 5, "n_targets": 2},
            "square": {"n_queries": 20},
        },
    )
    result = evaluate_model_dir(directory, config)
    assert result.data["input_shape"] == [3, 32, 32]
    assert result.clean_accuracy >= 0.5 and result.parity_ok  # chance: 0.25
    worst = result.worst_case_accuracy(4 / 255)
    assert 0.0 <= worst <= result.clean_accuracy
    assert result.worst_case[0]["robust"]["n"] == 12
