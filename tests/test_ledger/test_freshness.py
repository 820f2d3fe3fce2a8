"""A freshness bound on witness cosignatures: an old checkpoint with valid old cosignatures
(a frozen view) no longer satisfies a witness quorum.

Every stale or future-dated cosignature below is a *valid* Ed25519 cosignature by a trusted
witness (checked with verify_cosignatures first), so only the timestamp rule can refuse it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ledger import NoteSigner, NoteVerificationError, open_ledger
from ledger.note import Checkpoint, sign_note, split_note
from ledger.tlog_proof import entry_proof, verify_entry_proof
from ledger.witness import (
    DEFAULT_MAX_COSIGNATURE_AGE,
    MAX_CLOCK_SKEW,
    Cosigner,
    require_cosignatures,
    verify_cosignatures,
)
from ledger.witness_http import record_cosigned
from modelguard.cli import main as cli_main
from modelguard.errors import BadInputError
from modelguard.policy import parse_policy
from tests.test_ledger.signed import signed_model

ORIGIN = "example.org/log"
NOW = 1_800_000_000
DAY = 86_400


@pytest.fixture
def log_key() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


@pytest.fixture
def note(log_key: NoteSigner) -> str:
    return sign_note(Checkpoint(ORIGIN, 3, bytes(range(32))).to_text(), [log_key])


def cosigned(note: str, *stamps: tuple[Cosigner, int]) -> str:
    text = split_note(note)[0]
    return note + "".join(cosigner.cosign(text, ts) for cosigner, ts in stamps)


def test_default_is_a_day() -> None:
    assert DEFAULT_MAX_COSIGNATURE_AGE == 24 * 3600 and 0 < MAX_CLOCK_SKEW <= 600


def test_stale_cosignature_is_refused_naming_the_witness_and_its_age(note: str) -> None:
    w = Cosigner.generate("w1.example")
    frozen = cosigned(note, (w, NOW - 3 * DAY))
    assert verify_cosignatures(frozen, [w.verifier()]) == {"w1.example": NOW - 3 * DAY}
    with pytest.raises(NoteVerificationError) as refused:
        require_cosignatures(frozen, [w.verifier()], 1, now=NOW)
    message = str(refused.value)
    assert "\n" not in message
    assert "w1.example" in message and f"{3 * DAY} s (3d 0h) ago" in message
    assert "0 fresh witness cosignature(s)" in message and f"the {DAY} s" in message
    # The same cosignature passes under a bound the verifier chose to make longer.
    assert require_cosignatures(frozen, [w.verifier()], 1, max_age=4 * DAY, now=NOW) == [
        "w1.example"
    ]


def test_future_dated_cosignature_is_refused(note: str) -> None:
    w = Cosigner.generate("w1.example")
    ahead = cosigned(note, (w, NOW + 3600))
    assert verify_cosignatures(ahead, [w.verifier()])
    with pytest.raises(NoteVerificationError, match=r"w1\.example.* 3600 s in the future"):
        require_cosignatures(ahead, [w.verifier()], 1, now=NOW)


def test_fresh_cosignature_is_accepted(note: str) -> None:
    w = Cosigner.generate("w1.example")
    assert require_cosignatures(cosigned(note, (w, NOW - 60)), [w.verifier()], 1, now=NOW) == [
        "w1.example"
    ]
    real_clock = cosigned(note, (w, int(time.time())))
    assert require_cosignatures(real_clock, [w.verifier()], 1) == ["w1.example"]


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (-DEFAULT_MAX_COSIGNATURE_AGE, True),
        (-DEFAULT_MAX_COSIGNATURE_AGE - 1, False),
        (MAX_CLOCK_SKEW, True),
        (MAX_CLOCK_SKEW + 1, False),
        (0, True),
    ],
)
def test_boundaries(note: str, offset: int, ok: bool) -> None:
    w = Cosigner.generate("w1.example")
    stamped = cosigned(note, (w, NOW + offset))
    if ok:
        assert require_cosignatures(stamped, [w.verifier()], 1, now=NOW) == ["w1.example"]
    else:
        with pytest.raises(NoteVerificationError, match="w1.example"):
            require_cosignatures(stamped, [w.verifier()], 1, now=NOW)


def test_stale_cosignatures_do_not_count_toward_a_quorum(note: str) -> None:
    ws = [Cosigner.generate(f"w{i}.example") for i in range(3)]
    keys = [w.verifier() for w in ws]
    mixed = cosigned(note, (ws[0], NOW - 10), (ws[1], NOW - 2 * DAY), (ws[2], NOW - 20))
    assert require_cosignatures(mixed, keys, 2, now=NOW) == ["w0.example", "w2.example"]
    with pytest.raises(NoteVerificationError) as refused:
        require_cosignatures(mixed, keys, 3, now=NOW)
    assert "2 fresh" in str(refused.value) and "w1.example cosigned 172800 s" in str(refused.value)
    # Quorum 0 checks nothing, but only fresh witnesses are reported as having cosigned.
    assert require_cosignatures(mixed, keys, 0, now=NOW) == ["w0.example", "w2.example"]


def test_a_bad_bound_is_bad_input(note: str) -> None:
    w = Cosigner.generate("w1.example")
    for bad in (0, -5):
        with pytest.raises(ValueError, match="maximum cosignature age"):
            require_cosignatures(note, [w.verifier()], 1, max_age=bad, now=NOW)


def test_offline_proof_with_stale_cosignatures(tmp_path: Path, log_key: NoteSigner) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)
    log.append("sign", subject={"name": "m"}, payload_digest="sha256:01", actor="k")
    w = Cosigner.generate("w1.example")
    note = cosigned(log.checkpoint(log_key), (w, NOW - 2 * DAY))
    text = entry_proof(log, 0, note).to_text()
    with pytest.raises(NoteVerificationError, match="w1.example cosigned 172800 s"):
        verify_entry_proof(text, [log_key.verifier()], [w.verifier()], 1, now=NOW)
    entry, _ = verify_entry_proof(
        text, [log_key.verifier()], [w.verifier()], 1, max_age=3 * DAY, now=NOW
    )
    assert entry.payload_digest == "sha256:01"


# --- policy and command line ----------------------------------------------------------------


def test_policy_key() -> None:
    from modelguard.keys import generate_key, public_pem

    pem = public_pem(generate_key().public_key()).decode()
    vkey = Cosigner.generate("w1.example").verifier().to_key_string()

    def ledger_table(**extra: object) -> Any:
        document = {
            "signers": [{"name": "release", "public_key_pem": pem}],
            "ledger": {"witnesses": [vkey], "witness_quorum": 1, **extra},
        }
        return parse_policy(document, source="p.toml").ledger

    assert ledger_table().max_cosignature_age == DEFAULT_MAX_COSIGNATURE_AGE
    assert ledger_table(max_cosignature_age="12h").max_cosignature_age == 12 * 3600
    assert ledger_table(max_cosignature_age=600).max_cosignature_age == 600
    for bad in ("soon", 0, -1, True, "12x"):
        with pytest.raises(BadInputError, match="max_cosignature_age"):
            ledger_table(max_cosignature_age=bad)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out) if out.strip() else None, err


def test_cli_check_tlog_proof_max_age(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    with open_ledger(url, origin=ORIGIN) as log:
        log.append("sign", subject={"name": "m"}, payload_digest="sha256:01", actor="k")
    rc, _, _ = run_cli(capsys, "ledger", "init", "--ledger", url)
    assert rc == 0
    signer = NoteSigner.from_key_string((tmp_path / "l.db.note.key").read_text())
    w = Cosigner.generate("w1.example")
    (tmp_path / "w1.pub").write_text(w.verifier().to_key_string() + "\n")
    proof = tmp_path / "e0.tlog-proof"
    with open_ledger(url) as log:
        two_days = cosigned(log.checkpoint(signer), (w, int(time.time()) - 2 * DAY))
        proof.write_text(entry_proof(log, 0, two_days).to_text())
    check = (
        "ledger",
        "check-tlog-proof",
        str(proof),
        "--key",
        str(tmp_path / "l.db.note.pub"),
        "--witness-key",
        str(tmp_path / "w1.pub"),
        "--quorum",
        "1",
    )
    rc, _, err = run_cli(capsys, *check)
    assert rc == 1
    [line] = err.strip().splitlines()
    assert "w1.example cosigned" in line and "(2d 0h) ago" in line and "86400 s" in line
    rc, doc, _ = run_cli(capsys, *check, "--max-cosignature-age", "3d")
    assert rc == 0 and doc["witnesses"] == ["w1.example"]
    rc, _, _ = run_cli(capsys, *check, "--max-cosignature-age", "1h")
    assert rc == 1
    rc, _, err = run_cli(capsys, *check, "--max-cosignature-age", "soon")
    assert rc == 2 and "max-cosignature-age" in err


def test_gate_refuses_a_frozen_cosigned_checkpoint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`verify --require-ledger` with `witness_quorum = 1`: the newest checkpoint carries a
    valid cosignature from two days ago (a frozen view): refused, until the policy allows it
    or a fresh cosignature arrives."""
    signed = signed_model(tmp_path)
    model, pub, url, note_pub = signed.model, signed.public_key, signed.url, signed.note_pub
    signer = NoteSigner.from_key_string(signed.note_key.read_text())
    w = Cosigner.generate("w1.example")
    with open_ledger(url) as log:
        size = log.size()
        note = sign_note(Checkpoint(log.origin, size, log.root(size)).to_text(), [signer])
        record_cosigned(log, cosigned(note, (w, int(time.time()) - 2 * DAY)))

    def gate(*extra: str) -> tuple[int, Any]:
        policy = tmp_path / "policy.toml"
        policy.write_text(
            f'[[signers]]\nname = "release"\npublic_key = "{pub}"\n\n'
            f'[ledger]\nkey = "{note_pub}"\nstate = "{tmp_path / "gate-state"}"\n'
            f'witnesses = ["{w.verifier().to_key_string()}"]\nwitness_quorum = 1\n'
            + "".join(f"{line}\n" for line in extra)
        )
        rc, report, _ = run_cli(
            capsys, "verify", str(model), "--policy", str(policy), "--ledger", url,
            "--require-ledger",
        )  # fmt: skip
        return rc, report

    rc, report = gate()
    text = json.dumps(report)
    assert rc == 1 and "w1.example cosigned" in text and "(2d 0h) ago" in text
    rc, report = gate('max_cosignature_age = "3d"')
    assert rc == 0, report
    # A fresh cosignature of the same tree head is accepted under the default bound.
    with open_ledger(url) as log:
        record_cosigned(log, cosigned(note, (w, int(time.time()))))
    rc, report = gate()
    assert rc == 0, report


