"""A log client that trusts only signed tree heads and remembers the last one it accepted.

>>> import tempfile, os
>>> from ledger import open_ledger, NoteSigner
>>> from ledger.client import TrustedHead, advance, newest_trusted_checkpoint
>>> log = open_ledger("sqlite:///" + os.path.join(tempfile.mkdtemp(), "l.db"))
>>> _ = log.append("sign", subject={"name": "m"}, payload_digest="sha256:00", actor="k")
>>> signer = NoteSigner.generate(log.origin)
>>> _ = log.checkpoint(signer)
>>> note, checkpoint = newest_trusted_checkpoint(log, [signer.verifier()])
>>> head = advance(log, None, note, checkpoint, lambda entry: None)
>>> head.size, head.root == checkpoint.root
(1, True)

This is the client side of a transparency log, as a TUF or Certificate Transparency client
does it. The client holds a :class:`TrustedHead`: the last checkpoint it accepted and the
compact range (one hash per set bit of the size) of that tree. To move to a newer signed
checkpoint it reads the *entries* appended since, hashes them as RFC 9162 leaves, folds them
onto its compact range and demands the checkpoint's root. So:

- an edited, deleted, reordered or inserted row in the new range changes the root: refused;
- a log shorter than the trusted size (truncated tail, rolled-back database) is refused;
- a log whose first ``size`` entries differ from the trusted tree (a fork, a rewrite)
  cannot produce the checkpoint's root from the trusted compact range: refused.

The stored tree nodes are not used at all, so editing them changes nothing here. Every
entry handed to ``on_entry`` has been proven part of the signed tree by the time
:func:`advance` returns; a caller that derives decisions from them must discard what it
derived when :func:`advance` raises.

What a single client cannot see is a log that shows it one history and others another
(split view), or a log frozen at an old signed checkpoint: those need witnesses that
cosign checkpoints, plugged in through the ``cosignature`` hook of the caller.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ledger.entry import Entry
from ledger.errors import LedgerInputError, LedgerIntegrityError, NoteVerificationError
from ledger.log import Ledger
from ledger.merkle import CompactRange, leaf_hash
from ledger.note import Checkpoint, NoteVerifier, open_checkpoint

HEAD_FORMAT = 1
# A log may keep many signed checkpoints; the client looks at the largest few only.
CHECKPOINT_CANDIDATES = 64


@dataclass(frozen=True)
class TrustedHead:
    """The last signed tree head a client accepted, with what it needs to extend it."""

    origin: str
    size: int
    root: bytes
    note: str  # the signed checkpoint note, as accepted
    compact: tuple[bytes, ...]  # perfect-subtree hashes of the tree, largest first

    def check(self) -> None:
        """The compact range must fold to the root (a corrupt state file is refused)."""
        try:
            compact = CompactRange(self.size, self.compact)
        except ValueError:
            raise LedgerInputError(
                "trusted head: compact range does not fit the tree size"
            ) from None
        if compact.root() != self.root:
            raise LedgerInputError("trusted head: compact range does not fold to the root")

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": HEAD_FORMAT,
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "checkpoint": self.note,
            "compact_range": [base64.b64encode(h).decode() for h in self.compact],
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> TrustedHead:
        try:
            if document["format"] != HEAD_FORMAT:
                raise LedgerInputError(f"trusted head format {document['format']!r} unknown")
            size = document["size"]
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise LedgerInputError("trusted head: size is not a non-negative integer")
            head = cls(
                origin=str(document["origin"]),
                size=size,
                root=base64.b64decode(document["root"], validate=True),
                note=str(document["checkpoint"]),
                compact=tuple(
                    base64.b64decode(h, validate=True) for h in document["compact_range"]
                ),
            )
        except (KeyError, TypeError, binascii.Error, ValueError) as error:
            if isinstance(error, LedgerInputError):
                raise
            raise LedgerInputError(f"trusted head is malformed: {error}") from None
        head.check()
        return head


def newest_trusted_checkpoint(
    log: Ledger, verifiers: Sequence[NoteVerifier]
) -> tuple[str, Checkpoint]:
    """The stored checkpoint with the largest tree that a trusted key signed.

    Notes that do not verify (another key, a forged or damaged signature) are skipped; the
    log's own ``origin`` row is not consulted. Raises NoteVerificationError when none verifies.
    """
    if not verifiers:
        raise LedgerInputError("no trusted ledger key given")
    rejected: list[str] = []
    for note in log.newest_checkpoints(CHECKPOINT_CANDIDATES):
        try:
            return note, open_checkpoint(note, verifiers)
        except (NoteVerificationError, LedgerInputError) as error:
            rejected.append(str(error))
    names = ", ".join(sorted({v.name for v in verifiers}))
    seen = f"; the newest stored ones: {rejected[0]}" if rejected else "; the log has none"
    raise NoteVerificationError(f"no stored checkpoint is signed by a trusted key ({names}){seen}")


def check_not_behind(trusted: Checkpoint, newest: Checkpoint) -> None:
    """The newest signed head must be of the same log, no smaller, and equal at equal size.

    Raises LedgerIntegrityError naming the attack (another log, truncation, fork).
    """
    if trusted.origin != newest.origin:
        raise LedgerIntegrityError(
            f"the trusted checkpoint is for log {trusted.origin!r}, this one for {newest.origin!r}"
        )
    if newest.size < trusted.size:
        raise LedgerIntegrityError(
            f"the newest signed checkpoint covers {newest.size} entries, but {trusted.size}"
            " were already accepted: the log was truncated or rolled back"
        )
    if newest.size == trusted.size and newest.root != trusted.root:
        raise LedgerIntegrityError(
            f"two signed checkpoints of size {trusted.size} with different roots: the log forked"
        )


def advance(
    log: Ledger,
    head: TrustedHead | None,
    note: str,
    checkpoint: Checkpoint,
    on_entry: Callable[[Entry], None],
    wanted: Callable[[bytes], bool] | None = None,
) -> TrustedHead:
    """Move from ``head`` (None: the empty tree) to the verified ``checkpoint``.

    Reads the entries ``head.size .. checkpoint.size - 1``, calls ``on_entry`` for each, and
    raises LedgerIntegrityError unless they extend the trusted tree to exactly the
    checkpoint's root. ``checkpoint`` must already be verified against trusted keys.
    ``wanted``: a cheap test on an entry's stored bytes; entries it rejects are hashed (the
    proof still covers them) but not parsed nor handed to ``on_entry``. It must accept every
    entry the caller cares about.
    """
    if head is not None:
        head.check()
        check_not_behind(Checkpoint(head.origin, head.size, head.root), checkpoint)
    start = head.size if head is not None else 0
    compact = CompactRange(head.size, head.compact) if head is not None else CompactRange()
    expected = start
    for index, body in log.bodies(start, checkpoint.size):
        if index != expected:
            raise LedgerIntegrityError(
                f"entry {expected} is missing from the log (deleted), but the signed"
                f" checkpoint of size {checkpoint.size} covers it"
            )
        compact.append(leaf_hash(body))
        if wanted is None or wanted(body):
            try:
                entry = Entry.from_canonical(body)
            except LedgerInputError as error:
                raise LedgerIntegrityError(f"entry {index} is unreadable ({error})") from None
            if entry.index != index:
                raise LedgerIntegrityError(f"row {index} holds the content of entry {entry.index}")
            on_entry(entry)
        expected += 1
    if expected != checkpoint.size:
        raise LedgerIntegrityError(
            f"the log ends at entry {expected - 1}, but the signed checkpoint covers"
            f" {checkpoint.size} entries (entries deleted from the end)"
        )
    if compact.root() != checkpoint.root:
        what = (
            f"entries {start}..{checkpoint.size - 1}"
            if head is not None
            else f"the log's {checkpoint.size} entries"
        )
        raise LedgerIntegrityError(
            f"{what} do not hash to the signed checkpoint's root: an entry was edited,"
            " inserted or replaced, or the log forked from the checkpoint this client trusts"
        )
    return TrustedHead(checkpoint.origin, checkpoint.size, checkpoint.root, note, compact.hashes)
