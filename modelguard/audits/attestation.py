"""Signed audit attestations: an in-toto Statement over an audit's results, recorded in the ledger.

>>> from modelguard.keys import generate_key
>>> from modelguard.audits.attestation import build_statement, issue_attestation, load_attestation
>>> key = generate_key()
>>> st = build_statement("membership", model={"name": "m", "manifest_root": "ab" * 32},
...                      datasets={"members": {"name": "digits", "digest": "cd" * 32}},
...                      config={}, results={}, summary={"auc": 0.5})
>>> st["predicateType"]
'https://modelguard.dev/audit/membership/v1'
>>> issued = issue_attestation(st, key, "/tmp/m.audits/membership.sig", record=False)  # doctest: +SKIP
>>> load_attestation(issued.path, [key.public_key()]).summary["auc"]                    # doctest: +SKIP
0.5

The same plumbing as the robustness certificate (docs/audits.md has the format): a Sigstore
bundle v0.3 made by :func:`modelguard.signing.sign_statement` over an in-toto Statement v1
whose subjects bind it to the model's manifest layer root and to the sha256 digests of the
data sets audited (:func:`modelguard.robustness.data.dataset_digest`). Issuing one appends an
``audit`` entry to the ledger. This module imports no torch: the policy gate uses it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelguard import __version__
from modelguard.errors import DigestMismatchError, FormatError, SignatureError
from modelguard.keys import PrivateKey, PublicKey, atomic_write, key_id
from modelguard.signing.dsse import require_finite

PREDICATE_VERSION = 1
PREDICATE_TYPES = {
    "poisoning": "https://modelguard.dev/audit/poisoning/v1",
    "membership": "https://modelguard.dev/audit/membership/v1",
}
# The same subject digest name as the robustness certificate's, so one verifier reads both.
ROOT_DIGEST_NAME = "modelguard-manifest-root-sha256"
DATASET_DIGEST_NAME = "modelguard-dataset-sha256"
LEDGER_KIND = "audit"
AUDITS_SUFFIX = ".audits"
MAX_ATTESTATION_BYTES = 16 << 20


def audits_dir_for(model: str | os.PathLike[str]) -> Path:
    """``<model>.audits/`` beside the model (inside it would change what its signature covers)."""
    path = Path(model)
    return path.parent / f"{path.name}{AUDITS_SUFFIX}"


def attestation_path_for(model: str | os.PathLike[str], audit: str) -> Path:
    """Where ``modelguard audit AUDIT --model M`` writes its attestation and the gate looks."""
    return audits_dir_for(model) / f"{audit}.sig"


def build_statement(
    audit: str,
    *,
    model: Mapping[str, Any] | None,
    datasets: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Any],
    results: Mapping[str, Any],
    summary: Mapping[str, Any],
    issued_at: datetime | None = None,
) -> dict[str, Any]:
    """The unsigned in-toto Statement of one audit.

    ``model``: ``name``, ``manifest_root`` (and optionally ``version``), or None when the audit
    is about data only. ``datasets``: role -> ``{"name", "digest", ...}`` (``digest`` is the
    hex sha256 of :func:`~modelguard.robustness.data.dataset_digest`).
    """
    from modelguard.signing.statement import STATEMENT_TYPE

    if audit not in PREDICATE_TYPES:
        raise FormatError(f"unknown audit {audit!r} (known: {', '.join(sorted(PREDICATE_TYPES))})")
    subjects: list[dict[str, Any]] = []
    if model is not None:
        if not model.get("manifest_root"):
            raise FormatError("the audited model has no manifest root to bind the attestation to")
        subjects.append(
            {
                "name": str(model.get("name") or "model"),
                "digest": {ROOT_DIGEST_NAME: str(model["manifest_root"])},
            }
        )
    if not datasets:
        raise FormatError("an audit attestation names at least one data set")
    for role, data in datasets.items():
        subjects.append(
            {"name": f"{role}:{data['name']}", "digest": {DATASET_DIGEST_NAME: str(data["digest"])}}
        )
    moment = (issued_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    predicate = {
        "version": PREDICATE_VERSION,
        "audit": audit,
        "issuer": {"tool": "modelguard", "version": __version__},
        "issued_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": dict(model) if model is not None else None,
        "data": {role: dict(data) for role, data in datasets.items()},
        "config": dict(config),
        "results": dict(results),
        "summary": dict(summary),
    }
    require_finite(predicate, "predicate", "attestation")
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPES[audit],
        "predicate": predicate,
    }


@dataclass
class IssuedAttestation:
    path: Path
    statement: dict[str, Any]
    payload_digest: str
    key_id: str
    ledger_entry: Any | None  # ledger.Entry when recorded

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "payload_digest": self.payload_digest,
            "key_id": self.key_id,
            "predicate_type": self.statement["predicateType"],
            "ledger_index": getattr(self.ledger_entry, "index", None),
        }


def _ledger_subject(predicate: Mapping[str, Any]) -> dict[str, str]:
    model = predicate.get("model")
    if model:
        subject = {"name": str(model.get("name") or "model"), "root": str(model["manifest_root"])}
        if model.get("version"):
            subject["version"] = str(model["version"])
        return subject
    role, data = next(iter(predicate["data"].items()))
    return {"name": f"{role}:{data['name']}", "dataset": str(data["digest"])}


def issue_attestation(
    statement: Mapping[str, Any],
    key: PrivateKey,
    out_path: str | os.PathLike[str],
    *,
    ledger_url: str | None = None,
    record: bool = True,
) -> IssuedAttestation:
    """Sign ``statement``, write the bundle atomically to ``out_path``, append the ``audit`` entry."""
    from modelguard.signing import sign_statement
    from modelguard.signing.bundle import dump_bundle, payload_digest

    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dump_bundle(sign_statement(statement, key))
    atomic_write(path, data)
    digest = payload_digest(data)
    signer = key_id(key.public_key())
    entry = None
    if record:
        from modelguard.audit import record_event

        predicate = statement["predicate"]
        entry = record_event(
            LEDGER_KIND,
            subject=_ledger_subject(predicate),
            payload_digest=digest,
            actor=signer,
            details={
                "audit": predicate["audit"],
                "predicate_type": statement["predicateType"],
                "attestation": str(path),
                "data_digests": {role: d["digest"] for role, d in predicate["data"].items()},
                "summary": predicate["summary"],
            },
            ledger_url=ledger_url,
        )
    return IssuedAttestation(path, dict(statement), digest, signer, entry)


@dataclass
class Attestation:
    """A verified audit attestation: the statement, who signed it, typed accessors."""

    statement: dict[str, Any]
    key_ids: tuple[str, ...]
    path: Path
    payload_digest: str

    @property
    def predicate(self) -> dict[str, Any]:
        return dict(self.statement["predicate"])

    @property
    def audit(self) -> str:
        return str(self.predicate["audit"])

    @property
    def summary(self) -> dict[str, Any]:
        return dict(self.predicate["summary"])

    @property
    def manifest_root(self) -> str | None:
        model = self.predicate.get("model")
        return str(model["manifest_root"]) if model else None

    @property
    def dataset_digests(self) -> dict[str, str]:
        return {role: str(d["digest"]) for role, d in self.predicate["data"].items()}

    def check_binding(
        self, *, manifest_root: str | None = None, datasets: Mapping[str, str] | None = None
    ) -> None:
        """:class:`DigestMismatchError` unless bound to this model root and these data digests."""
        if manifest_root is not None and self.manifest_root != manifest_root:
            raise DigestMismatchError(
                f"{self.path}: attestation is bound to model root "
                f"{str(self.manifest_root)[:16]}..., the model's is {manifest_root[:16]}..."
            )
        recorded = self.dataset_digests
        for role, digest in (datasets or {}).items():
            if recorded.get(role) != digest:
                raise DigestMismatchError(
                    f"{self.path}: attestation's {role} data digest "
                    f"{str(recorded.get(role))[:16]}... differs from {digest[:16]}..."
                )


def _parse(statement: Mapping[str, Any], source: str, audit: str | None) -> None:
    types = {v: k for k, v in PREDICATE_TYPES.items()}
    kind = types.get(str(statement.get("predicateType")))
    if kind is None or (audit is not None and kind != audit):
        raise FormatError(
            f"not a{' ' + audit if audit else 'n'} audit attestation "
            f"(predicateType {statement.get('predicateType')!r})",
            path=source,
        )
    try:
        predicate = statement["predicate"]
        assert isinstance(predicate, dict)
        if int(predicate["version"]) != PREDICATE_VERSION:
            raise FormatError(
                f"unsupported attestation version {predicate['version']}", path=source
            )
        assert predicate["audit"] == kind
        subjects = statement["subject"]
        for role, data in predicate["data"].items():
            want = {
                "name": f"{role}:{data['name']}",
                "digest": {DATASET_DIGEST_NAME: data["digest"]},
            }
            assert want in subjects, f"data set {role} is not a subject"
        if predicate["model"] is not None:
            root = predicate["model"]["manifest_root"]
            assert any(s["digest"].get(ROOT_DIGEST_NAME) == root for s in subjects), "model root"
        assert isinstance(predicate["summary"], dict)
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError) as error:
        raise FormatError(
            f"malformed audit attestation ({type(error).__name__}: {error})", path=source
        ) from None


def load_attestation(
    path: str | os.PathLike[str], trusted_keys: Sequence[PublicKey], *, audit: str | None = None
) -> Attestation:
    """Read (bounded), verify (a trusted key signed it) and parse an audit attestation.

    :class:`SignatureError` (exit 1) when no trusted key signed it; :class:`FormatError`
    (exit 2) when it is malformed or not an attestation of ``audit``.
    """
    from modelguard.signing import verify_bundle
    from modelguard.signing.bundle import read_signed_bundle

    source = Path(path)
    bundle = read_signed_bundle(source, max_size=MAX_ATTESTATION_BYTES, what="attestation")
    try:
        verified = verify_bundle(bundle.document, trusted_keys)
    except SignatureError as error:
        raise SignatureError(f"{source}: {error}", details=error.details) from None
    _parse(verified.statement, str(source), audit)
    return Attestation(
        statement=verified.statement,
        key_ids=verified.key_ids,
        path=source,
        payload_digest=bundle.payload_digest,
    )
