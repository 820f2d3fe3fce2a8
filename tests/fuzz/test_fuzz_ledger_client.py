"""Property: whatever is done to the stored rows, the client accepts only the signed history.

A small log is checkpointed; then random edits hit its table (a byte of a body flipped, a row
deleted, two rows swapped, a row's body replaced by another's, the tail cut). ``advance``
must either raise a typed ledger error or hand over exactly the entries that were signed.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from contextlib import closing
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import EventSpec, LedgerError, NoteSigner, open_ledger
from ledger.client import advance, newest_trusted_checkpoint

SIZE = 7
WORK = Path(tempfile.mkdtemp(prefix="mg-fuzz-client-"))
SIGNER = NoteSigner.generate("fuzz.example/client")


def _template() -> tuple[Path, list[bytes]]:
    """One signed log, built once; each example edits a fresh copy of its file."""
    db = WORK / "template.db"
    with open_ledger(f"sqlite:///{db}", origin="fuzz.example/client") as log:
        log.append_many([EventSpec("t", {"n": str(i)}, f"d{i}", "a") for i in range(SIZE)])
        log.checkpoint(SIGNER)
        original = [body for _, body in log.bodies(0, SIZE)]
    with closing(sqlite3.connect(db)) as conn:  # fold the WAL in: one file holds it all
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db, original


TEMPLATE, ORIGINAL = _template()

edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "delete", "swap", "copy", "cut"]),
        st.integers(0, SIZE - 1),
        st.integers(0, SIZE - 1),
        st.integers(0, 400),
    ),
    min_size=1,
    max_size=3,
)


def _apply(db: Path, edit: tuple[str, int, int, int]) -> None:
    op, a, b, at = edit
    with closing(sqlite3.connect(db, isolation_level=None)) as conn:
        rows = dict(conn.execute("SELECT idx, body FROM ledger_entries").fetchall())
        if op == "flip" and a in rows:
            body = bytearray(rows[a])
            body[at % len(body)] ^= 0x01
            conn.execute("UPDATE ledger_entries SET body = ? WHERE idx = ?", (bytes(body), a))
        elif op == "delete":
            conn.execute("DELETE FROM ledger_entries WHERE idx = ?", (a,))
        elif op in ("swap", "copy") and a in rows and b in rows:
            conn.execute("UPDATE ledger_entries SET body = ? WHERE idx = ?", (rows[b], a))
            if op == "swap":
                conn.execute("UPDATE ledger_entries SET body = ? WHERE idx = ?", (rows[a], b))
        elif op == "cut":
            conn.execute("DELETE FROM ledger_entries WHERE idx >= ?", (a,))


@settings(max_examples=60)
@given(edits)
def test_the_client_accepts_only_the_signed_history(
    changes: list[tuple[str, int, int, int]],
) -> None:
    db = WORK / "l.db"
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(TEMPLATE, db)
    for change in changes:
        _apply(db, change)
    seen: list[bytes] = []
    with open_ledger(f"sqlite:///{db}", read_only=True) as log:
        try:
            note, checkpoint = newest_trusted_checkpoint(log, [SIGNER.verifier()])
            advance(log, None, note, checkpoint, lambda e: seen.append(e.canonical()))
        except LedgerError:
            return
    assert seen == ORIGINAL
