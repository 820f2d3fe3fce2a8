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

1. Take the file's buffer from the model's :class:`~modelguard.formats.ModelFiles` (read
   once); walk ``ModelProto.graph`` (field 7) -> ``GraphProto.initializer`` (field 5) ->
   ``TensorProto.raw_data`` (field 9) in the wire format, recording each raw_data byte range
   and re-emitting the model without those payloads (so big weights are never copied).
2. Parse the small stripped model with protobuf; every main-graph initializer becomes a tensor:
   raw_data (a verbatim file range), external data (a verbatim range of a checked file of the
   signed set), or typed repeated fields (decoded to little-endian bytes).
3. Every other TensorProto (:func:`nested_tensors`: sparse initializers, node attributes,
   subgraphs at any depth, functions, training graphs) with external data becomes a tensor
   too, named by its place (``node[0]:value``), under the same confinement rules.
4. Structure = the stripped model with the main-graph initializers' tensor-data fields,
   ``data_location`` and ``external_data`` cleared, serialized by protobuf's deterministic
   serializer: nodes, attributes (Constant values and subgraphs included), inputs/outputs,
   opsets, metadata and the initializers' names, dtypes and dims, but no main-graph weight
   bytes and no storage layout.

:func:`runtime_graph` rebuilds the model for ONNX Runtime from the same buffers, with no file
reference left (docs/runtime.md).
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
    ModelFiles,
    ParsedModel,
    TensorSlice,
    expected_nbytes,
    relative_posix,
    sorted_unique,
    view_files,
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
            f"tensor {name!r}: external data {key} {entries[key]!r} is not an integer",
            path=where,
        ) from error
    if value < 0:
        raise FormatError(f"tensor {name!r}: negative external data {key}", path=where)
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


def _node_tensors(node: Any, scope: str) -> Iterator[tuple[str, Any]]:
    for attribute in node.attribute:
        yield from _attribute_tensors(attribute, f"{scope}:{attribute.name}")


def _attribute_tensors(attribute: Any, base: str) -> Iterator[tuple[str, Any]]:
    if attribute.HasField("t"):
        yield base, attribute.t
    for k, tensor in enumerate(attribute.tensors):
        yield f"{base}[{k}]", tensor
    if attribute.HasField("sparse_tensor"):
        yield f"{base}.values", attribute.sparse_tensor.values
        yield f"{base}.indices", attribute.sparse_tensor.indices
    for k, sparse in enumerate(attribute.sparse_tensors):
        yield f"{base}[{k}].values", sparse.values
        yield f"{base}[{k}].indices", sparse.indices
    if attribute.HasField("g"):
        yield from _graph_tensors(attribute.g, f"{base}/", main=False)
    for k, graph in enumerate(attribute.graphs):
        yield from _graph_tensors(graph, f"{base}[{k}]/", main=False)


def _graph_tensors(graph: Any, scope: str, *, main: bool) -> Iterator[tuple[str, Any]]:
    if not main:
        for k, tensor in enumerate(graph.initializer):
            yield f"{scope}initializer[{k}]", tensor
    for k, sparse in enumerate(graph.sparse_initializer):
        yield f"{scope}sparse_initializer[{k}].values", sparse.values
        yield f"{scope}sparse_initializer[{k}].indices", sparse.indices
    for i, node in enumerate(graph.node):
        yield from _node_tensors(node, f"{scope}node[{i}]")


def nested_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """(label, TensorProto) for every tensor of the model that is not a main-graph initializer.

    Sparse initializers, node attributes (Constant values, tensor lists, sparse tensors), the
    initializers and nodes of subgraphs at any depth (If/Loop/Scan bodies), functions (their
    nodes and attribute defaults) and training graphs. Labels name where the tensor sits, e.g.
    ``node[3]:then_branch/initializer[0]``; they are the tensor names the manifest records.
    """
    yield from _graph_tensors(model.graph, "", main=True)
    for function in model.functions:
        scope = f"function[{function.domain}:{function.name}]/"
        for i, node in enumerate(function.node):
            yield from _node_tensors(node, f"{scope}node[{i}]")
        for attribute in function.attribute_proto:
            yield from _attribute_tensors(attribute, f"{scope}attribute:{attribute.name}")
    for k, info in enumerate(model.training_info):
        yield from _graph_tensors(
            info.initialization, f"training_info[{k}].initialization/", main=False
        )
        yield from _graph_tensors(info.algorithm, f"training_info[{k}].algorithm/", main=False)


