"""The same behaviour on SQLite and PostgreSQL: append, query, proofs, checkpoints, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger import (
    EventSpec,
    LedgerInputError,
    NoteSigner,
    ProofError,
    open_checkpoint,
    open_ledger,
    verify_jsonl,
)
from ledger.entry import GENESIS_PREV
from ledger.merkle import root_from_leaf_hashes


def _fill(url: str, n: int) -> None:
    with open_ledger(url) as log:
        log.append_many(
            [
                EventSpec(
                    "sign" if i % 3 else "harden",
                    {"name": f"m{i % 4}", "version": str(i), "root": f"{i:064x}"},
                    f"sha256:{i:064x}",
                    "actor",
                    {"i": i, "f": 0.5},
                )
                for i in range(n)
            ]
        )


def test_append_chains_entries_and_survives_reopen(ledger_url: str) -> None:
    with open_ledger(ledger_url, origin="example.org/log") as log:
        first = log.append("sign", subject={"name": "a"}, payload_digest="sha256:01", actor="k")
        second = log.append("sign", subject={"name": "b"}, payload_digest="sha256:02", actor="k")
    assert (first.index, first.prev) == (0, GENESIS_PREV)
    assert (second.index, second.prev) == (1, first.entry_hash)
    with open_ledger(ledger_url, create=False) as log:
        assert log.size() == 2
        assert log.origin == "example.org/log"
        assert log.get(1) == second
        assert log.get(1).entry_hash == second.entry_hash
        assert log.root() == root_from_leaf_hashes([first.leaf_hash, second.leaf_hash])


def test_queries_filter_by_kind_subject_payload_and_limit(ledger_url: str) -> None:
    _fill(ledger_url, 24)
    with open_ledger(ledger_url) as log:
        assert [e.index for e in log.entries(kind="harden")] == list(range(0, 24, 3))
        assert [e.index for e in log.entries(subject="m1")] == list(range(1, 24, 4))
        assert [e.index for e in log.entries(subject={"name": "m1", "version": "5"})] == [5]
        assert [e.index for e in log.entries(subject=f"{7:064x}")] == [7]
        assert [e.index for e in log.entries(payload_digest=f"sha256:{9:064x}")] == [9]
        assert [e.index for e in log.entries(limit=3)] == [21, 22, 23]
        assert log.entries(kind="nothing") == []


def test_every_proof_of_a_small_log_verifies(ledger_url: str) -> None:
    _fill(ledger_url, 13)
    with open_ledger(ledger_url) as log:
        for size in range(1, 14):
            for index in range(size):
                log.inclusion_proof(index, size).verify()
            for old in range(0, size + 1):
                log.consistency_proof(old, size).verify()


def test_bad_requests_are_input_errors(ledger_url: str) -> None:
    _fill(ledger_url, 3)
    with open_ledger(ledger_url) as log:
        for call in (
            lambda: log.get(3),
            lambda: log.inclusion_proof(3),
            lambda: log.inclusion_proof(0, 4),
            lambda: log.consistency_proof(4),
            lambda: log.append("Bad Kind", subject={}, payload_digest="d", actor="a"),
            lambda: log.append("k", subject={"n": 1}, payload_digest="d", actor="a"),  # type: ignore[dict-item]
            lambda: log.append("k", subject={}, payload_digest="d", actor="a", details={"x": {1}}),
        ):
            with pytest.raises(LedgerInputError):
                call()
        assert log.size() == 3


def test_append_many_is_one_batch_and_empty_is_a_no_op(ledger_url: str) -> None:
    with open_ledger(ledger_url) as log:
        assert log.append_many([]) == []
        created = log.append_many([EventSpec("t", {}, str(i), "a") for i in range(5)])
        assert [e.index for e in created] == list(range(5))
        assert all(created[i].prev == created[i - 1].entry_hash for i in range(1, 5))
        assert log.verify().ok


def test_checkpoint_signs_the_tree_head_and_is_kept(ledger_url: str) -> None:
    _fill(ledger_url, 5)
    with open_ledger(ledger_url) as log:
        signer = NoteSigner.generate(log.origin)
        note = log.checkpoint(signer)
        checkpoint = open_checkpoint(note, [signer.verifier()])
        assert (checkpoint.origin, checkpoint.size, checkpoint.root) == (log.origin, 5, log.root())
        assert log.checkpoints() == [note]
        proof = log.inclusion_proof(2)
        proof.verify(checkpoint)
        _fill(ledger_url, 1)  # a sixth entry: the old checkpoint no longer fits an up-to-date proof
        with pytest.raises(ProofError):
            log.inclusion_proof(2).verify(checkpoint)
        assert log.verify([signer.verifier()]).checkpoints_checked == 1


def test_missing_ledger_is_not_created_when_asked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(LedgerInputError, match="no ledger"):
        open_ledger(url, create=False)
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(LedgerInputError, match="must start with"):
        open_ledger("mysql://x")


def test_export_verifies_offline_and_edits_in_the_file_are_caught(
    ledger_url: str, tmp_path: Path
) -> None:
    _fill(ledger_url, 9)
    out = tmp_path / "ledger.jsonl"
    with open_ledger(ledger_url) as log:
        signer = NoteSigner.generate(log.origin)
        note = log.checkpoint(signer)
        assert log.export_jsonl(out) == 9
        root = log.root()
    report = verify_jsonl(out, checkpoint=note, verifiers=[signer.verifier()])
    assert report.ok and report.size == 9 and report.root == root
    assert report.checkpoints_checked == 1

    lines = out.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[4])
    entry["actor"] = "mallory"
    lines[4] = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode() + b"\n"
    out.write_bytes(b"".join(lines))
    report = verify_jsonl(out, checkpoint=note, verifiers=[signer.verifier()])
    assert not report.ok
    assert report.first_bad_index == 4
    assert any(p.what == "checkpoint" for p in report.problems)

    del lines[4]
    out.write_bytes(b"".join(lines))
    report = verify_jsonl(out)
    assert report.first_bad_index == 4  # entry 5 now sits at line 4
