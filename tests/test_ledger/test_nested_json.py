"""An entry body nested far deeper than the JSON decoder recurses (``[[[...]]]``) raises
RecursionError, not ValueError. It can come from an edited database row or from a tile
mirror's bundle; every reader must report it as a bad entry, never crash (exit 3)."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from ledger import LedgerInputError, NoteSigner, open_ledger
from ledger.entry import Entry
from ledger.tiles import export_tiles, verify_tiles
from modelguard.cli import main as cli_main
from tests.test_ledger.signed import signed_model

DEEP = b"[" * 30_000 + b'"sign"' + b"]" * 30_000  # < 64 KiB, holds "sign"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> int:
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    capsys.readouterr()
    return int(done.value.code or 0)


def test_parser_refuses_deep_nesting() -> None:
    with pytest.raises(LedgerInputError, match="not valid JSON"):
        Entry.from_canonical(DEEP)


def test_a_mirror_with_a_deeply_nested_entry_fails_verification(tmp_path: Path) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin="ex/log")
    for i in range(3):
        log.append("sign", subject={"name": f"m{i}"}, payload_digest=f"sha256:{i}", actor="k")
    signer = NoteSigner.generate("ex/log")
    out = tmp_path / "tiles"
    export_tiles(log, out, signer)
    # The mirror rewrites entry 1 and its level-0 hash so that the two agree.
    bundle, tile = out / "tile/entries/000.p/3", out / "tile/0/000.p/3"
    entries = [log.get(i).canonical() for i in range(3)]
    entries[1] = DEEP
    bundle.write_bytes(b"".join(len(e).to_bytes(2, "big") + e for e in entries))
    tile.write_bytes(b"".join(hashlib.sha256(b"\x00" + e).digest() for e in entries))
    report = verify_tiles(out, [signer.verifier()])
    assert not report.ok
    assert any(p.index == 1 for p in report.audit.problems)


def test_gate_and_audit_refuse_a_deeply_nested_row(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    signed = signed_model(tmp_path, entries_before=3)
    with sqlite3.connect(tmp_path / "ledger" / "l.db") as db:
        db.execute("UPDATE ledger_entries SET body = ? WHERE idx = 1", (DEEP,))
    gate = (
        "verify", str(signed.model), "--trust-key", str(signed.public_key), "--ledger",
        signed.url, "--require-ledger", "--ledger-key", str(signed.note_pub),
        "--ledger-state", str(tmp_path / "state"),
    )  # fmt: skip
    assert run_cli(capsys, *gate) == 1
    audit = ("ledger", "verify", "--ledger", signed.url, "--ledger-key", str(signed.note_pub))
    assert run_cli(capsys, *audit) == 1
