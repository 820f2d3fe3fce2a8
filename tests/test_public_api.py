"""The public API in ``modelguard/__init__.py``: one name per job, imported on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import modelguard

HEAVY = ("torch", "onnxruntime")


def _loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return out.stdout.split()


def test_importing_modelguard_loads_neither_torch_nor_onnxruntime() -> None:
    assert _loaded_after("import modelguard") == []


def test_the_gate_names_resolve_without_torch_or_onnxruntime() -> None:
    """sign, verify, build_manifest, encrypt, decrypt and open_session (ONNX Runtime is loaded
    when a session is opened, not when the name is) need no torch."""
    names = ("sign", "verify", "build_manifest", "encrypt", "decrypt", "open_session")
    code = "import modelguard\n" + "\n".join(f"modelguard.{n}" for n in names)
    assert _loaded_after(code) == []


@pytest.mark.parametrize(
    ("name", "module", "attribute"),
    [
        ("sign", "modelguard.signing.sign", "sign_model"),
        ("verify", "modelguard.signing.verify", "verify_model"),
        ("build_manifest", "modelguard.manifest", "build_manifest"),
        ("encrypt", "modelguard.encryption.model", "encrypt_model"),
        ("decrypt", "modelguard.encryption.model", "decrypt_model"),
        ("open_session", "modelguard.runtime", "open_session"),
    ],
)
def test_each_name_is_the_library_function(name: str, module: str, attribute: str) -> None:
    from importlib import import_module

    assert getattr(modelguard, name) is getattr(import_module(module), attribute)
    assert name in modelguard.__all__ and name in dir(modelguard)


def test_robustness_names_resolve_to_the_library_functions() -> None:
    pytest.importorskip("torch")
    from modelguard.robustness.evaluate import evaluate
    from modelguard.robustness.hardening import harden_model

    assert modelguard.evaluate is evaluate
    assert modelguard.harden is harden_model


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'sgin'"):
        _ = modelguard.sgin
