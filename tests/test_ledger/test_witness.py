"""Witnesses (C2SP tlog-witness, tlog-cosignature/v1): they cosign only consistent growth.

Cosignatures are checked here from the spec text (message layout, key id with type 0x04,
timestamp prefix) with cryptography directly, not with ledger.witness's verifier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from ledger import EventSpec, Ledger, NoteSigner, NoteVerificationError, open_ledger
from ledger.note import Checkpoint, sign_note, split_note
from ledger.witness import (
    Cosigner,
    CosignerVerifier,
    Witness,
    WitnessBadRequest,
    WitnessError,
    WitnessRefusal,
    add_checkpoint_request,
    parse_add_checkpoint,
    require_cosignatures,
)
from ledger.witness_http import collect_cosignature, http_transport, serve
from modelguard.cli import main as cli_main

ORIGIN = "example.org/log"


def fill(log: Ledger, count: int, tag: str = "e") -> None:
    log.append_many(
        [EventSpec("sign", {"name": f"{tag}{i}"}, f"sha256:{i:02x}", "k") for i in range(count)]
    )


@pytest.fixture
def log_key() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def log(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)


@pytest.fixture
def witness(tmp_path: Path, log_key: NoteSigner) -> Witness:
    w = Witness(
        tmp_path / "w", Cosigner.generate("witness.example/w1"), {ORIGIN: [log_key.verifier()]}
    )
    w.save()
    return Witness.load(tmp_path / "w")


def spec_check_cosignature(note_text: str, line: str, vkey: str) -> int:
    """Verify a cosignature line as the spec describes it; return its timestamp."""
    name, kid_hex, blob = vkey.split("+", 2)
    raw = base64.b64decode(blob)
    assert raw[0] == 0x04
    kid = hashlib.sha256(name.encode() + b"\n\x04" + raw[1:]).digest()[:4]
    assert kid.hex() == kid_hex
    dash, signer, sig = line.rstrip("\n").split(" ")
    assert dash == "\u2014" and signer == name
    sig_raw = base64.b64decode(sig)
    assert sig_raw[:4] == kid and len(sig_raw) == 4 + 8 + 64
    timestamp = int.from_bytes(sig_raw[4:12], "big")
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + note_text.encode()
    Ed25519PublicKey.from_public_bytes(raw[1:]).verify(sig_raw[12:], message)
    return timestamp


def test_cosigns_consistent_growth(log: Ledger, log_key: NoteSigner, witness: Witness) -> None:
    fill(log, 5)
    first = log.checkpoint(log_key)
    line = collect_cosignature(log, first, witness.add_checkpoint)
    vkey = witness.cosigner.verifier().to_key_string()
    assert spec_check_cosignature(split_note(first)[0], line, vkey) > 1_600_000_000
    fill(log, 7, tag="f")
    second = log.checkpoint(log_key)
    # The log does not know the witness's size: 409 tells it, then it proves from size 5.
    line2 = collect_cosignature(log, second, witness.add_checkpoint)
    spec_check_cosignature(split_note(second)[0], line2, vkey)
    assert witness.latest(ORIGIN) == second + line2
    assert require_cosignatures(second + line2, [witness.cosigner.verifier()], 1) == [
        "witness.example/w1"
    ]


def test_refuses_a_forked_log(
    tmp_path: Path, log: Ledger, log_key: NoteSigner, witness: Witness
) -> None:
    """The log owner rewrites history and signs it with the real key: the witness says no."""
    fill(log, 5)
    collect_cosignature(log, log.checkpoint(log_key), witness.add_checkpoint)
    fork = open_ledger(f"sqlite:///{tmp_path / 'fork.db'}", origin=ORIGIN)
    fill(fork, 9, tag="rewritten")
    forked = fork.checkpoint(log_key)
    with pytest.raises(WitnessRefusal) as refused:
        collect_cosignature(fork, forked, witness.add_checkpoint)
    assert refused.value.status == 422 and "not consistent" in str(refused.value)
    # Same size, other root: also refused; the witness's view is unchanged.
    fork5 = open_ledger(f"sqlite:///{tmp_path / 'fork5.db'}", origin=ORIGIN)
    fill(fork5, 5, tag="other")
    with pytest.raises(WitnessRefusal) as same_size:
        collect_cosignature(fork5, fork5.checkpoint(log_key), witness.add_checkpoint, 5)
    assert same_size.value.status == 422
    assert Checkpoint.from_text(split_note(witness.latest(ORIGIN) or "")[0]).size == 5


def test_refuses_rollback_and_stale_old_size(
    log: Ledger, log_key: NoteSigner, witness: Witness
) -> None:
    fill(log, 3)
    small = log.checkpoint(log_key)
    fill(log, 3, tag="g")
    big = log.checkpoint(log_key)
    collect_cosignature(log, big, witness.add_checkpoint)
    with pytest.raises(WitnessRefusal) as rolled:
        collect_cosignature(log, small, witness.add_checkpoint)
    assert rolled.value.status == 409
    with pytest.raises(WitnessRefusal) as stale:
        witness.add_checkpoint(add_checkpoint_request(0, (), big))
    assert stale.value.status == 409 and stale.value.body == "6\n"


def test_refuses_bad_log_signatures(log: Ledger, log_key: NoteSigner, witness: Witness) -> None:
    fill(log, 2)
    forged = sign_note(Checkpoint(ORIGIN, 2, log.root()).to_text(), [NoteSigner.generate(ORIGIN)])
    with pytest.raises(WitnessRefusal) as unsigned:
        witness.add_checkpoint(add_checkpoint_request(0, (), forged))
    assert unsigned.value.status == 403
    other = sign_note(
        Checkpoint("other.example/log", 0, hashlib.sha256().digest()).to_text(), [log_key]
    )
    with pytest.raises(WitnessBadRequest) as unknown:
        witness.add_checkpoint(add_checkpoint_request(0, (), other))
    assert unknown.value.status == 404
    assert witness.latest(ORIGIN) is None


def test_quorum(log: Ledger, log_key: NoteSigner, tmp_path: Path) -> None:
    fill(log, 4)
    note = log.checkpoint(log_key)
    witnesses = [
        Witness(
            tmp_path / f"w{i}", Cosigner.generate(f"w{i}.example"), {ORIGIN: [log_key.verifier()]}
        )
        for i in range(3)
    ]
    keys = [w.cosigner.verifier() for w in witnesses]
    with pytest.raises(NoteVerificationError, match="requires 2"):
        require_cosignatures(note, keys, 2)
    one = note + collect_cosignature(log, note, witnesses[0].add_checkpoint)
    with pytest.raises(NoteVerificationError, match="1 valid"):
        require_cosignatures(one, keys, 2)
    # The same witness twice counts once.
    with pytest.raises(NoteVerificationError):
        require_cosignatures(one + one.splitlines(keepends=True)[-1], keys, 2)
    two = one + collect_cosignature(log, note, witnesses[1].add_checkpoint)
    assert require_cosignatures(two, keys, 2) == ["w0.example", "w1.example"]
    # An impostor's key under a witness's name has another key id: ignored, never counted.
    impostor = Cosigner("w2.example", Cosigner.generate("x").seed)
    with_impostor = two + impostor.cosign(split_note(note)[0], 1_700_000_000)
    with pytest.raises(NoteVerificationError, match="requires 3"):
        require_cosignatures(with_impostor, keys, 3)
    # A line with a trusted witness's name and key id that does not verify fails outright.
    real = collect_cosignature(log, note, witnesses[2].add_checkpoint)
    dash, name, blob = real.split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    broken = f"{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(NoteVerificationError, match="does not verify"):
        require_cosignatures(two + broken, keys, 2)
    assert require_cosignatures(two + real, keys, 3) == ["w0.example", "w1.example", "w2.example"]
    # A cosignature over a different checkpoint does not count.
    fill(log, 1, tag="z")
    later = log.checkpoint(log_key)
    moved = later + two[len(note) :]
    with pytest.raises(NoteVerificationError):
        require_cosignatures(moved, keys, 1)


def test_key_strings_round_trip() -> None:
    cosigner = Cosigner.generate("w.example")
    assert Cosigner.from_key_string(cosigner.to_key_string()) == cosigner
    verifier = cosigner.verifier()
    assert CosignerVerifier.from_key_string(verifier.to_key_string()) == verifier


@given(st.binary(max_size=300))
def test_request_parser_is_bounded(body: bytes) -> None:
    try:
        parse_add_checkpoint(body)
    except WitnessError as error:
        assert error.status == 400


@pytest.fixture
def server(witness: Witness) -> Iterator[str]:
    httpd = serve(witness, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_http_witness(server: str, log: Ledger, log_key: NoteSigner, tmp_path: Path) -> None:
    fill(log, 3)
    submit = http_transport(server)
    note = log.checkpoint(log_key)
    line = collect_cosignature(log, note, submit)
    fill(log, 2, tag="h")
    later = log.checkpoint(log_key)
    line2 = collect_cosignature(log, later, submit, known_size=3)
    origin_path = hashlib.sha256(ORIGIN.encode()).hexdigest()
    with urllib.request.urlopen(f"{server}/{origin_path}/checkpoint", timeout=10) as response:
        assert response.read().decode() == later + line2
    assert line != line2
    fork = open_ledger(f"sqlite:///{tmp_path / 'fork.db'}", origin=ORIGIN)
    fill(fork, 8, tag="fork")
    with pytest.raises(WitnessRefusal) as refused:
        collect_cosignature(fork, fork.checkpoint(log_key), submit)
    assert refused.value.status == 422


def test_http_listens_on_loopback_only(witness: Witness) -> None:
    with pytest.raises(ValueError, match="loopback"):
        serve(witness, "0.0.0.0", 0)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out) if out.strip() else err


def init_witness_cli(
    capsys: pytest.CaptureFixture[str], state: Path, name: str, log_key: Path
) -> tuple[int, Any]:
    return run_cli(
        capsys, "ledger", "witness", "init", str(state), "--name", name, "--log-key", str(log_key)
    )


def test_cli_witness_and_cosign(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with open_ledger(url, origin=ORIGIN) as log:
        fill(log, 3)
    rc, info = run_cli(capsys, "ledger", "init", "--ledger", url)
    assert rc == 0
    pub = tmp_path / "l.db.note.pub"
    state = tmp_path / "wstate"
    rc, info = init_witness_cli(capsys, state, "w.example", pub)
    assert rc == 0 and list(info["logs"]) == [ORIGIN]
    assert (state / "witness.key").stat().st_mode & 0o777 == 0o600
    out = tmp_path / "cp.cosigned"
    rc, doc = run_cli(
        capsys, "ledger", "cosign", "--witness", str(state), "--ledger", url, "-o", str(out)
    )
    assert rc == 0 and doc["witnesses"] == ["w.example"] and doc["size"] == 3
    with open_ledger(url) as log:
        assert log.checkpoints()[-1] == out.read_text()  # kept for the gate to find
        fill(log, 2, tag="more")
    witness_key = CosignerVerifier.from_key_string((state / "witness.pub").read_text())
    assert require_cosignatures(out.read_text(), [witness_key], 1) == ["w.example"]
    rc, doc = run_cli(capsys, "ledger", "cosign", "--witness", str(state), "--ledger", url)
    assert rc == 0 and doc["size"] == 5
    # The file transport: a request for a forked history is refused (exit 1).
    fork_url = f"sqlite:///{tmp_path / 'fork.db'}"
    with open_ledger(fork_url, origin=ORIGIN) as fork:
        fill(fork, 6, tag="fork")
        signer = NoteSigner.from_key_string((tmp_path / "l.db.note.key").read_text())
        forked = fork.checkpoint(signer)
        proof = fork.consistency_proof(5, 6).hashes
    request = tmp_path / "request"
    request.write_bytes(add_checkpoint_request(5, proof, forked))
    rc, _ = run_cli(capsys, "ledger", "witness", "add-checkpoint", str(state), str(request))
    assert rc == 1
    rc, _ = run_cli(
        capsys,
        "ledger",
        "cosign",
        "--witness",
        str(state),
        "--ledger",
        fork_url,
        "--note-key",
        str(tmp_path / "l.db.note.key"),
    )
    assert rc == 1


def test_gate_quorum_reasons(
    tmp_path: Path, log: Ledger, log_key: NoteSigner, witness: Witness
) -> None:
    from modelguard import transparency

    fill(log, 2)
    note = log.checkpoint(log_key)
    vkey = witness.cosigner.verifier().to_key_string()
    key_file = tmp_path / "w.pub"
    key_file.write_text(vkey + "\n")
    assert transparency.witness_quorum_reasons(note, [key_file], 0) == []
    [reason] = transparency.witness_quorum_reasons(note, [vkey], 1)
    assert "0 valid witness cosignature(s)" in reason and "requires 1" in reason
    cosigned = note + collect_cosignature(log, note, witness.add_checkpoint)
    assert transparency.witness_quorum_reasons(cosigned, [key_file], 1) == []
    assert transparency.witness_quorum_reasons(cosigned, [vkey], 2)  # more than the keys
    with pytest.raises(Exception, match="no such witness key"):
        transparency.load_witness_key(tmp_path / "missing.pub")


def test_gate_with_a_quorum_refuses_an_uncosigned_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`verify --require-ledger` under `[ledger] witness_quorum = 1`: refused until cosigned."""
    from tests.test_ledger.signed import signed_model

    signed = signed_model(tmp_path)
    model, pub, url, note_pub = signed.model, signed.public_key, signed.url, signed.note_pub
    state = tmp_path / "wstate"
    init_witness_cli(capsys, state, "w.example", note_pub)
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'[[signers]]\nname = "release"\npublic_key = "{pub}"\n\n'
        f'[ledger]\nkey = "{note_pub}"\nstate = "{tmp_path / "gate-state"}"\n'
        f'witnesses = ["{state / "witness.pub"}"]\nwitness_quorum = 1\n'
    )
    gate = ("verify", str(model), "--policy", str(policy), "--ledger", url, "--require-ledger")
    rc, report = run_cli(capsys, *gate)
    assert rc == 1 and "witness cosignature" in json.dumps(report)
    rc, _ = run_cli(capsys, "ledger", "cosign", "--witness", str(state), "--ledger", url)
    assert rc == 0
    rc, report = run_cli(capsys, *gate)
    assert rc == 0, report
    # A cosignature by a witness the policy does not name does not count.
    other = tmp_path / "other"
    init_witness_cli(capsys, other, "x.example", note_pub)
    with open_ledger(url) as log:
        fill(log, 1, tag="later")
    rc, _ = run_cli(capsys, "ledger", "cosign", "--witness", str(other), "--ledger", url)
    assert rc == 0
    rc, report = run_cli(capsys, *gate)
    assert rc == 1 and "requires 1" in json.dumps(report)


def test_cli_serve_over_loopback(tmp_path: Path, log: Ledger, log_key: NoteSigner) -> None:
    """`modelguard ledger witness serve` as a process: a log gets cosignatures over HTTP."""
    import subprocess
    import sys

    pub = tmp_path / "log.pub"
    pub.write_text(log_key.verifier().to_key_string() + "\n")
    state = tmp_path / "served"
    Witness(state, Cosigner.generate("w.example"), {ORIGIN: [log_key.verifier()]}).save()
    server = subprocess.Popen(
        [sys.executable, "-m", "modelguard", "ledger", "witness", "serve", str(state), "--json"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        text = ""
        while not text.rstrip().endswith("}"):
            line = server.stdout.readline()
            assert line, "the witness exited before saying where it listens"
            text += line
        url = json.loads(text)["url"]
        assert url.startswith("http://127.0.0.1:")
        fill(log, 4)
        note = log.checkpoint(log_key)
        line = collect_cosignature(log, note, http_transport(url))
        assert require_cosignatures(note + line, [Witness.load(state).cosigner.verifier()], 1)
    finally:
        server.terminate()
        server.wait(timeout=30)
