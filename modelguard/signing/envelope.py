"""Sign any in-toto statement into a bundle, and verify bundles against trusted keys.

>>> from modelguard.keys import generate_key
>>> from modelguard.signing.envelope import sign_statement, verify_bundle
>>> key = generate_key()
>>> st = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x", "predicate": {}}
>>> verify_bundle(sign_statement(st, key), [key.public_key()]).statement == st
True

Generic: model signatures and robustness certificates both go through these two functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785

from modelguard.errors import FormatError, SignatureError
from modelguard.keys import PrivateKey, PublicKey, key_id, oms_hint, sign_bytes, verify_bytes
from modelguard.signing.bundle import make_bundle, parse_bundle
from modelguard.signing.dsse import PAYLOAD_TYPE_INTOTO, Envelope, Signature, pae
from modelguard.signing.statement import STATEMENT_TYPE


@dataclass(frozen=True)
class VerifiedStatement:
    statement: dict[str, Any]
    key_ids: tuple[str, ...]  # trusted keys whose signatures verified (key_id form)
    payload: bytes


def sign_statement(statement: Mapping[str, Any], key: PrivateKey) -> dict[str, Any]:
    """A Sigstore bundle v0.3 (JSON-ready dict) holding one DSSE signature over ``statement``."""
    payload = rfc8785.dumps(dict(statement))
    signature = sign_bytes(key, pae(PAYLOAD_TYPE_INTOTO, payload))
    public = key.public_key()
    envelope = Envelope(
        payload=payload,
        payload_type=PAYLOAD_TYPE_INTOTO,
        signatures=(Signature(sig=signature, keyid=key_id(public)),),
    )
    return make_bundle(envelope, oms_hint(public))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise FormatError("signed payload has duplicate JSON keys")
    return dict(pairs)


def _matches(public: PublicKey, hint: str | None, keyid: str) -> bool:
    names = {oms_hint(public), key_id(public)}
    return (hint is None or hint in names) and (keyid == "" or keyid == key_id(public))


def verify_bundle(bundle: Mapping[str, Any], trusted: Sequence[PublicKey]) -> VerifiedStatement:
    """Verify ``bundle``'s DSSE signature(s) with the trusted keys and return the statement.

    :class:`FormatError` if the bundle is malformed, :class:`SignatureError` if no trusted
    key signed it or a signature claiming a trusted key does not verify.
    """
    parsed = parse_bundle(bundle)
    envelope = parsed.envelope
    if envelope.payload_type != PAYLOAD_TYPE_INTOTO:
        raise FormatError(f"payloadType is {envelope.payload_type!r}, not {PAYLOAD_TYPE_INTOTO}")
    message = pae(envelope.payload_type, envelope.payload)
    verified: list[str] = []
    for signature in envelope.signatures:
        candidates = [k for k in trusted if _matches(k, parsed.hint, signature.keyid)]
        good = [k for k in candidates if verify_bytes(k, signature.sig, message)]
        if candidates and not good:
            names = ", ".join(key_id(k) for k in candidates)
            raise SignatureError(
                f"signature does not verify with trusted key {names}",
                details={"reason": "invalid", "key_ids": [key_id(k) for k in candidates]},
            )
        verified.extend(key_id(k) for k in good if key_id(k) not in verified)
    if not verified:
        who = f"key hint {parsed.hint[:16]}" if parsed.hint else "an unnamed key"
        raise SignatureError(
            f"not signed by a trusted key (signed by {who})",
            details={"reason": "untrusted", "hint": parsed.hint},
        )
    try:
        statement = json.loads(envelope.payload.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise FormatError(f"signed payload is not JSON ({type(error).__name__})") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE:
        kind = statement.get("_type") if isinstance(statement, dict) else type(statement).__name__
        raise FormatError(
            f"signed payload is not an in-toto {STATEMENT_TYPE} statement (got {kind!r})"
        )
    return VerifiedStatement(statement=statement, key_ids=tuple(verified), payload=envelope.payload)
