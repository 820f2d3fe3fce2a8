"""Hash algorithms by name, so every digest in modelguard says which algorithm made it.

>>> from modelguard.hashing import new_hasher
>>> new_hasher("sha256").hexdigest()[:16]
'e3b0c44298fc1c14'
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import blake3 as _blake3

from modelguard.errors import BadInputError
from modelguard.safeio import open_regular

HASH_ALGORITHMS: tuple[str, ...] = ("sha256", "blake2b", "blake3")
DEFAULT_HASH = "sha256"


class Hasher(Protocol):
    def update(self, data: bytes | memoryview, /) -> object: ...
    def digest(self) -> bytes: ...
    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hasher. blake2b is the 256-bit variant so every digest is 32 bytes."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake2b":
        return hashlib.blake2b(digest_size=32)
    if algorithm == "blake3":
        return _blake3.blake3()
    raise BadInputError(
        f"unknown hash algorithm {algorithm!r} (choose from {', '.join(HASH_ALGORITHMS)})"
    )


def check_algorithm(algorithm: str) -> str:
    if algorithm not in HASH_ALGORITHMS:
        raise BadInputError(
            f"unknown hash algorithm {algorithm!r} (choose from {', '.join(HASH_ALGORITHMS)})"
        )
    return algorithm


CHUNK_SIZE = 32 * 1024 * 1024  # bounded slices: a mapped file is never copied whole


def feed(
    hasher: Hasher,
    view: memoryview,
    *,
    chunk_size: int = CHUNK_SIZE,
    progress: Callable[[int], None] | None = None,
) -> Hasher:
    """The one chunked-hash loop: feed ``view`` to ``hasher`` in slices of ``chunk_size``
    bytes (zero-copy; hashlib and blake3 release the GIL on each), reporting each slice's size
    to ``progress``. Returns ``hasher``. The digest never depends on ``chunk_size``.

    >>> feed(new_hasher("sha256"), memoryview(b"abc"), chunk_size=2).hexdigest()[:16]
    'ba7816bf8f01cfea'
    """
    for start in range(0, view.nbytes, chunk_size):
        chunk = view[start : start + chunk_size]
        hasher.update(chunk)
        if progress is not None:
            progress(chunk.nbytes)
    return hasher


def digest_file(path: Path | str, algorithm: str = DEFAULT_HASH) -> str:
    """Hex digest of a regular file (opened through :func:`modelguard.safeio.open_regular`,
    mapped, fed in chunks): for provenance records, not for verification, which hashes the
    bytes it holds."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return new_hasher(algorithm).hexdigest()
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                return feed(new_hasher(algorithm), view).hexdigest()
            finally:
                view.release()
