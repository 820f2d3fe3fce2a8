"""RFC 9162 §2.1 Merkle tree hashing.

>>> from ledger.merkle import leaf_hash, root_hash
>>> root_hash([b"a"]) == leaf_hash(b"a")
True

MTH({}) = SHA-256(); MTH({d0}) = SHA-256(0x00 || d0);
MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two < n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH over already-hashed leaves in O(n) time and O(log n) memory (a compact range).

    Merging equal-size subtrees left to right and then folding the remaining perfect
    subtrees from the right reproduces the RFC's largest-power-of-two split exactly.
    """
    stack: list[tuple[int, bytes]] = []  # (subtree size, hash), sizes strictly decreasing
    for h in hashes:
        size, node = 1, h
        while stack and stack[-1][0] == size:
            left_size, left = stack.pop()
            node = node_hash(left, node)
            size += left_size
        stack.append((size, node))
    if not stack:
        return EMPTY_ROOT
    _, root = stack.pop()
    while stack:
        _, left = stack.pop()
        root = node_hash(left, root)
    return root


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over raw leaf data."""
    return root_from_leaf_hashes(leaf_hash(d) for d in leaves)
