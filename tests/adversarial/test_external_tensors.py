"""Class 3, tensors outside ``graph.initializer``: every TensorProto's external data is checked.

External data referenced from a Constant node, an If branch's initializer, a Loop body, a
sparse initializer or a function must name a file of the signed set, is hashed as a tensor
(``verify`` names it), and is refused when it points into an ignored path (``.git/...``,
``model.sig.d/...``), at the signature file, or outside. Each test is such an attack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from gatebind_models import external_tensor, oms_sign, run_cli
from onnx import TensorProto, helper, numpy_helper

from modelguard.errors import UnsafeModelError, VerificationError
from modelguard.keys import generate_key
from modelguard.manifest import build_manifest
from modelguard.runtime import open_session
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model

C = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
X4 = np.array([10.0, 20.0, 30.0, 40.0], dtype=np.float32)
KINDS = ["constant", "if", "loop", "sparse", "function"]
LABELS = {
    "constant": "node[0]:value",
    "if": "node[0]:then_branch/initializer[0]",
    "loop": "node[0]:body/node[0]:value",
    "sparse": "sparse_initializer[0].values",
    "function": "function[local:addc]/node[0]:value",
}


def _vi(name: str, dims: list[int] | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [4] if dims is None else dims)


def _model(kind: str, location: str) -> onnx.ModelProto:
    """y = x + c, where c's bytes are external data at ``location``, placed as ``kind`` says."""
    c = external_tensor("c", location)
    inputs, initializers, sparse, functions = [_vi("x")], [], [], []
    if kind == "constant":
        nodes = [
            helper.make_node("Constant", [], ["c"], value=c),
            helper.make_node("Add", ["x", "c"], ["y"]),
        ]
    elif kind == "if":
        inputs.append(helper.make_tensor_value_info("cond", TensorProto.BOOL, []))
        then_branch = helper.make_graph(
            [helper.make_node("Add", ["x", "c"], ["t"])], "then", [], [_vi("t")], [c]
        )
        else_branch = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["e"])], "else", [], [_vi("e")]
        )
        nodes = [
            helper.make_node(
                "If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch
            )
        ]
    elif kind == "loop":
        body = helper.make_graph(
            [
                helper.make_node("Constant", [], ["k"], value=c),
                helper.make_node("Add", ["v_in", "k"], ["v_out"]),
                helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            ],
            "body",
            [
                helper.make_tensor_value_info("i", TensorProto.INT64, []),
                helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                _vi("v_in"),
            ],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _vi("v_out")],
        )
        initializers = [
            numpy_helper.from_array(np.array(1, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "go"),
        ]
        nodes = [helper.make_node("Loop", ["trips", "go", "x"], ["y"], body=body)]
    elif kind == "sparse":
        indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_indices")
        sparse = [helper.make_sparse_tensor(c, indices, [4])]
        nodes = [helper.make_node("Add", ["x", "c"], ["y"])]
    elif kind == "function":
        function = helper.make_function(
            "local",
            "addc",
            ["a"],
            ["b"],
            [
                helper.make_node("Constant", [], ["k"], value=c),
                helper.make_node("Add", ["a", "k"], ["b"]),
            ],
            [helper.make_opsetid("", 17)],
        )
        functions = [function]
        nodes = [helper.make_node("addc", ["x"], ["y"], domain="local")]
    else:
        raise AssertionError(kind)
    graph = helper.make_graph(nodes, kind, inputs, [_vi("y")], initializers)
    graph.sparse_initializer.extend(sparse)
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)],
        ir_version=8,
        functions=functions,
    )


def _write(directory: Path, kind: str, location: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / location
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(C.tobytes())
    onnx.save(_model(kind, location), directory / "model.onnx")
    return directory


def _feeds(kind: str) -> dict[str, np.ndarray]:
    return {"x": X4, "cond": np.array(True)} if kind == "if" else {"x": X4}


@pytest.mark.parametrize("kind", KINDS)
def test_external_tensor_is_hashed_and_named(tmp_path: Path, kind: str) -> None:
    key = generate_key()
    model = _write(tmp_path / "m", kind, "c.bin")
    record = build_manifest(model).file("model.onnx")
    assert record is not None and record.tensor(LABELS[kind]) is not None
    sign_model(model, key, record=False)
    assert verify_model(model, keys=[key.public_key()]).ok
    (model / "c.bin").write_bytes((-C).tobytes())
    report = verify_model(model, keys=[key.public_key()])
    assert not report.ok
    assert any(f"tensor {LABELS[kind]!r}" in f for f in report.failures), report.failures


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "sparse"])
def test_external_tensor_runs_from_verified_memory(tmp_path: Path, kind: str) -> None:
    key = generate_key()
    model = _write(tmp_path / "m", kind, "c.bin")
    sign_model(model, key, record=False)
    session = open_session(model, keys=[key.public_key()], providers="cpu")
    assert np.array_equal(session.run(None, _feeds(kind))[0], X4 + C)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("location", [".git/objects/c.bin", "model.sig.d/c.sig", "model.sig"])
def test_external_data_in_unsigned_places_is_refused(
    tmp_path: Path, kind: str, location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signed the way OpenSSF Model Signing signs (ignoring .git and model.sig*), the target
    could change after signing; modelguard refuses to sign, verify or load such a model."""
    key = generate_key()
    model = _write(tmp_path / "m", kind, location)
    with pytest.raises(UnsafeModelError, match=repr(location)):
        sign_model(model, key, signature_path=tmp_path / "elsewhere.sig", record=False)
    signature = oms_sign(model, key, tmp_path / "oms.sig")
    report = verify_model(model, signature, keys=[key.public_key()])
    assert not report.ok and any(repr(location) in f for f in report.failures), report.failures
    with pytest.raises(VerificationError):
        open_session(model, signature=signature, keys=[key.public_key()], providers="cpu")
    pub = tmp_path / "alice.pub"
    from modelguard.keys import write_keypair

    write_keypair(tmp_path, "alice", key, None)
    code, _, err = run_cli(
        capsys, "verify", str(model), "--signature", str(signature), "--key", str(pub)
    )
    assert code == 1 and repr(location) in err


@pytest.mark.parametrize("kind", KINDS)
def test_single_file_may_not_point_at_its_signature(tmp_path: Path, kind: str) -> None:
    (tmp_path / "model.sig").write_bytes(C.tobytes())
    onnx.save(_model(kind, "model.sig"), tmp_path / "model.onnx")
    with pytest.raises(UnsafeModelError, match="signature, key or policy file"):
        build_manifest(tmp_path / "model.onnx")


@pytest.mark.parametrize("kind", ["constant", "if"])
@pytest.mark.parametrize("location", ["../c.bin", "/etc/hostname"])
def test_external_data_outside_the_model_is_refused(
    tmp_path: Path, kind: str, location: str
) -> None:
    (tmp_path / "c.bin").write_bytes(C.tobytes())
    (tmp_path / "m").mkdir()
    onnx.save(_model(kind, location), tmp_path / "m" / "model.onnx")
    with pytest.raises(UnsafeModelError, match="escapes|absolute"):
        build_manifest(tmp_path / "m")


def test_symlinked_external_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.bin").write_bytes(C.tobytes())
    model = tmp_path / "m"
    model.mkdir()
    (model / "c.bin").symlink_to(tmp_path / "secret.bin")
    onnx.save(_model("constant", "c.bin"), model / "model.onnx")
    with pytest.raises(UnsafeModelError, match="symlink"):
        build_manifest(model / "model.onnx")
