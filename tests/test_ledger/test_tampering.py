"""Tampering directly in the database is caught by verify(), which names the first bad index."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from ledger import EventSpec, NoteSigner, ProofError, open_ledger
from ledger.merkle import leaf_hash, node_id, root_from_leaf_hashes

N = 12


@contextmanager
def raw(url: str) -> Iterator[Any]:
    """A plain connection to the ledger's tables, as an attacker with database access has."""
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)
        try:
            yield lambda sql, params=(): db.execute(sql, params).fetchall()
        finally:
            db.close()
        return
    import psycopg

    base, schema = url.split("?schema=")
    pg = psycopg.connect(base, autocommit=True)
    pg.execute(f'SET search_path TO "{schema}"')

    def run(sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        cur = pg.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []

    try:
        yield run
    finally:
        pg.close()


@pytest.fixture
def filled(ledger_url: str) -> str:
    with open_ledger(ledger_url) as log:
        log.append_many([EventSpec("sign", {"name": f"m{i}"}, f"d{i}", "k") for i in range(N)])
        assert log.verify().ok
    return ledger_url


def body(db: Any, index: int) -> dict[str, Any]:
    return dict(
        json.loads(bytes(db("SELECT body FROM ledger_entries WHERE idx = ?", (index,))[0][0]))
    )


def put(db: Any, index: int, content: dict[str, Any]) -> bytes:
    data = json.dumps(content, separators=(",", ":"), sort_keys=True).encode()
    db("UPDATE ledger_entries SET body = ? WHERE idx = ?", (data, index))
    return data


def check(url: str, index: int | None, what: str | None = None) -> None:
    with open_ledger(url) as log:
        report = log.verify()
    assert not report.ok
    assert report.first_bad_index == index, report.problems
    if what is not None:
        assert what in {p.what for p in report.problems if p.index == index}, report.problems
    if index is not None:
        assert f"entry {index}" in report.summary() or f"{index}" in report.summary()


@pytest.mark.parametrize("index", [0, 5, N - 1])
def test_edited_entry(filled: str, index: int) -> None:
    with raw(filled) as db:
        content = body(db, index)
        content["actor"] = "mallory"
        put(db, index, content)
    check(filled, index, "edited")


@pytest.mark.parametrize("index", [0, 6])
def test_edited_entry_with_its_leaf_rewritten_breaks_the_chain(filled: str, index: int) -> None:
    with raw(filled) as db:
        content = body(db, index)
        content["subject"] = {"name": "forged"}
        data = put(db, index, content)
        db("UPDATE ledger_nodes SET hash = ? WHERE id = ?", (leaf_hash(data), node_id(0, index)))
    check(filled, index, "edited")


def test_edited_query_column(filled: str) -> None:
    with raw(filled) as db:
        db("UPDATE ledger_entries SET kind = 'revoke' WHERE idx = 3")
    check(filled, 3, "edited")


@pytest.mark.parametrize("index", [0, 4, N - 1])
def test_deleted_entry(filled: str, index: int) -> None:
    with raw(filled) as db:
        db("DELETE FROM ledger_entries WHERE idx = ?", (index,))
    check(filled, index, "deleted")


def test_reordered_entries(filled: str) -> None:
    with raw(filled) as db:
        a, b = body(db, 2), body(db, 7)
        put(db, 2, b)
        put(db, 7, a)
    check(filled, 2, "reordered")


@pytest.mark.parametrize("index", [0, 5])
def test_inserted_entry_in_the_middle(filled: str, index: int) -> None:
    with raw(filled) as db:
        forged = body(db, index)
        forged["actor"] = "mallory"
        # Shift every later row up by one (via negative indices, to dodge the primary key).
        db("UPDATE ledger_entries SET idx = -idx - 2 WHERE idx >= ?", (index,))
        db("UPDATE ledger_entries SET idx = -idx - 1 WHERE idx < 0")
        data = json.dumps(forged, separators=(",", ":"), sort_keys=True).encode()
        db(
            "INSERT INTO ledger_entries (idx, kind, subject_name, subject_root, payload_digest,"
            " actor, body) VALUES (?, 'sign', ?, NULL, ?, 'mallory', ?)",
            (index, forged["subject"]["name"], forged["payload_digest"], data),
        )
    check(filled, index)


def test_inserted_entry_at_the_end(filled: str) -> None:
    with raw(filled) as db:
        forged = body(db, N - 1)
        forged["index"] = N
        forged["prev"] = leaf_hash(
            bytes(db("SELECT body FROM ledger_entries WHERE idx = ?", (N - 1,))[0][0])
        ).hex()
        data = json.dumps(forged, separators=(",", ":"), sort_keys=True).encode()
        db(
            "INSERT INTO ledger_entries (idx, kind, subject_name, subject_root, payload_digest,"
            " actor, body) VALUES (?, 'sign', ?, NULL, ?, 'k', ?)",
            (N, forged["subject"]["name"], forged["payload_digest"], data),
        )
    check(filled, N, "inserted")


def test_altered_tree_node_is_reported(filled: str) -> None:
    with raw(filled) as db:
        db("UPDATE ledger_nodes SET hash = ? WHERE id = ?", (bytes(32), node_id(2, 1)))
    with open_ledger(filled) as log:
        report = log.verify()
    assert not report.ok
    assert [p.what for p in report.problems] == ["tree"]
    assert "entries 4..7" in report.problems[0].message


def test_whole_rewrite_of_the_tail_is_caught_by_checkpoints(filled: str) -> None:
    """An attacker who rewrites the last entry, its leaf and every node above it leaves a
    self-consistent database; the signed checkpoints (stored, and saved by clients) catch it."""
    with open_ledger(filled) as log:
        signer = NoteSigner.generate(log.origin)
        log.checkpoint(signer)
        old_root = log.root()
    with raw(filled) as db:
        content = body(db, N - 1)
        content["payload_digest"] = "forged"
        data = put(db, N - 1, content)
        db("UPDATE ledger_entries SET payload_digest = 'forged' WHERE idx = ?", (N - 1,))
        db("DELETE FROM ledger_nodes WHERE id = ?", (node_id(0, N - 1),))
    with raw(filled) as db:
        leaves = [
            leaf_hash(bytes(r[0])) for r in db("SELECT body FROM ledger_entries ORDER BY idx")
        ]
        assert leaves[-1] == leaf_hash(data)
        db("INSERT INTO ledger_nodes (id, hash) VALUES (?, ?)", (node_id(0, N - 1), leaves[-1]))
        level = 1
        while ((((N - 1) >> level) + 1) << level) <= N:  # every complete node above the leaf
            idx = (N - 1) >> level
            h = root_from_leaf_hashes(leaves[idx << level : (idx + 1) << level])
            db("UPDATE ledger_nodes SET hash = ? WHERE id = ?", (h, node_id(level, idx)))
            level += 1
    with open_ledger(filled) as log:
        assert not log.verify().ok  # stored checkpoint roots are compared even without keys
        report = log.verify([signer.verifier()])
        assert [p.what for p in report.problems] == ["checkpoint"], report.problems
        # Even with the stored checkpoints gone, a client's saved one exposes the fork.
        proof = log.consistency_proof(N, N)
    with pytest.raises(ProofError):
        type(proof)(N, N, old_root, proof.new_root, proof.hashes).verify()
