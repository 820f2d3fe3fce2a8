"""SQLite types are per value: an attacker who edits the database can store an entry body or a
tree node as TEXT or as an INTEGER instead of a BLOB. ``bytes(10**12)`` would try to allocate a
terabyte, ``bytes("...")`` raises TypeError: either would end a verifier with an internal error
(exit 3) or worse. Every reader must instead refuse the edited row as tampering (exit 1).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from ledger import LedgerIntegrityError, NoteSigner, open_ledger
from ledger.merkle import node_id
from ledger.tiles import export_tiles
from modelguard.cli import main as cli_main
from tests.test_ledger.signed import signed_model

HUGE = 2**62  # bytes(HUGE) is a MemoryError, never a row

EDITS = {
    "body as text": "UPDATE ledger_entries SET body = CAST(body AS TEXT) WHERE idx = 1",
    "body as a huge integer": f"UPDATE ledger_entries SET body = {HUGE} WHERE idx = 1",
    "node as a huge integer": f"UPDATE ledger_nodes SET hash = {HUGE} WHERE id = {node_id(1, 0)}",
}


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out) if out.strip() else err


def edit(db_path: Path, sql: str) -> None:
    with sqlite3.connect(db_path) as db:
        db.execute(sql)


@pytest.mark.parametrize("sql", EDITS.values(), ids=EDITS.keys())
def test_library_readers_refuse_a_retyped_row(tmp_path: Path, sql: str) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin="ex/log")
    for i in range(4):
        log.append("sign", subject={"name": f"m{i}"}, payload_digest=f"sha256:{i}", actor="k")
    signer = NoteSigner.generate("ex/log")
    note = log.checkpoint(signer)
    edit(tmp_path / "l.db", sql)
    with pytest.raises(LedgerIntegrityError):
        if "node" in sql:
            log.inclusion_proof(3, 4)  # reads node (1, 0)
        else:
            list(log.bodies(0, 4))
    if "node" not in sql:
        with pytest.raises(LedgerIntegrityError):
            log.get(1)
        with pytest.raises(LedgerIntegrityError):
            export_tiles(log, tmp_path / "tiles", signer, checkpoint_note=note)
    report = log.verify([signer.verifier()]) if "node" in sql else None
    assert report is None or not report.ok


@pytest.mark.parametrize("sql", EDITS.values(), ids=EDITS.keys())
def test_gate_refuses_a_retyped_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, sql: str
) -> None:
    signed = signed_model(tmp_path, entries_before=3)  # the sign entry is entry 3
    url, note_pub, db_path = signed.url, signed.note_pub, tmp_path / "ledger" / "l.db"
    edit(db_path, sql)  # node (1, 0) is on entry 3's inclusion path in the tree of 4
    gate = (
        "verify", str(signed.model), "--trust-key", str(signed.public_key), "--ledger", url, "--require-ledger",
        "--ledger-key", str(note_pub), "--ledger-state", str(tmp_path / "state"),
    )  # fmt: skip
    rc, report = run_cli(capsys, *gate)
    assert rc == 1, report
    rc, _ = run_cli(capsys, "ledger", "verify", "--ledger", url, "--ledger-key", str(note_pub))
    assert rc == 1
