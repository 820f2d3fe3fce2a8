"""PyTorch checkpoint adapter: a pickle opcode scan first, then ``torch.load(weights_only=True)``.

>>> import torch, tempfile, pathlib
>>> from modelguard.formats.pytorch import parse_pytorch, scan_pickle
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> torch.save({"w": torch.ones(2, dtype=torch.bfloat16)}, d / "m.pt")
>>> [(t.name, t.dtype, t.shape) for t in parse_pytorch(d / "m.pt", root=d).tensors]
[('w', 'bfloat16', (2,))]
>>> import io, pickle, os
>>> class Evil:
...     def __reduce__(self):
...         return (os.system, ("echo hi",))
>>> scan_pickle(io.BytesIO(pickle.dumps(Evil())), "evil.pt")
Traceback (most recent call last):
...
modelguard.errors.UnsafeModelError: evil.pt: pickle imports posix.system, which is not allowed ...

Accepted containers: the zip archive ``torch.save`` writes (every member named ``*.pkl`` in
any letter case is scanned, since torch looks records up case-insensitively; members whose
names differ only in case are refused as ambiguous; TorchScript archives are refused) and the
legacy format (a sequence of five pickles followed by raw storages). Every GLOBAL,
STACK_GLOBAL and INST import must be on :data:`ALLOWED_GLOBALS`; extension-registry opcodes
and imports whose names are not plain string constants are refused. The file is read once
(one descriptor, regular files only) and only then are those same bytes given to
``torch.load(weights_only=True)``, so nothing in it is executed and nothing is re-read. Nested dicts/lists of tensors are flattened to dotted
names; everything else goes into the structure as canonical JSON.
"""

from __future__ import annotations

import io
import math
import pickletools
import sys
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import rfc8785

from modelguard.errors import FormatError, ModelGuardError, UnsafeModelError
from modelguard.formats import (
    LEGACY_TORCH_MAGIC,
    ZIP_MAGIC,
    ParsedModel,
    TensorSlice,
    sorted_unique,
)
from modelguard.safeio import open_regular, read_all

_STORAGES = [
    "FloatStorage",
    "DoubleStorage",
    "HalfStorage",
    "BFloat16Storage",
    "LongStorage",
    "IntStorage",
    "ShortStorage",
    "CharStorage",
    "ByteStorage",
    "BoolStorage",
    "ComplexFloatStorage",
    "ComplexDoubleStorage",
    "UntypedStorage",
]
_DTYPES = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
    "complex64",
    "complex128",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
]

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("_codecs", "encode")]
    + [
        ("torch._utils", n)
        for n in (
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
        )
    ]
    + [("torch._tensor", "_rebuild_from_type_v2"), ("torch.nn.parameter", "Parameter")]
    + [("torch", n) for n in _STORAGES + _DTYPES]
    + [("torch.storage", "UntypedStorage")]
    + [
        (m, n)
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    ]
    + [("numpy", "ndarray"), ("numpy", "dtype")]
    + [
        ("numpy.dtypes", n)
        for n in (
            "Float32DType",
            "Float64DType",
            "Float16DType",
            "Int64DType",
            "Int32DType",
            "Int16DType",
            "Int8DType",
            "UInt8DType",
            "BoolDType",
        )
    ]
)

MAX_PICKLE_BYTES = 1 << 30
_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
}
_MEMO_GET = {"GET", "BINGET", "LONG_BINGET"}
_MEMO_PUT = {"PUT", "BINPUT", "LONG_BINPUT"}
_REFUSED_OPS = {"EXT1", "EXT2", "EXT4"}


