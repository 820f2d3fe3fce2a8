"""Verified inference: verification before decryption, parity, no plaintext on disk, providers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tinymodels import mlp_onnx, model_dir

from modelguard.encryption import ContainerReader, encrypt_model
from modelguard.errors import BadInputError, DecryptionError, SignatureError, VerificationError
from modelguard.keys import generate_key, write_keypair
from modelguard.runtime import choose_providers, cuda_usable, open_session, open_verified
from modelguard.signing.files import signed_manifest
from modelguard.signing.sign import sign_model

X = np.random.default_rng(7).standard_normal((6, 8)).astype(np.float32)


@pytest.fixture
def signed_encrypted(tmp_path: Path) -> dict:
    src = tmp_path / "src" / "m.onnx"
    src.parent.mkdir()
    mlp_onnx(src, hidden=64)
    signer, identity = generate_key(), X25519PrivateKey.generate()
    (tmp_path / "enc").mkdir()
    enc = tmp_path / "enc" / "m.onnx.mgenc"
    result = encrypt_model(
        src, enc, recipients=[identity.public_key()], sign_key=signer, record=False
    )
    return {"src": src, "enc": enc, "sig": result.signature, "signer": signer, "identity": identity}


def plain_outputs(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": X})[
        0
    ]


def test_encrypted_session_matches_plain_session_bit_exactly(signed_encrypted: dict) -> None:
    s = signed_encrypted
    session = open_session(
        s["enc"],
        signature=s["sig"],
        keys=[s["signer"].public_key()],
        identity=s["identity"],
        providers="cpu",
    )
    got = session.run(None, {"x": X})[0]
    assert np.array_equal(got, plain_outputs(s["src"]))
    assert session.get_providers()[0] == "CPUExecutionProvider"


def test_encrypted_directory_model_parity(tmp_path: Path) -> None:
    src = model_dir(tmp_path / "model")
    signer = generate_key()
    result = encrypt_model(src, tmp_path / "enc", key=bytes(32), sign_key=signer, record=False)
    assert result.signature == tmp_path / "enc" / "model.sig"
    verified = open_verified(
        tmp_path / "enc", keys=[signer.public_key()], key=bytes(32), providers="cpu"
    )
    assert verified.encrypted and verified.tensors_verified == 4
    assert np.array_equal(
        verified.session.run(None, {"x": X})[0], plain_outputs(src / "model.onnx")
    )


def test_verification_runs_before_any_decryption(
    signed_encrypted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = signed_encrypted
    unlocked: list[Path] = []
    original = ContainerReader.unlock
    monkeypatch.setattr(
        ContainerReader,
        "unlock",
        lambda self, ids: unlocked.append(self.path) or original(self, ids),
    )
    data = bytearray(s["enc"].read_bytes())
    data[-40] ^= 0x01  # inside the last tensor segment
    s["enc"].write_bytes(bytes(data))
    with pytest.raises(VerificationError):
        open_session(
            s["enc"], signature=s["sig"], keys=[s["signer"].public_key()], identity=s["identity"]
        )
    stranger = generate_key()
    with pytest.raises(SignatureError):
        open_session(
            s["enc"], signature=s["sig"], keys=[stranger.public_key()], identity=s["identity"]
        )
    assert unlocked == []


def test_wrong_identity_after_valid_signature(signed_encrypted: dict) -> None:
    s = signed_encrypted
    with pytest.raises(DecryptionError):
        open_session(
            s["enc"],
            signature=s["sig"],
            keys=[s["signer"].public_key()],
            identity=X25519PrivateKey.generate(),
        )


def test_no_trust_anchor_is_refused(signed_encrypted: dict) -> None:
    s = signed_encrypted
    with pytest.raises(BadInputError):
        open_session(s["enc"], identity=s["identity"])


def test_plaintext_model_goes_through_the_same_gate(tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    mlp_onnx(src)
    signer = generate_key()
    signed = sign_model(src, signer, record=False)
    session = open_session(
        src, signature=signed.signature_path, keys=[signer.public_key()], providers="cpu"
    )
    assert np.array_equal(session.run(None, {"x": X})[0], plain_outputs(src))
    mlp_onnx(src, seed=9)  # same architecture, other weights: a swapped model
    with pytest.raises(VerificationError):
        open_session(src, signature=signed.signature_path, keys=[signer.public_key()])


def test_providers() -> None:
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    if cuda_usable():
        assert choose_providers("cuda")[0] == "CUDAExecutionProvider"
    else:
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(BadInputError, match="not usable"):
            choose_providers("cuda")
    with pytest.raises(BadInputError):
        choose_providers("tpu")


def _write_keys(tmp_path: Path, s: dict) -> tuple[Path, Path]:
    keys = tmp_path / "keys"
    write_keypair(keys, "signer", s["signer"], None)
    identity = keys / "alice.priv"
    identity.write_bytes(
        s["identity"].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return keys / "signer.pub", identity


def _cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_run_leaves_no_plaintext_on_disk(signed_encrypted: dict, tmp_path: Path) -> None:
    """Run inference in a subprocess with its own TMPDIR, then scan TMPDIR and the cwd."""
    s = signed_encrypted
    pub, identity = _write_keys(tmp_path, s)
    work, tmpdir = tmp_path / "work", tmp_path / "tmpdir"
    work.mkdir()
    tmpdir.mkdir()
    np.save(work / "x.npy", X)
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "MODELGUARD_LEDGER": f"sqlite:///{tmp_path / 'l.db'}",
    }
    done = _cli(
        "run",
        str(s["enc"]),
        "--signature",
        str(s["sig"]),
        "--key",
        str(pub),
        "--identity",
        str(identity),
        "--input",
        "x.npy",
        "--output",
        "y.npy",
        "--json",
        cwd=work,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["provider"] == "CPUExecutionProvider" and document["tensors_verified"] == 4
    assert np.array_equal(np.load(work / "y.npy"), plain_outputs(s["src"]))

    from modelguard.formats import parse_model_file

    parsed = parse_model_file(s["src"], root=s["src"].parent)
    assert parsed is not None
    needles = [bytes(t.read()) for t in parsed.tensors] + [parsed.structure[:64]]
    scanned = 0
    for folder in (work, tmpdir, s["enc"].parent):
        for path in folder.rglob("*"):
            if path.is_file():
                blob = path.read_bytes()
                scanned += 1
                for needle in needles:
                    assert needle[:48] not in blob, f"plaintext bytes found in {path}"
    assert scanned >= 3  # x.npy, y.npy, the container (and whatever else got written)


def test_run_cli_refuses_tampered_container_with_one_line(
    signed_encrypted: dict, tmp_path: Path
) -> None:
    s = signed_encrypted
    pub, identity = _write_keys(tmp_path, s)
    np.save(tmp_path / "x.npy", X)
    data = bytearray(s["enc"].read_bytes())
    data[len(data) // 2] ^= 0x80
    s["enc"].write_bytes(bytes(data))
    done = _cli(
        "run",
        str(s["enc"]),
        "--signature",
        str(s["sig"]),
        "--key",
        str(pub),
        "--identity",
        str(identity),
        "--input",
        "x.npy",
        "--output",
        "y.npy",
        cwd=tmp_path,
        env=dict(os.environ),
    )
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1 and "modelguard: error:" in done.stderr
    assert not (tmp_path / "y.npy").exists()


def test_cli_keygen_encrypt_sign_run_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from modelguard.cli.main import main

    def cli(*args: str) -> tuple[int, dict]:
        with pytest.raises(SystemExit) as exited:
            main([*args, "--json"])
        out = capsys.readouterr().out
        return int(exited.value.code or 0), json.loads(out)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ID_PASS", "identity secret")
    monkeypatch.setenv("MODELGUARD_LEDGER", f"sqlite:///{tmp_path / 'ledger.db'}")
    mlp_onnx(tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", X)
    assert cli("keygen", "--out", "k", "--name", "signer", "--no-passphrase")[0] == 0
    code, made = cli(
        "keygen",
        "--out",
        "k",
        "--name",
        "alice",
        "--purpose",
        "encryption",
        "--passphrase-env",
        "ID_PASS",
    )
    assert code == 0 and made["algorithm"] == "x25519" and made["encrypted"] is True
    code, enc = cli(
        "encrypt",
        "m.onnx",
        "--out",
        "m.onnx.mgenc",
        "--recipient",
        "k/alice.pub",
        "--sign-key",
        "k/signer.priv",
    )
    assert code == 0 and enc["signature"].endswith("model.sig")
    from ledger import open_ledger

    (event,) = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}").entries(kind="encrypt")
    # One root for a model: the container header, the ledger's encrypt entry and a signature of
    # the plaintext model all name the same layer root (BLAKE3 tensor leaves, SHA-256 file
    # leaves). Before container version 2 the header recorded an all-SHA-256 root instead.
    signature_root = signed_manifest(tmp_path / "m.onnx").layer_root
    assert event.subject["root"] == enc["layer_root"] == signature_root
    assert (enc["hash_algorithm"], enc["file_hash_algorithm"]) == ("blake3", "sha256")
    code, ran = cli(
        "run",
        "m.onnx.mgenc",
        "--key",
        "k/signer.pub",
        "--identity",
        "k/alice.priv",
        "--identity-passphrase-env",
        "ID_PASS",
        "--input",
        "x.npy",
        "--output",
        "y.npy",
        "--require-ledger",
        "--ledger-key",
        "ledger.db.note.pub",
    )
    assert code == 0 and ran["encrypted"] is True and ran["layer_root"] == enc["layer_root"]
    assert np.array_equal(np.load(tmp_path / "y.npy"), plain_outputs(tmp_path / "m.onnx"))


def test_version_1_container_opens_verified(tmp_path: Path) -> None:
    """A container written before version 2 (SHA-256 tensor digests) still runs, verified."""
    fixtures = Path(__file__).parent / "testdata" / "containers-v1"
    (tmp_path / "enc").mkdir()
    container = tmp_path / "enc" / "mlp.onnx.mgenc"
    container.write_bytes((fixtures / "mlp.onnx.mgenc").read_bytes())
    signer = generate_key()
    signed = sign_model(container, signer, record=False)
    verified = open_verified(
        container,
        signature=signed.signature_path,
        keys=[signer.public_key()],
        key=bytes(range(32)),
        providers="cpu",
    )
    assert verified.tensors_verified == 4
    with ContainerReader(container) as reader:
        assert reader.version == 1 and verified.layer_root == reader.layer_root
    got = verified.session.run(None, {"x": X})[0]
    assert np.array_equal(got, plain_outputs(fixtures / "mlp.onnx"))


def test_decryption_holders_are_aligned_private_and_sized_by_shape() -> None:
    from modelguard.encryption.container import TensorEntry
    from modelguard.errors import FormatError
    from modelguard.runtime import _holders

    tensors = [
        TensorEntry("a", "float32", (3,), 0, 12, "m.onnx"),
        TensorEntry("b", "bfloat16", (2, 2), 12, 8, "m.onnx"),
        TensorEntry("c", "int8", (5,), 20, 5, "m.onnx"),
    ]
    arrays = _holders(tensors)
    assert [a.shape for a in arrays] == [(3,), (2, 2), (5,)]
    assert all(a.ctypes.data % 64 == 0 and a.flags.writeable for a in arrays)
    arrays[0][:] = 1.0
    arrays[2][:] = 7
    assert arrays[1].view(np.uint8).sum() == 0 and arrays[0].sum() == 3.0  # no overlap
    # a length that disagrees with dtype x shape (a container made with the key) is bad input
    with pytest.raises(FormatError, match="does not match its shape"):
        _holders([TensorEntry("d", "float32", (3,), 0, 16, "m.onnx")])
