"""Numbers in untrusted ledger texts (checkpoint size, tlog-proof index, witness request's old
size): ``str.isdigit`` accepts ``²`` and other scripts' digits, and ``int`` refuses them or
any string over 4,300 digits with a plain ValueError. Each parser must refuse such a field as
bad input (LedgerInputError: exit 2, HTTP 400), never crash (exit 3, HTTP 500).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import LedgerInputError, NoteSigner
from ledger.note import Checkpoint, is_decimal, sign_note
from ledger.tlog_proof import TlogProof
from ledger.witness import Cosigner, Witness, WitnessBadRequest, parse_add_checkpoint
from modelguard.cli import main as cli_main

ROOT = "A" * 43 + "="
BAD = ["\u00b2", "\u0661\u0662\u0663", "9" * 5000, str(2**64), "01", "", "+1", " 1", "1_0", "-0"]


def checkpoint_text(size: str) -> str:
    return f"ex/log\n{size}\n{ROOT}\n"


def proof_text(index: str, note: str) -> str:
    return f"c2sp.org/tlog-proof@v1\nindex {index}\n\n{note}"


@pytest.fixture(scope="module")
def note() -> str:
    return sign_note(checkpoint_text("1"), [NoteSigner.generate("ex/log")])


@pytest.mark.parametrize("field", BAD)
def test_bad_numbers_are_bad_input(field: str, note: str) -> None:
    assert not is_decimal(field)
    with pytest.raises(LedgerInputError):
        Checkpoint.from_text(checkpoint_text(field))
    with pytest.raises(LedgerInputError):
        TlogProof.from_text(proof_text(field, note))
    with pytest.raises(WitnessBadRequest) as refused:
        parse_add_checkpoint(f"old {field}\n\n{note}".encode())
    assert refused.value.status == 400


def test_largest_uint64_is_a_number(note: str) -> None:
    assert Checkpoint.from_text(checkpoint_text(str(2**64 - 1))).size == 2**64 - 1
    assert TlogProof.from_text(proof_text("0", note)).index == 0


@given(st.text(max_size=30))
def test_any_size_field_parses_or_is_bad_input(field: str) -> None:
    try:
        assert Checkpoint.from_text(checkpoint_text(field)).size == int(field)
    except LedgerInputError:
        assert not is_decimal(field)


@given(st.text(max_size=30))
def test_any_old_size_is_parsed_or_refused_with_400(field: str) -> None:
    try:
        parse_add_checkpoint(f"old {field}\n\nx\n".encode())
    except WitnessBadRequest as error:
        assert error.status == 400


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out) if out.strip() else err


def test_cli_refuses_odd_numbers_as_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, note: str
) -> None:
    log_key = tmp_path / "log.pub"
    log_key.write_text(NoteSigner.generate("ex/log").verifier().to_key_string() + "\n")
    proof = tmp_path / "p.tlog-proof"
    proof.write_text(proof_text("\u00b2", note))
    rc, _ = run_cli(capsys, "ledger", "check-tlog-proof", str(proof), "--key", str(log_key))
    assert rc == 2
    state = tmp_path / "w"
    Witness(state, Cosigner.generate("w.example"), {}).save()
    request = tmp_path / "request"
    request.write_text(f"old {'9' * 5000}\n\n{note}")
    rc, _ = run_cli(capsys, "ledger", "witness", "add-checkpoint", str(state), str(request))
    assert rc == 2
