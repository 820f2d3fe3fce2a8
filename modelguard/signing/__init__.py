"""Signatures: DSSE envelopes in Sigstore bundles over in-toto statements (OMS compatible).

>>> from modelguard.keys import generate_key
>>> from modelguard.signing import sign_statement, verify_bundle
>>> key = generate_key()
>>> st = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x", "predicate": {}}
>>> verify_bundle(sign_statement(st, key), [key.public_key()]).statement["predicateType"]
'x'
"""

from __future__ import annotations

from modelguard.signing.envelope import VerifiedStatement, sign_statement, verify_bundle

__all__ = ["VerifiedStatement", "sign_statement", "verify_bundle"]
