"""Every RFC 9162 vector (transparency-dev/merkle testdata): happy paths verify, errors fail."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ledger.errors import ProofError
from ledger.merkle import (
    consistency_path_ranges,
    hash_ranges,
    inclusion_path_ranges,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

# A copy of ../shared/testdata/rfc9162 (transparency-dev/merkle, Apache-2.0; see its README).
VECTORS = Path(__file__).parent / "vectors" / "rfc9162"
LEAVES = [
    bytes.fromhex(h)
    for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f")
]  # fmt: skip


def _files(kind: str, happy_only: bool = False) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    if happy_only:
        files = [f for f in files if json.loads(f.read_text())["desc"] == "happy path"]
    return files


def _b(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def test_vectors_are_present() -> None:
    assert len(_files("inclusion")) > 20 and len(_files("consistency")) > 20


@pytest.mark.parametrize("path", _files("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    proof = [_b(p) for p in v["proof"] or []]
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(v["leafIdx"], v["treeSize"], _b(v["leafHash"]), proof, _b(v["root"]))
    else:
        verify_inclusion(v["leafIdx"], v["treeSize"], _b(v["leafHash"]), proof, _b(v["root"]))


@pytest.mark.parametrize("path", _files("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vector(path: Path) -> None:
    v = json.loads(path.read_text())
    args = (
        v["size1"],
        v["size2"],
        _b(v["root1"]),
        _b(v["root2"]),
        [_b(p) for p in v["proof"] or []],
    )
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def _store(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree hash, computed the plain way."""
    hashes = [leaf_hash(d) for d in leaves]
    nodes = {(0, i): h for i, h in enumerate(hashes)}
    level = 0
    while len(hashes) > 1:
        hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes) - 1, 2)]
        level += 1
        nodes.update({(level, i): h for i, h in enumerate(hashes)})
    return nodes


@pytest.mark.parametrize("path", _files("inclusion", True), ids=lambda p: p.parent.name)
def test_generated_inclusion_proofs_equal_the_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    nodes = _store(LEAVES)
    got = hash_ranges(inclusion_path_ranges(v["leafIdx"], v["treeSize"]), lambda keys: nodes)
    assert [base64.b64encode(h).decode() for h in got] == (v["proof"] or [])
    assert root_hash(LEAVES[: v["treeSize"]]) == _b(v["root"])


@pytest.mark.parametrize("path", _files("consistency", True), ids=lambda p: p.parent.name)
def test_generated_consistency_proofs_equal_the_vectors(path: Path) -> None:
    v = json.loads(path.read_text())
    nodes = _store(LEAVES)
    got = hash_ranges(consistency_path_ranges(v["size1"], v["size2"]), lambda keys: nodes)
    assert [base64.b64encode(h).decode() for h in got] == (v["proof"] or [])
