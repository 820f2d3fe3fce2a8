"""ONNX adapter: wire-format raw_data ranges, external data, structure digest, unsafe locations."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from tinymodels import mlp_onnx, tensors_onnx

from modelguard.cli import main as cli_main
from modelguard.errors import FormatError, UnsafeModelError
from modelguard.formats import detect_format, parse_model_file
from modelguard.formats.onnx import parse_onnx, strip_raw_data
from modelguard.manifest import build_manifest, diff_models


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def test_initializers_are_verbatim_file_ranges(tmp_path: Path) -> None:
    weights = mlp_onnx(tmp_path / "m.onnx")
    parsed = parse_onnx(tmp_path / "m.onnx", root=tmp_path)
    assert parsed.format == "onnx"
    assert [t.name for t in parsed.tensors] == sorted(weights)
    blob = (tmp_path / "m.onnx").read_bytes()
    for t in parsed.tensors:
        expected = weights[t.name].astype("<f4").tobytes()
        assert bytes(t.read()) == expected
        assert t.location is not None
        rel, offset, length = t.location
        assert rel == "m.onnx" and blob[offset : offset + length] == expected
        assert (t.dtype, t.shape) == ("float32", weights[t.name].shape)


def test_structure_holds_no_weight_bytes_and_parses_back(tmp_path: Path) -> None:
    weights = {"big": np.full((64, 64), 7.25, np.float32)}
    tensors_onnx(tmp_path / "m.onnx", weights)
    parsed = parse_onnx(tmp_path / "m.onnx", root=tmp_path)
    assert weights["big"].tobytes()[:64] not in parsed.structure
    model = onnx.ModelProto.FromString(parsed.structure)
    assert model.graph.initializer[0].name == "big"
    assert list(model.graph.initializer[0].dims) == [64, 64]
    assert not model.graph.initializer[0].raw_data


def test_typed_fields_and_half_precision(tmp_path: Path) -> None:
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    ints = helper.make_tensor("ints", TensorProto.INT8, [2], [-1, 5])
    half = numpy_helper.from_array(np.array([0.5, -2.0], np.float16), "half")
    bf16 = helper.make_tensor("bf16", TensorProto.BFLOAT16, [2], [1.0, -3.0])  # int32_data
    flags = numpy_helper.from_array(np.array([True, False, True]), "flags")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["typed"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        [typed, ints, half, bf16, flags],
    )
    onnx.save(helper.make_model(graph), tmp_path / "m.onnx")
    got = {t.name: t for t in parse_onnx(tmp_path / "m.onnx", root=tmp_path).tensors}
    assert bytes(got["typed"].read()) == np.array([1, 2, 3], "<f4").tobytes()
    assert got["typed"].location is None
    assert bytes(got["ints"].read()) == np.array([-1, 5], np.int8).tobytes()
    assert bytes(got["half"].read()) == np.array([0.5, -2.0], "<f2").tobytes()
    assert got["bf16"].dtype == "bfloat16"
    assert bytes(got["bf16"].read()) == bytes(
        [0x80, 0x3F, 0x40, 0xC0]
    )  # bf16 1.0, -3.0 little-endian
    assert bytes(got["flags"].read()) == b"\x01\x00\x01"


def test_external_data_same_digests_as_embedded(tmp_path: Path) -> None:
    mlp_onnx(tmp_path / "embedded.onnx")
    model = onnx.load(tmp_path / "embedded.onnx")
    ext = tmp_path / "ext"
    ext.mkdir()
    onnx.save(
        model, ext / "m.onnx", save_as_external_data=True, location="weights.bin", size_threshold=0
    )
    embedded = build_manifest(tmp_path / "embedded.onnx")
    external = build_manifest(ext / "m.onnx")
    # a single file is one record (as in OMS); its external tensors are in that record
    assert [f.path for f in external.files] == ["m.onnx"]
    assert [f.path for f in build_manifest(ext).files] == ["m.onnx", "weights.bin"]
    ext_record, emb_record = external.file("m.onnx"), embedded.file("embedded.onnx")
    assert ext_record is not None and emb_record is not None
    assert ext_record.tensors == emb_record.tensors
    assert ext_record.structure_digest == emb_record.structure_digest
    # an ignored file is unsigned: tensors may not live there (issue 10, class 3)
    with pytest.raises(UnsafeModelError, match="signatures leave out"):
        build_manifest(ext, ignore_paths=["weights.bin"])
    parsed = parse_onnx(ext / "m.onnx", root=ext)
    assert all(t.location is not None and t.location[0] == "weights.bin" for t in parsed.tensors)


def _external_model(directory: Path, location: str, *, offset: int = 0, length: int = 16) -> Path:
    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"])],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [tensor],
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    return path


@pytest.mark.parametrize(
    ("location", "reason"),
    [("../secret", "escapes the model directory"), ("sub/../../secret", "escapes")],
)
def test_external_data_escaping_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], location: str, reason: str
) -> None:
    (tmp_path / "secret").write_bytes(b"\x00" * 16)
    model = _external_model(tmp_path / "model", location)
    with pytest.raises(UnsafeModelError, match=reason):
        parse_model_file(model, root=model.parent)
    code, out, err = run_cli(capsys, "manifest", str(model))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and reason in err


def test_external_data_absolute_path_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"\x00" * 16)
    model = _external_model(tmp_path / "model", str(secret))
    code, _, err = run_cli(capsys, "manifest", str(model))
    assert code == 2 and "absolute path" in err and len(err.strip().splitlines()) == 1


def test_external_data_symlink_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secret").write_bytes(b"\x00" * 16)
    model = _external_model(tmp_path / "model", "weights.bin")
    (tmp_path / "model" / "weights.bin").symlink_to(tmp_path / "secret")
    with pytest.raises(UnsafeModelError, match="symlink"):
        parse_model_file(model, root=model.parent)
    # also through a symlinked directory component
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "w.bin").write_bytes(b"\x00" * 16)
    model2 = _external_model(tmp_path / "model2", "d/w.bin")
    (tmp_path / "model2" / "d").symlink_to(tmp_path / "real")
    code, _, err = run_cli(capsys, "manifest", str(model2), "--allow-symlinks")
    assert code == 2 and "symlink" in err


def test_external_data_hardlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"\x00" * 16)
    model = _external_model(tmp_path / "model", "weights.bin")
    os.link(tmp_path / "secret", tmp_path / "model" / "weights.bin")
    with pytest.raises(UnsafeModelError, match="hardlink"):
        parse_model_file(model, root=model.parent)


@pytest.mark.parametrize(("offset", "length"), [(8, 16), (0, 32), (2**62, 16)])
def test_external_data_past_end_of_file(tmp_path: Path, offset: int, length: int) -> None:
    model = _external_model(tmp_path / "model", "weights.bin", offset=offset, length=length)
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(FormatError, match="past the end"):
        parse_model_file(model, root=model.parent)


def test_external_length_must_match_shape(tmp_path: Path) -> None:
    model = _external_model(tmp_path / "model", "weights.bin", length=12)
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(FormatError, match="needs 16"):
        parse_model_file(model, root=model.parent)


def test_truncated_onnx_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mlp_onnx(tmp_path / "m.onnx")
    blob = (tmp_path / "m.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(blob[: len(blob) // 2])
    code, out, err = run_cli(capsys, "manifest", str(tmp_path / "cut.onnx"), "--json")
    assert code == 2 and "truncated" in err and len(err.strip().splitlines()) == 1
    assert '"exit_code": 2' in out


def test_garbage_is_not_an_onnx_model(tmp_path: Path) -> None:
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(FormatError, match="not an ONNX model"):
        parse_model_file(tmp_path / "x.onnx", root=tmp_path)
    (tmp_path / "y.onnx").write_bytes(b"\xff" * 40)
    with pytest.raises(FormatError):
        parse_model_file(tmp_path / "y.onnx", root=tmp_path)


def test_wire_walk_strips_exactly_the_raw_data(tmp_path: Path) -> None:
    weights = mlp_onnx(tmp_path / "m.onnx")
    blob = (tmp_path / "m.onnx").read_bytes()
    stripped, raws = strip_raw_data(memoryview(blob))
    original = onnx.ModelProto.FromString(blob)
    assert [blob[o : o + n] for o, n in (r for r in raws if r)] == [
        t.raw_data for t in original.graph.initializer
    ]
    for t in original.graph.initializer:
        t.ClearField("raw_data")
    assert onnx.ModelProto.FromString(stripped) == original
    assert len(stripped) < len(blob) - sum(w.nbytes for w in weights.values()) + 64


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda m: setattr(m.graph.node[2], "op_type", "Sigmoid"), "op Relu -> Sigmoid"),
        (lambda m: m.graph.node[1].input.__setitem__(0, "x"), "inputs"),
        (lambda m: m.graph.node[0].attribute.append(helper.make_attribute("k", 1)), "attributes"),
        (lambda m: m.opset_import[0].__setattr__("version", 18), "opsets"),
    ],
)
def test_graph_change_without_weight_change_is_named(tmp_path: Path, mutate, expect: str) -> None:  # type: ignore[no-untyped-def]
    mlp_onnx(tmp_path / "a.onnx")
    model = onnx.load(tmp_path / "a.onnx")
    mutate(model)
    onnx.save(model, tmp_path / "b.onnx")
    result = diff_models(tmp_path / "a.onnx", tmp_path / "b.onnx")
    assert not result.identical
    assert result.structure_changed == ("a.onnx",)
    assert result.tensors == ()
    assert any(expect in line for line in result.structure_details), result.structure_details


def test_detect_format_keeps_bin_data_raw(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(np.ones(8, np.float32).tobytes())
    assert detect_format(tmp_path / "weights.bin") is None
    assert detect_format(tmp_path / "m.onnx") == "onnx"


@settings(max_examples=80)
@given(data=st.data())
def test_mutated_models_parse_or_fail_cleanly(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    directory = tmp_path_factory.mktemp("fuzz")
    mlp_onnx(directory / "m.onnx")
    blob = bytearray((directory / "m.onnx").read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(blob)))
    (directory / "m.onnx").write_bytes(bytes(blob[:cut]))
    try:
        parsed = parse_onnx(directory / "m.onnx", root=directory)
    except (FormatError, UnsafeModelError):
        return
    for t in parsed.tensors:
        assert t.read().nbytes == t.nbytes
