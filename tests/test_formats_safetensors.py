"""safetensors adapter: our header parser against the reference writer, and every refusal."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from modelguard.cli import main as cli_main
from modelguard.errors import FormatError
from modelguard.formats import parse_model_file
from modelguard.formats.safetensors import parse_safetensors


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def write_raw(path: Path, header: object, data: bytes, *, header_len: int | None = None) -> Path:
    encoded = json.dumps(header).encode() if not isinstance(header, bytes) else header
    length = len(encoded) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", length) + encoded + data)
    return path


def test_matches_reference_writer_for_many_dtypes(tmp_path: Path) -> None:
    tensors = {
        "f32": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "f16": torch.tensor([0.5, -1.0], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -3.0, 0.25], dtype=torch.bfloat16),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "flags": torch.tensor([True, False]),
        "empty": torch.zeros((0, 4)),
        "scalar": torch.tensor(3, dtype=torch.int64),
    }
    save_torch(tensors, str(tmp_path / "m.safetensors"), metadata={"a": "b"})
    parsed = parse_safetensors(tmp_path / "m.safetensors", root=tmp_path)
    got = {t.name: t for t in parsed.tensors}
    assert [t.name for t in parsed.tensors] == sorted(tensors)
    blob = (tmp_path / "m.safetensors").read_bytes()
    for name, tensor in tensors.items():
        expected = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        assert bytes(got[name].read()) == expected, name
        assert got[name].shape == tuple(tensor.shape)
        _, offset, length = got[name].location  # type: ignore[misc]
        assert blob[offset : offset + length] == expected
    assert got["bf16"].dtype == "bfloat16" and got["flags"].dtype == "bool"
    assert b'"metadata":{"a":"b"}' in parsed.structure


def test_metadata_is_part_of_the_structure(tmp_path: Path) -> None:
    w = {"w": np.ones(2, np.float32)}
    save_file(w, tmp_path / "a.safetensors", metadata={"license": "mit"})
    save_file(w, tmp_path / "b.safetensors", metadata={"license": "gpl"})
    a = parse_model_file(tmp_path / "a.safetensors", root=tmp_path)
    b = parse_model_file(tmp_path / "b.safetensors", root=tmp_path)
    assert a is not None and b is not None
    assert a.structure != b.structure
    assert bytes(a.tensors[0].read()) == bytes(b.tensors[0].read())


ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize(
    ("header", "data", "reason"),
    [
        (
            {"a": ENTRY, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            bytes(12),
            "overlap",
        ),
        ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(8), "out of range"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8), "needs 12"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12), "gap"),
        ({"a": ENTRY}, bytes(9), "trailing"),
        (
            {"a": {"dtype": "X9", "shape": [2], "data_offsets": [0, 8]}},
            bytes(8),
            "unsupported dtype",
        ),
        ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8), "non-negative"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8), "out of range"),
        ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), "exactly"),
        ({"__metadata__": {"k": 1}, "a": ENTRY}, bytes(8), "__metadata__"),
        ([1, 2], b"", "not a JSON object"),
    ],
)
def test_malformed_headers_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: object, data: bytes, reason: str
) -> None:
    path = write_raw(tmp_path / "m.safetensors", header, data)
    with pytest.raises(FormatError, match=reason):
        parse_safetensors(path, root=tmp_path)
    code, out, err = run_cli(capsys, "manifest", str(path))
    assert code == 2 and out == "" and err.count("\n") == 1 and reason in err


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    path = write_raw(tmp_path / "m.safetensors", raw, bytes(8))
    with pytest.raises(FormatError, match="duplicate key 'a'"):
        parse_safetensors(path, root=tmp_path)


@pytest.mark.parametrize("header_len", [2**60, 2**64 - 1, 100_000_001])
def test_huge_header_length_is_refused_without_allocating(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header_len: int
) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": ENTRY}, bytes(8), header_len=header_len)
    code, out, err = run_cli(capsys, "manifest", str(path))
    assert code == 2 and out == ""
    assert "exceeds" in err and len(err.strip().splitlines()) == 1


def test_header_past_end_and_truncated_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_raw(tmp_path / "m.safetensors", {"a": ENTRY}, bytes(8), header_len=5000)
    with pytest.raises(FormatError, match="past the end"):
        parse_safetensors(path, root=tmp_path)
    save_file({"w": np.ones(64, np.float32)}, tmp_path / "ok.safetensors")
    blob = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(blob[:-10])
    code, _, err = run_cli(capsys, "manifest", str(tmp_path / "cut.safetensors"))
    assert code == 2 and "out of range" in err
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(FormatError, match="truncated"):
        parse_safetensors(tmp_path / "tiny.safetensors", root=tmp_path)


def test_invalid_utf8_header(tmp_path: Path) -> None:
    path = write_raw(tmp_path / "m.safetensors", b"\xff\xfe{}", b"")
    with pytest.raises(FormatError, match="UTF-8 JSON"):
        parse_safetensors(path, root=tmp_path)


@settings(max_examples=60)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(tmp_path_factory: pytest.TempPathFactory, blob: bytes) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    (directory / "m.safetensors").write_bytes(blob)
    with contextlib.suppress(FormatError):
        parse_safetensors(directory / "m.safetensors", root=directory)


@settings(max_examples=40)
@given(header_len=st.integers(0, 2**64 - 1), body=st.binary(max_size=64))
def test_arbitrary_header_lengths_are_bounded(
    tmp_path_factory: pytest.TempPathFactory, header_len: int, body: bytes
) -> None:
    directory = tmp_path_factory.mktemp("len")
    path = directory / "m.safetensors"
    path.write_bytes(struct.pack("<Q", header_len) + body)
    with contextlib.suppress(FormatError):
        parse_safetensors(path, root=directory)
