"""ONNX adapter: walks the protobuf wire format to find initializer bytes without copying them.

>>> import numpy as np, onnx, tempfile, pathlib
>>> from onnx import helper, numpy_helper
>>> from modelguard.formats.onnx import parse_onnx
>>> w = numpy_helper.from_array(np.ones((2, 2), np.float32), "w")
>>> g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])],
...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])], [w])
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> onnx.save(helper.make_model(g), d / "m.onnx")
>>> [(t.name, t.dtype, t.shape) for t in parse_onnx(d / "m.onnx", root=d).tensors]
[('w', 'float32', (2, 2))]

How it reads a file (see docs/formats.md):

1. mmap the file; walk ``ModelProto.graph`` (field 7) -> ``GraphProto.initializer`` (field 5)
   -> ``TensorProto.raw_data`` (field 9) in the wire format, recording each raw_data byte range
   and re-emitting the model without those payloads (so big weights are never copied).
2. Parse the small stripped model with protobuf; every main-graph initializer becomes a tensor:
   raw_data (a verbatim file range), external data (a verbatim range of a checked file inside
   the model directory), or typed repeated fields (decoded to little-endian bytes).
3. Structure = the stripped model with every tensor-data field, ``data_location`` and
   ``external_data`` cleared, serialized by protobuf's deterministic serializer: nodes,
   attributes (Constant values and subgraphs included), inputs/outputs, opsets, metadata and the
   initializers' names, dtypes and dims, but no weight bytes and no storage layout.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np

from modelguard.errors import FormatError, UnsafeModelError
from modelguard.formats import (
    ParsedModel,
    TensorSlice,
    expected_nbytes,
    map_file,
    relative_posix,
    sorted_unique,
    view_reader,
)

# onnx.TensorProto.DataType -> canonical dtype (STRING and UNDEFINED have no fixed-size bytes)
ONNX_DTYPES: dict[int, str] = {
    1: "float32",
    2: "uint8",
    3: "int8",
    4: "uint16",
    5: "int16",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
    12: "uint32",
    13: "uint64",
    14: "complex64",
    15: "complex128",
    16: "bfloat16",
    17: "float8_e4m3fn",
    18: "float8_e4m3fnuz",
    19: "float8_e5m2",
    20: "float8_e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4_e2m1fn",
    24: "float8_e8m0fnu",
}
_STRING = 8
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


# --- protobuf wire format -------------------------------------------------------------------


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise FormatError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FormatError("protobuf varint longer than 10 bytes")


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) for each field in a message."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FormatError("protobuf field number 0")
        if wire == 0:
            _, value_end = _read_varint(buf, pos, end)
        elif wire == 1:
            value_end = pos + 8
        elif wire == 2:
            length, pos = _read_varint(buf, pos, end)
            value_end = pos + length
        elif wire == 5:
            value_end = pos + 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        if value_end > end:
            raise FormatError("truncated protobuf message (a field runs past its end)")
        yield number, wire, field_start, pos, value_end
        pos = value_end


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _strip_tensor(buf: memoryview, start: int, end: int) -> tuple[bytes, tuple[int, int] | None]:
    out = bytearray()
    raw: tuple[int, int] | None = None
    for number, wire, field_start, value_start, value_end in _fields(buf, start, end):
        if number == _TENSOR_RAW_DATA and wire == 2:
            if raw is not None:
                raise FormatError("an initializer has more than one raw_data field")
            raw = (value_start, value_end - value_start)
        else:
            out += buf[field_start:value_end]
    return bytes(out), raw


def _strip_graph(
    buf: memoryview, start: int, end: int, raws: list[tuple[int, int] | None]
) -> bytes:
    out = bytearray()
    for number, wire, field_start, value_start, value_end in _fields(buf, start, end):
        if number == _GRAPH_INITIALIZER and wire == 2:
            tensor, raw = _strip_tensor(buf, value_start, value_end)
            raws.append(raw)
            out += _length_delimited(number, tensor)
        else:
            out += buf[field_start:value_end]
    return bytes(out)


def strip_raw_data(buf: memoryview) -> tuple[bytes, list[tuple[int, int] | None]]:
    """The model without main-graph raw_data payloads, and each initializer's raw_data range."""
    out = bytearray()
    raws: list[tuple[int, int] | None] = []
    seen_graph = False
    for number, wire, field_start, value_start, value_end in _fields(buf, 0, buf.nbytes):
        if number == _MODEL_GRAPH and wire == 2:
            if seen_graph:
                raise FormatError("more than one graph field in the model")
            seen_graph = True
            out += _length_delimited(number, _strip_graph(buf, value_start, value_end, raws))
        else:
            out += buf[field_start:value_end]
    return bytes(out), raws


# --- external data ----------------------------------------------------------------------------


