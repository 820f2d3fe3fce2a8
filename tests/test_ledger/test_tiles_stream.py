"""`ledger export-tiles` streams: bounded batches in, each tile out as it fills.

The exported trees are read back with the independent spec reader of test_tiles.py and
audited with verify_tiles. Memory is shown bounded by what the exporter does (queries of at
most ``batch`` rows; tiles made while rows are still being read), not by measuring RSS.
"""

from __future__ import annotations

import re
import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from ledger import Ledger, LedgerIntegrityError, NoteSigner, open_ledger
from ledger.log import BODY_BATCH
from ledger.tiles import MAX_LISTED, export_tiles, verify_tiles
from tests.test_ledger.test_tiles import files_of, fill, read_tree

ORIGIN = "example.org/log"
_BODIES = re.compile(r"SELECT idx, body FROM ledger_entries WHERE idx >= (\d+) AND idx < (\d+)")


@pytest.fixture
def signer() -> NoteSigner:
    return NoteSigner.generate(ORIGIN)


def staged_files(directory: Path) -> int:
    return sum(1 for p in directory.glob(".tmp-export-*/tile/**/*") if p.is_file())


def test_export_reads_bounded_batches_and_makes_tiles_as_it_goes(
    tmp_path: Path, signer: NoteSigner
) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)
    fill(log, 700)
    out = tmp_path / "tiles"
    out.mkdir()
    queries: list[tuple[int, int, int]] = []  # (start, limit, tiles staged when it ran)

    def trace(sql: str) -> None:
        match = _BODIES.search(sql)
        if match:
            limit = int(sql.rsplit("LIMIT", 1)[1])
            queries.append((int(match.group(1)), limit, staged_files(out)))

    db: sqlite3.Connection = log._db  # type: ignore[attr-defined]
    db.set_trace_callback(trace)
    report = export_tiles(log, out, signer, batch=64)
    db.set_trace_callback(None)
    assert [q[0] for q in queries] == list(range(0, 700, 64))  # keyset paging, in order
    assert {q[1] for q in queries} == {64}
    # Before the last batch was read, the full tiles of the rows already read were made.
    assert queries[-1][2] == 4  # tile/0/000, tile/entries/000, tile/0/001, tile/entries/001
    assert report.size == 700 and report.written_count == len(report.written) == 8
    entries = read_tree(out, signer.verifier().to_key_string())
    assert len(entries) == 700
    assert verify_tiles(out, [signer.verifier()]).ok
    assert not list(out.glob(".tmp-export-*"))


def test_default_batch_is_bounded() -> None:
    assert 256 <= BODY_BATCH <= 100_000


def test_batch_size_does_not_change_the_tree(tmp_path: Path, signer: NoteSigner) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)
    fill(log, 513)
    note = log.checkpoint(signer)
    trees = []
    for batch in (1, 7, 256, 10_000):
        out = tmp_path / f"b{batch}"
        export_tiles(log, out, signer, checkpoint_note=note, batch=batch)
        trees.append({name: (out / name).read_bytes() for name in files_of(out)})
    assert all(tree == trees[0] for tree in trees)
    assert "tile/1/000.p/2" in trees[0] and "tile/entries/002.p/1" in trees[0]


def peak_python_memory(log: Ledger, out: Path, signer: NoteSigner) -> int:
    tracemalloc.start()
    try:
        export_tiles(log, out, signer, batch=32)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_grow_with_the_log(tmp_path: Path, signer: NoteSigner) -> None:
    """Python allocations (tracemalloc, not timing): 4x the entries, about the same peak."""
    small = open_ledger(f"sqlite:///{tmp_path / 's.db'}", origin=ORIGIN)
    large = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)
    fill(small, 768)
    fill(large, 4 * 768)
    peak_python_memory(small, tmp_path / "warm", signer)  # first-use allocations
    small_peak = peak_python_memory(small, tmp_path / "small", signer)
    large_peak = peak_python_memory(large, tmp_path / "large", signer)
    # Holding the entries would add ~0.5 MB per 1000 here; streaming stays within noise.
    assert large_peak < small_peak * 1.5 + 64 * 1024, (small_peak, large_peak)


def test_report_lists_a_bounded_number_of_files(tmp_path: Path, signer: NoteSigner) -> None:
    from ledger.tiles import ExportReport

    report = ExportReport("d", 0, b"", "")
    for i in range(MAX_LISTED + 5):
        report.add_written(f"tile/0/{i}")
    assert len(report.written) == MAX_LISTED and report.written_count == MAX_LISTED + 5


def test_edited_row_publishes_nothing(tmp_path: Path, signer: NoteSigner) -> None:
    """A row edited after it was appended: the new tiles are never published."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    log = open_ledger(url, origin=ORIGIN)
    fill(log, 300)
    out = tmp_path / "tiles"
    export_tiles(log, out, signer)
    before = {name: (out / name).read_bytes() for name in files_of(out)}
    fill(log, 300, tag="f")
    note = log.checkpoint(signer)
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute(
            "UPDATE ledger_entries SET body = CAST(replace(body, 'f299', 'f298') AS BLOB)"
            " WHERE idx = 599"
        )
    with pytest.raises(LedgerIntegrityError, match="do not hash to the checkpoint root"):
        export_tiles(log, out, signer, checkpoint_note=note)
    assert {name: (out / name).read_bytes() for name in files_of(out)} == before
    assert not list(out.glob(".tmp-export-*"))


def test_deleted_row_publishes_nothing(tmp_path: Path, signer: NoteSigner) -> None:
    log = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", origin=ORIGIN)
    fill(log, 600)
    note = log.checkpoint(signer)
    with sqlite3.connect(tmp_path / "l.db") as db:
        db.execute("DELETE FROM ledger_entries WHERE idx = 300")
    out = tmp_path / "tiles"
    with pytest.raises(LedgerIntegrityError, match="entries missing below size 600"):
        export_tiles(log, out, signer, checkpoint_note=note, batch=50)
    assert files_of(out) == []


@pytest.mark.postgres
def test_postgres_export_streams(pg_url: str, tmp_path: Path) -> None:
    log = open_ledger(pg_url, origin=ORIGIN)
    signer = NoteSigner.generate(ORIGIN)
    try:
        fill(log, 530)
        out = tmp_path / "tiles"
        report = export_tiles(log, out, signer, batch=100)
        assert report.size == 530
        assert len(read_tree(out, signer.verifier().to_key_string())) == 530
        assert verify_tiles(out, [signer.verifier()]).ok
        fill(log, 300, tag="more")
        again = export_tiles(log, out, signer, batch=100)
        assert "tile/0/000" not in again.written and again.unchanged == 4
        assert verify_tiles(out, [signer.verifier()]).ok
    finally:
        log.close()
