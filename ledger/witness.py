"""Witnesses: C2SP tlog-witness ``add-checkpoint`` with tlog-cosignature/v1 Ed25519 cosignatures.

>>> import tempfile
>>> from pathlib import Path
>>> from ledger.note import Checkpoint, NoteSigner, sign_note
>>> from ledger.merkle import EMPTY_ROOT
>>> log_key = NoteSigner.generate("ex/log")
>>> witness = Witness(Path(tempfile.mkdtemp()), Cosigner.generate("ex/witness"),
...                   {"ex/log": [log_key.verifier()]})
>>> note = sign_note(Checkpoint("ex/log", 0, EMPTY_ROOT).to_text(), [log_key])
>>> line = witness.add_checkpoint(add_checkpoint_request(0, (), note), now=1700000000)
>>> require_cosignatures(note + line, [witness.cosigner.verifier()], 1, now=1700000060)
['ex/witness']
>>> require_cosignatures(note + line, [witness.cosigner.verifier()], 1, now=1700000000 + 86401)
Traceback (most recent call last):
...
ledger.errors.NoteVerificationError: checkpoint has 0 fresh witness cosignature(s) (none); the policy requires 1: witness ex/witness cosigned 86401 s (1d 0h) ago, more than the 86400 s (1d 0h) allowed

A witness keeps, per log origin, the latest checkpoint it cosigned, and cosigns a new one
only when the log's signature verifies and a consistency proof from that checkpoint does:
two verifiers who each demand a quorum of its cosignatures can not be shown two histories.

Freshness: a verifier counts a cosignature only when its timestamp is at most ``max_age``
seconds old (default 24 h, :data:`DEFAULT_MAX_COSIGNATURE_AGE`) and at most
:data:`MAX_CLOCK_SKEW` seconds ahead of the verifier's clock. Without that bound, whoever
keeps an old checkpoint with its valid old cosignatures could show it forever (a freeze).

Formats (https://c2sp.org/tlog-witness, https://c2sp.org/tlog-cosignature):
request ``old <size>\\n`` + one base64 hash per line (at most 63) + ``\\n`` + the signed
checkpoint; response: signature lines. A cosignature line is ``— <name> base64(key id ||
u64 big-endian timestamp || Ed25519 signature)``, the key id SHA-256(name || 0x0A || 0x04 ||
public key)[:4], and the signed message ``cosignature/v1\\ntime <timestamp>\\n`` followed by
the checkpoint body. Errors carry the protocol's HTTP status: 400 malformed, 403 bad log
signature, 404 unknown log, 409 old size is not the witness's (body: its size), 422 proof
fails.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.errors import LedgerInputError, LedgerIntegrityError, NoteVerificationError, ProofError
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from ledger.note import (
    Checkpoint,
    NoteVerifier,
    check_key_name,
    is_decimal,
    new_seed,
    open_note,
    split_note,
)

ALG_COSIGNATURE_V1 = 0x04
MAX_REQUEST_BYTES = 64 * 1024
MAX_PROOF_LINES = 63
DEFAULT_MAX_COSIGNATURE_AGE = 24 * 3600  # seconds: the log must be cosigned at least daily
MAX_CLOCK_SKEW = 300  # seconds a cosignature may be dated ahead of the verifier's clock
_DASH = "\u2014"
_TS_MAX = 2**63 - 1


def cosignature_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(
        name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()[:4]


def cosigned_message(checkpoint_text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header, time line, then the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint_text.encode()


def _key_blob(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LedgerInputError(f"{what} is not valid base64") from None
    if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
        raise LedgerInputError(f"{what} is not an Ed25519 cosignature/v1 key (type 0x04)")
    return raw[1:]


@dataclass(frozen=True)
class CosignerVerifier:
    """A witness's public key: ``<name>+<hex key id>+<base64(0x04 || key)>`` (a vkey)."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return cosignature_key_id(self.name, self.public_key)

    def verify(self, checkpoint_text: str, timestamp: int, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature, cosigned_message(checkpoint_text, timestamp)
            )
        except InvalidSignature:
            return False
        return True

    def to_key_string(self) -> str:
        blob = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{blob}"

    @classmethod
    def from_key_string(cls, text: str) -> CosignerVerifier:
        parts = text.strip().split("+", 2)
        if len(parts) != 3:
            raise LedgerInputError("witness key must be <name>+<hex key id>+<base64 key>")
        name, hex_id, blob = parts
        check_key_name(name, "witness")
        verifier = cls(name, _key_blob(blob, "witness key"))
        if verifier.key_id.hex() != hex_id.lower():
            raise LedgerInputError(f"witness key {name}: key id {hex_id} does not match the key")
        return verifier


