"""Audits of a model and its data: label-flip poisoning, membership inference.

>>> from modelguard.audits.attestation import PREDICATE_TYPES
>>> sorted(PREDICATE_TYPES)
['membership', 'poisoning']

Each audit writes ``report.json``, ``report.html`` and, given a key, a signed in-toto
attestation (``<audit>.sig``, a Sigstore bundle like a model signature) recorded in the
ledger as an ``audit`` entry. docs/audits.md specifies the formats. The audits themselves
(:mod:`~modelguard.audits.poisoning`, :mod:`~modelguard.audits.membership`) need torch;
:mod:`~modelguard.audits.attestation` and :mod:`~modelguard.audits.gate` do not, so the
policy gate runs on the slim install.
"""
