"""Models and helpers for the binding, TOCTOU and external-tensor attacks (issue 10, classes 1-3)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from modelguard.cli import main as cli_main
from modelguard.keys import PrivateKey, write_keypair
from modelguard.signing.bundle import dump_bundle
from modelguard.signing.envelope import sign_statement
from modelguard.signing.statement import DEFAULT_IGNORE_PATHS, model_statement

X = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return int(stop.value.code or 0), out, err


def key_files(directory: Path, key: PrivateKey, name: str = "alice") -> tuple[Path, Path]:
    """(private, public) PEM files outside any model directory."""
    return write_keypair(directory, name, key, None)


def external_mlp(directory: Path, weight: np.ndarray, *, data: str = "w.bin") -> Path:
    """A directory model: ``y = x @ w`` with ``w`` (4x4 float32) in the external file ``data``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / data).parent.mkdir(parents=True, exist_ok=True)
    (directory / data).write_bytes(weight.astype("<f4").tobytes())
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4])
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data), ("offset", "0"), ("length", "64")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, directory / "model.onnx")
    return directory


def plain_mlp(path: Path, weight: np.ndarray) -> Path:
    """A single-file model ``y = x @ w`` with ``w`` inline (raw_data)."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def external_tensor(name: str, location: str, dims: tuple[int, ...] = (4,)) -> TensorProto:
    tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    length = 4 * int(np.prod(dims))
    for key, value in (("location", location), ("offset", "0"), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def oms_sign(model: Path, key: PrivateKey, signature: Path) -> Path:
    """A plain OpenSSF Model Signing bundle (file digests only, OMS default ignores), the way
    ``model_signing sign`` makes one: it knows nothing of where ONNX external data points."""
    resources: list[tuple[str, str]] = []
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        rel = path.relative_to(model).as_posix()
        if any(rel == i or rel.startswith(i + "/") for i in DEFAULT_IGNORE_PATHS):
            continue
        resources.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
    statement = model_statement(model.name, resources, ignore_paths=DEFAULT_IGNORE_PATHS)
    signature.write_bytes(dump_bundle(sign_statement(statement, key)))
    return signature


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "expected an error line"
    return lines[-1]


def report_failures(out: str) -> list[str]:
    return list(json.loads(out)["failures"])


def signed_and_unsigned_containers(
    tmp_path: Path, good: np.ndarray, evil: np.ndarray, key: PrivateKey, identity: object
) -> tuple[Path, Path]:
    """``X/model.onnx.mgenc`` (weights ``good``, signed by ``key``) and an unsigned container
    of weights ``evil``, encrypted to the same recipient (anyone holding the public key can)."""
    from modelguard.encryption import encrypt_model

    recipient = identity.public_key()  # type: ignore[attr-defined]
    plain_mlp(tmp_path / "src" / "model.onnx", good)
    plain_mlp(tmp_path / "bad" / "model.onnx", evil)
    (tmp_path / "X").mkdir()
    container = tmp_path / "X" / "model.onnx.mgenc"
    encrypt_model(
        tmp_path / "src" / "model.onnx",
        container,
        recipients=[recipient],
        sign_key=key,
        record=False,
    )
    unsigned = tmp_path / "evil.onnx.mgenc"
    encrypt_model(tmp_path / "bad" / "model.onnx", unsigned, recipients=[recipient])
    return container, unsigned
