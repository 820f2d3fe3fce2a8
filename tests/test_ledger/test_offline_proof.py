"""Offline ledger proofs (C2SP tlog-proof): `sign --ledger-proof`, `verify --ledger-proof`.

The proof file is also read here by the spec's steps (its lines, the RFC 9162 path walk,
the checkpoint signature), without ledger.tlog_proof.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from ledger import LedgerInputError, NoteSigner, ProofError, open_ledger
from ledger.note import Checkpoint, sign_note
from ledger.tlog_proof import TlogProof, entry_proof, verify_entry_proof
from ledger.witness import Cosigner, Witness
from ledger.witness_http import collect_cosignature
from modelguard.cli import main as cli_main
from modelguard.keys import generate_key, write_keypair
from tests.tinymodels import model_dir


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out) if out.strip() else err


def spec_verify(text: str, vkey: str) -> dict[str, Any]:
    """A tlog proof checked by the spec's four steps; returns the entry from ``extra``."""
    head, note = text.split("\n\n", 1)
    lines = head.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    extra = base64.b64decode(lines[1].removeprefix("extra "))
    index = int(lines[2].removeprefix("index "))
    path = [base64.b64decode(x) for x in lines[3:]]
    name, kid, blob = vkey.strip().split("+", 2)
    body, sigs = note.split("\n\n", 1)
    body += "\n"
    sig = next(s.split(" ")[2] for s in sigs.splitlines() if s.split(" ")[1] == name)
    raw = base64.b64decode(sig)
    assert raw[:4].hex() == kid
    Ed25519PublicKey.from_public_bytes(base64.b64decode(blob)[1:]).verify(raw[4:], body.encode())
    _, size, root = body.splitlines()[:3]
    # RFC 9162 2.1.3.2
    fn, sn, r = index, int(size) - 1, hashlib.sha256(b"\x00" + extra).digest()
    for p in path:
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hashlib.sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    assert sn == 0 and r == base64.b64decode(root)
    return json.loads(extra)  # type: ignore[no-any-return]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("MG_TEST_PASS", "pass phrase")
    monkeypatch.chdir(tmp_path)
    priv, pub = write_keypair(tmp_path / "keys", "signer", generate_key(), b"pass phrase")
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    return {
        "priv": str(priv),
        "pub": str(pub),
        "model": model_dir(tmp_path / "model"),
        "other": model_dir(tmp_path / "other", seed=1),
        "ledger": url,
        "note_pub": str(tmp_path / "ledger.db.note.pub"),
    }


def sign(capsys: pytest.CaptureFixture[str], s: dict[str, Any], model: Path, proof: Path) -> Any:
    rc, doc = run_cli(
        capsys,
        "sign",
        str(model),
        "--key",
        s["priv"],
        "--passphrase-env",
        "MG_TEST_PASS",
        "--ledger",
        s["ledger"],
        "--ledger-proof",
        str(proof),
    )
    assert rc == 0, doc
    return doc


def verify(
    capsys: pytest.CaptureFixture[str], s: dict[str, Any], model: Path, proof: Path, *extra: str
) -> tuple[int, Any]:
    return run_cli(
        capsys, "verify", str(model), "--key", s["pub"], "--ledger-proof", str(proof), *extra
    )


def test_sign_writes_a_proof_that_verifies_offline(
    capsys: pytest.CaptureFixture[str], setup: dict[str, Any], tmp_path: Path
) -> None:
    proof = tmp_path / "model.sig.tlog-proof"
    signed = sign(capsys, setup, setup["model"], proof)
    entry = spec_verify(proof.read_text(), Path(setup["note_pub"]).read_text())
    assert entry["kind"] == "sign" and entry["payload_digest"] == signed["payload_digest"]
    # The ledger is gone: the verifier has only the model, the proof and the keys.
    (tmp_path / "ledger.db").unlink()
    rc, report = verify(capsys, setup, setup["model"], proof, "--ledger-key", setup["note_pub"])
    assert rc == 0, report
    assert report["ledger"]["offline_proof"]["index"] == entry["index"]
    assert not (tmp_path / "ledger.db").exists()


def test_proof_for_another_signature_fails(
    capsys: pytest.CaptureFixture[str], setup: dict[str, Any], tmp_path: Path
) -> None:
    sign(capsys, setup, setup["model"], tmp_path / "a.proof")
    sign(capsys, setup, setup["other"], tmp_path / "b.proof")
    rc, report = verify(
        capsys, setup, setup["model"], tmp_path / "b.proof", "--ledger-key", setup["note_pub"]
    )
    assert rc == 1 and "not the sign entry of a verified signature" in json.dumps(report)


