"""Ledger under load: N processes x M appends at once, SQLite and PostgreSQL side by side.

    $ .venv/bin/python bench/ledger_load.py                                   # SQLite only
    $ eval "$(bash .ci/postgres.sh)"
    $ .venv/bin/python bench/ledger_load.py --processes 8 --appends 200 \\
          --postgres "$MODELGUARD_TEST_POSTGRES_URL"
    $ .venv/bin/python bench/ledger_load.py --json                            # one JSON document

Each backend gets a fresh ledger (a temporary SQLite file; a fresh PostgreSQL schema, dropped
afterwards). ``--processes`` writer processes start together (each says ready, then all are
told go), and each appends one entry at a time (one durable commit each) until it has done
``--appends`` or ``--seconds`` have passed; it reports every append as soon as ``append``
returns (index, payload, latency), so the parent knows exactly which appends were
acknowledged. Then the parent proves the history is one line: the ledger's full ``verify()``
(chain and tree recomputed), indices 0..n-1 each held once, every entry's ``prev`` the hash of
the entry before it (``forks`` counts those that are not), and every acknowledged append at
its acknowledged index with its payload (``lost`` counts those that are not). Reported:
throughput (acknowledged appends / wall time from go to the last writer's exit) and
append latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ledger import open_ledger
from ledger.entry import GENESIS_PREV


def worker(url: str, appends: int, seconds: float, tag: str) -> None:
    """One writer: wait for go, append until done or out of time, report each append."""
    with open_ledger(url) as log:
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        if sys.stdin.readline().strip() != "go":
            return
        deadline = time.monotonic() + seconds
        for n in range(appends):
            if time.monotonic() > deadline:
                break
            payload = f"{tag}:{n}"
            start = time.perf_counter_ns()
            entry = log.append("test", subject={"name": tag}, payload_digest=payload, actor=tag)
            latency = time.perf_counter_ns() - start
            sys.stdout.write(f"{entry.index} {payload} {latency}\n")
            sys.stdout.flush()


@dataclass
class LoadResult:
    backend: str
    processes: int
    appends_per_process: int
    acknowledged: int
    entries: int
    wall_s: float
    appends_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    forks: int
    lost: int
    duplicate_indices: int
    verify_ok: bool
    timed_out_writers: int

    @property
    def linear(self) -> bool:
        return (
            self.verify_ok
            and self.forks == 0
            and self.lost == 0
            and self.duplicate_indices == 0
            and self.entries == self.acknowledged
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "linear_history": self.linear}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_load(url: str, backend: str, processes: int, appends: int, seconds: float) -> LoadResult:
    """Run the load against the (fresh) ledger at ``url`` and audit the result."""
    open_ledger(url).close()  # create the schema once, before the race
    script = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONPATH": str(Path(script).parent.parent)}
    procs = [
        subprocess.Popen(
            [sys.executable, script, "--worker", url, str(appends), str(seconds), f"w{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"writer {proc.args!r} did not start")
    start = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    acks: list[tuple[int, str]] = []
    latencies: list[float] = []
    timed_out = 0
    grace = seconds + 60
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=max(1.0, grace - (time.perf_counter() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            timed_out += 1
        for line in out.splitlines():
            index, payload, latency = line.split(" ")
            acks.append((int(index), payload))
            latencies.append(int(latency) / 1e6)
    wall = time.perf_counter() - start
    with open_ledger(url) as log:
        report = log.verify()
        entries = log.entries()
    by_index = {e.index: e for e in entries}
    indices = [e.index for e in entries]
    duplicates = len(indices) - len(set(indices)) + (len(acks) - len({i for i, _ in acks}))
    prev, forks = GENESIS_PREV, 0
    for i, entry in enumerate(entries):
        if entry.index != i or entry.prev != prev:
            forks += 1
        prev = entry.entry_hash
    lost = sum(
        1
        for index, payload in acks
        if getattr(by_index.get(index), "payload_digest", None) != payload
    )
    return LoadResult(
        backend=backend,
        processes=processes,
        appends_per_process=appends,
        acknowledged=len(acks),
        entries=len(entries),
        wall_s=round(wall, 3),
        appends_per_s=round(len(acks) / wall, 1) if wall else 0.0,
        p50_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
        p95_ms=round(_percentile(latencies, 0.95), 2),
        p99_ms=round(_percentile(latencies, 0.99), 2),
        max_ms=round(max(latencies, default=0.0), 2),
        forks=forks,
        lost=lost,
        duplicate_indices=duplicates,
        verify_ok=report.ok,
        timed_out_writers=timed_out,
    )


def run_postgres(base: str, processes: int, appends: int, seconds: float) -> LoadResult:
    """The load on a fresh schema of the PostgreSQL server at ``base``, dropped afterwards."""
    import psycopg

    schema = f"load_{secrets.token_hex(6)}"
    try:
        return run_load(f"{base}?schema={schema}", "postgresql", processes, appends, seconds)
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, appends, seconds, tag = sys.argv[2:6]
        worker(url, int(appends), float(seconds), tag)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=4, help="Writer processes.")
    parser.add_argument("--appends", type=int, default=100, help="Appends per process.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Time bound per writer.")
    parser.add_argument("--postgres", metavar="URL", help="Also load this PostgreSQL server.")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only.")
    parser.add_argument("--dir", help="Where the SQLite file goes (default: a temp dir).")
    parser.add_argument("--json", action="store_true", help="Print one JSON document.")
    args = parser.parse_args()
    results = []
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            url = f"sqlite:///{Path(tmp) / 'load.db'}"
            results.append(run_load(url, "sqlite", args.processes, args.appends, args.seconds))
    if args.postgres:
        results.append(run_postgres(args.postgres, args.processes, args.appends, args.seconds))
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"loadavg": load, "results": [r.to_dict() for r in results]}, indent=2))
    else:
        print(f"{args.processes} processes x {args.appends} appends; load average {load}")
        print(
            f"{'backend':<11} {'acked':>6} {'appends/s':>10} {'p50 ms':>8} {'p95 ms':>8}"
            f" {'p99 ms':>8} {'max ms':>8}  forks lost linear"
        )
        for r in results:
            print(
                f"{r.backend:<11} {r.acknowledged:>6} {r.appends_per_s:>10} {r.p50_ms:>8}"
                f" {r.p95_ms:>8} {r.p99_ms:>8} {r.max_ms:>8}  {r.forks:>5} {r.lost:>4} {r.linear}"
            )
        if len(results) == 2 and results[0].appends_per_s:
            ratio = results[1].appends_per_s / results[0].appends_per_s
            print(f"PostgreSQL / SQLite throughput: {ratio:.2f}x")
    if not all(r.linear for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