class _Walk:
    """One ONNX file walked: the stripped model, and a TensorSlice per tensor with bytes of its own."""

    def __init__(self, path: Path, root: Path, files: ModelFiles, *, loading: bool = False) -> None:
        import onnx
        from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

        self.path, self.root, self.files = path, root, files
        # loading: the bytes go to ONNX Runtime, so every file read must be a private copy;
        # in private mode the same rule already holds while verifying
        self.loading = loading or files.private is not False
        self.where = where = str(path)
        self.rel = relative_posix(path, root)
        if loading and not files.is_private(self.rel):
            raise UnsafeModelError(
                "not held in private memory: load only what verify_and_hold returned", path=where
            )
        self.rel_dir = PurePosixPath(self.rel).parent
        view = files.view(self.rel)
        try:
            stripped, raws = strip_raw_data(view)
        except FormatError as error:
            raise FormatError(error.message, path=where) from error
        model = onnx.ModelProto()
        try:
            model.ParseFromString(stripped)
        except (DecodeError, RecursionError) as error:
            raise FormatError(f"not a valid ONNX protobuf: {error}", path=where) from error
        if model.ir_version <= 0 or not model.HasField("graph"):
            raise FormatError("not an ONNX model (no ir_version or no graph)", path=where)
        initializers = model.graph.initializer
        if len(initializers) != len(raws):
            raise FormatError("initializer count changed between wire walk and parse", path=where)
        self.model = model
        # (label, proto, main-graph initializer?, the TensorSlice or None when it has no bytes)
        self.found: list[tuple[str, Any, bool, TensorSlice | None]] = []
        for tensor, raw in zip(initializers, raws, strict=True):
            name = tensor.name
            if not isinstance(name, str):  # protobuf hands back bytes for invalid UTF-8 (proto2)
                raise FormatError(f"initializer name {name!r} is not valid UTF-8", path=where)
            self.found.append((name, tensor, True, self._slice(name, tensor, raw, view)))
        for label, tensor in nested_tensors(model):
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                self.found.append((label, tensor, False, self._slice(label, tensor, None, view)))

    @property
    def tensors(self) -> list[TensorSlice]:
        return [t for _, _, _, t in self.found if t is not None]

    def _external(
        self, name: str, tensor: Any, nbytes: int, dtype: str, shape: tuple[int, ...]
    ) -> tuple[tuple[str, int, int], Callable[[], memoryview]]:
        where = self.where
        entries = {entry.key: entry.value for entry in tensor.external_data}
        if not all(isinstance(x, str) for pair in entries.items() for x in pair):
            raise FormatError(
                f"tensor {name!r}: external data entries are not valid UTF-8", path=where
            )
        location = entries.get("location", "")
        _, inside = check_external_path(location, self.path.parent, where)
        rel = (self.rel_dir / inside).as_posix()
        refused = self.files.refusal(rel)
        if refused is not None:
            raise UnsafeModelError(
                f"tensor {name!r}: external data {location!r} {refused}", path=where
            )
        if self.loading and not self.files.is_private(rel):
            raise UnsafeModelError(
                f"tensor {name!r}: external data {location!r} is not held in private memory "
                "for loading (a weights checkpoint, or a model verified without copies)",
                path=where,
            )
        data = self.files.view(rel)
        links = self.files.link_count(rel)
        if links > 1:
            raise UnsafeModelError(
                f"external data file {location!r} is a hardlink (link count {links})", path=where
            )
        offset = _external_int(entries, "offset", name, where) or 0
        length = _external_int(entries, "length", name, where)
        size = data.nbytes
        if length is None:
            length = max(size - offset, 0)
        if offset + length > size:
            raise FormatError(
                f"tensor {name!r}: external data offset {offset} + length {length} is past the end of "
                f"{inside.as_posix()!r} ({size} bytes)",
                path=where,
            )
        if length != nbytes:
            raise FormatError(
                f"tensor {name!r}: external length {length}, {dtype}{list(shape)} needs {nbytes}",
                path=where,
            )
        return (rel, offset, length), view_reader(data, offset, length)

    def _slice(
        self, name: str, tensor: Any, raw: tuple[int, int] | None, view: memoryview
    ) -> TensorSlice | None:
        import onnx

        where = self.where
        external = tensor.data_location == onnx.TensorProto.EXTERNAL
        if tensor.data_type == _STRING:
            if external:
                raise FormatError(f"tensor {name!r}: external string data", path=where)
            return None  # string tensors have no fixed-size bytes: they stay in the structure
        dtype = ONNX_DTYPES.get(tensor.data_type)
        if dtype is None:
            raise FormatError(
                f"tensor {name!r}: unsupported data type {tensor.data_type}", path=where
            )
        if tensor.HasField("segment"):
            raise FormatError(f"tensor {name!r}: segmented tensors are not supported", path=where)
        shape = tuple(int(d) for d in tensor.dims)
        nbytes = expected_nbytes(dtype, shape)
        reader: Callable[[], memoryview]
        location: tuple[str, int, int] | None
        if external:
            if raw is not None:
                raise FormatError(f"tensor {name!r}: both raw_data and external data", path=where)
            location, reader = self._external(name, tensor, nbytes, dtype, shape)
        elif raw is not None:
            offset, length = raw
            if length != nbytes:
                raise FormatError(
                    f"tensor {name!r}: raw_data has {length} bytes, {dtype}{list(shape)} needs {nbytes}",
                    path=where,
                )
            location = (self.rel, offset, length)
            reader = view_reader(view, offset, length)
        else:
            data = _canonical_from_typed(tensor, dtype, name, where)
            if data.nbytes != nbytes:
                raise FormatError(
                    f"tensor {name!r}: typed data has {data.nbytes} bytes, needs {nbytes}",
                    path=where,
                )
            location = None
            reader = _constant_reader(data)
        return TensorSlice(name, dtype, shape, nbytes, location, reader)


