"""Seed inputs for the atheris harnesses, made by modelguard's own writers."""

from __future__ import annotations

import io
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path

WORK = Path(tempfile.mkdtemp(prefix="mg-seeds-"))


def _safetensors() -> list[bytes]:
    import numpy as np
    from safetensors.numpy import save

    return [save({"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.int8)})]


def _safetensors_header() -> list[bytes]:
    return [data[8:] for data in _safetensors()]


def _onnx() -> list[bytes]:
    from tests.tinymodels import mlp_onnx

    mlp_onnx(WORK / "m.onnx", inputs=2, hidden=3, outputs=2)
    return [(WORK / "m.onnx").read_bytes()]


def _pickle() -> list[bytes]:
    return [pickle.dumps({"a": [1, 2.0, "x"]}, protocol=p) for p in range(6)]


def _torch() -> list[bytes]:
    import torch

    zipped, legacy = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.ones(2)}, zipped)
    torch.save({"w": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    return [zipped.getvalue(), legacy.getvalue()]


def _bundle() -> list[bytes]:
    from modelguard.keys import generate_key
    from modelguard.signing.sign import sign_model

    model = WORK / "model"
    model.mkdir(exist_ok=True)
    (model / "w.safetensors").write_bytes(_safetensors()[0])
    return [sign_model(model, generate_key(), record=False).signature_path.read_bytes()]


def _container() -> list[bytes]:
    from modelguard.encryption import encrypt_model

    source = WORK / "p.safetensors"
    source.write_bytes(_safetensors()[0])
    encrypt_model(source, WORK / "c.mgenc", key=bytes(range(32)))
    # version-1 containers (same key) keep the older reader path under the fuzzer too
    old = sorted((Path(__file__).parents[1] / "tests/testdata/containers-v1").glob("*.mgenc"))
    return [(WORK / "c.mgenc").read_bytes(), *(p.read_bytes() for p in old)]


def _checkpoint() -> list[bytes]:
    from targets import NOTE_KEY

    from ledger import Checkpoint, sign_note

    return [sign_note(Checkpoint("fuzz.example/log", 7, bytes(32)).to_text(), [NOTE_KEY]).encode()]


def _proof() -> list[bytes]:
    import json

    from ledger.merkle import leaf_hash, node_hash
    from ledger.proofs import InclusionProof

    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    return [json.dumps(InclusionProof(0, 2, a, (b,), node_hash(a, b)).to_dict()).encode()]


def _policy() -> list[bytes]:
    return [
        b'version = 1\nthreshold = 1\nmax_signature_age = "30d"\n[[signers]]\nname = "a"\n'
        b'public_key = "a.pub"\n[ledger]\nkey = "l.pub"\nstate = "s"\n'
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "safetensors": _safetensors,
    "safetensors_header": _safetensors_header,
    "onnx": _onnx,
    "pickle": _pickle,
    "torch": _torch,
    "bundle": _bundle,
    "container": _container,
    "checkpoint": _checkpoint,
    "proof": _proof,
    "policy": _policy,
}