def check_external_path(location: str, model_dir: Path, where: str) -> tuple[Path, PurePosixPath]:
    """Resolve an external-data location inside ``model_dir`` or refuse it (UnsafeModelError)."""
    if not location or "\x00" in location:
        raise FormatError(f"invalid external data location {location!r}", path=where)
    posix = location.replace("\\", "/")
    if posix.startswith("/") or os.path.isabs(location) or PureWindowsPath(location).drive:
        raise UnsafeModelError(
            f"external data location {location!r} is an absolute path", path=where
        )
    parts = PurePosixPath(posix).parts
    if not parts:
        raise FormatError(f"invalid external data location {location!r}", path=where)
    if ".." in parts:
        raise UnsafeModelError(
            f"external data location {location!r} escapes the model directory", path=where
        )
    current = model_dir
    for part in parts:
        current = current / part
        try:
            info = os.lstat(current)
        except OSError as error:
            raise FormatError(
                f"external data file {location!r}: {error.strerror or error}", path=where
            ) from error
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeModelError(
                f"external data location {location!r} goes through a symlink", path=where
            )
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeModelError(
            f"external data location {location!r} is not a regular file", path=where
        )
    if info.st_nlink > 1:
        raise UnsafeModelError(
            f"external data file {location!r} is a hardlink (link count {info.st_nlink})",
            path=where,
        )
    return current, PurePosixPath(*parts)


def _external_int(entries: dict[str, str], key: str, name: str, where: str) -> int | None:
    if key not in entries:
        return None
    try:
        value = int(entries[key])
    except ValueError as error:
        raise FormatError(
            f"initializer {name!r}: external data {key} {entries[key]!r} is not an integer",
            path=where,
        ) from error
    if value < 0:
        raise FormatError(f"initializer {name!r}: negative external data {key}", path=where)
    return value


# --- the adapter ------------------------------------------------------------------------------


def _canonical_from_typed(tensor: object, dtype: str, name: str, where: str) -> memoryview:
    from onnx import numpy_helper

    if dtype in ("int4", "uint4", "float4_e2m1fn"):
        raise FormatError(
            f"initializer {name!r}: packed 4-bit data outside raw_data is not supported", path=where
        )
    try:
        array = numpy_helper.to_array(tensor)  # type: ignore[arg-type]
    except Exception as error:  # onnx raises assorted errors on inconsistent typed fields
        raise FormatError(
            f"initializer {name!r}: cannot decode typed data: {error}", path=where
        ) from error
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return memoryview(array.tobytes())


def _constant_reader(data: memoryview) -> Callable[[], memoryview]:
    return lambda: data


def parse_onnx(path: Path, *, root: Path) -> ParsedModel:
    import onnx
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

    where = str(path)
    rel = relative_posix(path, root)
    rel_dir = PurePosixPath(rel).parent
    view = map_file(path)
    try:
        stripped, raws = strip_raw_data(view)
    except FormatError as error:
        raise FormatError(error.message, path=where) from error
    model = onnx.ModelProto()
    try:
        model.ParseFromString(stripped)
    except DecodeError as error:
        raise FormatError(f"not a valid ONNX protobuf: {error}", path=where) from error
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise FormatError("not an ONNX model (no ir_version or no graph)", path=where)
    initializers = model.graph.initializer
    if len(initializers) != len(raws):
        raise FormatError("initializer count changed between wire walk and parse", path=where)

    external_views: dict[Path, memoryview] = {}
    tensors: list[TensorSlice] = []
    for tensor, raw in zip(initializers, raws, strict=True):
        name = tensor.name
        if not isinstance(name, str):  # protobuf hands back bytes for invalid UTF-8 (proto2)
            raise FormatError(f"initializer name {name!r} is not valid UTF-8", path=where)
        if tensor.data_type == _STRING:
            continue  # string tensors have no fixed-size bytes: they stay in the structure
        dtype = ONNX_DTYPES.get(tensor.data_type)
        if dtype is None:
            raise FormatError(
                f"initializer {name!r}: unsupported data type {tensor.data_type}", path=where
            )
        if tensor.HasField("segment"):
            raise FormatError(
                f"initializer {name!r}: segmented tensors are not supported", path=where
            )
        shape = tuple(int(d) for d in tensor.dims)
        nbytes = expected_nbytes(dtype, shape)
        reader: Callable[[], memoryview]
        location: tuple[str, int, int] | None
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            if raw is not None:
                raise FormatError(
                    f"initializer {name!r}: both raw_data and external data", path=where
                )
            entries = {entry.key: entry.value for entry in tensor.external_data}
            if not all(isinstance(x, str) for pair in entries.items() for x in pair):
                raise FormatError(
                    f"initializer {name!r}: external data entries are not valid UTF-8", path=where
                )
            target, inside = check_external_path(entries.get("location", ""), path.parent, where)
            offset = _external_int(entries, "offset", name, where) or 0
            length = _external_int(entries, "length", name, where)
            size = os.stat(target).st_size
            if length is None:
                length = size - offset
            if offset + length > size:
                raise FormatError(
                    f"initializer {name!r}: external data offset {offset} + length {length} is past the end of "
                    f"{inside.as_posix()!r} ({size} bytes)",
                    path=where,
                )
            if length != nbytes:
                raise FormatError(
                    f"initializer {name!r}: external length {length}, {dtype}{list(shape)} needs {nbytes}",
                    path=where,
                )
            if target not in external_views:
                external_views[target] = map_file(target)
            location = ((rel_dir / inside).as_posix(), offset, length)
            reader = view_reader(external_views[target], offset, length)
        elif raw is not None:
            offset, length = raw
            if length != nbytes:
                raise FormatError(
                    f"initializer {name!r}: raw_data has {length} bytes, {dtype}{list(shape)} needs {nbytes}",
                    path=where,
                )
            location = (rel, offset, length)
            reader = view_reader(view, offset, length)
        else:
            data = _canonical_from_typed(tensor, dtype, name, where)
            if data.nbytes != nbytes:
                raise FormatError(
                    f"initializer {name!r}: typed data has {data.nbytes} bytes, needs {nbytes}",
                    path=where,
                )
            location = None
            reader = _constant_reader(data)
        for field in _DATA_FIELDS:
            tensor.ClearField(field)
        tensor.ClearField("external_data")
        tensor.ClearField("data_location")
        tensors.append(TensorSlice(name, dtype, shape, nbytes, location, reader))

    structure = model.SerializeToString(deterministic=True)
    return ParsedModel("onnx", structure, sorted_unique(tensors, path))


