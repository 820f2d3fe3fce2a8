"""Evaluation and training data, always as float32 inputs in [0, 1] with int64 labels.

>>> from modelguard.robustness.data import load_dataset
>>> test = load_dataset("digits")
>>> test.x.shape[1:], float(test.x.max()) <= 1.0
((1, 8, 8), True)

Specs: ``digits`` (scikit-learn's bundled digits, test split; no download), ``digits:train``,
``digits:all``, a ``.npz`` file with arrays ``x`` (N, C, H, W) in [0, 1] and ``y``, or a folder
with one sub-folder of images per class (grayscale: 1 channel; any colour image: every image as
3-channel RGB), e.g. 3 x 32 x 32 images.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.errors import BadInputError, FormatError

DIGITS_TEST_FRACTION = 0.2
MAX_NPZ_BYTES = 4 << 30
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def dataset_digest(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 over a canonical header (shapes, dtypes) then x and y as little-endian C bytes."""
    x = np.ascontiguousarray(x, dtype="<f4")
    y = np.ascontiguousarray(y, dtype="<i8")
    header = json.dumps(
        {"x": [list(x.shape), "float32"], "y": [list(y.shape), "int64"]}, sort_keys=True
    )
    h = hashlib.sha256(header.encode())
    h.update(x.tobytes())
    h.update(y.tobytes())
    return h.hexdigest()


@dataclass
class Dataset:
    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str
    digest: str = field(default="")

    def __post_init__(self) -> None:
        validate(self.x, self.y, len(self.classes), source=self.name)
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.y = np.ascontiguousarray(self.y, dtype=np.int64)
        self.digest = dataset_digest(self.x, self.y)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, count: int | None) -> Dataset:
        """The first ``count`` examples (all when None): deterministic, so certificates can be re-run."""
        if count is None or count >= len(self):
            return self
        if count <= 0:
            raise BadInputError(f"{self.name}: example count must be positive, got {count}")
        return Dataset(self.x[:count], self.y[:count], self.classes, f"{self.name}[:{count}]")


def validate(x: np.ndarray, y: np.ndarray, num_classes: int, *, source: str) -> None:
    if x.ndim < 2:
        raise BadInputError(
            f"{source}: inputs must have a batch axis and at least one feature axis, got shape {x.shape}"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise BadInputError(
            f"{source}: labels must be 1-D with one label per input, got {y.shape} for {x.shape[0]} inputs"
        )
    if x.shape[0] == 0:
        raise BadInputError(f"{source}: the data set is empty")
    if not np.issubdtype(x.dtype, np.floating):
        raise BadInputError(f"{source}: inputs must be floating point in [0, 1], got {x.dtype}")
    if not np.all(np.isfinite(x)) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise BadInputError(
            f"{source}: inputs must lie in [0, 1] (normalisation belongs inside the model)"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise BadInputError(f"{source}: labels must be integers, got {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise BadInputError(
            f"{source}: labels must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]"
        )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, bunch.target.astype(np.int64)


def digits_split(seed: int = 0) -> tuple[Dataset, Dataset]:
    """Deterministic stratified train/test split of the bundled digits (1437 / 360)."""
    from sklearn.model_selection import train_test_split

    x, y = _digits()
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_FRACTION, random_state=seed, stratify=y
    )
    classes = [str(i) for i in range(10)]
    return (
        Dataset(x_train, y_train, classes, "digits:train"),
        Dataset(x_test, y_test, classes, "digits"),
    )


def _load_npz(path: Path) -> Dataset:
    from modelguard.safeio import open_regular

    try:
        with (
            open_regular(path, max_size=MAX_NPZ_BYTES, what="data set") as handle,
            np.load(handle, allow_pickle=False) as archive,
        ):
            if "x" not in archive or "y" not in archive:
                raise FormatError("an .npz data set needs arrays 'x' and 'y'", path=str(path))
            x, y = archive["x"], archive["y"]
    except (ValueError, OSError) as error:
        raise FormatError(f"not a readable .npz file ({error})", path=str(path)) from error
    # Labels are checked against the model's class count by the evaluator; here only >= 0.
    num_classes = int(y.max()) + 1 if y.size and np.issubdtype(y.dtype, np.integer) else 1
    return Dataset(x, y, [str(i) for i in range(max(num_classes, 1))], str(path))


def _load_image_folder(path: Path) -> Dataset:
    """One sub-folder per class. Grayscale images load as 1 channel; if any image has colour,
    every image loads as 3 channels (RGB), so (C, H, W) is the same for the whole set."""
    from PIL import Image

    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    if not class_dirs:
        raise FormatError("an image-folder data set needs one sub-folder per class", path=str(path))
    files = [
        (label, image_path)
        for label, class_dir in enumerate(class_dirs)
        for image_path in sorted(class_dir.iterdir())
        if image_path.suffix.lower() in IMAGE_SUFFIXES and not image_path.is_symlink()
    ]
    if not files:
        raise FormatError("no images found", path=str(path))
    decoded: list[tuple[int, Path, Any]] = []
    colour = False
    for label, image_path in files:
        try:
            with Image.open(image_path) as image:
                image.load()
                colour = colour or image.mode not in GRAY_MODES
                decoded.append((label, image_path, image.copy()))
        except OSError as error:
            raise FormatError(f"unreadable image ({error})", path=str(image_path)) from error
    images: list[np.ndarray] = []
    for _, image_path, image in decoded:
        pixels = np.asarray(image.convert("RGB" if colour else "L"), dtype=np.float32) / 255.0
        pixels = np.transpose(pixels, (2, 0, 1)) if colour else pixels[None, :, :]
        if images and pixels.shape != images[0].shape:
            raise FormatError(
                f"image size {pixels.shape[1:]} differs from {images[0].shape[1:]}",
                path=str(image_path),
            )
        images.append(pixels)
    labels = np.asarray([label for label, _, _ in decoded], dtype=np.int64)
    return Dataset(np.stack(images), labels, [d.name for d in class_dirs], str(path))


def load_dataset(spec: str, *, seed: int = 0) -> Dataset:
    if spec in ("digits", "digits:test"):
        return digits_split(seed)[1]
    if spec == "digits:train":
        return digits_split(seed)[0]
    if spec == "digits:all":
        x, y = _digits()
        return Dataset(x, y, [str(i) for i in range(10)], "digits:all")
    path = Path(spec)
    if not path.exists():
        raise BadInputError(
            f"data set {spec!r} is neither 'digits' nor an existing .npz file or folder"
        )
    if path.is_dir():
        return _load_image_folder(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    raise BadInputError(f"data set {spec!r}: expected 'digits', an .npz file or an image folder")