def test_tampered_or_forged_proofs_fail(
    capsys: pytest.CaptureFixture[str], setup: dict[str, Any], tmp_path: Path
) -> None:
    proof = tmp_path / "p"
    sign(capsys, setup, setup["model"], proof)
    text = proof.read_text()
    key = ("--ledger-key", setup["note_pub"])
    # A changed checkpoint root, a changed path hash, an unsigned checkpoint, the wrong key.
    head, note = text.split("\n\n", 1)
    lines = note.split("\n")
    root = base64.b64decode(lines[2])
    lines[2] = base64.b64encode(bytes([root[0] ^ 1]) + root[1:]).decode()
    cases = {"root": head + "\n\n" + "\n".join(lines)}
    forger = NoteSigner.generate(lines[0])
    cp = Checkpoint.from_text("\n".join(note.split("\n")[:3]) + "\n")
    cases["forged"] = head + "\n\n" + sign_note(cp.to_text(), [forger])
    extra_line = head.split("\n")[1]
    body = json.loads(base64.b64decode(extra_line[6:]))
    body["payload_digest"] = "sha256:" + "00" * 32
    import rfc8785

    cases["entry"] = text.replace(
        extra_line, "extra " + base64.b64encode(rfc8785.dumps(body)).decode()
    )
    for name, bad in cases.items():
        proof.write_text(bad)
        rc, report = verify(capsys, setup, setup["model"], proof, *key)
        assert rc == 1, (name, report)
    proof.write_text(text)
    other_key = tmp_path / "other.pub"
    other_key.write_text(NoteSigner.generate("x").verifier().to_key_string())
    rc, _ = verify(capsys, setup, setup["model"], proof, "--ledger-key", str(other_key))
    assert rc == 1
    rc, _ = verify(capsys, setup, setup["model"], proof)
    assert rc == 2  # no --ledger-key: bad usage, not a silent pass


def test_witness_quorum_in_proofs(tmp_path: Path) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin="ex/log")
    log.append("sign", subject={"name": "m"}, payload_digest="sha256:01", actor="k")
    signer = NoteSigner.generate("ex/log")
    witness = Witness(
        tmp_path / "w", Cosigner.generate("w.example"), {"ex/log": [signer.verifier()]}
    )
    note = log.checkpoint(signer)
    plain = entry_proof(log, 0, note).to_text()
    keys = [witness.cosigner.verifier()]
    with pytest.raises(Exception, match="requires 1"):
        verify_entry_proof(plain, [signer.verifier()], keys, 1)
    cosigned = note + collect_cosignature(log, note, witness.add_checkpoint)
    entry, cp = verify_entry_proof(
        entry_proof(log, 0, cosigned).to_text(), [signer.verifier()], keys, 1
    )
    assert entry.payload_digest == "sha256:01" and cp.size == 1


def test_cli_prove_and_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with open_ledger(url, origin="ex/cli") as log:
        for i in range(5):
            log.append("sign", subject={"name": "m"}, payload_digest=f"sha256:{i}", actor="k")
    out = tmp_path / "e3.tlog-proof"
    rc, doc = run_cli(capsys, "ledger", "prove", "3", "--ledger", url, "--tlog-proof", str(out))
    assert rc == 0 and doc["payload_digest"] == "sha256:3"
    pub = tmp_path / "l.db.note.pub"
    rc, doc = run_cli(capsys, "ledger", "check-tlog-proof", str(out), "--key", str(pub))
    assert rc == 0 and doc["index"] == 3
    out.write_text(out.read_text().replace("index 3", "index 2"))
    rc, _ = run_cli(capsys, "ledger", "check-tlog-proof", str(out), "--key", str(pub))
    assert rc == 1


def test_round_trip_and_bad_shapes() -> None:
    proof = TlogProof(
        5, (bytes(32), bytes(range(32))), "o\n1\n" + "A" * 43 + "=\n\n— o AAAAAAAA\n", b"x"
    )
    assert TlogProof.from_text(proof.to_text()) == proof
    with pytest.raises(LedgerInputError):
        TlogProof.from_text("c2sp.org/tlog-proof@v1\nindex 01\n\n" + proof.checkpoint)
    signer = NoteSigner.generate("o")
    note = sign_note(Checkpoint("o", 1, bytes(32)).to_text(), [signer])
    TlogProof(0, (), note).verify(bytes(32), [signer.verifier()])  # a one-leaf tree
    with pytest.raises(ProofError):
        TlogProof(3, (), note).verify(bytes(32), [signer.verifier()])
    with pytest.raises(ProofError):
        TlogProof(0, (), note).verify(bytes(31) + b"\x01", [signer.verifier()])


@given(st.text(max_size=200))
def test_parser_only_raises_input_errors(text: str) -> None:
    with contextlib.suppress(LedgerInputError):
        TlogProof.from_text(text)
