"""Errors raised by the ledger library.

>>> from ledger.errors import LedgerInputError, LedgerIntegrityError
>>> issubclass(LedgerInputError, ValueError), issubclass(LedgerIntegrityError, ValueError)
(True, False)

Two kinds, so that callers can map them: bad input (a malformed URL, file, proof, note or
key; an index out of range) versus a failed integrity check (tampering found, a proof or a
signature that does not verify).
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class LedgerInputError(LedgerError, ValueError):
    """Malformed or unusable input: URL, file, proof, note, key, index."""


class LedgerIntegrityError(LedgerError):
    """The log, a proof or a signature failed verification."""


class ProofError(LedgerIntegrityError):
    """A Merkle inclusion or consistency proof does not verify."""


class NoteVerificationError(LedgerIntegrityError):
    """A signed note carries no valid signature from a trusted key."""
