"""Sigstore bundle v0.3 JSON around a DSSE envelope, with a public-key hint (no Rekor entry).

>>> from modelguard.signing.bundle import BUNDLE_MEDIA_TYPE
>>> BUNDLE_MEDIA_TYPE
'application/vnd.dev.sigstore.bundle.v0.3+json'
>>> payload_digest(b"{}")[:23]
'sha256:44136fa355b3678a'

Every signed document modelguard reads (model signatures, robustness certificates, audit
attestations) comes in through :func:`read_signed_bundle`, which keeps the exact bytes it read
and their :func:`payload_digest`, the ledger's name for the bundle.

This is the layout OpenSSF Model Signing 1.x writes in key mode::

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"publicKey": {"hint": HEX}, "tlogEntries": []},
     "dsseEnvelope": {"payload": B64, "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": B64, "keyid": ""}]}}

Parsing is strict (unknown fields are refused) so that no byte of a bundle is unchecked.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelguard.errors import FormatError
from modelguard.safeio import read_regular
from modelguard.signing.dsse import MAX_PAYLOAD_BYTES, Envelope

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
ACCEPTED_MEDIA_TYPES = (BUNDLE_MEDIA_TYPE, "application/vnd.dev.sigstore.bundle+json;version=0.3")
MAX_BUNDLE_BYTES = MAX_PAYLOAD_BYTES * 4 // 3 + 64 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ParsedBundle:
    envelope: Envelope
    hint: str | None  # hex SHA-256 naming the signer's public key (see keys.oms_hint), if present


def make_bundle(envelope: Envelope, hint: str) -> dict[str, Any]:
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": hint}, "tlogEntries": []},
        "dsseEnvelope": envelope.to_dict(),
    }


def dump_bundle(bundle: Mapping[str, Any]) -> bytes:
    """Compact JSON: no insignificant whitespace, so every byte of the file matters."""
    return json.dumps(bundle, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def parse_bundle(bundle: object) -> ParsedBundle:
    """Check the bundle's shape and media type; :class:`FormatError` on anything else."""
    if not isinstance(bundle, Mapping):
        raise FormatError("signature bundle is not a JSON object")
    unknown = set(bundle) - {"mediaType", "verificationMaterial", "dsseEnvelope"}
    if unknown:
        raise FormatError(f"signature bundle has unknown fields {sorted(unknown)}")
    media_type = bundle.get("mediaType")
    if media_type not in ACCEPTED_MEDIA_TYPES:
        raise FormatError(f"bundle mediaType {media_type!r} is not {BUNDLE_MEDIA_TYPE}")
    material = bundle.get("verificationMaterial")
    if not isinstance(material, Mapping):
        raise FormatError("bundle has no verificationMaterial")
    if "certificate" in material and not material.get("tlogEntries"):
        raise FormatError("keyless bundle (certificate) without transparency-log entries")
    for field, kind in (
        ("x509CertificateChain", "certificate"),
        ("certificate", "keyless Sigstore"),
    ):
        if field in material:
            raise FormatError(
                f"{kind} bundles (verificationMaterial.{field}) are not supported; "
                "modelguard verifies key-mode bundles only"
            )
    if set(material) - {"publicKey", "tlogEntries"}:
        raise FormatError(
            f"verificationMaterial has unknown fields {sorted(set(material) - {'publicKey', 'tlogEntries'})}"
        )
    if material.get("tlogEntries", []) != []:
        raise FormatError(
            "bundle has transparency-log entries; only key-mode bundles are supported"
        )
    public_key = material.get("publicKey")
    if not isinstance(public_key, Mapping) or set(public_key) - {"hint"}:
        raise FormatError("verificationMaterial.publicKey is missing or has unknown fields")
    hint = public_key.get("hint")
    if hint is not None and (not isinstance(hint, str) or not _HEX64.fullmatch(hint)):
        raise FormatError("verificationMaterial.publicKey.hint is not 64 lowercase hex digits")
    if "dsseEnvelope" not in bundle:
        raise FormatError("bundle has no dsseEnvelope (message signatures are not supported)")
    return ParsedBundle(envelope=Envelope.from_dict(bundle["dsseEnvelope"]), hint=hint)


def load_bundle_bytes(data: bytes, *, source: str) -> dict[str, Any]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise FormatError(f"signature file is larger than {MAX_BUNDLE_BYTES} bytes", path=source)
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"signature is not valid JSON ({error})", path=source) from None
    except RecursionError:
        raise FormatError("signature JSON is nested too deeply", path=source) from None
    if not isinstance(document, dict):
        raise FormatError("signature bundle is not a JSON object", path=source)
    return document


def read_bundle_file(path: Path) -> bytes:
    """The raw bytes of a signature file: a regular file, its size bounded on the descriptor.

    A FIFO, socket or device (``/dev/zero`` behind a symlink in ``model.sig.d/``) is refused
    before any read, so it can neither hang the verifier nor fill its memory.
    """
    return read_regular(path, max_size=MAX_BUNDLE_BYTES, what="signature file")


def payload_digest(data: bytes) -> str:
    """``sha256:<hex>`` of a bundle file's bytes: the ``payload_digest`` of its ledger entry."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class SignedBundle:
    """A bundle file as read once: its bytes, the JSON document and their payload digest."""

    path: Path
    data: bytes
    document: dict[str, Any]

    @property
    def payload_digest(self) -> str:
        return payload_digest(self.data)


def read_signed_bundle(
    path: Path | str, *, max_size: int = MAX_BUNDLE_BYTES, what: str = "signature file"
) -> SignedBundle:
    """Read a signed bundle once (a regular file, its size bounded on the descriptor) and
    decode its JSON; verify it with :func:`modelguard.signing.envelope.verify_bundle` on
    ``.document``. :class:`BadInputError` for a missing or irregular file, :class:`FormatError`
    for one that is not a bundle."""
    source = Path(path)
    data = read_regular(source, max_size=min(max_size, MAX_BUNDLE_BYTES), what=what)
    return SignedBundle(source, data, load_bundle_bytes(data, source=str(source)))
