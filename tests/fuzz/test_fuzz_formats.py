"""Fuzzing the model-format parsers: safetensors header, ONNX wire walker, pickle scanner.

Each test feeds mutated real files and raw bytes; the invariant (:mod:`tests.fuzz.typed`)
is a result or a typed error, never an unhandled exception or a hang. Budgets are small
(a few seconds each); ``make fuzz`` runs the atheris harnesses in ``fuzz/`` for longer.
"""

from __future__ import annotations

import io
import pickle
import struct
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.formats.onnx import parse_onnx
from modelguard.formats.pytorch import parse_pytorch, scan_pickle
from modelguard.formats.safetensors import parse_safetensors, read_header
from tests.fuzz.typed import json_values, mutated, typed_outcome
from tests.tinymodels import mlp_onnx, tiny_safetensors

WORK = Path(tempfile.mkdtemp(prefix="mg-fuzz-formats-"))


def _seed(name: str) -> bytes:
    path = WORK / name
    if name.endswith(".safetensors"):
        tiny_safetensors(path, {"a": np.arange(6, dtype=np.float32).reshape(2, 3)})
    elif name.endswith(".onnx"):
        mlp_onnx(path, inputs=2, hidden=3, outputs=2)
    elif name == "zip.pt":
        torch.save({"w": torch.ones(2), "n": {"b": torch.zeros(1, dtype=torch.int8)}}, path)
    else:
        torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    return path.read_bytes()


SAFETENSORS, ONNX, TORCH_ZIP, TORCH_LEGACY = (
    _seed("seed.safetensors"),
    _seed("seed.onnx"),
    _seed("zip.pt"),
    _seed("legacy.pt"),
)


def _file(name: str, data: bytes) -> Path:
    path = WORK / name
    path.write_bytes(data)
    return path


@settings(max_examples=150)
@given(st.one_of(mutated(SAFETENSORS), st.binary(max_size=256)))
def test_safetensors(data: bytes) -> None:
    typed_outcome(lambda: parse_safetensors(_file("f.safetensors", data), root=WORK))


@settings(max_examples=150)
@given(json_values)
def test_safetensors_header_json(header: object) -> None:
    import json

    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + b"\x00" * 16
    typed_outcome(lambda: read_header(memoryview(data), "h"))
    typed_outcome(lambda: parse_safetensors(_file("h.safetensors", data), root=WORK))


@settings(max_examples=150)
@given(st.one_of(mutated(ONNX, max_edits=3), st.binary(max_size=256)))
def test_onnx_wire_walker(data: bytes) -> None:
    typed_outcome(lambda: parse_onnx(_file("f.onnx", data), root=WORK))


@settings(max_examples=200)
@given(
    st.one_of(
        mutated(pickle.dumps({"a": [1, 2.0, "x"], "b": (None, True)}, protocol=p))
        for p in (0, 2, 4, 5)
    )
    | st.binary(max_size=128)
)
def test_pickle_scanner(data: bytes) -> None:
    typed_outcome(lambda: scan_pickle(io.BytesIO(data), "p"))


@settings(max_examples=60)
@given(st.one_of(mutated(TORCH_ZIP, max_edits=2), mutated(TORCH_LEGACY, max_edits=2)))
def test_torch_checkpoint(data: bytes) -> None:
    typed_outcome(lambda: parse_pytorch(_file("f.pt", data), root=WORK))
