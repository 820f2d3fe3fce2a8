"""Tiny ONNX and safetensors models for tests (onnx.helper; no training, no torch, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file


def mlp_onnx(
    path: Path, *, inputs: int = 8, hidden: int = 16, outputs: int = 4, seed: int = 0
) -> dict[str, np.ndarray]:
    """x(N, inputs) -> MatMul/Add/Relu -> MatMul/Add -> y(N, outputs); returns the weights."""
    rng = np.random.default_rng(seed)
    weights = {
        "fc1.weight": rng.standard_normal((inputs, hidden)).astype(np.float32),
        "fc1.bias": rng.standard_normal(hidden).astype(np.float32),
        "fc2.weight": rng.standard_normal((hidden, outputs)).astype(np.float32),
        "fc2.bias": rng.standard_normal(outputs).astype(np.float32),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"]),
        helper.make_node("Add", ["h0", "fc1.bias"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h2"]),
        helper.make_node("MatMul", ["h2", "fc2.weight"], ["h3"]),
        helper.make_node("Add", ["h3", "fc2.bias"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", outputs])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)
    return weights


def tensors_onnx(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """A valid ONNX model whose initializers are ``tensors`` (output = Identity of the first)."""
    first = next(iter(tensors))
    graph = helper.make_graph(
        [helper.make_node("Identity", [first], ["y"])],
        "tensors",
        [],
        [
            helper.make_tensor_value_info(
                "y", helper.np_dtype_to_tensor_dtype(tensors[first].dtype), None
            )
        ],
        [numpy_helper.from_array(v, k) for k, v in tensors.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)


def tiny_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    save_file(tensors, str(path), metadata={"origin": "tests"})


def model_dir(path: Path, seed: int = 0) -> Path:
    """A directory: an ONNX model, a safetensors copy of its weights, and a model card."""
    path.mkdir(parents=True, exist_ok=True)
    weights = mlp_onnx(path / "model.onnx", seed=seed)
    tiny_safetensors(path / "model.safetensors", weights)
    (path / "modelguard.json").write_text('{"name": "tiny", "version": "1"}\n')
    return path
