"""C2SP signed notes (Ed25519) and tlog-checkpoints.

>>> from ledger.note import Checkpoint, NoteSigner, open_note, sign_note
>>> signer = NoteSigner.generate("example.com/log")
>>> note = sign_note(Checkpoint("example.com/log", 0, bytes(32)).to_text(), [signer])
>>> Checkpoint.from_text(open_note(note, [signer.verifier()]).text).size
0

Formats (https://c2sp.org/signed-note, https://c2sp.org/tlog-checkpoint):
a note is UTF-8 text ending in a newline, then a blank line, then signature lines
``— <key name> <base64(key id || signature)>``. The Ed25519 key id is the first 4 bytes of
SHA-256(name || 0x0A || 0x01 || public key). Keys are written in the Go note package
encodings: verifier ``<name>+<hex key id>+<base64(0x01 || public key)>``, signer
``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``. A checkpoint body is
``<origin>\\n<tree size>\\n<base64 root hash>\\n`` followed by optional extension lines.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerInputError, NoteVerificationError

ALG_ED25519 = 0x01
_DASH = "\u2014"  # the em dash that opens every signature line


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerInputError(f"{what} is not valid base64") from None


def check_key_name(name: str, what: str = "note key") -> None:
    """A C2SP key name: non-empty, no white space, no '+' (the vkey separator)."""
    if not name or any(c.isspace() for c in name) or "+" in name:
        raise LedgerInputError(f"{what} name {name!r} must be non-empty, without spaces or '+'")


def new_seed() -> bytes:
    """A fresh raw 32-byte Ed25519 private key (note and witness keys)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )


def key_id(name: str, public_key: bytes) -> bytes:
    """C2SP signed-note key id for an Ed25519 key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class NoteVerifier:
    name: str
    public_key: bytes  # raw 32 bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def to_key_string(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def from_key_string(cls, text: str) -> NoteVerifier:
        parts = text.strip().split("+", 2)  # base64 may contain "+"
        if len(parts) != 3:
            raise LedgerInputError("verifier key must be <name>+<hex key id>+<base64 key>")
        name, hex_id, blob = parts
        check_key_name(name)
        raw = _b64decode(blob, "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise LedgerInputError("verifier key is not an Ed25519 note key")
        verifier = cls(name, raw[1:])
        if verifier.key_id.hex() != hex_id.lower():
            raise LedgerInputError(f"verifier key {name}: key id {hex_id} does not match the key")
        return verifier


@dataclass(frozen=True)
class NoteSigner:
    name: str
    seed: bytes = field(repr=False)  # raw 32-byte Ed25519 private key

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        check_key_name(name)
        return cls(name, new_seed())

    def _key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, _raw_public(self._key().public_key()))

    @property
    def key_id(self) -> bytes:
        return self.verifier().key_id

    def sign(self, message: bytes) -> bytes:
        return self._key().sign(message)

    def to_key_string(self) -> str:
        blob = base64.b64encode(bytes([ALG_ED25519]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def from_key_string(cls, text: str) -> NoteSigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise LedgerInputError("signer key must be PRIVATE+KEY+<name>+<hex id>+<base64 key>")
        name, hex_id, blob = parts[2:]
        check_key_name(name)
        raw = _b64decode(blob, "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise LedgerInputError("signer key is not an Ed25519 note key")
        signer = cls(name, raw[1:])
        if signer.key_id.hex() != hex_id.lower():
            raise LedgerInputError(f"signer key {name}: key id {hex_id} does not match the key")
        return signer


def is_decimal(text: str) -> bool:
    """A canonical uint64 in ASCII decimal: digits 0-9 only (``str.isdigit`` also accepts
    ``²`` and other scripts' digits, which ``int`` then refuses), no leading zero, < 2**64."""
    return (
        0 < len(text) <= 20
        and text.isascii()
        and text.isdigit()
        and (text == "0" or not text.startswith("0"))
        and int(text) < 2**64
    )


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise LedgerInputError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise LedgerInputError("note text must not contain control characters")


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """The signed note: text, a blank line, one signature line per signer."""
    _check_text(text)
    lines = []
    for signer in signers:
        signature = signer.sign(text.encode())
        blob = base64.b64encode(signer.key_id + signature).decode()
        lines.append(f"{_DASH} {signer.name} {blob}\n")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class SignedNote:
    text: str
    verified_by: tuple[str, ...]  # names of the trusted keys whose signatures verified


def split_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(text, [(name, key id, signature)]) of a signed note, without checking signatures."""
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise LedgerInputError("signed note has no signature block")
    text, block = note[: cut + 1], note[cut + 2 :]
    _check_text(text)
    signatures = []
    for line in block.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH:
            raise LedgerInputError(f"malformed note signature line {line!r}")
        raw = _b64decode(parts[2], "note signature")
        if len(raw) < 5:
            raise LedgerInputError("note signature is too short")
        signatures.append((parts[1], raw[:4], raw[4:]))
    if not signatures:
        raise LedgerInputError("signed note has no signatures")
    return text, signatures


def open_note(note: str, verifiers: Sequence[NoteVerifier]) -> SignedNote:
    """Check a signed note against trusted keys; unknown signers are ignored.

    Raises NoteVerificationError when no trusted key signed it, or when a signature that
    claims to be from a trusted key (same name and key id) does not verify.
    """
    text, signatures = split_note(note)
    known = {(v.name, v.key_id): v for v in verifiers}
    verified = []
    for name, kid, signature in signatures:
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        if not verifier.verify(text.encode(), signature):
            raise NoteVerificationError(f"note signature by {name} does not verify")
        verified.append(name)
    if not verified:
        names = ", ".join(sorted({n for n, _, _ in signatures}))
        raise NoteVerificationError(f"note is not signed by a trusted key (signed by: {names})")
    return SignedNote(text, tuple(verified))


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        root = base64.b64encode(self.root).decode()
        extra = "".join(f"{line}\n" for line in self.extensions)
        return f"{self.origin}\n{self.size}\n{root}\n{extra}"

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not lines[0]:
            raise LedgerInputError("checkpoint needs origin, size and root hash lines")
        origin, size_text, root_text = lines[:3]
        if not is_decimal(size_text):
            raise LedgerInputError(
                f"checkpoint tree size {size_text[:40]!r} is not a decimal number below 2**64"
            )
        root = _b64decode(root_text, "checkpoint root hash")
        if len(root) != 32:
            raise LedgerInputError("checkpoint root hash is not 32 bytes")
        if any(not line for line in lines[3:]):
            raise LedgerInputError("checkpoint has an empty extension line")
        return cls(origin, int(size_text), root, tuple(lines[3:]))

    def to_dict(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
        }


def open_checkpoint(note: str, verifiers: Sequence[NoteVerifier]) -> Checkpoint:
    """Verify a signed checkpoint note and parse its body."""
    return Checkpoint.from_text(open_note(note, verifiers).text)
