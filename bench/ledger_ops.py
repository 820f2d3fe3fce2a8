"""Ledger benchmark: durable appends, full verification, proofs at a million entries.

    $ .venv/bin/python bench/ledger_ops.py                                # SQLite only
    $ eval "$(bash .ci/postgres.sh)"; .venv/bin/python bench/ledger_ops.py --postgres "$MODELGUARD_TEST_POSTGRES_URL"
    $ .venv/bin/python bench/ledger_ops.py --proof-entries 100000          # quick look

Measured in one run, side by side:

- durable appends/s: ``append`` one at a time (one fsync'd commit each) versus
  ``append_many`` batches of ``--batch`` (one commit per batch), SQLite (WAL,
  synchronous=FULL, on the disk under ``--dir``) and, with ``--postgres``, PostgreSQL;
- ``verify()`` of a ``--verify-entries`` ledger (chain + tree recomputed from every entry,
  compared with every stored node), wall time and this process's CPU time (verification is
  single-threaded, so on a machine shared with other work the CPU time is the figure that
  carries over to an idle machine);
- at ``--proof-entries`` entries: inclusion and consistency proof generation time
  (median and max over ``--proofs`` random requests, each a fresh read transaction) and
  proof size, plus the time to build the ledger with ``append_many``.
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ledger import EventSpec, Ledger, open_ledger


def event(i: int) -> EventSpec:
    return EventSpec(
        "sign",
        {"name": f"model-{i % 97}", "version": f"1.{i}", "root": f"{i:064x}"},
        f"sha256:{i:064x}",
        "3f" * 32,
        {"signature": "model.sig"},
    )


def appends_per_second(log: Ledger, count: int, batch: int) -> tuple[float, float]:
    """(single appends/s, append_many appends/s), interleaved in halves to share disk noise."""
    single = many = 0.0
    for _ in range(2):
        t = time.perf_counter()
        for i in range(count // 2):
            e = event(i)
            log.append(e.kind, subject=e.subject, payload_digest=e.payload_digest, actor=e.actor)
        single += time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(count // 2):
            log.append_many([event(i) for i in range(batch)])
        many += time.perf_counter() - t
    return (count // 2 * 2) / single, (count // 2 * 2 * batch) / many


def fill(log: Ledger, total: int, chunk: int = 20_000) -> float:
    t = time.perf_counter()
    done = log.size()
    while done < total:
        n = min(chunk, total - done)
        log.append_many([event(done + i) for i in range(n)])
        done += n
    return time.perf_counter() - t


def timed(fn: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return times, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="Where the SQLite files go.")
    parser.add_argument("--postgres", help="PostgreSQL URL (a throwaway schema is used).")
    parser.add_argument("--appends", type=int, default=400, help="Single appends to time.")
    parser.add_argument("--batch", type=int, default=100, help="append_many batch size.")
    parser.add_argument("--verify-entries", type=int, default=100_000)
    parser.add_argument("--proof-entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=200, help="Random proofs to time.")
    args = parser.parse_args()
    rng = random.Random(0)

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"# ledger benchmark (SQLite files in {tmp})")
        with open_ledger(f"sqlite:///{Path(tmp) / 'appends.db'}") as log:
            single, many = appends_per_second(log, args.appends, args.batch)
        print(f"sqlite   append (1 per commit):        {single:10,.0f} appends/s")
        print(
            f"sqlite   append_many ({args.batch}/commit):     {many:10,.0f} appends/s"
            f"  ({many / single:.1f}x)"
        )
        if args.postgres:
            schema = f"bench_{secrets.token_hex(4)}"
            with open_ledger(f"{args.postgres}?schema={schema}") as log:
                try:
                    pg_single, pg_many = appends_per_second(log, args.appends, args.batch)
                finally:
                    log._db.execute(f'DROP SCHEMA "{schema}" CASCADE')  # type: ignore[attr-defined]
            print(f"postgres append (1 per commit):        {pg_single:10,.0f} appends/s")
            print(
                f"postgres append_many ({args.batch}/commit):     {pg_many:10,.0f} appends/s"
                f"  ({pg_many / pg_single:.1f}x)"
            )

        with open_ledger(f"sqlite:///{Path(tmp) / 'verify.db'}") as log:
            fill(log, args.verify_entries)
            cpu = time.process_time()
            times, report = timed(log.verify, 3)
            cpu = (time.process_time() - cpu) / 3
            assert getattr(report, "ok", False)
        print(
            f"verify {args.verify_entries:,} entries:              {min(times):10.2f} s"
            f"  (wall, min of 3; median {statistics.median(times):.2f} s; CPU {cpu:.2f} s each)"
        )

        with open_ledger(f"sqlite:///{Path(tmp) / 'proofs.db'}") as log:
            build = fill(log, args.proof_entries, chunk=50_000)
            n = log.size()
            print(
                f"build {n:,} entries (append_many):     {build:10.1f} s"
                f"  ({n / build:,.0f} appends/s)"
            )
            inc_times, inc_sizes, con_times, con_sizes = [], [], [], []
            for _ in range(args.proofs):
                index = rng.randrange(n)
                t = time.perf_counter()
                proof = log.inclusion_proof(index)
                inc_times.append(time.perf_counter() - t)
                proof.verify()
                inc_sizes.append(len(proof.hashes))
                old = rng.randrange(1, n)
                t = time.perf_counter()
                cons = log.consistency_proof(old)
                con_times.append(time.perf_counter() - t)
                cons.verify()
                con_sizes.append(len(cons.hashes))
        for name, ts, sizes in (
            ("inclusion", inc_times, inc_sizes),
            ("consistency", con_times, con_sizes),
        ):
            print(
                f"{name:11} proof at {n:,}:        median {statistics.median(ts) * 1e3:6.2f} ms,"
                f" max {max(ts) * 1e3:6.2f} ms; {statistics.mean(sizes):.1f} hashes"
                f" ({max(sizes) * 32} bytes max)"
            )


if __name__ == "__main__":
    main()
