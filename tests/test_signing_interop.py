"""Interoperability with OpenSSF Model Signing (PyPI model-signing 1.1.x), key mode, both ways."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import model_signing
import pytest
from model_signing._signing import sign_sigstore_pb as sigstore_pb

from modelguard.keys import PrivateKey, generate_key, write_keypair
from modelguard.policy import Policy, policy_from_keys
from modelguard.signing.shards import Serialization
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model
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


# ---- shard serialization and the hash registry (OMS v1.0) ----------------------------------

ALL_HASHES = ("sha256", "blake2b", "blake3")
MS_NAME = {"sha256": "sha256", "blake2b": "blake2", "blake3": "blake3"}  # model_signing's names


def every_hash(key: PrivateKey) -> Policy:
    return dataclasses.replace(
        policy_from_keys([key.public_key()]), allowed_hash_algorithms=ALL_HASHES
    )


def ms_hashing(spec: Serialization) -> model_signing.hashing.Config:
    config = model_signing.hashing.Config()
    if spec.method == "shards":
        config = config.use_shard_serialization(
            hashing_algorithm=MS_NAME[spec.hash_type], shard_size=spec.shard_size
        )
    else:
        config = config.use_file_serialization(hashing_algorithm=MS_NAME[spec.hash_type])
    return config.set_ignored_paths(paths=["model.sig", "model.sig.d"])


@pytest.mark.parametrize(
    "spec",
    [
        Serialization("shards", "sha256", 400),
        Serialization("shards", "blake2b", 1000),
        Serialization("files", "blake2b"),
        Serialization("files", "blake3"),
    ],
    ids=str,
)
def test_modelguard_verifies_model_signing_api_signatures(
    tmp_path: Path, spec: Serialization
) -> None:
    key, priv, _ = keypair(tmp_path)
    model = model_dir(tmp_path / "model")
    signer = model_signing.signing.Config().use_elliptic_key_signer(private_key=priv)
    signer.set_hashing_config(ms_hashing(spec)).sign(model, model / "model.sig")
    report = verify_model(model, policy=every_hash(key))
    assert report.ok, report.failures
    assert not report.layer_detail
    flip_weight_byte(model / "model.safetensors")
    report = verify_model(model, policy=every_hash(key))
    assert not report.ok
    wanted = "bytes" if spec.method == "shards" else "file 'model.safetensors' differs"
    assert any(wanted in f and "model.safetensors" in f for f in report.failures)


@pytest.mark.parametrize(
    "spec", [Serialization("files", "blake2b"), Serialization("files", "blake3")], ids=str
)
def test_model_signing_api_accepts_modelguard_registry_hashes(
    tmp_path: Path, spec: Serialization
) -> None:
    key, _, pub = keypair(tmp_path)
    model = model_dir(tmp_path / "model")
    sign_model(model, key, record=False, serialization=spec)
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub)
    verifier.set_hashing_config(ms_hashing(spec)).verify(model, model / "model.sig")
    flip_weight_byte(model / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors"):
        verifier.verify(model, model / "model.sig")


@pytest.mark.parametrize("hash_type", ["sha256", "blake2b"])
def test_model_signing_api_reads_modelguard_shard_signatures(
    tmp_path: Path, hash_type: str
) -> None:
    """model_signing 1.1.1 checks our shard signature and hashes the same shards to the same
    digests; only its label differs: it names shard digests ``sha256-sharded-N``, which the
    OMS v1.0 schema does not allow, and compares labels too, so its ``verify`` refuses any
    schema-valid shard bundle (docs/signature.md). This test fails if any of that changes."""
    key, _, pub = keypair(tmp_path)
    model = model_dir(tmp_path / "model")
    spec = Serialization("shards", hash_type, 300)
    sign_model(model, key, record=False, serialization=spec)
    verifier = model_signing.verifying.Config().use_elliptic_key_verifier(public_key=pub)
    signature = sigstore_pb.Signature.read(model / "model.sig")
    signed = verifier._verifier.verify(signature)  # signature + statement, model_signing's code
    ours = {rd.identifier: rd.digest.digest_hex for rd in signed.resource_descriptors()}
    theirs = ms_hashing(spec).hash(model)
    assert ours == {rd.identifier: rd.digest.digest_hex for rd in theirs.resource_descriptors()}
    assert {rd.digest.algorithm for rd in signed.resource_descriptors()} == {hash_type}
    assert {rd.digest.algorithm for rd in theirs.resource_descriptors()} == {
        f"{hash_type}-sharded-300"
    }
    with pytest.raises(ValueError, match="Hash mismatch"):
        verifier.set_hashing_config(ms_hashing(spec)).verify(model, model / "model.sig")


def test_ignore_unsigned_files_means_the_same_in_both_tools(tmp_path: Path) -> None:
    key, _, pub = keypair(tmp_path)
    model = model_dir(tmp_path / "model")
    sign_model(model, key, record=False)
    (model / "README.md").write_text("added after signing\n")
    args = ["verify", "key", str(model), "--signature", str(model / "model.sig")]
    assert oms(*args, "--public_key", str(pub)).returncode != 0
    assert not verify_model(model, keys=[key.public_key()]).ok
    done = oms(*args, "--public_key", str(pub), "--ignore_unsigned_files")
    assert done.returncode == 0, done.stdout + done.stderr
    assert verify_model(model, keys=[key.public_key()], ignore_unsigned_files=True).ok