@dataclass(frozen=True)
class Cosigner:
    """A witness's private key: ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x04 || seed)>``."""

    name: str
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        check_key_name(name, "witness")
        return cls(name, new_seed())

    def verifier(self) -> CosignerVerifier:
        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return CosignerVerifier(
            self.name,
            public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        )

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """One cosignature line over ``checkpoint_text`` at POSIX time ``timestamp``."""
        if not 0 < timestamp <= _TS_MAX:
            raise LedgerInputError(f"cosignature timestamp {timestamp} is out of range")
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(
            cosigned_message(checkpoint_text, timestamp)
        )
        blob = self.verifier().key_id + timestamp.to_bytes(8, "big") + signature
        return f"{_DASH} {self.name} {base64.b64encode(blob).decode()}\n"

    def to_key_string(self) -> str:
        blob = base64.b64encode(bytes([ALG_COSIGNATURE_V1]) + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier().key_id.hex()}+{blob}"

    @classmethod
    def from_key_string(cls, text: str) -> Cosigner:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise LedgerInputError("witness private key must be PRIVATE+KEY+<name>+<id>+<key>")
        name, hex_id, blob = parts[2:]
        check_key_name(name, "witness")
        signer = cls(name, _key_blob(blob, "witness private key"))
        if signer.verifier().key_id.hex() != hex_id.lower():
            raise LedgerInputError(f"witness key {name}: key id {hex_id} does not match the key")
        return signer


