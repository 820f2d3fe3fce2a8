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

import errno
import io
import mmap
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from modelguard.errors import BadInputError, FormatError, UnsafeModelError
from modelguard.safeio import open_regular

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
    with open_regular(path, what="file") as handle:
        return _map_handle(handle, str(path))


def _map_handle(handle: BinaryIO, where: str) -> memoryview:
    try:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return memoryview(b"")
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as error:
        raise FormatError(f"cannot read file: {error.strerror or error}", path=where) from error
    return memoryview(mapped)


def _read_handle(handle: BinaryIO, where: str) -> memoryview:
    """The whole file copied into private memory through the open descriptor (size from fstat).

    The memory is an anonymous mapping: page-aligned, so tensors at aligned file offsets can be
    handed to ONNX Runtime in place, and private to this process.
    """
    size = os.fstat(handle.fileno()).st_size
    if size == 0:
        return memoryview(b"")
    view = memoryview(mmap.mmap(-1, size))
    got = 0
    while got < size:
        n = handle.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise FormatError("file shrank while it was being read", path=where)
        got += n
    if handle.read(1):
        raise FormatError("file grew while it was being read", path=where)
    return view


_CHECKPOINT_SUFFIXES = (".safetensors", *_PYTORCH_SUFFIXES)


def onnx_runtime_reads(rel: str) -> bool:
    """False for weights checkpoints (safetensors, PyTorch), which ONNX Runtime never reads."""
    return not rel.lower().endswith(_CHECKPOINT_SUFFIXES)


# Names that are never tensor data: signatures, keys, policies (refused as external data).
_NEVER_DATA_SUFFIXES = (".sig", ".sig.d", ".pub", ".priv", ".pem", ".key", ".toml")


def _under(rel: str, pattern: str) -> bool:
    prefix = [p for p in pattern.strip("/").split("/") if p]
    return bool(prefix) and rel.split("/")[: len(prefix)] == prefix


