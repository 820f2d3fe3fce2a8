"""Wrapping a per-file data key for each recipient: X25519 (HPKE), passphrase (scrypt), raw key.

>>> from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
>>> identity = X25519PrivateKey.generate()
>>> file_id, data_key = bytes(16), bytes(range(32))
>>> stanza = X25519Recipient(identity.public_key()).wrap(data_key, file_id)
>>> unwrap_data_key([stanza], file_id, [X25519Identity(identity)]) == data_key
True

Every stanza is a JSON object with a ``type``; docs/format.md specifies each byte. The
recipient's secret never leaves this module: callers hand over identities and get back the
32-byte data key, or a :class:`~modelguard.errors.DecryptionError` when none opens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from modelguard.errors import BadInputError, DecryptionError, FormatError, KeyFileError
from modelguard.safeio import MAX_KEY_BYTES, read_regular

DATA_KEY_SIZE = 32
HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
HPKE_ENC_LENGTH = 32 + DATA_KEY_SIZE + 16  # enc || AES-GCM(data key) || tag
SCRYPT_DEFAULT_LOG_N = 17  # N = 2^17, r = 8: 128 MiB per derivation (OWASP 2024 minimum is 2^17)
SCRYPT_BOUNDS = {"log_n": (10, 20), "r": (1, 32), "p": (1, 4)}
SCRYPT_MAX_MEMORY = 1 << 30  # 128 * r * N bytes
SCRYPT_MAX_WORK = 1 << 23  # N * r * p; the writers' default 2^17 * 8 * 1 is 2^20
# A writer puts one passphrase stanza in each file (every file of a run shares its salt).
# Before any KDF runs, a reader refuses a file with more, and one identity derives at most
# this many distinct keys in a whole decryption, so a hostile header cannot buy minutes.
MAX_SCRYPT_STANZAS = 2
MAX_SCRYPT_DERIVATIONS = 4


def _info(label: str, file_id: bytes) -> bytes:
    return b"modelguard/v1/" + label.encode() + b"/" + file_id


def x25519_key_id(public_key: X25519PublicKey) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER (the same key id as signing keys)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def raw_key_id(key: bytes) -> str:
    """A fingerprint of a raw key that reveals nothing about it (HKDF output, not the key)."""
    return _hkdf(key, b"", b"modelguard/v1/key-id", 16).hex()


def _hkdf(secret: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def _hex(stanza: Mapping[str, Any], name: str, length: int | None = None) -> bytes:
    value = stanza.get(name)
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (length is not None and len(raw) != length):
        raise FormatError(f"recipient stanza field {name!r} is not {length or 'some'}-byte hex")
    return raw


def _int(stanza: Mapping[str, Any], name: str) -> int:
    value = stanza.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"recipient stanza field {name!r} is not an integer")
    lo, hi = SCRYPT_BOUNDS[name]
    if not lo <= value <= hi:
        raise FormatError(f"scrypt parameter {name}={value} outside [{lo}, {hi}]")
    return value


# ---------------------------------------------------------------------------- recipients


class Recipient(Protocol):
    def wrap(self, data_key: bytes, file_id: bytes) -> dict[str, Any]: ...


class Identity(Protocol):
    @property
    def stanza_type(self) -> str: ...

    def unwrap(self, stanza: Mapping[str, Any], file_id: bytes) -> bytes | None: ...


@dataclass(frozen=True)
class X25519Recipient:
    """HPKE base mode (RFC 9180), DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM."""

    public_key: X25519PublicKey

    def wrap(self, data_key: bytes, file_id: bytes) -> dict[str, Any]:
        sealed = HPKE_SUITE.encrypt(data_key, self.public_key, info=_info("x25519", file_id))
        return {"type": "x25519", "key_id": x25519_key_id(self.public_key), "hpke": sealed.hex()}


@dataclass(frozen=True)
class X25519Identity:
    private_key: X25519PrivateKey
    stanza_type: str = "x25519"

    def unwrap(self, stanza: Mapping[str, Any], file_id: bytes) -> bytes | None:
        if stanza.get("key_id") != x25519_key_id(self.private_key.public_key()):
            return None
        sealed = _hex(stanza, "hpke", HPKE_ENC_LENGTH)
        try:
            return HPKE_SUITE.decrypt(sealed, self.private_key, info=_info("x25519", file_id))
        except (InvalidTag, ValueError):
            return None


def scrypt_params(stanza: Mapping[str, Any]) -> tuple[bytes, int, int, int]:
    """(salt, log_n, r, p) of a passphrase stanza, every bound checked; no KDF runs here."""
    salt = _hex(stanza, "salt", 16)
    log_n, r, p = _int(stanza, "log_n"), _int(stanza, "r"), _int(stanza, "p")
    _check_cost(log_n, r, p)
    return salt, log_n, r, p


def _check_cost(log_n: int, r: int, p: int) -> None:
    if 128 * r * (1 << log_n) > SCRYPT_MAX_MEMORY:
        raise FormatError(f"scrypt parameters need more than {SCRYPT_MAX_MEMORY >> 20} MiB")
    if (1 << log_n) * r * p > SCRYPT_MAX_WORK:
        raise FormatError(f"scrypt work N*r*p = {(1 << log_n) * r * p} exceeds {SCRYPT_MAX_WORK}")


def _scrypt(passphrase: bytes, salt: bytes, log_n: int, r: int, p: int) -> bytes:
    _check_cost(log_n, r, p)
    return Scrypt(salt=salt, length=32, n=1 << log_n, r=r, p=p).derive(passphrase)


def _seal(kek: bytes, data_key: bytes, label: str, file_id: bytes) -> dict[str, str]:
    nonce = os.urandom(12)
    sealed = AESGCM(kek).encrypt(nonce, data_key, _info(label, file_id))
    return {"nonce": nonce.hex(), "wrapped": sealed.hex()}


def _open(kek: bytes, stanza: Mapping[str, Any], label: str, file_id: bytes) -> bytes | None:
    nonce = _hex(stanza, "nonce", 12)
    sealed = _hex(stanza, "wrapped", DATA_KEY_SIZE + 16)
    try:
        return AESGCM(kek).decrypt(nonce, sealed, _info(label, file_id))
    except InvalidTag:
        return None


@dataclass
class PassphraseRecipient:
    """scrypt(passphrase, salt, N=2^log_n, r, p) -> KEK; AES-256-GCM wraps the data key.

    One scrypt derivation per encryption run: every file of a directory shares the salt and
    KEK, each with its own random wrap nonce and its file id as associated data.
    """

    passphrase: bytes
    log_n: int = SCRYPT_DEFAULT_LOG_N
    r: int = 8
    p: int = 1
    salt: bytes = field(default_factory=lambda: os.urandom(16))
    _kek: bytes | None = field(default=None, repr=False)

    def wrap(self, data_key: bytes, file_id: bytes) -> dict[str, Any]:
        if self._kek is None:
            for name, value in (("log_n", self.log_n), ("r", self.r), ("p", self.p)):
                lo, hi = SCRYPT_BOUNDS[name]
                if not lo <= value <= hi:
                    raise BadInputError(f"scrypt parameter {name}={value} outside [{lo}, {hi}]")
            self._kek = _scrypt(self.passphrase, self.salt, self.log_n, self.r, self.p)
        return {
            "type": "scrypt",
            "salt": self.salt.hex(),
            "log_n": self.log_n,
            "r": self.r,
            "p": self.p,
            **_seal(self._kek, data_key, "scrypt", file_id),
        }


@dataclass
class PassphraseIdentity:
    passphrase: bytes
    stanza_type: str = "scrypt"
    _keks: dict[tuple[bytes, int, int, int], bytes] = field(default_factory=dict, repr=False)

    def unwrap(self, stanza: Mapping[str, Any], file_id: bytes) -> bytes | None:
        params = scrypt_params(stanza)
        if params not in self._keks:
            if len(self._keks) >= MAX_SCRYPT_DERIVATIONS:
                raise FormatError(
                    f"containers ask for more than {MAX_SCRYPT_DERIVATIONS} distinct scrypt"
                    " derivations (a writer uses one per run): refused before deriving"
                )
            self._keks[params] = _scrypt(self.passphrase, *params)
        return _open(self._keks[params], stanza, "scrypt", file_id)


@dataclass(frozen=True)
class RawKeyRecipient:
    """A 256-bit key from a secret store or KMS: HKDF(key) -> KEK; AES-256-GCM wraps the data key."""

    key: bytes

    def wrap(self, data_key: bytes, file_id: bytes) -> dict[str, Any]:
        kek = _hkdf(self.key, b"", b"modelguard/v1/key-file-kek")
        return {
            "type": "key",
            "key_id": raw_key_id(self.key),
            **_seal(kek, data_key, "key", file_id),
        }


@dataclass(frozen=True)
class RawKeyIdentity:
    key: bytes
    stanza_type: str = "key"

    def unwrap(self, stanza: Mapping[str, Any], file_id: bytes) -> bytes | None:
        if stanza.get("key_id") != raw_key_id(self.key):
            return None
        return _open(_hkdf(self.key, b"", b"modelguard/v1/key-file-kek"), stanza, "key", file_id)


def unwrap_data_key(
    stanzas: Sequence[Mapping[str, Any]], file_id: bytes, identities: Sequence[Identity]
) -> bytes:
    """The data key from the first stanza one of ``identities`` opens; DecryptionError if none.

    Before any key derivation: more than :data:`MAX_SCRYPT_STANZAS` passphrase stanzas, or
    one whose parameters are out of bounds, is refused (FormatError, exit 2).
    """
    passphrase_stanzas = [s for s in stanzas if s.get("type") == "scrypt"]
    if len(passphrase_stanzas) > MAX_SCRYPT_STANZAS:
        raise FormatError(
            f"{len(passphrase_stanzas)} passphrase (scrypt) stanzas; at most"
            f" {MAX_SCRYPT_STANZAS} are tried"
        )
    if any(i.stanza_type == "scrypt" for i in identities):
        for stanza in passphrase_stanzas:
            scrypt_params(stanza)
    for identity in identities:
        for stanza in stanzas:
            if stanza.get("type") != identity.stanza_type:
                continue
            data_key = identity.unwrap(stanza, file_id)
            if data_key is not None:
                if len(data_key) != DATA_KEY_SIZE:
                    raise FormatError("wrapped data key has the wrong length")
                return data_key
    kinds = sorted({str(s.get("type")) for s in stanzas})
    raise DecryptionError(
        "no recipient stanza opens with the given identity, passphrase or key "
        f"(container has: {', '.join(kinds) or 'none'})"
    )


# ---------------------------------------------------------------------------- key files


def read_raw_key(path: Path) -> bytes:
    """A 256-bit key file: 32 raw bytes, 64 hex digits, or base64 of 32 bytes (KMS data keys)."""
    data = read_regular(path, max_size=MAX_KEY_BYTES, what="key file")
    if len(data) == DATA_KEY_SIZE:
        return data
    text = data.strip()
    for decode in (bytes.fromhex, lambda t: base64.b64decode(t, validate=True)):
        try:
            key = decode(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError, binascii.Error):
            continue
        if len(key) == DATA_KEY_SIZE:
            return key
    raise KeyFileError(
        "not a 256-bit key (want 32 raw bytes, 64 hex digits or base64)", path=str(path)
    )


def load_x25519_public_key(path: Path) -> X25519PublicKey:
    data = read_regular(path, max_size=MAX_KEY_BYTES, what="public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyFileError("not a PEM public key", path=str(path)) from None
    if not isinstance(key, X25519PublicKey):
        raise KeyFileError(
            "not an X25519 encryption key (make one: modelguard keygen --purpose encryption)",
            path=str(path),
        )
    return key


def load_x25519_private_key(
    path: Path,
    passphrase: bytes | None = None,
    *,
    passphrase_hint: str = "--identity-passphrase-env or --identity-passphrase-file",
) -> X25519PrivateKey:
    data = read_regular(path, max_size=MAX_KEY_BYTES, what="identity")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise KeyFileError(
            f"identity is encrypted: give its passphrase ({passphrase_hint})"
            if passphrase is None
            else "identity is not encrypted but a passphrase was given",
            path=str(path),
        ) from None
    except ValueError:
        raise KeyFileError("not a PEM private key, or wrong passphrase", path=str(path)) from None
    if not isinstance(key, X25519PrivateKey):
        raise KeyFileError("identity is not an X25519 encryption key", path=str(path))
    return key
