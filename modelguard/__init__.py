"""modelguard: model supply-chain security. The public API, one name per job.

>>> import modelguard
>>> modelguard.__version__
'0.1.0'

Hash a model, sign it, verify it (every file, tensor and structure digest):

>>> import pathlib, tempfile
>>> import numpy as np
>>> from safetensors.numpy import save_file
>>> from modelguard.keys import generate_key
>>> model = pathlib.Path(tempfile.mkdtemp()) / "digits"
>>> model.mkdir()
>>> save_file({"w": np.ones((2, 2), dtype=np.float32)}, model / "model.safetensors")
>>> modelguard.build_manifest(model).tensor_count
1
>>> key = generate_key()
>>> signed = modelguard.sign(model, key, record=False)   # writes model/model.sig
>>> modelguard.verify(model, keys=[key.public_key()]).ok
True

Encrypt it tensor by tensor (here for a raw 32-byte key; recipients' X25519 keys and
passphrases work the same way), and run a signed ONNX model after verifying it in memory:

>>> import os
>>> secret = os.urandom(32)
>>> modelguard.encrypt(model, model.with_name("digits.enc"), key=secret, record=False).files
('model.safetensors.mgenc', 'model.sig.mgenc')
>>> import onnx
>>> from onnx import TensorProto, helper
>>> graph = helper.make_graph(
...     [helper.make_node("Relu", ["x"], ["y"])], "relu",
...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
>>> onnx_model = model.with_name("relu.onnx")
>>> opset = [helper.make_opsetid("", 17)]
>>> onnx.save(helper.make_model(graph, opset_imports=opset, ir_version=9), onnx_model)
>>> _ = modelguard.sign(onnx_model, key, record=False)
>>> session = modelguard.open_session(onnx_model, keys=[key.public_key()])
>>> session.run(None, {"x": np.array([-1.0, 2.0], dtype=np.float32)})[0].tolist()
[0.0, 2.0]

Robustness (PyTorch; ``make demo`` builds the model directories used here):

>>> from modelguard.robustness.config import EvalConfig
>>> result = modelguard.evaluate(                                     # doctest: +SKIP
...     "build/demo/model", EvalConfig(attacks=["pgd"], eps=[0.1], limit=100))
>>> hardened = modelguard.harden(                                     # doctest: +SKIP
...     pathlib.Path("build/demo/model"), method="pgd-at",
...     out_dir=pathlib.Path("build/digits-pgd"), key=key, keys=[key.public_key()])

Every name is imported on first use (module ``__getattr__``): ``import modelguard`` loads
neither torch nor ONNX Runtime. Where each job lives is in docs/architecture.md.
``verify`` fails closed on a policy's ``[certificate]``/``[audit.*]`` tables unless it is
given their checks (``checks=modelguard.gates.STANDARD_CHECKS``, what the CLI passes).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); imported on first access
_API: dict[str, tuple[str, str]] = {
    "build_manifest": ("modelguard.manifest", "build_manifest"),
    "sign": ("modelguard.signing.sign", "sign_model"),
    "verify": ("modelguard.signing.verify", "verify_model"),
    "encrypt": ("modelguard.encryption.model", "encrypt_model"),
    "decrypt": ("modelguard.encryption.model", "decrypt_model"),
    "open_session": ("modelguard.runtime", "open_session"),
    "evaluate": ("modelguard.robustness.evaluate", "evaluate"),
    "harden": ("modelguard.robustness.hardening", "harden_model"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attribute = _API[name]
        value = getattr(import_module(module), attribute)
        globals()[name] = value  # the next access is a plain attribute lookup
        return value
    raise AttributeError(f"module 'modelguard' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
