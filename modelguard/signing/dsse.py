"""DSSE v1 envelopes: pre-authentication encoding and a strict JSON codec.

>>> from modelguard.signing.dsse import pae
>>> pae("application/vnd.in-toto+json", b"{}")
b'DSSEv1 28 application/vnd.in-toto+json 2 {}'

Spec: https://github.com/secure-systems-lab/dsse/blob/v1.0.0/protocol.md. The signature is
over PAE(payloadType, payload), never over the payload alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelguard.errors import FormatError

PAYLOAD_TYPE_INTOTO = "application/vnd.in-toto+json"
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024  # a manifest of ~100k tensors fits; anything larger is refused
MAX_SIGNATURES = 64
MAX_SIGNATURE_BYTES = 1024


def pae(payload_type: str, payload: bytes) -> bytes:
    """``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body`` (lengths in ASCII decimal)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def b64decode_strict(text: object, what: str, *, limit: int) -> bytes:
    """Standard base64 that re-encodes to exactly ``text`` (no slack bits, no whitespace)."""
    if not isinstance(text, str):
        raise FormatError(f"{what} is not a base64 string")
    if len(text) > (limit + 2) // 3 * 4:
        raise FormatError(f"{what} is larger than the {limit}-byte bound")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what} is not canonical base64")
    return raw


def require_finite(value: Any, where: str, what: str) -> None:
    """Canonical JSON (RFC 8785) has no NaN or infinity: refuse them before signing, naming
    the field (``what`` says whose field: "certificate", "attestation")."""
    if isinstance(value, float) and not math.isfinite(value):
        raise FormatError(f"{what} field {where} is not a finite number")
    if isinstance(value, Mapping):
        for k, v in value.items():
            require_finite(v, f"{where}.{k}", what)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            require_finite(v, f"{where}[{i}]", what)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise FormatError("payload has duplicate JSON keys")
    return dict(pairs)


def load_json_payload(payload: bytes) -> Any:
    """UTF-8 JSON with no duplicate keys (two readers must never see two different values)."""
    try:
        return json.loads(payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"payload is not JSON ({error})") from None


@dataclass(frozen=True)
class Signature:
    sig: bytes
    keyid: str = ""


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[Signature, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"sig": base64.b64encode(s.sig).decode("ascii"), "keyid": s.keyid}
                for s in self.signatures
            ],
        }

    @classmethod
    def from_dict(cls, data: object) -> Envelope:
        """Parse and bound a JSON envelope; :class:`FormatError` on anything unexpected."""
        if not isinstance(data, Mapping):
            raise FormatError("dsseEnvelope is not an object")
        unknown = set(data) - {"payload", "payloadType", "signatures"}
        if unknown:
            raise FormatError(f"dsseEnvelope has unknown fields {sorted(unknown)}")
        payload_type = data.get("payloadType")
        if not isinstance(payload_type, str):
            raise FormatError("dsseEnvelope.payloadType is missing")
        payload = b64decode_strict(
            data.get("payload"), "dsseEnvelope.payload", limit=MAX_PAYLOAD_BYTES
        )
        raw_sigs = data.get("signatures")
        if not isinstance(raw_sigs, list) or not raw_sigs:
            raise FormatError("dsseEnvelope.signatures is missing or empty")
        if len(raw_sigs) > MAX_SIGNATURES:
            raise FormatError(f"dsseEnvelope has more than {MAX_SIGNATURES} signatures")
        signatures = []
        for number, item in enumerate(raw_sigs):
            if not isinstance(item, Mapping) or set(item) - {"sig", "keyid"}:
                raise FormatError(f"dsseEnvelope.signatures[{number}] is malformed")
            keyid = item.get("keyid", "")
            if not isinstance(keyid, str):
                raise FormatError(f"dsseEnvelope.signatures[{number}].keyid is not a string")
            sig = b64decode_strict(
                item.get("sig"), f"dsseEnvelope.signatures[{number}].sig", limit=MAX_SIGNATURE_BYTES
            )
            signatures.append(Signature(sig=sig, keyid=keyid))
        return cls(payload=payload, payload_type=payload_type, signatures=tuple(signatures))
