"""Ledger entries: RFC 8785 canonical JSON, hash-chained, hashed as RFC 9162 leaves.

>>> from ledger.entry import Entry, GENESIS_PREV
>>> e = Entry(index=0, timestamp="2026-01-01T00:00:00.000000Z", kind="sign",
...           subject={"name": "digits"}, payload_digest="sha256:00", actor="k",
...           details={}, prev=GENESIS_PREV)
>>> e.canonical()[:38]
b'{"actor":"k","details":{},"index":0,"k'
>>> Entry.from_canonical(e.canonical()) == e
True

The entry hash is the RFC 9162 leaf hash SHA-256(0x00 || canonical JSON); ``prev`` is the
entry hash of the previous entry (64 zeros for entry 0).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785

from ledger.errors import LedgerInputError
from ledger.merkle import leaf_hash

GENESIS_PREV = "0" * 64
FIELDS = ("actor", "details", "index", "kind", "payload_digest", "prev", "subject", "timestamp")
_KIND = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def utc_timestamp() -> str:
    """Now, as RFC 3339 UTC with microseconds: ``2026-01-01T00:00:00.000000Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class EventSpec:
    """What a caller wants recorded; the ledger adds index, timestamp and prev."""

    kind: str
    subject: Mapping[str, str]
    payload_digest: str
    actor: str
    details: Mapping[str, Any] | None = None

    def validated(self) -> EventSpec:
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise LedgerInputError(f"entry kind {self.kind!r} must match {_KIND.pattern}")
        if not isinstance(self.subject, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.subject.items()
        ):
            raise LedgerInputError("entry subject must map strings to strings")
        for name in ("payload_digest", "actor"):
            if not isinstance(getattr(self, name), str):
                raise LedgerInputError(f"entry {name} must be a string")
        details = dict(self.details or {})
        try:
            rfc8785.dumps(details)
        except Exception as error:  # rfc8785 raises several types for non-JSON values
            raise LedgerInputError(f"entry details are not canonical-JSON-able: {error}") from None
        return EventSpec(self.kind, dict(self.subject), self.payload_digest, self.actor, details)


@dataclass(frozen=True)
class Entry:
    index: int
    timestamp: str
    kind: str
    subject: dict[str, str]
    payload_digest: str
    actor: str
    details: dict[str, Any]
    prev: str
    _canonical: bytes = field(default=b"", repr=False, compare=False)

    def body(self) -> dict[str, Any]:
        """The hashed fields (everything but entry_hash)."""
        return {
            "actor": self.actor,
            "details": self.details,
            "index": self.index,
            "kind": self.kind,
            "payload_digest": self.payload_digest,
            "prev": self.prev,
            "subject": self.subject,
            "timestamp": self.timestamp,
        }

    def canonical(self) -> bytes:
        """RFC 8785 canonical JSON of :meth:`body`: the exact bytes that are hashed."""
        return self._canonical or rfc8785.dumps(self.body())

    @property
    def leaf_hash(self) -> bytes:
        return leaf_hash(self.canonical())

    @property
    def entry_hash(self) -> str:
        """Hex SHA-256(0x00 || canonical JSON): the chain link and the Merkle leaf."""
        return self.leaf_hash.hex()

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "entry_hash": self.entry_hash}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], canonical: bytes = b"") -> Entry:
        """Validate a parsed entry body; LedgerInputError names what is wrong."""
        if not isinstance(body, Mapping):
            raise LedgerInputError("entry is not a JSON object")
        keys = set(body) - {"entry_hash"}
        if keys != set(FIELDS):
            raise LedgerInputError(f"entry fields {sorted(keys)} differ from {list(FIELDS)}")
        index = body["index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise LedgerInputError(f"entry index {index!r} is not a non-negative integer")
        for name in ("timestamp", "kind", "payload_digest", "actor", "prev"):
            if not isinstance(body[name], str):
                raise LedgerInputError(f"entry {index}: {name} is not a string")
        if not _HEX64.match(body["prev"]):
            raise LedgerInputError(f"entry {index}: prev is not 64 lowercase hex digits")
        subject, details = body["subject"], body["details"]
        if not isinstance(subject, dict) or not all(isinstance(v, str) for v in subject.values()):
            raise LedgerInputError(f"entry {index}: subject is not an object of strings")
        if not isinstance(details, dict):
            raise LedgerInputError(f"entry {index}: details is not an object")
        return cls(
            index=index,
            timestamp=body["timestamp"],
            kind=body["kind"],
            subject=dict(subject),
            payload_digest=body["payload_digest"],
            actor=body["actor"],
            details=dict(details),
            prev=body["prev"],
            _canonical=canonical,
        )

    @classmethod
    def from_canonical(cls, data: bytes) -> Entry:
        """Parse stored bytes; the entry keeps them so its hash is over exactly those bytes."""
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError) as error:  # too deeply nested
            raise LedgerInputError(f"entry is not valid JSON: {error}") from None
        return cls.from_dict(body, canonical=bytes(data))


def new_entry(spec: EventSpec, *, index: int, prev: str, timestamp: str) -> Entry:
    """Build the entry for an already validated spec."""
    entry = Entry(
        index=index,
        timestamp=timestamp,
        kind=spec.kind,
        subject=dict(spec.subject),
        payload_digest=spec.payload_digest,
        actor=spec.actor,
        details=dict(spec.details or {}),
        prev=prev,
    )
    return Entry(**{**entry.__dict__, "_canonical": rfc8785.dumps(entry.body())})
