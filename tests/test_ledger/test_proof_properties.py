"""Hypothesis: for random tree sizes and indices every proof verifies, every alteration fails."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import EventSpec, open_ledger
from ledger.errors import ProofError
from ledger.merkle import (
    NodeKey,
    compact_range,
    consistency_path_ranges,
    fold_cover,
    hash_ranges,
    inclusion_path_ranges,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)

MAX = 300
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(2 * MAX + 2)]


def _nodes() -> dict[NodeKey, bytes]:
    nodes: dict[NodeKey, bytes] = {(0, i): h for i, h in enumerate(LEAVES)}
    level, hashes = 0, LEAVES
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes) - 1, 2)]
        level += 1
        nodes.update({(level, i): h for i, h in enumerate(hashes)})
    return nodes


NODES = _nodes()
ROOTS = [root_from_leaf_hashes(LEAVES[:n]) for n in range(len(LEAVES) + 1)]


def read(keys: list[NodeKey]) -> dict[NodeKey, bytes]:
    return {k: NODES[k] for k in keys}


def flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def fails(check: object, *args: object) -> bool:
    try:
        check(*args)  # type: ignore[operator]
    except ProofError:
        return True
    return False


@st.composite
def size_and_index(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, MAX))
    return n, draw(st.integers(0, n - 1))


@settings(max_examples=150)
@given(size_and_index(), st.integers(0, 10**6), st.data())
def test_inclusion_proofs_verify_and_alterations_fail(
    ni: tuple[int, int], bit: int, data: st.DataObject
) -> None:
    n, i = ni
    proof = hash_ranges(inclusion_path_ranges(i, n), read)
    assert len(proof) <= n.bit_length()
    verify_inclusion(i, n, LEAVES[i], proof, ROOTS[n])
    assert fails(verify_inclusion, i, n, LEAVES[i], proof, flip(ROOTS[n], bit))
    assert fails(verify_inclusion, i, n, flip(LEAVES[i], bit), proof, ROOTS[n])
    assert fails(verify_inclusion, i, n, LEAVES[i], [*proof, LEAVES[0]], ROOTS[n])
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        altered = list(proof)
        altered[j] = flip(proof[j], bit)
        assert fails(verify_inclusion, i, n, LEAVES[i], altered, ROOTS[n])
        assert fails(verify_inclusion, i, n, LEAVES[i], proof[:-1], ROOTS[n])
    if n > 1:
        other = data.draw(st.integers(0, n - 1).filter(lambda k: k != i))
        assert fails(verify_inclusion, other, n, LEAVES[i], proof, ROOTS[n])
    # Another size: the proof must not show the leaf in the tree of that size.
    m = data.draw(st.integers(i + 1, 2 * MAX).filter(lambda k: k != n))
    assert fails(verify_inclusion, i, m, LEAVES[i], proof, ROOTS[m])
    assert fails(verify_inclusion, n, n, LEAVES[i], proof, ROOTS[n])


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, MAX))
    return draw(st.integers(1, n)), n


@settings(max_examples=150)
@given(two_sizes(), st.integers(0, 10**6), st.data())
def test_consistency_proofs_verify_and_alterations_fail(
    mn: tuple[int, int], bit: int, data: st.DataObject
) -> None:
    m, n = mn
    proof = hash_ranges(consistency_path_ranges(m, n), read)
    assert len(proof) <= 2 * n.bit_length()
    verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)
    assert fails(verify_consistency, m, n, flip(ROOTS[m], bit), ROOTS[n], proof)
    assert fails(verify_consistency, m, n, ROOTS[m], flip(ROOTS[n], bit), proof)
    assert fails(verify_consistency, m, n, ROOTS[m], ROOTS[n], [*proof, LEAVES[0]])
    assert fails(verify_consistency, n, m, ROOTS[n], ROOTS[m], proof) or m == n
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        altered = list(proof)
        altered[j] = flip(proof[j], bit)
        assert fails(verify_consistency, m, n, ROOTS[m], ROOTS[n], altered)
        assert fails(verify_consistency, m, n, ROOTS[m], ROOTS[n], proof[:-1])
    # Other sizes, each with the true root of that size: the proof is for (m, n) only.
    m2 = data.draw(st.integers(1, n).filter(lambda k: k != m)) if n > 1 else None
    if m2 is not None:
        assert fails(verify_consistency, m2, n, ROOTS[m2], ROOTS[n], proof)
    n2 = data.draw(st.integers(m, 2 * MAX).filter(lambda k: k != n))
    assert fails(verify_consistency, m, n2, ROOTS[m], ROOTS[n2], proof)


def test_compact_range_folds_to_the_root() -> None:
    for n in range(0, 2 * MAX):
        assert fold_cover([NODES[k] for k in compact_range(n)]) == ROOTS[n]


@pytest.mark.parametrize("bad", [(-1, 3), (3, 3), (0, 0)])
def test_impossible_inclusion_requests_are_refused(bad: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        inclusion_path_ranges(*bad)


@settings(max_examples=15)
@given(st.integers(1, 70), st.data())
def test_stored_ledger_proofs_match_the_rfc_computation(n: int, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'l.db'}"
        with open_ledger(url) as log:
            # Two batches, so that the tree is extended on top of stored nodes.
            half = data.draw(st.integers(0, n))
            for chunk in (range(half), range(half, n)):
                log.append_many([EventSpec("t", {"name": str(i)}, f"d{i}", "a") for i in chunk])
            leaves = [log.get(i).leaf_hash for i in range(n)]
            size = data.draw(st.integers(1, n))
            index = data.draw(st.integers(0, size - 1))
            old = data.draw(st.integers(0, size))
            proof = log.inclusion_proof(index, size)
            assert proof.root == root_from_leaf_hashes(leaves[:size])
            assert proof.leaf_hash == leaves[index]
            proof.verify()
            cons = log.consistency_proof(old, size)
            assert cons.old_root == root_from_leaf_hashes(leaves[:old])
            cons.verify()
            assert log.root() == root_from_leaf_hashes(leaves)
