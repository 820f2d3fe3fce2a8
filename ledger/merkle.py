"""RFC 9162 §2.1 Merkle tree hashing.

>>> from ledger.merkle import leaf_hash, root_hash
>>> root_hash([b"a"]) == leaf_hash(b"a")
True

MTH({}) = SHA-256(); MTH({d0}) = SHA-256(0x00 || d0);
MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two < n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from ledger.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH over already-hashed leaves in O(n) time and O(log n) memory (a compact range)."""
    compact = CompactRange()
    for h in hashes:
        compact.append(h)
    return compact.root()


class CompactRange:
    """The one compact range: the perfect subtrees covering leaves ``[0, size)``, one hash per
    set bit of ``size``, largest first. Appending a leaf merges equal-size subtrees left to
    right; folding them from the right reproduces the RFC's largest-power-of-two split.

    >>> from ledger.merkle import CompactRange, leaf_hash, root_hash
    >>> compact = CompactRange()
    >>> compact.append(leaf_hash(b"a"))
    >>> made = []
    >>> compact.append(leaf_hash(b"b"), lambda level, index, node: made.append((level, index)))
    >>> made, compact.size, len(compact.hashes)
    ([(0, 1), (1, 0)], 2, 1)
    >>> compact.root() == root_hash([b"a", b"b"])
    True

    Used by the log's appends (which store every completed node), the full recomputation in
    ``ledger.verify`` and the client that advances its trusted head (``ledger.client``).
    """

    __slots__ = ("_stack", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        levels = [bit for bit in reversed(range(size.bit_length())) if size >> bit & 1]
        if len(levels) != len(hashes):
            raise ValueError(f"a compact range of {size} leaves has {len(levels)} hashes")
        self.size = size
        self._stack: list[tuple[int, bytes]] = list(zip(levels, hashes, strict=True))

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(h for _, h in self._stack)

    def append(self, h: bytes, on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        """Append leaf hash ``h`` (leaf ``size``). ``on_node(level, index, hash)`` is called for
        every perfect subtree this completes, the leaf itself first."""
        stack, level, index, node = self._stack, 0, self.size, h
        if on_node is not None:
            on_node(0, index, node)
        while stack and stack[-1][0] == level:
            node = node_hash(stack.pop()[1], node)
            level += 1
            index >>= 1
            if on_node is not None:
                on_node(level, index, node)
        stack.append((level, node))
        self.size += 1

    def root(self) -> bytes:
        """MTH of the ``size`` leaves (EMPTY_ROOT for none)."""
        return fold_cover(self.hashes)


def root_hash(leaves: Sequence[bytes]) -> bytes:
    """MTH over raw leaf data."""
    return root_from_leaf_hashes(leaf_hash(d) for d in leaves)


# --- Stored perfect subtrees ---------------------------------------------------------------
# A perfect subtree is addressed by (level, index): the MTH of leaves
# [index * 2**level, (index + 1) * 2**level). Once complete it never changes, so a store can
# keep them and answer any proof for any tree size by reading O(log n) of them (and O(log^2 n)
# in the worst case for the right edge of historical trees).

NodeKey = tuple[int, int]


def node_id(level: int, index: int) -> int:
    """Pack (level, index) into one signed 64-bit integer key (level < 64, index < 2**56)."""
    return (level << 56) | index


def perfect_cover(start: int, end: int) -> list[NodeKey]:
    """The maximal aligned perfect subtrees covering leaves [start, end), left to right."""
    keys: list[NodeKey] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else 63
        while start + (1 << level) > end:
            level -= 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def compact_range(size: int) -> list[NodeKey]:
    """Perfect subtrees whose fold is the root of a tree of ``size`` leaves (one per set bit)."""
    return perfect_cover(0, size)


def fold_cover(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its perfect cover (sizes strictly decreasing): fold from the right."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_path_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PATH(index, D[size]) (RFC 9162 §2.1.3.1), bottom first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _largest_power_of_two_below(hi - lo)
        if index - lo < k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo = lo + k
    ranges.reverse()
    return ranges


def consistency_path_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1)."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"cannot prove consistency from size {old_size} to size {new_size}")
    if old_size in (0, new_size):
        return []
    ranges: list[tuple[int, int]] = []
    m, lo, hi, complete = old_size, 0, new_size, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                ranges.append((lo, hi))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            m, lo, complete = m - k, lo + k, False
    ranges.reverse()
    return ranges


NodeReader = Callable[[Sequence[NodeKey]], Mapping[NodeKey, bytes]]


def hash_ranges(ranges: Sequence[tuple[int, int]], read_nodes: NodeReader) -> list[bytes]:
    """MTH of each range, reading every needed stored perfect subtree in one batch."""
    covers = [perfect_cover(lo, hi) for lo, hi in ranges]
    wanted = sorted({key for cover in covers for key in cover})
    nodes = read_nodes(wanted) if wanted else {}
    missing = [key for key in wanted if key not in nodes]
    if missing:
        raise KeyError(f"tree node(s) missing from the store: {missing[:3]}")
    return [fold_cover([nodes[key] for key in cover]) for cover in covers]


# --- Proof verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -----------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(
    leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root implied by an inclusion proof; ProofError when its shape is impossible."""
    if not 0 <= leaf_index < tree_size:
        raise ProofError(f"leaf index {leaf_index} is outside a tree of size {tree_size}")
    _check_hash(leaf, "leaf hash")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
        if sn == 0:
            raise ProofError(f"inclusion proof has {len(proof)} hashes, too many")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof has {len(proof)} hashes, too few")
    return r


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise ProofError unless ``leaf`` (a leaf hash) is at ``leaf_index`` in the tree ``root``."""
    if root_from_inclusion_proof(leaf_index, tree_size, leaf, proof) != root:
        raise ProofError(
            f"inclusion proof for leaf {leaf_index} does not lead to the root of size {tree_size}"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise ProofError unless the tree ``new_root`` extends the tree ``old_root``.

    A proof from the empty tree is rejected as meaningless (as the RFC 9162 vectors demand);
    callers treat an empty old tree separately (it is consistent with every tree).
    """
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0:
        raise ProofError("a consistency proof from the empty tree proves nothing")
    if old_size == new_size:
        if proof:
            raise ProofError("sizes are equal but the consistency proof is not empty")
        if old_root != new_root:
            raise ProofError(f"two different roots for the same tree size {old_size}")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    for i, p in enumerate(proof):
        _check_hash(p, f"proof[{i}]")
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # an exact power of two: the old root is a node
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof has {len(proof)} hashes, too many")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof has {len(proof)} hashes, too few")
    if fr != old_root:
        raise ProofError(f"consistency proof does not reproduce the old root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"consistency proof does not reproduce the new root of size {new_size}")
