"""Policy evaluation over verified signatures: what ``verify_model`` checks after the bytes.

>>> from modelguard.signing.gate import signer_label
>>> from types import SimpleNamespace
>>> signer_label(SimpleNamespace(name=None, key_id="ab" * 32))
'signer abababababababab'

The policy's rules (allowed hash algorithms, maximum signature age, model name pattern,
threshold of distinct trusted signers) and its ``[certificate]`` / ``[audit.*]`` tables,
whose checks the caller hands over in a :class:`~modelguard.policy.PolicyChecks` (none given
and the policy requires one: the check fails closed). Writes :class:`Report` checks only;
reading and hashing the model is :mod:`modelguard.signing.verify`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from modelguard.manifest import Manifest
from modelguard.policy import Policy, PolicyChecks
from modelguard.signing.statement import ParsedStatement

CLOCK_SKEW_S = 300  # a signing time up to this far in the future is accepted


class Report(Protocol):
    """Where checks are recorded (``signing.report.VerificationReport``)."""

    ledger: dict[str, Any] | None

    def check(self, name: str, ok: bool, detail: str, kind: str = "signature") -> None: ...


class SignerFacts(Protocol):
    """What policy evaluation reads of one signer (``signing.report.SignerResult``)."""

    @property
    def key_id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def signed_at(self) -> str | None: ...
    @property
    def model_name(self) -> str | None: ...
    @property
    def model_version(self) -> str | None: ...


class SignedFacts(Protocol):
    """One signature whose bundle verified: its signer, statement and manifest."""

    @property
    def signer(self) -> SignerFacts: ...
    @property
    def statement(self) -> ParsedStatement: ...
    @property
    def manifest(self) -> Manifest | None: ...


def signer_label(signer: SignerFacts) -> str:
    who = signer.name or (signer.key_id[:16] if signer.key_id else "unknown")
    return f"signer {who}"


def check_policy(
    report: Report, policy: Policy, signed: Sequence[SignedFacts], now: datetime
) -> None:
    """The policy's own rules over the signatures that verified: hash algorithms, signature
    age, model name, and the threshold of distinct trusted signers."""
    for item in signed:
        who = signer_label(item.signer)
        algorithms = {r.algorithm for r in item.statement.resources}
        if item.manifest is not None:
            # the whole-file digests always carry the verdict; the tensor hash only where the
            # policy allows it (else verify checks the files too, signing.verify._fast_check)
            algorithms.add(item.manifest.file_algorithm)
        refused = sorted(algorithms - set(policy.allowed_hash_algorithms))
        if refused:
            report.check(
                "hash algorithms",
                False,
                f"{who}: hash algorithm(s) {refused} not allowed by policy",
                "policy",
            )
        if policy.max_signature_age_s is not None:
            when = item.signer.signed_at
            try:
                moment = datetime.strptime(when or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError:
                report.check(
                    "age",
                    False,
                    f"{who}: signature has no signing time, policy sets a maximum age",
                    "policy",
                )
                continue
            age = (now - moment).total_seconds()
            if age > policy.max_signature_age_s:
                report.check(
                    "age",
                    False,
                    f"{who}: signature is {int(age)} s old, policy allows {policy.max_signature_age_s} s",
                    "policy",
                )
            elif age < -CLOCK_SKEW_S:
                report.check(
                    "age", False, f"{who}: signature is dated in the future ({when})", "policy"
                )
            else:
                report.check("age", True, f"{who}: signed {int(age)} s ago", "policy")
        if policy.model_name_pattern is not None:
            name = item.signer.model_name
            allowed = policy.name_allowed(name)
            report.check(
                "model name",
                allowed,
                f"{who}: model name {name!r} {'matches' if allowed else 'does not match'} {policy.model_name_pattern!r}",
                "policy",
            )
    distinct = sorted({item.signer.key_id for item in signed if item.signer.key_id})
    names = ", ".join(policy.signer_name(k) or k[:16] for k in distinct) or "none"
    if policy.source == "--key":
        missing = [s for s in policy.signers if s.key_id not in distinct]
        for signer in missing:
            report.check(
                "threshold",
                False,
                f"no valid signature by the given key {signer.key_id}",
                "signature",
            )
        if not missing:
            report.check(
                "threshold", True, f"every given key signed ({len(distinct)})", "signature"
            )
    else:
        enough = len(distinct) >= policy.threshold
        report.check(
            "threshold",
            enough,
            f"{len(distinct)} of the required {policy.threshold} distinct trusted signer(s) signed ({names})",
            "signature",
        )


def check_certificate(
    report: Report,
    policy: Policy,
    checks: PolicyChecks,
    model: Path,
    sig: Path,
    root: Callable[[], str | None],
) -> None:
    """The certificate must be bound to the layer root of the bytes that verified (``root``,
    never the model re-read by path)."""
    if policy.certificate is None:
        return
    check = checks.certificate
    if check is None:
        if policy.certificate.required:
            report.check(
                "certificate",
                False,
                "policy requires a robustness certificate, but no certificate check was given",
                "policy",
            )
        return
    reasons = check(policy.certificate, model, sig, policy.trusted_keys, model_root=root())
    for reason in reasons:
        report.check("certificate", False, reason, "policy")
    if not reasons:
        report.check("certificate", True, "robustness certificate satisfies the policy", "policy")


def check_audits(
    report: Report,
    policy: Policy,
    checks: PolicyChecks,
    model: Path,
    root: Callable[[], str | None],
) -> None:
    """Audit attestations must be bound to the layer root of the bytes that verified."""
    if not policy.audits:
        return
    check = checks.audit
    if check is None:
        for requirement in policy.audits:
            if requirement.required:
                report.check(
                    "audit",
                    False,
                    f"policy requires a {requirement.audit} audit, but no audit check was given",
                    "policy",
                )
        return
    verified_root = root()
    for requirement in policy.audits:
        reasons = check(requirement, model, policy.trusted_keys, model_root=verified_root)
        for reason in reasons:
            report.check("audit", False, reason, "policy")
        if not reasons:
            report.check("audit", True, f"{requirement.audit} audit satisfies the policy", "policy")
