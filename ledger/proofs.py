"""Inclusion and consistency proofs as values that verify offline.

>>> from ledger.merkle import leaf_hash, node_hash
>>> a, b = leaf_hash(b"a"), leaf_hash(b"b")
>>> InclusionProof(0, 2, a, (b,), node_hash(a, b)).verify()
>>> InclusionProof.from_dict(InclusionProof(0, 2, a, (b,), node_hash(a, b)).to_dict()).tree_size
2

JSON form (hashes in standard base64, as in checkpoints and the RFC 9162 vectors):
``{"type": "inclusion", "origin", "leaf_index", "tree_size", "leaf_hash", "root", "proof":
[...], "entry": {...}?}`` and ``{"type": "consistency", "origin", "old_size", "new_size",
"old_root", "new_root", "proof": [...]}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from ledger.errors import LedgerInputError, ProofError
from ledger.merkle import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion
from ledger.note import Checkpoint


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise LedgerInputError(f"proof field {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerInputError(f"proof field {what} is not valid base64") from None


def _int(document: Mapping[str, Any], name: str) -> int:
    value = document.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LedgerInputError(f"proof field {name} is not a non-negative integer")
    return value


def _hashes(document: Mapping[str, Any]) -> tuple[bytes, ...]:
    proof = document.get("proof")
    if not isinstance(proof, list):
        raise LedgerInputError("proof field proof is not a list")
    return tuple(_unb64(p, f"proof[{i}]") for i, p in enumerate(proof))


def _check_type(document: Mapping[str, Any], kind: str) -> None:
    if not isinstance(document, Mapping) or document.get("type") != kind:
        raise LedgerInputError(f"not a {kind} proof document")


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    hashes: tuple[bytes, ...]
    root: bytes
    origin: str = ""
    entry: Mapping[str, Any] | None = None  # the entry body, when the proof carries it

    def verify(self, checkpoint: Checkpoint | None = None) -> None:
        """Raise ProofError unless the proof holds (and matches ``checkpoint`` when given)."""
        if self.entry is not None:
            body = {k: v for k, v in self.entry.items() if k != "entry_hash"}
            if leaf_hash(rfc8785.dumps(body)) != self.leaf_hash:
                raise ProofError("the entry in the proof does not hash to its leaf hash")
            if body.get("index") != self.leaf_index:
                raise ProofError("the entry in the proof is not at the proven index")
        if checkpoint is not None:
            if self.origin and checkpoint.origin != self.origin:
                raise ProofError(
                    f"proof is for log {self.origin!r}, checkpoint for {checkpoint.origin!r}"
                )
            if checkpoint.size != self.tree_size:
                raise ProofError(
                    f"proof is for tree size {self.tree_size}, checkpoint is for size {checkpoint.size}"
                )
            if checkpoint.root != self.root:
                raise ProofError("proof root differs from the checkpoint root")
        verify_inclusion(self.leaf_index, self.tree_size, self.leaf_hash, self.hashes, self.root)

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": "inclusion",
            "origin": self.origin,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": b64(self.leaf_hash),
            "root": b64(self.root),
            "proof": [b64(h) for h in self.hashes],
        }
        if self.entry is not None:
            document["entry"] = dict(self.entry)
        return document

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> InclusionProof:
        _check_type(document, "inclusion")
        entry = document.get("entry")
        if entry is not None and not isinstance(entry, Mapping):
            raise LedgerInputError("proof field entry is not an object")
        return cls(
            leaf_index=_int(document, "leaf_index"),
            tree_size=_int(document, "tree_size"),
            leaf_hash=_unb64(document.get("leaf_hash"), "leaf_hash"),
            hashes=_hashes(document),
            root=_unb64(document.get("root"), "root"),
            origin=str(document.get("origin", "")),
            entry=entry,
        )


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    hashes: tuple[bytes, ...]
    origin: str = ""

    def verify(self) -> None:
        """Raise ProofError unless the new tree extends the old one.

        Unlike the bare RFC check, an empty old tree (its root SHA-256 of nothing) is
        consistent with every tree: a client that saved a size-0 checkpoint learns nothing.
        """
        if self.old_size == 0:
            if self.hashes or self.old_root != EMPTY_ROOT:
                raise ProofError("a tree of size 0 has the empty root and an empty proof")
            return
        verify_consistency(self.old_size, self.new_size, self.old_root, self.new_root, self.hashes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "consistency",
            "origin": self.origin,
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": b64(self.old_root),
            "new_root": b64(self.new_root),
            "proof": [b64(h) for h in self.hashes],
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> ConsistencyProof:
        _check_type(document, "consistency")
        return cls(
            old_size=_int(document, "old_size"),
            new_size=_int(document, "new_size"),
            old_root=_unb64(document.get("old_root"), "old_root"),
            new_root=_unb64(document.get("new_root"), "new_root"),
            hashes=_hashes(document),
            origin=str(document.get("origin", "")),
        )