def verify_cosignatures(note: str, witnesses: Sequence[CosignerVerifier]) -> dict[str, int]:
    """Names of the trusted witnesses whose cosignature on ``note`` verifies -> their (latest)
    timestamp.

    Signature lines from unknown keys are ignored; a line that claims a trusted witness's name
    and key id but does not verify makes the note malformed (NoteVerificationError).
    """
    text, signatures = split_note(note)
    known = {(w.name, w.key_id): w for w in witnesses}
    verified: dict[str, int] = {}
    for name, kid, blob in signatures:
        witness = known.get((name, kid))
        if witness is None:
            continue
        if len(blob) != 8 + 64:
            raise NoteVerificationError(f"cosignature by {name} is not a cosignature/v1 signature")
        timestamp = int.from_bytes(blob[:8], "big")
        if timestamp > _TS_MAX or not witness.verify(text, timestamp, blob[8:]):
            raise NoteVerificationError(f"cosignature by witness {name} does not verify")
        verified[name] = max(timestamp, verified.get(name, 0))  # its latest view counts
    return verified


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d {hours}h" if days else f"{hours}h {rest // 60}m"


def cosignature_age_problem(name: str, timestamp: int, now: int, max_age: int) -> str | None:
    """Why witness ``name``'s cosignature dated ``timestamp`` is not fresh at ``now``; None: it is.

    Fresh: ``now - max_age <= timestamp <= now + MAX_CLOCK_SKEW`` (both ends included).
    """
    age = now - timestamp
    if age > max_age:
        return (
            f"witness {name} cosigned {age} s ({_duration(age)}) ago, more than the"
            f" {max_age} s ({_duration(max_age)}) allowed"
        )
    if -age > MAX_CLOCK_SKEW:
        return (
            f"witness {name}'s cosignature is dated {-age} s in the future, more than the"
            f" {MAX_CLOCK_SKEW} s of clock skew allowed"
        )
    return None


def require_cosignatures(
    note: str,
    witnesses: Sequence[CosignerVerifier],
    quorum: int,
    *,
    max_age: int = DEFAULT_MAX_COSIGNATURE_AGE,
    now: int | None = None,
) -> list[str]:
    """Demand ``quorum`` distinct trusted witnesses cosigned ``note`` recently; return the names
    of those whose cosignature counts (valid and fresh).

    The caller has already verified the log's own signature on the note. A valid cosignature
    older than ``max_age`` seconds, or dated more than MAX_CLOCK_SKEW seconds after ``now``
    (default: this machine's clock), does not count. Raises NoteVerificationError when fewer
    than ``quorum`` count, naming each witness left out and its cosignature's age.
    """
    if quorum < 0 or quorum > len({w.name for w in witnesses}):
        raise LedgerInputError(
            f"witness quorum {quorum} is not between 0 and the {len(witnesses)} witness key(s) given"
        )
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0:
        raise LedgerInputError(f"maximum cosignature age {max_age!r} is not a positive integer")
    clock = int(time.time()) if now is None else now
    names, stale = [], []
    for name, timestamp in sorted(verify_cosignatures(note, witnesses).items()):
        problem = cosignature_age_problem(name, timestamp, clock, max_age)
        if problem is None:
            names.append(name)
        else:
            stale.append(problem)
    if len(names) < quorum:
        have = ", ".join(names) or "none"
        counted = "fresh" if stale else "valid"
        why = f": {'; '.join(stale)}" if stale else ""
        raise NoteVerificationError(
            f"checkpoint has {len(names)} {counted} witness cosignature(s) ({have}); the policy"
            f" requires {quorum}{why}"
        )
    return names


class WitnessError(Exception):
    """A refused ``add-checkpoint``; ``status`` is the protocol's HTTP status code."""

    status = 400
    body = ""


class WitnessBadRequest(WitnessError, LedgerInputError):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class WitnessRefusal(WitnessError, LedgerIntegrityError):
    def __init__(self, message: str, status: int, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def add_checkpoint_request(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The body of an ``add-checkpoint`` request."""
    lines = [f"old {old_size}\n", *(base64.b64encode(h).decode() + "\n" for h in proof), "\n"]
    return ("".join(lines) + note).encode()


def parse_add_checkpoint(body: bytes) -> tuple[int, list[bytes], str]:
    """(old size, consistency proof, checkpoint note) of a request; WitnessBadRequest if malformed."""
    if len(body) > MAX_REQUEST_BYTES:
        raise WitnessBadRequest(f"request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessBadRequest("request is not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise WitnessBadRequest("request has no empty line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    size_text = first[4:]
    if not first.startswith("old ") or not is_decimal(size_text):
        raise WitnessBadRequest("request must start with 'old <size>'")
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessBadRequest(f"more than {MAX_PROOF_LINES} consistency proof lines")
    proof = []
    for line in lines[1:]:
        try:
            value = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise WitnessBadRequest("a consistency proof line is not base64") from None
        if len(value) != HASH_SIZE:
            raise WitnessBadRequest("a consistency proof line is not a SHA-256 hash")
        proof.append(value)
    return int(size_text), proof, note


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of a log origin (the witness's monitoring path element)."""
    return hashlib.sha256(origin.encode()).hexdigest()


class Witness:
    """A witness over a state directory: ``logs/<origin hash>`` holds the latest cosigned note.

    ``logs`` maps each known log origin to the note keys the witness trusts for it. Checking
    the old size and persisting the new checkpoint happen under one lock (a thread lock and an
    exclusive ``flock`` on ``state/lock``), so concurrent requests can not roll the witness back.
    """

    def __init__(
        self,
        state: Path,
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[NoteVerifier]],
    ) -> None:
        self.state = Path(state)
        self.cosigner = cosigner
        self.logs = {origin: list(keys) for origin, keys in logs.items()}
        self._lock = threading.Lock()

    def _path(self, origin: str) -> Path:
        return self.state / "logs" / origin_hash(origin)

    def latest(self, origin: str) -> str | None:
        """The latest checkpoint this witness cosigned for ``origin`` (with its cosignature)."""
        path = self._path(origin)
        return path.read_text() if path.exists() else None

    def _latest_checkpoint(self, origin: str) -> Checkpoint | None:
        note = self.latest(origin)
        return None if note is None else Checkpoint.from_text(split_note(note)[0])

    def add_checkpoint(self, body: bytes, *, now: int | None = None) -> str:
        """Handle an ``add-checkpoint`` request; return the cosignature line(s)."""
        old_size, proof, note = parse_add_checkpoint(body)
        try:
            text, _ = split_note(note)
            checkpoint = Checkpoint.from_text(text)
        except LedgerInputError as error:
            raise WitnessBadRequest(f"malformed checkpoint: {error}") from None
        keys = self.logs.get(checkpoint.origin)
        if keys is None:
            raise WitnessBadRequest(f"unknown log {checkpoint.origin!r}", status=404)
        try:
            open_note(note, keys)
        except NoteVerificationError as error:
            raise WitnessRefusal(f"{checkpoint.origin}: {error}", 403) from None
        if old_size > checkpoint.size:
            raise WitnessBadRequest(f"old size {old_size} is above the checkpoint size")
        if checkpoint.size == 0 and checkpoint.root != EMPTY_ROOT:
            raise WitnessRefusal("a checkpoint of size 0 must have the empty root", 422)
        with self._lock, self._flock():
            latest = self._latest_checkpoint(checkpoint.origin)
            latest_size = latest.size if latest is not None else 0
            if old_size != latest_size:
                raise WitnessRefusal(
                    f"old size {old_size} is not the size {latest_size} this witness cosigned",
                    409,
                    f"{latest_size}\n",
                )
            if old_size == 0:
                if proof:
                    raise WitnessRefusal("a proof from size 0 must be empty", 422)
            else:
                assert latest is not None
                try:
                    verify_consistency(
                        old_size, checkpoint.size, latest.root, checkpoint.root, proof
                    )
                except ProofError as error:
                    raise WitnessRefusal(
                        f"{checkpoint.origin}: not consistent with the checkpoint of size"
                        f" {old_size} this witness cosigned: {error}",
                        422,
                    ) from None
            line = self.cosigner.cosign(text, int(time.time()) if now is None else now)
            self._store(checkpoint.origin, note + line)
        return line

    def _flock(self) -> _FileLock:
        self.state.mkdir(parents=True, exist_ok=True)
        return _FileLock(self.state / "lock")

    def _store(self, origin: str, note: str) -> None:
        path = self._path(origin)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def to_config(self) -> dict[str, object]:
        return {
            "name": self.cosigner.name,
            "public_key": self.cosigner.verifier().to_key_string(),
            "logs": {o: [k.to_key_string() for k in keys] for o, keys in sorted(self.logs.items())},
        }

    @classmethod
    def load(cls, state: Path) -> Witness:
        """A witness from ``state/witness.key`` and ``state/witness.json`` (its trusted logs)."""
        state = Path(state)
        try:
            cosigner = Cosigner.from_key_string((state / "witness.key").read_text())
            config = json.loads((state / "witness.json").read_text())
        except (OSError, ValueError) as error:
            raise LedgerInputError(f"{state}: not a witness state directory ({error})") from None
        logs = config.get("logs") if isinstance(config, dict) else None
        if not isinstance(logs, dict):
            raise LedgerInputError(f"{state}/witness.json: no 'logs' table")
        parsed = {
            origin: [NoteVerifier.from_key_string(k) for k in keys] for origin, keys in logs.items()
        }
        return cls(state, cosigner, parsed)

    def save(self) -> None:
        """Write the config (and, if missing, the private key with mode 0600)."""
        self.state.mkdir(parents=True, exist_ok=True)
        key = self.state / "witness.key"
        if not key.exists():
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.cosigner.to_key_string() + "\n")
        (self.state / "witness.pub").write_text(self.cosigner.verifier().to_key_string() + "\n")
        (self.state / "witness.json").write_text(json.dumps(self.to_config(), indent=2) + "\n")


class _FileLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