@pytest.mark.parametrize("stale_last", [False, True])
def test_a_witness_counts_with_its_latest_cosignature(note: str, stale_last: bool) -> None:
    w = Cosigner.generate("w1.example")
    stamps = [(w, NOW - 5), (w, NOW - 3 * DAY)]
    both = cosigned(note, *(reversed(stamps) if not stale_last else stamps))
    assert require_cosignatures(both, [w.verifier()], 1, now=NOW) == ["w1.example"]


def test_verify_ledger_proof_honours_the_policy_bound(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`verify --ledger-proof` under a witness quorum: a proof whose checkpoint carries only a
    two-day-old cosignature is refused unless the policy's max_cosignature_age allows it."""
    from modelguard import transparency

    signed = signed_model(tmp_path)
    proof = tmp_path / "model.sig.tlog-proof"
    transparency.write_entry_proof(0, proof, signed.url, signed.note_key)
    w = Cosigner.generate("w1.example")
    text = proof.read_text()
    checkpoint_body = split_note(text.split("\n\n", 1)[1])[0]
    proof.write_text(text + w.cosign(checkpoint_body, int(time.time()) - 2 * DAY))

    def verify(*extra: str) -> tuple[int, str]:
        policy = tmp_path / "policy.toml"
        policy.write_text(
            f'[[signers]]\nname = "release"\npublic_key = "{signed.public_key}"\n\n'
            f'[ledger]\nkey = "{signed.note_pub}"\n'
            f'witnesses = ["{w.verifier().to_key_string()}"]\nwitness_quorum = 1\n'
            + "".join(f"{line}\n" for line in extra)
        )
        rc, report, _ = run_cli(
            capsys, "verify", str(signed.model), "--policy", str(policy), "--ledger-proof",
            str(proof),
        )  # fmt: skip
        return rc, json.dumps(report)

    rc, report = verify()
    assert rc == 1 and "w1.example cosigned" in report and "(2d 0h) ago" in report
    rc, report = verify('max_cosignature_age = "3d"')
    assert rc == 0, report
