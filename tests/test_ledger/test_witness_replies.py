"""What answers at a witness URL is not trusted by the log either: ``ledger cosign`` keeps
``note + reply`` among the log's checkpoints, so a reply must be cosignature lines and
nothing else, and a 409 body must be a plain size."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ledger import EventSpec, Ledger, NoteSigner, open_ledger
from ledger.note import split_note
from ledger.witness import Cosigner, Witness, WitnessBadRequest, WitnessRefusal
from ledger.witness_http import collect_cosignature

ORIGIN = "example.org/log"


@pytest.fixture
def log(tmp_path: Path) -> Ledger:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)
    log.append_many([EventSpec("sign", {"name": f"m{i}"}, f"sha256:{i}", "k") for i in range(3)])
    return log


@pytest.fixture
def log_key() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


def blob(size: int) -> str:
    return base64.b64encode(bytes(size)).decode()


BAD_REPLIES = {
    "empty": "",
    "not a signature line": "hello\n",
    "a blank line, then text": "\n\nevil.example/log\n1\n" + blob(32) + "\n",
    "no final newline": f"\u2014 w.example {blob(4 + 8 + 64)}",
    "a note signature, not a cosignature": f"\u2014 w.example {blob(4 + 64)}\n",
    "bad base64": "\u2014 w.example !!!!\n",
}


@pytest.mark.parametrize("reply", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_malformed_replies_are_refused(log: Ledger, log_key: NoteSigner, reply: str) -> None:
    note = log.checkpoint(log_key)
    with pytest.raises(WitnessBadRequest):
        collect_cosignature(log, note, lambda body: reply)


def test_a_real_cosignature_passes(log: Ledger, log_key: NoteSigner, tmp_path: Path) -> None:
    witness = Witness(
        tmp_path / "w", Cosigner.generate("w.example"), {ORIGIN: [log_key.verifier()]}
    )
    note = log.checkpoint(log_key)
    line = collect_cosignature(log, note, witness.add_checkpoint)
    assert split_note(note + line)[1][-1][0] == "w.example"


@pytest.mark.parametrize("body", ["\u00b2\n", "9" * 5000 + "\n", "-1\n"])
def test_an_odd_409_body_is_the_witness_refusal(
    log: Ledger, log_key: NoteSigner, body: str
) -> None:
    def refuse(request: bytes) -> str:
        raise WitnessRefusal("old size is not mine", 409, body)

    with pytest.raises(WitnessRefusal) as refused:
        collect_cosignature(log, log.checkpoint(log_key), refuse)
    assert refused.value.status == 409
