"""The policy's ``[audit.*]`` gate: a trusted, model-bound audit attestation under the limit.

>>> from pathlib import Path
>>> from modelguard.audits.attestation import attestation_path_for
>>> attestation_path_for(Path("build/digits"), "membership")
PosixPath('build/digits.audits/membership.sig')

Handed to ``verify_model`` as ``PolicyChecks.audit`` by ``modelguard.gates`` (called for each
``[audit.NAME]`` table). For model ``M`` the attestation is ``M.audits/NAME.sig``. The gate
passes only when that attestation is signed by a key the policy trusts, is bound to the
model's manifest root (the model has not changed since the audit), and its summary stays at
or under the limit (``issue_rate`` for poisoning, ``auc`` for membership). Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelguard.audits.attestation import attestation_path_for, load_attestation
from modelguard.errors import BadInputError, VerificationError
from modelguard.keys import PublicKey
from modelguard.policy import AuditRequirement


def audit_gate(
    requirement: AuditRequirement,
    model: Path,
    trusted: Sequence[PublicKey],
    /,
    *,
    model_root: str | None = None,
) -> list[str]:
    """Reasons the model's audit does not satisfy ``requirement`` (empty = satisfied).

    ``model_root`` is the layer root of the bytes the verifier checked; the model is never
    re-read by path here (what was verified is what the attestation must describe).
    """
    path = attestation_path_for(model, requirement.audit)
    if not path.is_file():
        return (
            [f"no {requirement.audit} audit attestation at {path}"] if requirement.required else []
        )
    if model_root is None:
        return [f"{requirement.audit} audit: no verified model to bind the attestation to"]
    try:
        attestation = load_attestation(path, trusted, audit=requirement.audit)
        attestation.check_binding(manifest_root=model_root)
    except (VerificationError, BadInputError) as error:
        return [f"{requirement.audit} audit not accepted: {error}"]
    value = attestation.summary.get(requirement.metric)
    if not isinstance(value, int | float):
        return [f"{path}: the attestation's summary has no {requirement.metric}"]
    if value > requirement.limit:
        return [
            f"{requirement.audit} audit: {requirement.metric} {value:.4f} exceeds the policy's "
            f"max_{requirement.metric} {requirement.limit:.4f}"
        ]
    return []