class _BoundedReader:
    """File-like for pickletools: refuses any read longer than what is left (no 2**60 allocations)."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream, self._left = stream, limit

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self._left:
            raise FormatError(f"pickle asks for {n} bytes, only {self._left} remain")
        data = self._stream.read(n)
        self._left -= len(data)
        return data

    def readline(self) -> bytes:
        line = self._stream.readline(min(self._left, 1 << 20))
        self._left -= len(line)
        return line


def scan_pickle(stream: IO[bytes], where: str, *, limit: int = MAX_PICKLE_BYTES) -> None:
    """Walk one pickle's opcodes up to STOP; refuse imports outside :data:`ALLOWED_GLOBALS`."""
    values: list[object] = []  # what recent opcodes pushed; only strings matter for STACK_GLOBAL
    memo: dict[int, object] = {}
    reader = _BoundedReader(stream, limit)
    try:
        for opcode, arg, _pos in pickletools.genops(reader):  # type: ignore[arg-type]
            name = opcode.name
            if name in _STRING_OPS:
                values.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name in _MEMO_GET:
                values.append(memo.get(int(arg)))  # type: ignore[arg-type]
            elif name in _MEMO_PUT:
                memo[int(arg)] = values[-1] if values else None  # type: ignore[arg-type]
            elif name == "MEMOIZE":
                memo[len(memo)] = values[-1] if values else None
            elif name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                _check_import(module, attr, where)
                values.append(None)
            elif name == "STACK_GLOBAL":
                module_v, attr_v = (values[-2], values[-1]) if len(values) >= 2 else (None, None)
                if not isinstance(module_v, str) or not isinstance(attr_v, str):
                    raise UnsafeModelError(
                        "pickle STACK_GLOBAL import whose name is not a plain string constant",
                        path=where,
                    )
                _check_import(module_v, attr_v, where)
                values.append(None)
            elif name in _REFUSED_OPS:
                raise UnsafeModelError(f"pickle uses the extension registry ({name})", path=where)
            else:
                values.append(None)
            if len(values) > 64:
                del values[:-2]
    except FormatError as error:
        raise FormatError(error.message, path=where) from error
    except ModelGuardError:
        raise
    except Exception as error:  # pickletools and zip streams raise assorted errors on bad bytes
        raise FormatError(f"malformed or truncated pickle: {error}", path=where) from error


def _check_import(module: str, attr: str, where: str) -> None:
    if (module, attr) not in ALLOWED_GLOBALS:
        raise UnsafeModelError(
            f"pickle imports {module}.{attr}, which is not allowed (only torch tensor/storage "
            "rebuilders, OrderedDict and numpy arrays are); refusing to load",
            path=where,
        )


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """The member name as stored (torch's zip reader compares these bytes, not Python's str)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


def _ascii_lower(name: bytes) -> bytes:
    return name.lower()  # bytes.lower() folds ASCII only, as miniz's MZ_TOLOWER does


def torch_pickle_members(archive: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    """The pickle records to scan: a superset of what ``torch.load`` reads, never fewer.

    torch's reader (miniz) looks records up by name *case-insensitively* under the
    archive's first directory, so ``archive/DATA.PKL`` is read as ``archive/data.pkl``.
    Every member whose name ends in ``.pkl`` in any case is returned; members whose names
    are equal in any case are refused (which one torch reads is unspecified), and so is an
    archive without exactly one ``<prefix>/data.pkl``.
    """
    infos = archive.infolist()
    if not infos:
        raise FormatError("empty zip archive is not a torch checkpoint", path=where)
    seen: dict[bytes, str] = {}
    for info in infos:
        folded = _ascii_lower(_raw_name(info))
        if folded in seen:
            raise UnsafeModelError(
                f"zip members {seen[folded]!r} and {info.orig_filename!r} have the same name in"
                " a case-insensitive lookup (torch would read one of them): refused as ambiguous",
                path=where,
            )
        seen[folded] = info.orig_filename
    first = _raw_name(infos[0])
    if b"/" not in first:
        raise FormatError("zip archive's first member is not in a directory", path=where)
    data_pkl = _ascii_lower(first.split(b"/", 1)[0]) + b"/data.pkl"
    if data_pkl not in seen:
        raise FormatError("zip archive without data.pkl is not a torch checkpoint", path=where)
    return [info for info in infos if _ascii_lower(_raw_name(info)).endswith(b".pkl")]


def _scan_bytes(data: bytes, where: str) -> bool:
    """Scan every pickle in the file's bytes; True for a zip archive."""
    head = data[: len(LEGACY_TORCH_MAGIC)]
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = [n.lower() for n in archive.namelist()]
                if any(n.split("/", 1)[-1].startswith("code/") for n in names):
                    raise FormatError(
                        "TorchScript archives are not supported (they contain code)", path=where
                    )
                for info in torch_pickle_members(archive, where):
                    if info.file_size > MAX_PICKLE_BYTES:
                        raise FormatError(
                            f"{info.filename} is {info.file_size} bytes (limit {MAX_PICKLE_BYTES})",
                            path=where,
                        )
                    with archive.open(info) as member:
                        scan_pickle(member, f"{where}:{info.filename}", limit=info.file_size)
        except ModelGuardError:
            raise
        except Exception as error:  # zipfile raises assorted errors on corrupt archives
            raise FormatError(f"bad zip archive: {error}", path=where) from error
        return True
    stream = io.BytesIO(data)
    if head.startswith(LEGACY_TORCH_MAGIC):
        for _ in range(5):  # magic number, protocol version, sys info, the data, storage keys
            scan_pickle(stream, where, limit=len(data) - stream.tell())
    else:
        scan_pickle(
            stream, where, limit=len(data)
        )  # a bare pickle: scanned, then loaded or refused
    return False


