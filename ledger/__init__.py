"""ledger: an append-only, tamper-evident log (hash chain + RFC 9162 Merkle tree).

A library of its own: it imports nothing from modelguard and nothing from ML.

>>> import tempfile, os
>>> from ledger import open_ledger, NoteSigner, open_checkpoint
>>> log = open_ledger("sqlite:///" + os.path.join(tempfile.mkdtemp(), "audit.db"))
>>> _ = log.append("sign", subject={"name": "m", "version": "1"}, payload_digest="sha256:ab",
...                actor="key-1", details={"note": "first"})
>>> signer = NoteSigner.generate(log.origin)
>>> cp = open_checkpoint(log.checkpoint(signer), [signer.verifier()])
>>> log.inclusion_proof(0).verify(cp)
>>> log.verify().ok
True
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from ledger.entry import Entry, EventSpec
    from ledger.errors import (
        LedgerError,
        LedgerInputError,
        LedgerIntegrityError,
        NoteVerificationError,
        ProofError,
    )
    from ledger.log import Ledger, verify_jsonl
    from ledger.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, sign_note
    from ledger.proofs import ConsistencyProof, InclusionProof
    from ledger.verify import Problem, VerifyReport

# Names load with their module on first use (PEP 562): the gate imports one submodule (say
# ledger.witness for a default) without paying for the whole log, SQLite and proof code.
_HOMES = {
    "Entry": "entry",
    "EventSpec": "entry",
    "LedgerError": "errors",
    "LedgerInputError": "errors",
    "LedgerIntegrityError": "errors",
    "NoteVerificationError": "errors",
    "ProofError": "errors",
    "Ledger": "log",
    "verify_jsonl": "log",
    "Checkpoint": "note",
    "NoteSigner": "note",
    "NoteVerifier": "note",
    "open_checkpoint": "note",
    "sign_note": "note",
    "ConsistencyProof": "proofs",
    "InclusionProof": "proofs",
    "Problem": "verify",
    "VerifyReport": "verify",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ledger.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Checkpoint",
    "ConsistencyProof",
    "Entry",
    "EventSpec",
    "InclusionProof",
    "Ledger",
    "LedgerError",
    "LedgerInputError",
    "LedgerIntegrityError",
    "NoteSigner",
    "NoteVerificationError",
    "NoteVerifier",
    "Problem",
    "ProofError",
    "VerifyReport",
    "open_checkpoint",
    "open_ledger",
    "sign_note",
    "verify_jsonl",
]


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL, else None."""
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :])


def open_ledger(
    url: str, *, create: bool = True, origin: str | None = None, read_only: bool = False
) -> Ledger:
    """Open (and, with ``create``, set up) the ledger at ``url``.

    ``read_only``: never create, and (SQLite) open the file read-only, so a reader such as a
    deployment gate cannot change the log even by accident.

    ``sqlite:///relative/or/absolute/path.db`` (``sqlite:////abs`` also works) or
    ``postgresql://user@host:port/db?schema=NAME`` (``schema`` is optional, default public).
    """
    from ledger.errors import LedgerInputError

    path = sqlite_path(url)
    if path is not None:
        if not str(path):
            raise LedgerInputError(f"{url}: sqlite URL has no path")
        from ledger.sqlite import SqliteLedger

        return SqliteLedger(path, create=create, origin=origin, read_only=read_only)
    if urlsplit(url).scheme in ("postgresql", "postgres"):
        from ledger.postgres import PostgresLedger

        # Its reads already run in READ ONLY transactions.
        return PostgresLedger(url, create=create and not read_only, origin=origin)
    raise LedgerInputError(f"{url}: ledger URL must start with sqlite:/// or postgresql://")
