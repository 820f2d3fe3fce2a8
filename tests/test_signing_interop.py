"""Interoperability with OpenSSF Model Signing (PyPI model-signing 1.1.x), key mode, both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import model_signing
import pytest

from modelguard.keys import PrivateKey, generate_key, write_keypair
from modelguard.signing.model import sign_model, verify_model
from tests.tinymodels import model_dir


def oms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *args], capture_output=True, text=True, check=False
    )


def keypair(tmp_path: Path, algorithm: str = "ecdsa-p256") -> tuple[PrivateKey, Path, Path]:
    key = generate_key(algorithm)
    priv, pub = write_keypair(tmp_path / "keys", algorithm, key, None)
    return key, priv, pub


def flip_weight_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor's data
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("algorithm", ["ecdsa-p256", "ecdsa-p384"])
def test_model_signing_cli_accepts_modelguard_signatures(tmp_path: Path, algorithm: str) -> None:
    key, _, pub = keypair(tmp_path, algorithm)
    model = model_dir(tmp_path / "model")
    sign_model(model, key, name="tiny", version="1", record=False)
    done = oms(
        "verify",
        "key",
        str(model),
        "--signature",
        str(model / "model.sig"),
        "--public_key",
        str(pub),
    )
    assert done.returncode == 0, done.stderr
    assert "Verification succeeded" in done.stdout
    flip_weight_byte(model / "model.safetensors")
    done = oms(
        "verify",
        "key",
        str(model),
        "--signature",
        str(model / "model.sig"),
        "--public_key",
        str(pub),
    )
    assert done.returncode != 0
    assert "model.safetensors" in done.stdout + done.stderr


def test_model_signing_accepts_co_signatures_and_single_files(tmp_path: Path) -> None:
    first, _, _ = keypair(tmp_path / "a")
    second, _, second_pub = keypair(tmp_path / "b")
    model = model_dir(tmp_path / "model")
    sign_model(model, first, record=False)
    cosig = sign_model(model, second, record=False).signature_path
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=second_pub)
    verifier.verify(model, cosig)  # raises on failure
    single = model / "model.onnx"
    sig = tmp_path / "single.sig"
    sign_model(single, second, signature_path=sig, record=False)
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=second_pub).verify(
        single, sig
    )


def test_modelguard_verifies_model_signing_signatures_at_file_level(tmp_path: Path) -> None:
    key, priv, _ = keypair(tmp_path)
    model = model_dir(tmp_path / "model")
    done = oms(
        "sign",
        "key",
        str(model),
        "--private_key",
        str(priv),
        "--signature",
        str(model / "model.sig"),
    )
    assert done.returncode == 0, done.stderr
    report = verify_model(model, keys=[key.public_key()])
    assert report.ok, report.failures
    assert not report.layer_detail and report.manifest is None
    assert any("no layer detail available" in c.detail for c in report.checks)
    flip_weight_byte(model / "model.safetensors")
    report = verify_model(model, keys=[key.public_key()])
    assert not report.ok and "file 'model.safetensors' differs" in "\n".join(report.failures)


def test_modelguard_verifies_a_model_signing_single_file_signature(tmp_path: Path) -> None:
    key, priv, _ = keypair(tmp_path)
    model = model_dir(tmp_path / "model")
    sig = tmp_path / "onnx.sig"
    model_signing.signing.Config().use_elliptic_key_signer(private_key=priv).sign(
        model / "model.onnx", sig
    )
    assert verify_model(model / "model.onnx", sig, keys=[key.public_key()]).ok
    other = generate_key()
    assert not verify_model(model / "model.onnx", sig, keys=[other.public_key()]).ok