def _tensor_bytes(tensor: Any) -> memoryview:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    data = flat.view(torch.uint8).numpy()
    if sys.byteorder == "big" and flat.element_size() > 1:
        data = data.reshape(-1, flat.element_size())[:, ::-1].copy()
    return memoryview(data).cast("B")


def _dtype_name(tensor: Any) -> str:
    name = str(tensor.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise FormatError(f"unsupported tensor dtype {name}")
    return name


def _flatten(value: Any, prefix: str, tensors: dict[str, Any], where: str) -> Any:
    """Skeleton for the structure (tensors replaced by references); tensors collected by name."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_quantized:
            raise FormatError(f"tensor {prefix!r}: only dense tensors are supported", path=where)
        tensors[prefix] = value
        return {"tensor": prefix}
    if isinstance(value, Mapping):
        return {
            "dict": [
                [str(k), _flatten(v, f"{prefix}.{k}" if prefix else str(k), tensors, where)]
                for k, v in value.items()
            ]
        }
    if isinstance(value, list | tuple):
        kind = "list" if isinstance(value, list) else "tuple"
        return {
            kind: [
                _flatten(v, f"{prefix}.{i}" if prefix else str(i), tensors, where)
                for i, v in enumerate(value)
            ]
        }
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < 2**53 else {"int": str(value)}
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": repr(value)}
    return {"repr": repr(value)}


def parse_pytorch(path: Path, *, root: Path) -> ParsedModel:

    import torch

    where = str(path)
    # One read through one descriptor: the bytes scanned are the bytes torch.load gets.
    with open_regular(path, what="model file") as handle:
        data = read_all(handle, what="model file")
    is_zip = _scan_bytes(data, where)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # any failure to load untrusted bytes is bad input, not a bug
        reason = (
            str(error).strip().split(". ")[0].splitlines()[0]
            if str(error).strip()
            else type(error).__name__
        )
        raise FormatError(
            f"torch.load(weights_only=True) refused it: {reason}", path=where
        ) from error
    found: dict[str, Any] = {}
    try:
        skeleton = _flatten(loaded, "", found, where)
    except RecursionError as error:
        raise FormatError("checkpoint nests too deeply", path=where) from error
    slices = []
    for name, tensor in found.items():
        dtype = _dtype_name(tensor)
        nbytes = tensor.numel() * tensor.element_size()
        slices.append(
            TensorSlice(
                name,
                dtype,
                tuple(tensor.shape),
                nbytes,
                None,
                (lambda t: lambda: _tensor_bytes(t))(tensor),
            )
        )
    structure = rfc8785.dumps(
        {"format": "pytorch", "container": "zip" if is_zip else "legacy", "tree": skeleton}
    )
    return ParsedModel("pytorch", structure, sorted_unique(slices, path))
