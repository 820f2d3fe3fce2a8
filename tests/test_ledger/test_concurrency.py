"""Many processes appending at once, and writers killed mid-append (SIGKILL).

Concurrent writers must neither fork the chain nor lose an entry; a killed writer must leave
a ledger that verifies and holds every append it reported as done.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger import open_ledger

WRITER = Path(__file__).with_name("writer.py")
PROCESSES, APPENDS = 8, 500


def _writer(url: str, count: int, tag: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen(
        [sys.executable, str(WRITER), url, str(count), tag],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.fixture
def race_url(ledger_url: str, tmp_path: Path) -> Iterator[str]:
    """The ledger for the race; a SQLite one on tmpfs when there is one.

    The race tests serialization, not the disk: with synchronous=FULL each of the 4000
    commits waits for an fsync, which on a busy disk makes the test take minutes.
    Durability of returned appends is what the SIGKILL test checks.
    """
    shm = Path("/dev/shm")
    if not ledger_url.startswith("sqlite:///") or not os.access(shm, os.W_OK):
        yield ledger_url
        return
    with tempfile.TemporaryDirectory(dir=shm) as tmp:
        yield f"sqlite:///{Path(tmp) / 'ledger.db'}"


@pytest.mark.slow
def test_eight_processes_append_500_each_into_one_linear_chain(race_url: str) -> None:
    ledger_url = race_url
    open_ledger(ledger_url).close()  # create the schema once, before the race
    writers = [_writer(ledger_url, APPENDS, f"w{i}") for i in range(PROCESSES)]
    reported: dict[int, str] = {}
    for proc in writers:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        for line in out.splitlines():
            index, payload = line.split()
            assert int(index) not in reported, "two appends got the same index"
            reported[int(index)] = payload
    total = PROCESSES * APPENDS
    assert sorted(reported) == list(range(total))
    with open_ledger(ledger_url) as log:
        assert log.size() == total
        report = log.verify()
        assert report.ok, report.problems[:5]
        entries = log.entries()
    assert [e.index for e in entries] == list(range(total))
    assert all(entries[i].prev == entries[i - 1].entry_hash for i in range(1, total))
    assert {e.index: e.payload_digest for e in entries} == reported
    for i in range(PROCESSES):  # each writer's own appends stay in its order
        mine = [e.index for e in entries if e.actor == f"w{i}"]
        assert [entries[j].payload_digest for j in mine] == [f"w{i}:{n}" for n in range(APPENDS)]


@pytest.mark.slow
def test_writer_killed_at_random_moments_loses_nothing_it_reported(ledger_url: str) -> None:
    rng = random.Random(9162)
    done: dict[int, str] = {}
    for round_ in range(12):
        proc = _writer(ledger_url, 0, f"r{round_}")
        assert proc.stdout is not None
        # Kill after a random number of confirmed appends (0 = while it starts up or is
        # inside its very first transaction), i.e. at a random point of an append.
        for _ in range(rng.randrange(0, 40)):
            line = proc.stdout.readline()
            if not line:
                break
            index, payload = line.split()
            done[int(index)] = payload
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
        for line in rest.splitlines():  # appends confirmed just before the kill
            index, payload = line.split()
            done[int(index)] = payload
        assert proc.returncode == -signal.SIGKILL
        if not done and not Path(ledger_url.removeprefix("sqlite:///")).exists():
            continue  # killed before the very first open: nothing to check yet
        with open_ledger(ledger_url) as log:
            report = log.verify()
            assert report.ok, (round_, report.problems[:5])
            for index, payload in done.items():
                assert log.get(index).payload_digest == payload
    assert len(done) > 0
