"""Format adapters: turn a model file into canonical tensors plus structure bytes, never executing it.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.formats import parse_model_file
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": np.ones((2, 2), dtype=np.float32)}, d / "m.safetensors")
>>> parsed = parse_model_file(d / "m.safetensors", root=d)
>>> [(t.name, t.dtype, t.shape, t.location) for t in parsed.tensors]
[('w', 'float32', (2, 2), ('m.safetensors', 72, 16))]
>>> bytes(parsed.tensors[0].read()) == np.ones((2, 2), dtype="<f4").tobytes()
True

Every adapter yields :class:`ParsedModel`: its ``structure`` is the canonical bytes of
everything that is not tensor data (hashed into the structure digest) and its ``tensors`` are
:class:`TensorSlice` values whose :meth:`TensorSlice.read` gives raw little-endian C-order bytes.
Malformed input raises :class:`~modelguard.errors.FormatError`; input that would execute code or
escape the model directory raises :class:`~modelguard.errors.UnsafeModelError`. See docs/formats.md.
"""

from __future__ import annotations

import mmap
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from modelguard.errors import FormatError

FORMATS: tuple[str, ...] = ("onnx", "safetensors", "pytorch")

# canonical dtype name -> bits per element (4-bit types are packed two per byte, low nibble first)
DTYPE_BITS: dict[str, int] = {
    "float64": 64,
    "float32": 32,
    "float16": 16,
    "bfloat16": 16,
    "int64": 64,
    "int32": 32,
    "int16": 16,
    "int8": 8,
    "uint64": 64,
    "uint32": 32,
    "uint16": 16,
    "uint8": 8,
    "bool": 8,
    "complex64": 64,
    "complex128": 128,
    "float8_e4m3fn": 8,
    "float8_e4m3fnuz": 8,
    "float8_e5m2": 8,
    "float8_e5m2fnuz": 8,
    "float8_e8m0fnu": 8,
    "int4": 4,
    "uint4": 4,
    "float4_e2m1fn": 4,
}

_PYTORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
# torch.save's legacy (non-zip) format opens with a pickled magic number 0x1950a86a20f9469cfc6c.
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"
ZIP_MAGIC = b"PK\x03\x04"


def expected_nbytes(dtype: str, shape: tuple[int, ...]) -> int:
    """Bytes that ``shape`` elements of ``dtype`` occupy in canonical form."""
    count = 1
    for dim in shape:
        if dim < 0:
            raise FormatError(f"negative dimension in shape {list(shape)}")
        count *= dim
    return (count * DTYPE_BITS[dtype] + 7) // 8


@dataclass(frozen=True)
class TensorSlice:
    """One tensor: its canonical bytes come from :meth:`read` (bounded; mmap where possible)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    # (file path relative to the model root, offset, length) when the canonical bytes lie verbatim
    # in a file; None when they must be decoded (PyTorch pickles, ONNX typed repeated fields).
    location: tuple[str, int, int] | None
    _reader: Callable[[], memoryview] = field(repr=False, compare=False)

    def read(self) -> memoryview:
        """Raw little-endian C-order bytes of the tensor (a zero-copy view where possible)."""
        data = self._reader()
        if data.nbytes != self.nbytes:
            raise FormatError(
                f"tensor {self.name!r}: read {data.nbytes} bytes, expected {self.nbytes}"
            )
        return data


@dataclass(frozen=True)
class ParsedModel:
    format: str  # "onnx" | "safetensors" | "pytorch"
    structure: bytes  # canonical bytes of everything that is not tensor data
    tensors: tuple[TensorSlice, ...]  # sorted by name, names unique


def map_file(path: Path) -> memoryview:
    """A read-only memoryview over the whole file (mmap; empty files give an empty view)."""
    from modelguard.safeio import open_regular

    try:
        with open_regular(path, what="model file") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return memoryview(b"")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as error:
        raise FormatError(f"cannot read file: {error.strerror or error}", path=str(path)) from error
    return memoryview(mapped)


def view_reader(view: memoryview, offset: int, length: int) -> Callable[[], memoryview]:
    return lambda: view[offset : offset + length]


def _is_pytorch_archive(path: Path, head: bytes) -> bool:
    if head.startswith(LEGACY_TORCH_MAGIC):
        return True
    if not head.startswith(ZIP_MAGIC):
        return False
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except Exception:  # a corrupt zip is simply not a torch archive here
        return False


def detect_format(path: Path) -> str | None:
    """``"onnx"``, ``"safetensors"``, ``"pytorch"`` or None (hash the file whole).

    By suffix: ``.onnx``, ``.safetensors``, ``.pt``/``.pth``/``.ckpt``; a ``.bin`` file counts
    as PyTorch only when it is a torch zip archive or a legacy torch pickle (ONNX external data
    is often called ``*.bin`` too).
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in _PYTORCH_SUFFIXES:
        return "pytorch"
    if suffix == ".bin":
        try:
            from modelguard.safeio import open_regular

            with open_regular(path, what="model file") as handle:
                head = handle.read(len(LEGACY_TORCH_MAGIC))
        except OSError as error:
            raise FormatError(
                f"cannot read file: {error.strerror or error}", path=str(path)
            ) from error
        return "pytorch" if _is_pytorch_archive(path, head) else None
    return None


def relative_posix(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError as error:
        raise FormatError(f"{path} is not inside the model root {root}") from error


def parse_model_file(path: Path, *, root: Path) -> ParsedModel | None:
    """Parse one file; None when it is not a model file (it is then hashed whole).

    ``root`` is the model root: tensor locations are given relative to it.
    Raises FormatError / UnsafeModelError (exit code 2) on malformed or unsafe input.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError as error:
        raise FormatError(f"cannot read file: {error.strerror or error}", path=str(path)) from error
    if not stat.S_ISREG(os.stat(path).st_mode if stat.S_ISLNK(mode) else mode):
        raise FormatError("not a regular file", path=str(path))
    kind = detect_format(path)
    if kind == "onnx":
        from modelguard.formats.onnx import parse_onnx

        return parse_onnx(path, root=root)
    if kind == "safetensors":
        from modelguard.formats.safetensors import parse_safetensors

        return parse_safetensors(path, root=root)
    if kind == "pytorch":
        from modelguard.formats.pytorch import parse_pytorch

        return parse_pytorch(path, root=root)
    return None


def sorted_unique(tensors: list[TensorSlice], path: Path) -> tuple[TensorSlice, ...]:
    """Tensors sorted by name; duplicate names are refused (which one would be meant?)."""
    ordered = sorted(tensors, key=lambda t: t.name)
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.name == after.name:
            raise FormatError(f"duplicate tensor name {before.name!r}", path=str(path))
    return tuple(ordered)


__all__ = [
    "DTYPE_BITS",
    "FORMATS",
    "ParsedModel",
    "TensorSlice",
    "detect_format",
    "expected_nbytes",
    "map_file",
    "parse_model_file",
]
