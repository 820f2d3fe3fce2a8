"""Signatures: DSSE envelopes in Sigstore bundles over in-toto statements (OMS compatible).

>>> from modelguard.keys import generate_key
>>> from modelguard.signing import sign_statement, verify_bundle
>>> key = generate_key()
>>> st = {"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "x", "predicate": {}}
>>> verify_bundle(sign_statement(st, key), [key.public_key()]).statement["predicateType"]
'x'

The names below load :mod:`modelguard.signing.envelope` (and the key library) on first use,
so importing a submodule that needs neither (``signing.files``, ``signing.statement``) stays
cheap: ``modelguard sign`` starts hashing before it loads them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelguard.signing.envelope import VerifiedStatement, sign_statement, verify_bundle

__all__ = ["VerifiedStatement", "sign_statement", "verify_bundle"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("modelguard.signing.envelope"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
