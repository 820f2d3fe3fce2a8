"""The Ledger: append-only log over a SQL store (SQLite or PostgreSQL).

>>> import tempfile, os
>>> from ledger import open_ledger
>>> log = open_ledger("sqlite:///" + os.path.join(tempfile.mkdtemp(), "l.db"))
>>> log.append("sign", subject={"name": "m"}, payload_digest="sha256:00", actor="k").index
0
>>> log.inclusion_proof(0).verify()
>>> log.verify().ok
True

Storage: ``ledger_entries`` (one row per entry: its canonical JSON plus query columns),
``ledger_nodes`` (every complete perfect subtree hash, keyed by
:func:`ledger.merkle.node_id`; level 0 = entry hashes), ``ledger_checkpoints`` (signed
checkpoints issued), ``ledger_meta`` (origin). An append reads O(log n) nodes (the compact
range), writes the entry and its new nodes (2 on average) in one serialized transaction.
"""

from __future__ import annotations

import os
import secrets
import stat
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any

from ledger.entry import GENESIS_PREV, Entry, EventSpec, new_entry, utc_timestamp
from ledger.errors import LedgerInputError, LedgerIntegrityError
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    NodeKey,
    compact_range,
    consistency_path_ranges,
    hash_ranges,
    inclusion_path_ranges,
    leaf_hash,
    node_id,
)
from ledger.note import Checkpoint, NoteSigner, NoteVerifier, sign_note
from ledger.proofs import ConsistencyProof, InclusionProof
from ledger.verify import StoredRow, VerifyReport, indexed_values, verify_entries

_ENTRY_COLUMNS = "idx, kind, subject_name, subject_root, payload_digest, actor, body"
_CHUNK = 500
BODY_BATCH = 4096  # rows per query when streaming entry bodies (Ledger.bodies)


def schema_sql(int_pk: str, blob: str) -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS ledger_entries (idx {int_pk} PRIMARY KEY, kind TEXT NOT NULL,"
        " subject_name TEXT, subject_root TEXT, payload_digest TEXT NOT NULL,"
        f" actor TEXT NOT NULL, body {blob} NOT NULL)",
        "CREATE INDEX IF NOT EXISTS ledger_entries_kind ON ledger_entries (kind)",
        "CREATE INDEX IF NOT EXISTS ledger_entries_name ON ledger_entries (subject_name)",
        "CREATE INDEX IF NOT EXISTS ledger_entries_root ON ledger_entries (subject_root)",
        "CREATE INDEX IF NOT EXISTS ledger_entries_payload ON ledger_entries (payload_digest)",
        f"CREATE TABLE IF NOT EXISTS ledger_nodes (id {int_pk} PRIMARY KEY, hash {blob} NOT NULL)",
        "CREATE TABLE IF NOT EXISTS ledger_checkpoints (tree_size BIGINT NOT NULL,"
        " note TEXT NOT NULL, created TEXT NOT NULL)",
    ]


