"""The checks behind a policy's ``[certificate]`` and ``[audit.*]`` tables, for callers that
compose verification (CLI ``verify``/``run``, the demo, hardening).

>>> from modelguard.gates import STANDARD_CHECKS
>>> STANDARD_CHECKS.certificate is not None and STANDARD_CHECKS.audit is not None
True

Signing, policy and the runtime never import robustness or audits; they take a
:class:`~modelguard.policy.PolicyChecks` from their caller. The checks here import their
module on first call, so a verification whose policy has no ``[certificate]`` table never
imports torch (the slim gate path).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelguard.keys import PublicKey
from modelguard.policy import AuditRequirement, CertificateRequirement, PolicyChecks


def certificate_check(
    requirement: CertificateRequirement,
    model: Path,
    signature: Path,
    trusted: Sequence[PublicKey],
    /,
    *,
    model_root: str | None = None,
) -> list[str]:
    """:func:`modelguard.robustness.gate.certificate_gate`, imported on first call (torch)."""
    from modelguard.robustness.gate import certificate_gate

    return certificate_gate(requirement, model, signature, trusted, model_root=model_root)


def audit_check(
    requirement: AuditRequirement,
    model: Path,
    trusted: Sequence[PublicKey],
    /,
    *,
    model_root: str | None = None,
) -> list[str]:
    """:func:`modelguard.audits.gate.audit_gate`, imported on first call."""
    from modelguard.audits.gate import audit_gate

    return audit_gate(requirement, model, trusted, model_root=model_root)


STANDARD_CHECKS = PolicyChecks(certificate=certificate_check, audit=audit_check)
