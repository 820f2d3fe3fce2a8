"""C2SP tlog-proof: an offline-verifiable proof that an entry is in the log (a "spicy signature").

>>> import os, tempfile
>>> from ledger import open_ledger, NoteSigner
>>> log = open_ledger("sqlite:///" + os.path.join(tempfile.mkdtemp(), "l.db"), origin="ex/log")
>>> _ = log.append("sign", subject={"name": "m"}, payload_digest="sha256:00", actor="k")
>>> signer = NoteSigner.generate("ex/log")
>>> text = entry_proof(log, 0, log.checkpoint(signer)).to_text()
>>> text.splitlines()[0]
'c2sp.org/tlog-proof@v1'
>>> entry, checkpoint = verify_entry_proof(text, [signer.verifier()])
>>> entry.payload_digest, checkpoint.size
('sha256:00', 1)

Format (https://c2sp.org/tlog-proof): ``c2sp.org/tlog-proof@v1``, then ``extra <base64>``
(here: the entry's canonical JSON, from which the verifier computes the leaf hash; it is
trusted only once the inclusion proof binds that hash to the signed root), ``index <n>``,
the RFC 9162 inclusion path one base64 hash per line (leaf's sibling first), an empty line,
and the checkpoint verbatim, with the log's signature and any witness cosignatures.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ledger.entry import Entry
from ledger.errors import LedgerInputError, ProofError
from ledger.merkle import HASH_SIZE, leaf_hash, verify_inclusion
from ledger.note import Checkpoint, NoteVerifier, is_decimal, open_checkpoint, split_note
from ledger.witness import DEFAULT_MAX_COSIGNATURE_AGE, CosignerVerifier, require_cosignatures

if TYPE_CHECKING:
    from ledger.log import Ledger

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_BYTES = 1024 * 1024
MAX_PATH_HASHES = 63


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerInputError(f"tlog proof: {what} is not valid base64") from None


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: tuple[bytes, ...]
    checkpoint: str  # the signed note, verbatim
    extra: bytes | None = None

    def to_text(self) -> str:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {base64.b64encode(self.extra).decode()}")
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode() for h in self.hashes]
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def from_text(cls, text: str) -> TlogProof:
        if len(text.encode()) > MAX_PROOF_BYTES:
            raise LedgerInputError(f"tlog proof is larger than {MAX_PROOF_BYTES} bytes")
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise LedgerInputError("tlog proof has no empty line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise LedgerInputError(f"tlog proof does not start with {HEADER}")
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            extra = _b64(rest[0][6:], "extra")
            rest = rest[1:]
        if not rest or not rest[0].startswith("index "):
            raise LedgerInputError("tlog proof has no 'index <n>' line")
        index_text = rest[0][6:]
        if not is_decimal(index_text):
            raise LedgerInputError("tlog proof index is not a decimal number")
        if len(rest) - 1 > MAX_PATH_HASHES:
            raise LedgerInputError("tlog proof has too many inclusion proof hashes")
        hashes = tuple(_b64(line, "proof hash") for line in rest[1:])
        if any(len(h) != HASH_SIZE for h in hashes):
            raise LedgerInputError("tlog proof hash is not 32 bytes")
        split_note(note)  # the checkpoint must at least be a signed note
        return cls(int(index_text), hashes, note, extra)

    def verify(
        self,
        leaf: bytes,
        log_keys: Sequence[NoteVerifier],
        witnesses: Sequence[CosignerVerifier] = (),
        quorum: int = 0,
        *,
        max_age: int = DEFAULT_MAX_COSIGNATURE_AGE,
        now: int | None = None,
    ) -> Checkpoint:
        """Check the log's signature, ``quorum`` fresh witness cosignatures (at most ``max_age``
        seconds old at ``now``), and the inclusion of the leaf hash ``leaf`` at ``index``;
        return the checkpoint."""
        checkpoint = open_checkpoint(self.checkpoint, log_keys)
        if quorum:
            require_cosignatures(self.checkpoint, witnesses, quorum, max_age=max_age, now=now)
        try:
            verify_inclusion(self.index, checkpoint.size, leaf, self.hashes, checkpoint.root)
        except ProofError as error:
            raise ProofError(f"tlog proof: {error}") from None
        return checkpoint


def entry_proof(log: Ledger, index: int, checkpoint_note: str) -> TlogProof:
    """The tlog proof of entry ``index`` in the tree of ``checkpoint_note`` (which ``log`` signed)."""
    checkpoint = Checkpoint.from_text(split_note(checkpoint_note)[0])
    proof = log.inclusion_proof(index, checkpoint.size)
    if proof.root != checkpoint.root:
        raise ProofError(f"{log.url}: the checkpoint's root is not this log's at its size")
    body = log.get(index).canonical()
    return TlogProof(index, proof.hashes, checkpoint_note, body)


def verify_entry_proof(
    text: str,
    log_keys: Sequence[NoteVerifier],
    witnesses: Sequence[CosignerVerifier] = (),
    quorum: int = 0,
    *,
    max_age: int = DEFAULT_MAX_COSIGNATURE_AGE,
    now: int | None = None,
) -> tuple[Entry, Checkpoint]:
    """Offline: the ledger entry a tlog proof carries (in ``extra``), proven in the signed tree
    (and cosigned by ``quorum`` witnesses within ``max_age`` seconds of ``now``)."""
    proof = TlogProof.from_text(text)
    if proof.extra is None:
        raise LedgerInputError("tlog proof carries no entry (no extra line)")
    checkpoint = proof.verify(
        leaf_hash(proof.extra), log_keys, witnesses, quorum, max_age=max_age, now=now
    )
    entry = Entry.from_canonical(proof.extra)
    if entry.index != proof.index:
        raise ProofError(f"tlog proof: the entry says index {entry.index}, the proof {proof.index}")
    return entry, checkpoint