def parse_onnx(path: Path, *, root: Path, files: ModelFiles | None = None) -> ParsedModel:
    walk = _Walk(path, root, files if files is not None else view_files(path, root))
    for _, tensor, main, _ in walk.found:
        if main:
            for field in _DATA_FIELDS:
                tensor.ClearField(field)
            tensor.ClearField("external_data")
            tensor.ClearField("data_location")
    structure = walk.model.SerializeToString(deterministic=True)
    return ParsedModel("onnx", structure, sorted_unique(walk.tensors, path))


MEMORY_LOCATION = "modelguard-memory"


def runtime_graph(
    path: Path,
    *,
    root: Path,
    files: ModelFiles,
    keep: Callable[[TensorSlice], bool] | None = None,
    loading: bool = True,
) -> tuple[bytes, list[TensorSlice]]:
    """The model for ONNX Runtime with no file reference left, and the tensors it takes from memory.

    Main-graph initializers with bytes of their own become external initializers at
    :data:`MEMORY_LOCATION`, to be handed over as OrtValues (``add_external_initializers``);
    every other external tensor (Constant values, subgraph initializers, sparse parts,
    functions) is written inline from ``files``. ``keep(tensor)``: False leaves a main-graph
    initializer's bytes inline as well. Nothing in the result names a file. ``loading``: the
    result goes to ONNX Runtime now, so every file it reads must be a private copy
    (``verify_and_hold``); ``False`` when the graph is only written into a container.
    """
    import onnx

    walk = _Walk(path, root, files, loading=loading)
    memory: list[TensorSlice] = []
    for _, tensor, main, found in walk.found:
        if found is None:
            continue
        if main and found.location is not None and found.nbytes and (keep is None or keep(found)):
            tensor.ClearField("raw_data")
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", MEMORY_LOCATION
            memory.append(found)
        elif found.location is not None:
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = bytes(found.read())
    try:
        graph = walk.model.SerializeToString()
    except ValueError as error:  # protobuf's 2 GiB message limit
        raise FormatError(
            f"model too large to hand to ONNX Runtime: {error}", path=str(path)
        ) from None
    return graph, memory


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
