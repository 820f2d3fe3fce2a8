"""safetensors adapter: our own bounded header parser; tensors are zero-copy mmap views.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.formats.safetensors import parse_safetensors
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"b": np.zeros(3, np.int8)}, d / "m.safetensors", metadata={"k": "v"})
>>> m = parse_safetensors(d / "m.safetensors", root=d)
>>> m.structure
b'{"format":"safetensors","metadata":{"k":"v"},"tensors":[{"dtype":"int8","name":"b","shape":[3]}]}'

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data section.
Refused (FormatError): N > 100 MB or past the end of the file, invalid UTF-8/JSON, duplicate
names, unknown dtypes, offsets out of range, overlapping or leaving gaps, byte length not equal
to dtype size times element count, a non-string ``__metadata__``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import rfc8785

from modelguard.errors import FormatError
from modelguard.formats import (
    ParsedModel,
    TensorSlice,
    expected_nbytes,
    map_file,
    relative_posix,
    sorted_unique,
    view_reader,
)

MAX_HEADER_BYTES = 100_000_000

SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
}


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"duplicate key {key!r} in header")
        out[key] = value
    return out


def _is_nonneg_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def read_header(view: memoryview, where: str) -> tuple[int, dict[str, Any]]:
    """(data section start, parsed header) after every length and offset check."""
    size = view.nbytes
    if size < 8:
        raise FormatError("truncated: shorter than the 8-byte header length", path=where)
    (header_len,) = struct.unpack("<Q", view[:8])
    if header_len > MAX_HEADER_BYTES:
        raise FormatError(
            f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit", path=where
        )
    if 8 + header_len > size:
        raise FormatError(
            f"truncated: header length {header_len} runs past the end of the file ({size} bytes)",
            path=where,
        )
    try:
        header = json.loads(
            bytes(view[8 : 8 + header_len]).decode("utf-8"), object_pairs_hook=_no_duplicates
        )
    except FormatError as error:
        raise FormatError(error.message, path=where) from error
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FormatError(
            f"header is not valid UTF-8 JSON: {str(error).splitlines()[0]}", path=where
        ) from error
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object", path=where)
    return 8 + header_len, header


def parse_safetensors(path: Path, *, root: Path, view: memoryview | None = None) -> ParsedModel:
    where = str(path)
    rel = relative_posix(path, root)
    view = map_file(path) if view is None else view
    data_start, header = read_header(view, where)
    data_len = view.nbytes - data_start

    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FormatError("__metadata__ must map strings to strings", path=where)

    entries: list[tuple[int, int, str]] = []
    tensors: list[TensorSlice] = []
    described: list[dict[str, Any]] = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(
                f"tensor {name!r}: entry needs exactly dtype, shape, data_offsets", path=where
            )
        dtype = SAFETENSORS_DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dtype is None:
            raise FormatError(f"tensor {name!r}: unsupported dtype {info['dtype']!r}", path=where)
        shape_raw, offsets = info["shape"], info["data_offsets"]
        if not isinstance(shape_raw, list) or not all(_is_nonneg_int(d) for d in shape_raw):
            raise FormatError(
                f"tensor {name!r}: shape must be a list of non-negative integers", path=where
            )
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_is_nonneg_int(o) for o in offsets)
        ):
            raise FormatError(
                f"tensor {name!r}: data_offsets must be two non-negative integers", path=where
            )
        begin, end = offsets
        if begin > end or end > data_len:
            raise FormatError(
                f"tensor {name!r}: data_offsets [{begin}, {end}] out of range (data section is {data_len} bytes)",
                path=where,
            )
        shape = tuple(shape_raw)
        nbytes = expected_nbytes(dtype, shape)
        if end - begin != nbytes:
            raise FormatError(
                f"tensor {name!r}: {end - begin} bytes but {dtype}{list(shape)} needs {nbytes}",
                path=where,
            )
        entries.append((begin, end, name))
        offset = data_start + begin
        tensors.append(
            TensorSlice(
                name, dtype, shape, nbytes, (rel, offset, nbytes), view_reader(view, offset, nbytes)
            )
        )
        described.append({"name": name, "dtype": dtype, "shape": list(shape)})

    position = 0
    for begin, end, name in sorted(entries):
        if begin < position:
            raise FormatError(f"tensor {name!r}: data_offsets overlap another tensor", path=where)
        if begin > position:
            raise FormatError(
                f"tensor {name!r}: gap of {begin - position} unaccounted bytes before it",
                path=where,
            )
        position = end
    if position != data_len:
        raise FormatError(f"{data_len - position} trailing bytes after the last tensor", path=where)

    described.sort(key=lambda d: str(d["name"]))
    structure = rfc8785.dumps(
        {
            "format": "safetensors",
            "metadata": metadata,
            "tensors": described,
        }
    )
    return ParsedModel("safetensors", structure, sorted_unique(tensors, path))