class ModelFiles:
    """The files of one model, each opened once (:mod:`modelguard.safeio`) and held as a buffer.

    Every reader of a model -- manifest, signature check, layout check, ONNX Runtime loader --
    takes its bytes from here, so what was hashed is what gets used: a file is never re-opened
    by path once read. ``members`` is the model's file set (posix paths relative to ``root``);
    ONNX external data must name one of them (for a single-file model, ``members`` is that
    file and external data may name any other confined file). ``private=True`` copies each file
    into process memory, where nothing another process writes afterwards can reach it (a
    predicate chooses which files, e.g. :func:`onnx_runtime_reads`); the other files are kept
    as a read-only mmap of their descriptor (hashed, never to be loaded from).
    """

    def __init__(
        self,
        root: Path,
        members: Iterable[str],
        *,
        single: bool = False,
        ignore: Sequence[str] = (),
        private: bool | Callable[[str], bool] = False,
        follow_symlinks: bool = False,
    ) -> None:
        self.root = Path(root)
        self.members = tuple(members)
        self.single = single
        self.ignore = tuple(ignore)
        self.private = private
        self.follow_symlinks = follow_symlinks
        self._views: dict[str, memoryview] = {}
        self._links: dict[str, int] = {}
        self._mapped: set[str] = set()  # files held as a read-only shared mapping (not copied)
        self._lock = threading.Lock()

    def refusal(self, rel: str) -> str | None:
        """Why ``rel`` may not hold tensor data of this model (None when it may)."""
        for pattern in self.ignore:
            if _under(rel, pattern):
                return f"lies under {pattern!r}, which signatures leave out (unsigned)"
        for part in rel.split("/"):
            if part.lower().endswith(_NEVER_DATA_SUFFIXES):
                return "is a signature, key or policy file, never tensor data"
        if not self.single and rel not in self.members:
            return "is not one of the model's files (not in the signed set)"
        return None

    def view(self, rel: str) -> memoryview:
        """The bytes of ``rel`` (opened and read on first use, then always the same buffer)."""
        with self._lock:
            cached = self._views.get(rel)
            if cached is not None:
                return cached
            if not self.single and rel not in self.members:
                # a directory model is exactly its listed files: nothing else is ever read
                raise UnsafeModelError("is not one of the model's files", path=str(self.root / rel))
            view, links, mapped = self._open(rel)
            self._views[rel] = view
            self._links[rel] = links
            if mapped:
                self._mapped.add(rel)
            return view

    def is_private(self, rel: str) -> bool:
        """True when ``rel`` is (or will be) held as a private copy, safe to load from."""
        return self.private(rel) if callable(self.private) else self.private

    def link_count(self, rel: str) -> int:
        self.view(rel)
        return self._links[rel]

    def size(self, rel: str) -> int:
        return self.view(rel).nbytes

    def _open(self, rel: str) -> tuple[memoryview, int, bool]:
        shown = str(self.root / rel)
        parts = rel.split("/")
        if not rel or any(p in ("", ".", "..") for p in parts):
            raise FormatError(f"{rel!r} is not a normalized relative path", path=shown)
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
        nofollow = 0 if self.follow_symlinks else os.O_NOFOLLOW
        try:
            directory = os.open(self.root, flags)
        except OSError as error:
            raise BadInputError(
                f"cannot open model directory: {error.strerror}", path=str(self.root)
            ) from None
        try:
            for part in parts[:-1]:
                try:
                    inner = os.open(part, flags | nofollow, dir_fd=directory)
                except OSError as error:
                    if error.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeModelError(
                            f"{part!r} is a symbolic link or not a directory", path=shown
                        ) from None
                    raise BadInputError(f"cannot open: {error.strerror}", path=shown) from None
                os.close(directory)
                directory = inner
            with open_regular(
                parts[-1],
                dir_fd=directory,
                follow_symlinks=self.follow_symlinks,
                what="model file",
                shown=shown,
            ) as handle:
                links = os.fstat(handle.fileno()).st_nlink
                private = self.is_private(rel)
                view = _read_handle(handle, shown) if private else _map_handle(handle, shown)
        finally:
            os.close(directory)
        return view, links, not private

    def drop_pages(self, rel: str, offset: int = 0, length: int | None = None) -> None:
        """Let the kernel reclaim resident pages of ``rel`` once hashed (read-only mappings only).

        A read-only shared file mapping reads the page cache again on the next access, so this
        changes nothing a reader sees, only the process's resident set; private copies are
        never touched. ``offset``/``length``: a byte range (whole pages inside it), default all.
        """
        with self._lock:
            view = self._views.get(rel) if rel in self._mapped else None
        advice = getattr(mmap, "MADV_DONTNEED", None)
        if view is None or advice is None:
            return
        mapped = view.obj
        if not isinstance(mapped, mmap.mmap):
            return
        end = view.nbytes if length is None else min(view.nbytes, offset + length)
        start = -(-offset // mmap.PAGESIZE) * mmap.PAGESIZE
        # whole pages only, but the mapping's last page may be partial
        stop = end if end == view.nbytes else end // mmap.PAGESIZE * mmap.PAGESIZE
        if stop > start:
            mapped.madvise(advice, start, stop - start)

    def close(self) -> None:
        """Drop every buffer (an mmap is unmapped once nothing else holds a view of it)."""
        with self._lock:
            self._views.clear()


def view_files(path: Path, root: Path) -> ModelFiles:
    """A :class:`ModelFiles` for parsing one file on its own (membership: that file's directory)."""
    return ModelFiles(root, [relative_posix(path, root)], single=True, follow_symlinks=True)


def view_reader(view: memoryview, offset: int, length: int) -> Callable[[], memoryview]:
    return lambda: view[offset : offset + length]


def _is_pytorch_archive(head: memoryview) -> bool:
    if bytes(head[: len(LEGACY_TORCH_MAGIC)]) == LEGACY_TORCH_MAGIC:
        return True
    if bytes(head[: len(ZIP_MAGIC)]) != ZIP_MAGIC:
        return False
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(head)) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except Exception:  # a corrupt zip is simply not a torch archive here
        return False


def detect_format(path: Path, data: memoryview | None = None) -> str | None:
    """``"onnx"``, ``"safetensors"``, ``"pytorch"`` or None (hash the file whole).

    By suffix: ``.onnx``, ``.safetensors``, ``.pt``/``.pth``/``.ckpt``; a ``.bin`` file counts
    as PyTorch only when it is a torch zip archive or a legacy torch pickle (ONNX external data
    is often called ``*.bin`` too). ``data``: the file's bytes when already read.
    """
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix == ".safetensors":
        return "safetensors"
    if suffix in _PYTORCH_SUFFIXES:
        return "pytorch"
    if suffix == ".bin":
        return "pytorch" if _is_pytorch_archive(map_file(path) if data is None else data) else None
    return None


def relative_posix(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError as error:
        raise FormatError(f"{path} is not inside the model root {root}") from error


def parse_model_file(
    path: Path, *, root: Path, files: ModelFiles | None = None
) -> ParsedModel | None:
    """Parse one file; None when it is not a model file (it is then hashed whole).

    ``root`` is the model root: tensor locations are given relative to it. ``files``: where the
    bytes come from (the model's :class:`ModelFiles`, so each file is read once); by default
    the file is opened here. Raises FormatError / UnsafeModelError (exit code 2) on malformed
    or unsafe input.
    """
    if files is None:
        files = view_files(path, root)
    rel = relative_posix(path, root)
    data = files.view(rel)
    kind = detect_format(path, data)
    if kind == "onnx":
        from modelguard.formats.onnx import parse_onnx

        return parse_onnx(path, root=root, files=files)
    if kind == "safetensors":
        from modelguard.formats.safetensors import parse_safetensors

        return parse_safetensors(path, root=root, view=data)
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
    "ModelFiles",
    "ParsedModel",
    "TensorSlice",
    "detect_format",
    "expected_nbytes",
    "map_file",
    "parse_model_file",
]
