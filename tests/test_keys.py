"""Keys: generation, encrypted 0600 storage, key ids, loading errors, the keygen CLI."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from modelguard.cli import main as cli_main
from modelguard.errors import BadInputError, KeyFileError
from modelguard.keys import (
    ALGORITHMS,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    oms_hint,
    sign_bytes,
    verify_bytes,
    write_keypair,
)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main(list(args))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_roundtrip_encrypted_keypair(tmp_path: Path, algorithm: str) -> None:
    key = generate_key(algorithm)
    priv, pub = write_keypair(tmp_path, "k", key, b"correct horse")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in priv.read_bytes()
    loaded = load_private_key(priv, b"correct horse")
    public = load_public_key(pub)
    assert key_id(public) == key_id(loaded.public_key()) == key_id(key.public_key())
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(public) == hashlib.sha256(der).hexdigest()
    assert oms_hint(public) == hashlib.sha256(pub.read_bytes()).hexdigest()
    signature = sign_bytes(loaded, b"message")
    assert verify_bytes(public, signature, b"message")
    assert not verify_bytes(public, signature, b"massage")


def test_wrong_or_missing_passphrase_is_one_line_key_error(tmp_path: Path) -> None:
    priv, _ = write_keypair(tmp_path, "k", generate_key(), b"right")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(priv, b"wrong")
    with pytest.raises(KeyFileError, match="encrypted"):
        load_private_key(priv, None)


def test_wrong_algorithm_is_refused(tmp_path: Path) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.priv").write_bytes(pem)
    with pytest.raises(KeyFileError, match="unsupported key algorithm"):
        load_private_key(tmp_path / "rsa.priv", None)
    k1 = ec.generate_private_key(ec.SECP256K1())
    (tmp_path / "k1.pub").write_bytes(
        k1.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(KeyFileError, match="curve"):
        load_public_key(tmp_path / "k1.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")


def test_refuses_overwrite_and_empty_passphrase(tmp_path: Path) -> None:
    write_keypair(tmp_path, "k", generate_key(), None)
    with pytest.raises(BadInputError, match="overwrite"):
        write_keypair(tmp_path, "k", generate_key(), None)
    with pytest.raises(BadInputError, match="empty passphrase"):
        write_keypair(tmp_path, "other", generate_key(), b"")


def test_keygen_cli_json_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MG_TEST_PASS", "s3cret")
    code, out, _ = run_cli(
        capsys,
        "keygen",
        "--out",
        str(tmp_path),
        "--name",
        "ci",
        "--algorithm",
        "ecdsa-p384",
        "--passphrase-env",
        "MG_TEST_PASS",
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert document["encrypted"] and document["algorithm"] == "ecdsa-p384"
    assert "s3cret" not in out and "PRIVATE" not in out
    key = load_private_key(tmp_path / "ci.priv", b"s3cret")
    assert document["key_id"] == key_id(key.public_key())
    assert stat.S_IMODE((tmp_path / "ci.priv").stat().st_mode) == 0o600


def test_keygen_cli_needs_an_explicit_passphrase_choice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "keygen", "--out", str(tmp_path))  # stdin is not a terminal
    assert code == 2 and "--no-passphrase" in err and "Traceback" not in err
    code, out, _ = run_cli(capsys, "keygen", "--out", str(tmp_path), "--no-passphrase", "--json")
    assert code == 0 and json.loads(out)["encrypted"] is False
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "modelguard.priv").read_bytes()
