"""Signing keys: generate, store encrypted at rest, load, identify.

>>> from modelguard.keys import generate_key, key_id
>>> key = generate_key("ecdsa-p256")
>>> len(key_id(key.public_key()))
64

ECDSA P-256 is the default because OpenSSF Model Signing verifiers accept EC keys only;
Ed25519 is offered for modelguard-only use. A key id is the hex SHA-256 of the public key's
SubjectPublicKeyInfo DER. OMS bundles carry a different hint (the SHA-256 of the PEM text,
see :func:`oms_hint`); both are derived from the public key alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519

from modelguard.errors import BadInputError, KeyFileError
from modelguard.safeio import read_regular

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

ALGORITHMS: tuple[str, ...] = ("ecdsa-p256", "ecdsa-p384", "ed25519")
DEFAULT_ALGORITHM = "ecdsa-p256"
DEFAULT_KEY_NAME = "modelguard"
MAX_KEY_FILE_BYTES = 64 * 1024  # a PEM key is a few hundred bytes; refuse anything huge

_CURVES: dict[str, ec.EllipticCurve] = {"ecdsa-p256": ec.SECP256R1(), "ecdsa-p384": ec.SECP384R1()}
# Curves we can verify with (P-521 too: OpenSSF Model Signing keys may use it).
_CURVE_NAMES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}


def generate_key(algorithm: str = DEFAULT_ALGORITHM) -> PrivateKey:
    """A fresh private key for ``algorithm`` (one of :data:`ALGORITHMS`)."""
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm])
    raise BadInputError(
        f"unknown key algorithm {algorithm!r} (choose from {', '.join(ALGORITHMS)})"
    )


def key_algorithm(key: PrivateKey | PublicKey) -> str:
    """``ecdsa-p256`` | ``ecdsa-p384`` | ``ecdsa-p521`` | ``ed25519``."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    name = _CURVE_NAMES.get(key.curve.name)
    if name is None:
        raise KeyFileError(f"unsupported elliptic curve {key.curve.name}")
    return name


def public_pem(public_key: PublicKey | x25519.X25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def generate_encryption_key() -> x25519.X25519PrivateKey:
    """A fresh X25519 key: a recipient for ``modelguard encrypt --recipient`` (issue #5)."""
    return x25519.X25519PrivateKey.generate()


def key_id(public_key: PublicKey | x25519.X25519PublicKey) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo DER: modelguard's name for a key."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def oms_hint(public_key: PublicKey) -> str:
    """The ``publicKey.hint`` OpenSSF Model Signing 1.x writes and checks: SHA-256 of the PEM."""
    return hashlib.sha256(public_pem(public_key)).hexdigest()


def _ecdsa_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    # Same pairing as OpenSSF Model Signing (and Sigstore's protobuf specs).
    if curve.key_size <= 256:
        return hashes.SHA256()
    if curve.key_size <= 384:
        return hashes.SHA384()
    return hashes.SHA512()


def sign_bytes(key: PrivateKey, data: bytes) -> bytes:
    """ECDSA (DER signature, curve-matched hash) or Ed25519 over ``data``."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(_ecdsa_hash(key.curve)))


def verify_bytes(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` over ``data`` verifies under ``public_key``."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            public_key.verify(signature, data, ec.ECDSA(_ecdsa_hash(public_key.curve)))
    except InvalidSignature:
        return False
    return True


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` with ``mode`` from the first byte on, then rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_keypair(
    out_dir: Path, name: str, key: PrivateKey | x25519.X25519PrivateKey, passphrase: bytes | None
) -> tuple[Path, Path]:
    """Write ``out_dir/name.priv`` (PEM PKCS#8, encrypted unless ``passphrase`` is None, mode
    0600) and ``out_dir/name.pub`` (PEM SubjectPublicKeyInfo). Refuses to overwrite."""
    if not name or "/" in name or name.startswith("."):
        raise BadInputError(f"bad key name {name!r}: a plain file name is needed")
    if passphrase is not None and not passphrase:
        raise BadInputError("empty passphrase: give a real one, or say --no-passphrase")
    out_dir.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out_dir / f"{name}.priv", out_dir / f"{name}.pub"
    for existing in (priv_path, pub_path):
        if existing.exists():
            raise BadInputError("refusing to overwrite an existing key file", path=str(existing))
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase is not None
        else serialization.NoEncryption()
    )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    atomic_write(priv_path, private_pem, 0o600)
    atomic_write(pub_path, public_pem(key.public_key()), 0o644)
    return priv_path, pub_path


def _read_key_file(path: Path) -> bytes:
    """Regular files only (a FIFO or ``/dev/zero`` is refused), size checked on the descriptor."""
    return read_regular(path, max_size=MAX_KEY_FILE_BYTES, what="key file")


def _check_supported(key: object, path: str) -> None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if key.curve.name in _CURVE_NAMES:
            return
        raise KeyFileError(f"unsupported elliptic curve {key.curve.name}", path=path)
    raise KeyFileError(
        f"unsupported key algorithm {type(key).__name__} (need ECDSA P-256/P-384 or Ed25519)",
        path=path,
    )


def load_private_key(
    path: Path,
    passphrase: bytes | None,
    *,
    passphrase_hint: str = "--passphrase-env or --passphrase-file",
) -> PrivateKey:
    """Load a PEM private key; :class:`KeyFileError` on a wrong passphrase or algorithm.

    ``passphrase_hint`` names the caller's flags in the "give its passphrase" error."""
    data = _read_key_file(path)
    try:
        key = serialization.load_pem_private_key(data, passphrase)
    except TypeError:
        if passphrase is None:
            raise KeyFileError(
                f"private key is encrypted: give its passphrase ({passphrase_hint})",
                path=str(path),
            ) from None
        raise KeyFileError(
            "private key is not encrypted but a passphrase was given", path=str(path)
        ) from None
    except ValueError:
        reason = (
            "wrong passphrase, or not a PEM private key" if passphrase else "not a PEM private key"
        )
        raise KeyFileError(reason, path=str(path)) from None
    except UnsupportedAlgorithm:
        raise KeyFileError("unsupported key algorithm", path=str(path)) from None
    _check_supported(key, str(path))
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    return key


def load_public_key_pem(data: bytes, *, source: str = "<inline>") -> PublicKey:
    """Parse a PEM SubjectPublicKeyInfo; :class:`KeyFileError` if it is not a supported key."""
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError("not a PEM public key", path=source) from None
    _check_supported(key, source)
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)
    return key


def load_public_key(path: Path) -> PublicKey:
    """Load a PEM public key file (``NAME.pub``)."""
    return load_public_key_pem(_read_key_file(path), source=str(path))


def read_passphrase(*, env: str | None = None, file: Path | None = None) -> bytes | None:
    """The passphrase from environment variable ``env`` or the first line of ``file``."""
    if env is not None and file is not None:
        raise BadInputError("give the passphrase one way: --passphrase-env or --passphrase-file")
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise BadInputError(f"environment variable {env} is not set")
        return value.encode()
    if file is not None:
        text = read_regular(file, max_size=MAX_KEY_FILE_BYTES, what="passphrase file")
        lines = text.splitlines()
        return lines[0] if lines else b""
    return None
