"""ledger: an append-only, tamper-evident log (hash chain + RFC 9162 Merkle tree).

A library of its own: it imports nothing from modelguard and nothing from ML.

>>> from ledger.merkle import root_hash
>>> root_hash([]).hex()[:16]
'e3b0c44298fc1c14'
"""

from __future__ import annotations

__all__: list[str] = []
