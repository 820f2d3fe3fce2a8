"""Hash algorithms by name, so every digest in modelguard says which algorithm made it.

>>> from modelguard.hashing import new_hasher
>>> new_hasher("sha256").hexdigest()[:16]
'e3b0c44298fc1c14'
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import blake3 as _blake3

from modelguard.errors import BadInputError

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