# --- explaining a structure change -----------------------------------------------------------


def _node_label(index: int, node: Any) -> str:
    return (
        f"node #{index} {node.name!r} ({node.op_type})"
        if node.name
        else f"node #{index} ({node.op_type})"
    )


def _value_infos(values: Any) -> list[str]:
    return [f"{v.name}:{v.type.SerializeToString(deterministic=True).hex()}" for v in values]


def _opsets(model: Any) -> list[tuple[str, int]]:
    return sorted((o.domain, o.version) for o in model.opset_import)


def _meta(model: Any) -> list[tuple[str, str]]:
    return sorted((p.key, p.value) for p in model.metadata_props)


def _inits(model: Any) -> list[tuple[str, int, list[int]]]:
    return [(t.name, t.data_type, list(t.dims)) for t in model.graph.initializer]


def describe_structure_change(before: bytes, after: bytes, *, limit: int = 20) -> list[str]:
    """Lines naming what differs between two ONNX structures (nodes, edges, I/O, opsets, metadata)."""
    import onnx

    a, b = onnx.ModelProto.FromString(before), onnx.ModelProto.FromString(after)
    lines: list[str] = []
    if _opsets(a) != _opsets(b):
        lines.append(f"opsets {_opsets(a)} -> {_opsets(b)}")
    if a.ir_version != b.ir_version:
        lines.append(f"ir_version {a.ir_version} -> {b.ir_version}")
    if _meta(a) != _meta(b) or (a.producer_name, a.producer_version, a.doc_string) != (
        b.producer_name,
        b.producer_version,
        b.doc_string,
    ):
        lines.append("model metadata changed")
    for label, field in (("graph inputs", "input"), ("graph outputs", "output")):
        names_a = _value_infos(getattr(a.graph, field))
        names_b = _value_infos(getattr(b.graph, field))
        if names_a != names_b:
            lines.append(
                f"{label} {[n.split(':')[0] for n in names_a]} -> {[n.split(':')[0] for n in names_b]}"
                + (
                    " (types differ)"
                    if [n.split(":")[0] for n in names_a] == [n.split(":")[0] for n in names_b]
                    else ""
                )
            )
    if _inits(a) != _inits(b):
        lines.append("initializer names, types or shapes changed")
    nodes_a, nodes_b = list(a.graph.node), list(b.graph.node)
    for index in range(max(len(nodes_a), len(nodes_b))):
        if index >= len(nodes_a):
            lines.append(f"{_node_label(index, nodes_b[index])} added")
        elif index >= len(nodes_b):
            lines.append(f"{_node_label(index, nodes_a[index])} removed")
        elif nodes_a[index] != nodes_b[index]:
            na, nb = nodes_a[index], nodes_b[index]
            what = []
            if na.op_type != nb.op_type or na.domain != nb.domain:
                what.append(f"op {na.op_type} -> {nb.op_type}")
            if list(na.input) != list(nb.input):
                what.append(f"inputs {list(na.input)} -> {list(nb.input)}")
            if list(na.output) != list(nb.output):
                what.append(f"outputs {list(na.output)} -> {list(nb.output)}")
            if [x.SerializeToString(deterministic=True) for x in na.attribute] != [
                x.SerializeToString(deterministic=True) for x in nb.attribute
            ]:
                what.append("attributes changed")
            if na.name != nb.name:
                what.append(f"name {na.name!r} -> {nb.name!r}")
            lines.append(f"{_node_label(index, na)}: {', '.join(what) or 'changed'}")
        if len(lines) >= limit:
            lines.append("... (more differences not listed)")
            break
    if not lines:
        lines.append("graph changed (value_info, functions or other fields)")
    return lines
