"""The ledger gate (``verify --require-ledger``) on a large ledger: cold, warm, and warm + new.

    $ .venv/bin/python bench/ledger_gate.py                      # 1,000,000 entries
    $ .venv/bin/python bench/ledger_gate.py --entries 100000     # quick look

Builds the ledger in bulk (entry bodies, leaves and every tree node computed here and
inserted in one transaction, then one checkpoint signed with the note key) with a mix of
kinds over 1,000 model names: 40% ``sign`` with a version, 20% ``evaluate``, 20% ``encrypt``,
19.9% ``harden``, 0.1% ``revoke``. A real model is then signed into it, and, in one run:

- ``verify`` without the ledger (the baseline every gate run pays);
- the gate with no trust state (first run: every entry body is hashed and proven against
  the signed checkpoint, the facts for rollback and revocation are derived);
- the gate with the trust state just written (nothing new: one inclusion proof);
- the gate after ``--new`` more entries were appended and checkpointed (only those are read);
- ``Ledger.verify()`` (the full audit: chain, tree, every stored node) for comparison.

Each line gives wall time and this process's CPU time (the machine is shared; CPU time is
the figure that carries over), plus the trust-state file size.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from ledger import EventSpec, open_ledger
from ledger.entry import GENESIS_PREV
from ledger.merkle import leaf_hash, node_hash, node_id
from ledger.verify import indexed_values
from modelguard import audit
from modelguard.keys import generate_key, key_id
from modelguard.policy import policy_from_keys, with_ledger_trust
from modelguard.signing.ledger_check import state_path
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model

NAMES = 1000


def body(i: int, prev: str, actor: str) -> bytes:
    name = f"model-{i % NAMES}"
    root = f"{i:064x}"
    kind = ("sign", "sign", "sign", "sign", "evaluate", "evaluate", "encrypt", "encrypt",
            "harden", "harden")[i % 10]  # fmt: skip
    subject: dict[str, str] = {"name": name, "root": root}
    details: dict[str, object] = {}
    if kind == "sign":
        subject["version"] = f"1.{i // NAMES}"
        details = {"model_digest": f"sha256:{i:064x}", "signature": "model.sig"}
    elif kind == "harden" and i % 1000 == 999:
        kind, subject, details = "revoke", {"revoked": f"{i - 9:064x}"}, {"reason": "bench"}
    entry = {
        "actor": actor,
        "details": details,
        "index": i,
        "kind": kind,
        "payload_digest": f"sha256:{i:064x}",
        "prev": prev,
        "subject": subject,
        "timestamp": "2026-11-29T00:00:00.000000Z",
    }
    # ASCII strings and integers only: sorted compact JSON is exactly RFC 8785.
    return json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()


def build(url: str, entries: int, actor: str) -> float:
    """Write ``entries`` rows and every complete tree node in one transaction."""
    started = time.perf_counter()
    with open_ledger(url, origin="bench.example/gate") as log:
        rows, nodes = [], []
        stack: list[tuple[int, bytes]] = []
        prev = GENESIS_PREV
        for i in range(entries):
            data = body(i, prev, actor)
            h = leaf_hash(data)
            rows.append((i, *indexed_values(json.loads(data)), data))
            nodes.append((node_id(0, i), h))
            level, node, idx = 0, h, i
            while stack and stack[-1][0] == level:
                node = node_hash(stack.pop()[1], node)
                level += 1
                idx >>= 1
                nodes.append((node_id(level, idx), node))
            stack.append((level, node))
            prev = h.hex()
        with log._write() as cur:
            cur.executemany(
                "INSERT INTO ledger_entries (idx, kind, subject_name, subject_root,"
                " payload_digest, actor, body) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            cur.executemany("INSERT INTO ledger_nodes (id, hash) VALUES (?, ?)", nodes)
    return time.perf_counter() - started


def measure(label: str, fn: Callable[[], object]) -> object:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<58} {wall:8.2f} s wall  {cpu:8.2f} s CPU")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=1000, help="Entries appended between runs.")
    parser.add_argument("--dir", type=Path, default=None, help="Where the files go.")
    args = parser.parse_args()
    print(f"# ledger gate benchmark, load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        work = Path(tmp)
        url = f"sqlite:///{work / 'ledger.db'}"
        key = generate_key()
        seconds = build(url, args.entries, key_id(key.public_key()))
        print(f"build {args.entries:,} entries (bulk insert)                 {seconds:8.2f} s")
        model = work / "model"
        model.mkdir()
        save_file({"w": np.ones((64, 64), np.float32)}, str(model / "model.safetensors"))
        sign_model(model, key, name="model-7", version="9.0", ledger_url=url)  # + checkpoint
        pub = audit.note_public_key_path(url)
        state = work / "state"
        policy = with_ledger_trust(policy_from_keys([key.public_key()]), [str(pub)], state)

        def gate() -> None:
            report = verify_model(model, policy=policy, ledger_url=url, require_ledger=True)
            assert report.ok, report.failures

        measure("verify, no ledger (baseline)", lambda: verify_model(model, policy=policy))
        measure(f"gate, no trust state ({args.entries + 1:,} entries proven)", gate)
        with open_ledger(url) as log:
            origin = log.origin
        size = state_path(origin, state).stat().st_size
        print(f"trust state file: {size / 1e6:.1f} MB")
        measure("gate, trust state current (nothing new)", gate)
        audit.record_events(
            [EventSpec("evaluate", {"name": f"model-{i % NAMES}"}, f"sha256:{i:064x}", "b")
             for i in range(args.new)],
            url,
        )  # fmt: skip
        measure(f"gate, {args.new:,} new entries since the trust state", gate)
        signer = audit.load_note_signer(url, create=False)
        with open_ledger(url) as log:
            report = measure("Ledger.verify() (full audit, for comparison)", lambda: log.verify(
                [signer.verifier()]))  # fmt: skip
            assert getattr(report, "ok", False)


if __name__ == "__main__":
    main()
