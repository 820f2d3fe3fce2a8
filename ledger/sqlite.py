"""SQLite backend: one file, WAL, synchronous=FULL, appends serialized by BEGIN IMMEDIATE.

>>> import tempfile, os
>>> from ledger.sqlite import SqliteLedger
>>> SqliteLedger(os.path.join(tempfile.mkdtemp(), "l.db")).size()
0

Durability: in WAL mode with synchronous=FULL, COMMIT returns only after the WAL is
fsynced, so an append that returned survives a crash or power loss. Serialization:
BEGIN IMMEDIATE takes the database's single write lock before the tail is read, so two
processes can never append on top of the same entry; waiters queue on busy_timeout.
"""

from __future__ import annotations

import fcntl
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ledger.errors import LedgerInputError
from ledger.log import Ledger

BUSY_TIMEOUT_MS = 120_000


class SqliteLedger(Ledger):
    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        origin: str | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        create = create and not read_only
        if not self.path.exists():
            if not create:
                raise LedgerInputError(f"{self.url}: no ledger here (run `ledger init`)")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if read_only:  # SQLite itself refuses every write on this connection
                self._db = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                )
            else:
                self._db = sqlite3.connect(
                    self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000
                )
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not read_only:
                mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                self._db.execute("PRAGMA synchronous = FULL")
                if str(mode).lower() != "wal":
                    raise LedgerInputError(f"{self.url}: cannot switch the database to WAL mode")
            ready = self._db.execute(
                "SELECT count(*) FROM sqlite_master WHERE name = 'ledger_checkpoints'"
            ).fetchone()[0]
        except sqlite3.DatabaseError as error:
            raise LedgerInputError(f"{self.url}: not a usable SQLite ledger: {error}") from None
        if not ready:  # set up under the write lock; opening an existing ledger takes none
            if not create:
                self._db.close()
                raise LedgerInputError(f"{self.url}: not a ledger (run `ledger init`)")
            with self._write() as cur:
                self._init_schema(cur, origin, "INTEGER", "BLOB")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[Any]:
        cur = self._db.cursor()
        cur.execute(begin)
        try:
            yield cur
        except BaseException:
            self._db.rollback()
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    @contextmanager
    def _write(self) -> Iterator[Any]:
        # SQLite's busy handler polls with sleeps of up to 100 ms; a blocking flock on a
        # side file queues writers and wakes the next one at once. BEGIN IMMEDIATE still
        # serializes against any writer that does not take the flock.
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with self._transaction("BEGIN IMMEDIATE") as cur:
                    yield cur
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> Any:
        return self._transaction("BEGIN")
