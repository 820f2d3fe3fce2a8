"""The policy's ``[certificate]`` gate: a trusted, model-bound certificate with enough robustness.

>>> from pathlib import Path
>>> from modelguard.robustness.gate import certificate_path_for
>>> certificate_path_for(Path("build/digits-pgd"))
PosixPath('build/digits-pgd.robustness/certificate.sig')

Handed to ``verify_model`` as ``PolicyChecks.certificate`` by ``modelguard.gates`` (the CLI's
``verify`` and ``run`` pass it; called only when the policy has a ``[certificate]`` section). For model ``M`` the certificate is
``M.robustness/certificate.sig`` beside it (where ``harden`` and ``eval`` write it). The gate
passes only when that certificate

- is signed by a key the policy trusts (the same signers as the model),
- is bound to the model's manifest root (the model has not changed since it was certified),
- shows worst-case robust accuracy >= ``min_robust_accuracy`` at ``epsilon`` (or at the
  smallest evaluated eps above it) in the policy's norm, with PyTorch/ONNX parity intact.
  By default the lower end of the accuracy's 95% Clopper-Pearson interval must clear the
  threshold; ``estimate = "point"`` in the policy compares the measured fraction instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelguard.errors import BadInputError, VerificationError
from modelguard.keys import PublicKey
from modelguard.policy import CertificateRequirement
from modelguard.robustness.certificate import (
    CERTIFICATE_NAME,
    check_requirement,
    load_certificate,
)

ROBUSTNESS_SUFFIX = ".robustness"


def robustness_dir_for(model: Path) -> Path:
    """Where a model's evaluation outputs and certificate live: ``<model>.robustness/`` beside it.

    Outside the model directory on purpose: a file added inside a signed directory would
    change what the signature covers (and OpenSSF Model Signing verifiers would refuse it).
    """
    model = Path(model)
    return model.parent / f"{model.name}{ROBUSTNESS_SUFFIX}"


def certificate_path_for(model: Path) -> Path:
    return robustness_dir_for(model) / CERTIFICATE_NAME


def certificate_gate(
    requirement: CertificateRequirement,
    model: Path,
    signature: Path,
    trusted: Sequence[PublicKey],
    /,
    *,
    model_root: str | None = None,
) -> list[str]:
    """Reasons the model's certificate does not satisfy ``requirement`` (empty = satisfied).

    ``model_root``: the verified bytes' layer root (given by ``verify``, so the model is not
    read a second time); without it the model is hashed here.
    """
    path = certificate_path_for(model)
    if not path.is_file():
        return [f"no robustness certificate at {path}"] if requirement.required else []
    try:
        certificate = load_certificate(path, trusted)
    except (VerificationError, BadInputError) as error:
        return [f"robustness certificate not accepted: {error}"]
    if model_root is None:
        from modelguard.robustness.loaders import model_identity  # hashes the model (torch)

        model_root = model_identity(Path(model))["manifest_root"]
    root = model_root
    if certificate.manifest_root != root:
        return [
            f"robustness certificate {path} is bound to model root "
            f"{certificate.manifest_root[:16]}..., this model's is {root[:16]}..."
        ]
    return check_requirement(
        certificate,
        min_robust_accuracy=requirement.min_robust_accuracy,
        epsilon=requirement.epsilon,
        norm=requirement.norm,
        estimate=requirement.estimate,
    )