def _stored_bytes(value: object, what: str) -> bytes:
    """A BLOB/BYTEA value as read. SQLite types each value, so an edited row can hold TEXT or
    an INTEGER instead (``bytes(2**62)`` would try to allocate it): that is tampering."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise LedgerIntegrityError(
        f"{what} is stored as {type(value).__name__}, not bytes: the row was edited"
    )


def _matches(entry: Entry, subject: Mapping[str, str] | str | None) -> bool:
    if subject is None:
        return True
    if isinstance(subject, str):
        return subject in (entry.subject.get("name"), entry.subject.get("root"))
    return all(entry.subject.get(k) == v for k, v in subject.items())


class Ledger(ABC):
    """An append-only, hash-chained, Merkle-tree log. Use :func:`ledger.open_ledger`."""

    url: str
    placeholder = "?"

    # --- backend primitives ------------------------------------------------------------
    @abstractmethod
    def _write(self) -> AbstractContextManager[Any]:
        """A cursor inside a transaction that holds the append lock; commits durably on exit."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A cursor inside a read-only snapshot transaction."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _init_schema(self, cur: Any, origin: str | None, int_pk: str, blob: str) -> None:
        for statement in schema_sql(int_pk, blob):
            cur.execute(statement)
        cur.execute(self._sql("SELECT value FROM ledger_meta WHERE key = ?"), ("origin",))
        if cur.fetchone() is None:
            cur.execute(
                self._sql("INSERT INTO ledger_meta (key, value) VALUES (?, ?)"),
                ("origin", origin or f"ledger.local/{secrets.token_hex(8)}"),
            )

    # --- reading -------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        """The log's name, the first line of its checkpoints."""
        with self._read() as cur:
            cur.execute(self._sql("SELECT value FROM ledger_meta WHERE key = ?"), ("origin",))
            row = cur.fetchone()
        if row is None:
            raise LedgerIntegrityError(f"{self.url}: ledger has no origin (not initialised)")
        return str(row[0])

    @staticmethod
    def _size(cur: Any) -> int:
        cur.execute("SELECT MAX(idx) FROM ledger_entries")
        row = cur.fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def size(self) -> int:
        with self._read() as cur:
            return self._size(cur)

    def get(self, index: int) -> Entry:
        with self._read() as cur:
            cur.execute(self._sql("SELECT body FROM ledger_entries WHERE idx = ?"), (index,))
            row = cur.fetchone()
        if row is None:
            raise LedgerInputError(f"{self.url}: no entry {index}")
        return Entry.from_canonical(_stored_bytes(row[0], f"{self.url}: entry {index}"))

    def entries(
        self,
        *,
        kind: str | None = None,
        subject: Mapping[str, str] | str | None = None,
        payload_digest: str | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Matching entries in index order; ``limit`` keeps the newest ones.

        ``subject``: a mapping (every pair must match) or a string (matches the subject's
        name or root).
        """
        where, params = [], []
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if payload_digest is not None:
            where.append("payload_digest = ?")
            params.append(payload_digest)
        if isinstance(subject, str):
            where.append("(subject_name = ? OR subject_root = ?)")
            params += [subject, subject]
        elif subject is not None:
            for key, column in (("name", "subject_name"), ("root", "subject_root")):
                if key in subject:
                    where.append(f"{column} = ?")
                    params.append(subject[key])
        sql = "SELECT body FROM ledger_entries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY idx"
        with self._read() as cur:
            cur.execute(self._sql(sql), tuple(params))
            rows = cur.fetchall()
        found = [Entry.from_canonical(_stored_bytes(r[0], f"{self.url}: an entry")) for r in rows]
        found = [e for e in found if _matches(e, subject)]
        return found[-limit:] if limit is not None and limit > 0 else found

    def _read_nodes(self, cur: Any, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        ids = {node_id(level, index): (level, index) for level, index in keys}
        found: dict[NodeKey, bytes] = {}
        wanted = list(ids)
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            cur.execute(
                self._sql(f"SELECT id, hash FROM ledger_nodes WHERE id IN ({marks})"), chunk
            )
            for nid, h in cur.fetchall():
                found[ids[int(nid)]] = _stored_bytes(h, f"{self.url}: tree node {nid}")
        return found

    def _root(self, cur: Any, size: int) -> bytes:
        return (
            hash_ranges([(0, size)], lambda keys: self._read_nodes(cur, keys))[0]
            if size
            else EMPTY_ROOT
        )

    def root(self, tree_size: int | None = None) -> bytes:
        """The RFC 9162 root of the first ``tree_size`` entries (default: all)."""
        with self._read() as cur:
            size = self._size(cur)
            return self._root(cur, self._check_size(size, tree_size))

    def _check_size(self, size: int, tree_size: int | None) -> int:
        if tree_size is None:
            return size
        if not 0 <= tree_size <= size:
            raise LedgerInputError(f"{self.url}: tree size {tree_size} outside 0..{size}")
        return tree_size

    def _ranges(self, cur: Any, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        try:
            return hash_ranges(ranges, lambda keys: self._read_nodes(cur, keys))
        except KeyError as error:
            raise LedgerIntegrityError(f"{self.url}: {error.args[0]} (run verify)") from None

    def inclusion_proof(self, index: int, tree_size: int | None = None) -> InclusionProof:
        """Proof that entry ``index`` is in the tree of ``tree_size`` entries (default: all)."""
        with self._read() as cur:
            size = self._check_size(self._size(cur), tree_size)
            if not 0 <= index < size:
                raise LedgerInputError(f"{self.url}: entry {index} is not in a tree of size {size}")
            hashes = self._ranges(
                cur, [*inclusion_path_ranges(index, size), (index, index + 1), (0, size)]
            )
            cur.execute(self._sql("SELECT body FROM ledger_entries WHERE idx = ?"), (index,))
            row = cur.fetchone()
            origin = self._origin(cur)
        path, leaf, root = tuple(hashes[:-2]), hashes[-2], hashes[-1]
        entry = (
            Entry.from_canonical(_stored_bytes(row[0], f"{self.url}: entry {index}"))
            if row
            else None
        )
        if entry is None or entry.leaf_hash != leaf:
            raise LedgerIntegrityError(
                f"{self.url}: entry {index} does not match its tree leaf (run verify)"
            )
        return InclusionProof(index, size, leaf, path, root, origin, entry.body())

    def _origin(self, cur: Any) -> str:
        cur.execute(self._sql("SELECT value FROM ledger_meta WHERE key = ?"), ("origin",))
        row = cur.fetchone()
        return str(row[0]) if row else ""

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> ConsistencyProof:
        """Proof that the tree of ``new_size`` entries (default: all) extends the first ``old_size``."""
        with self._read() as cur:
            size = self._check_size(self._size(cur), new_size)
            if not 0 <= old_size <= size:
                raise LedgerInputError(f"{self.url}: old size {old_size} outside 0..{size}")
            ranges = consistency_path_ranges(old_size, size)
            hashes = self._ranges(cur, [*ranges, (0, old_size), (0, size)]) if old_size else []
            old_root = hashes[-2] if old_size else EMPTY_ROOT
            new_root = hashes[-1] if old_size else self._root(cur, size)
            origin = self._origin(cur)
        return ConsistencyProof(old_size, size, old_root, new_root, tuple(hashes[:-2]), origin)

    # --- writing -------------------------------------------------------------------------
    def append(
        self,
        kind: str,
        *,
        subject: Mapping[str, str],
        payload_digest: str,
        actor: str,
        details: Mapping[str, Any] | None = None,
    ) -> Entry:
        """Append one entry; durable and chained when it returns."""
        return self.append_many([EventSpec(kind, subject, payload_digest, actor, details)])[0]

    def append_many(self, events: Sequence[EventSpec]) -> list[Entry]:
        """Append entries in one transaction (one fsync): all or none."""
        specs = [event.validated() for event in events]
        if not specs:
            return []
        with self._write() as cur:
            size = self._size(cur)
            edge_keys = compact_range(size)
            wanted = [*edge_keys, (0, size - 1)] if size else []
            nodes = self._read_nodes(cur, wanted)
            if len(nodes) != len(set(wanted)):
                raise LedgerIntegrityError(
                    f"{self.url}: tree nodes at the end of the log are missing (run verify)"
                )
            compact = CompactRange(size, [nodes[key] for key in edge_keys])
            prev = nodes[(0, size - 1)].hex() if size else GENESIS_PREV
            entry_rows, node_rows, created = [], [], []
            for spec in specs:
                entry = new_entry(spec, index=size, prev=prev, timestamp=utc_timestamp())
                body = entry.canonical()
                h = leaf_hash(body)
                entry_rows.append((size, *indexed_values(entry.body()), body))
                compact.append(
                    h, lambda level, i, node: node_rows.append((node_id(level, i), node))
                )
                created.append(entry)
                prev = h.hex()
                size += 1
            cur.executemany(
                self._sql(
                    f"INSERT INTO ledger_entries ({_ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
                ),
                entry_rows,
            )
            cur.executemany(
                self._sql("INSERT INTO ledger_nodes (id, hash) VALUES (?, ?)"), node_rows
            )
        return created

    def checkpoint(self, signer: NoteSigner) -> str:
        """Sign the current tree head as a C2SP checkpoint note, keep it, and return it."""
        with self._write() as cur:
            size = self._size(cur)
            checkpoint = Checkpoint(self._origin(cur), size, self._root(cur, size))
            note = sign_note(checkpoint.to_text(), [signer])
            cur.execute(
                self._sql(
                    "INSERT INTO ledger_checkpoints (tree_size, note, created) VALUES (?, ?, ?)"
                ),
                (size, note, utc_timestamp()),
            )
        return note

    def checkpoints(self) -> list[str]:
        """Every checkpoint note this log has issued, oldest first."""
        with self._read() as cur:
            cur.execute("SELECT note FROM ledger_checkpoints ORDER BY tree_size, created")
            return [str(r[0]) for r in cur.fetchall()]

    def newest_checkpoints(self, limit: int) -> list[str]:
        """Up to ``limit`` stored checkpoint notes, largest tree first (unverified text)."""
        with self._read() as cur:
            cur.execute(
                self._sql(
                    "SELECT note FROM ledger_checkpoints ORDER BY tree_size DESC, created DESC"
                    " LIMIT ?"
                ),
                (limit,),
            )
            return [str(r[0]) for r in cur.fetchall()]

    def bodies(
        self, start: int, end: int, *, batch: int = BODY_BATCH
    ) -> Generator[tuple[int, bytes], None, None]:
        """(index, stored canonical bytes) of the rows with ``start <= idx < end``, in order.

        Rows as stored, unchecked: a reader proves them against a signed tree head (see
        :mod:`ledger.client`). Read in one snapshot, ``batch`` rows per query (keyset paging:
        a client-side cursor such as psycopg's would otherwise hold the whole result), so
        memory stays bounded whatever the range.
        """
        if batch < 1:
            raise LedgerInputError(f"batch size {batch} is not positive")
        with self._read() as cur:
            while start < end:
                cur.execute(
                    self._sql(
                        "SELECT idx, body FROM ledger_entries WHERE idx >= ? AND idx < ?"
                        " ORDER BY idx LIMIT ?"
                    ),
                    (start, end, batch),
                )
                rows = cur.fetchall()
                if not rows:
                    return
                for index, body in rows:
                    yield int(index), _stored_bytes(body, f"{self.url}: entry {index}")
                start = int(rows[-1][0]) + 1

    # --- auditing ------------------------------------------------------------------------
    def _rows(self, cur: Any) -> Iterator[StoredRow]:
        cur.execute(f"SELECT {_ENTRY_COLUMNS} FROM ledger_entries ORDER BY idx")
        while True:
            batch = cur.fetchmany(10_000)
            if not batch:
                return
            for r in batch:
                yield StoredRow(r[0], _stored_bytes(r[6], f"{self.url}: entry {r[0]}"), r[1:6])

    def verify(self, verifiers: Sequence[NoteVerifier] = ()) -> VerifyReport:
        """Recompute chain and tree from the entries; compare with stored nodes and checkpoints."""
        with self._read() as cur:
            cur.execute("SELECT id, hash FROM ledger_nodes")
            nodes = dict(cur.fetchall())
            cur.execute("SELECT note FROM ledger_checkpoints ORDER BY tree_size")
            notes = [str(r[0]) for r in cur.fetchall()]
            origin = self._origin(cur)
            rows = list(self._rows(cur))
        return verify_entries(
            rows, nodes=nodes, checkpoints=notes, verifiers=verifiers, origin=origin
        )

    def export_jsonl(self, path: Path) -> int:
        """Write every entry's canonical JSON, one per line; return the count."""
        count = 0
        with self._read() as cur, open(path, "wb") as out:
            for row in self._rows(cur):
                out.write(row.body + b"\n")
                count += 1
        return count


def read_regular_file(path: Path) -> bytes:
    """A regular file's bytes, its type checked on the descriptor before reading.

    Opened with O_NONBLOCK, so a FIFO neither hangs the open nor the read; a device such as
    ``/dev/zero`` or a socket is refused the same way. LedgerInputError names the problem.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise LedgerInputError(f"{path}: cannot read: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LedgerInputError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        data = handle.read(info.st_size + 1)
    if len(data) > info.st_size:
        raise LedgerInputError(f"{path}: the file grew while being read")
    return data


def read_jsonl(path: Path) -> list[StoredRow]:
    """Entries of an exported JSONL file, as stored rows (positions are line numbers)."""
    data = read_regular_file(Path(path))
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [StoredRow(i, line) for i, line in enumerate(lines)]


def verify_jsonl(
    path: Path, *, checkpoint: str | None = None, verifiers: Sequence[NoteVerifier] = ()
) -> VerifyReport:
    """Offline audit of an export: chain, tree root, and optionally a signed checkpoint."""
    rows = read_jsonl(path)
    report = verify_entries(
        rows, checkpoints=[checkpoint] if checkpoint else [], verifiers=verifiers
    )
    return report
