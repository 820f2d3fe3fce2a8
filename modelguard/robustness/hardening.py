"""Harden a verified model, re-sign it with its lineage, and re-certify certificates later.

>>> from pathlib import Path
>>> from modelguard.keys import load_private_key, load_public_key
>>> from modelguard.robustness.hardening import harden_model, recertify
>>> result = harden_model(Path("build/demo/model"), method="pgd-at",          # doctest: +SKIP
...                       out_dir=Path("build/demo/digits-pgd"), key=load_private_key(...),
...                       keys=[load_public_key(Path("keys/mg.pub"))],
...                       options={"eps": 0.1, "epochs": 8})
>>> result.comparison                                                              # doctest: +SKIP
>>> recertify(Path("build/demo/digits-pgd"), keys=[...]).ok                        # doctest: +SKIP
True

``harden_model`` (``modelguard harden``):

1. verifies the parent (signature, policy, ledger) and refuses (exit 1) before any training;
2. trains the defense (:func:`modelguard.robustness.defenses.apply_defense`) on the training
   split of ``data`` and exports ONNX + safetensors + model card into ``out_dir``;
3. runs the full evaluation on the exported, still unsigned child with the parent
   certificate's evaluation config (or the default portfolio) and builds its certificate;
   if that fails (parity, a non-finite number, any error) the child is removed and nothing
   is signed or ledgered: a failed harden never leaves a signed child that looks hardened;
4. signs the child with its parent's manifest root recorded (a ``sign`` ledger entry with
   ``subject.parent``) and writes the child's signed certificate;
5. appends a ``harden`` ledger entry: subject ``{name, version, root, parent}``, payload the
   certificate digest, details method, hyperparameters, training-data digest, certificate
   digest, parent, training time; ``modelguard ledger lineage`` walks ``subject.parent``.

``recertify`` (``modelguard recertify``) verifies the model first, checks the certificate's
signature and that it is bound to the model's manifest root, re-runs exactly the recorded
evaluation (same seeds, data digest, attack configs) and compares every recorded number with
the new one within the certificate's ``recertify_tolerance``; appends a ``recertify`` entry
and raises (exit 1) on drift or when the model or data no longer match their digests.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from modelguard.audit import record_event
from modelguard.errors import (
    BadInputError,
    DigestMismatchError,
    ModelGuardError,
    VerificationError,
)
from modelguard.gates import STANDARD_CHECKS
from modelguard.keys import PrivateKey, PublicKey, key_id
from modelguard.modelcard import export_model_dir, load_model_dir
from modelguard.policy import Policy
from modelguard.robustness import distributed
from modelguard.robustness.certificate import (
    Certificate,
    build_certificate,
    check_rerun,
    issue_certificate,
    load_certificate,
)
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.data import load_dataset
from modelguard.robustness.defenses import apply_defense
from modelguard.robustness.evaluate import evaluate_model_dir
from modelguard.robustness.gate import ROBUSTNESS_SUFFIX, certificate_path_for, robustness_dir_for
from modelguard.robustness.progress import ProgressHook, prefixed, stage
from modelguard.robustness.report import write_outputs
from modelguard.robustness.results import EvalResult
from modelguard.signing.report import VerifiedModel
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_and_hold

HARDEN_KIND = "harden"
RECERTIFY_KIND = "recertify"


def training_data_spec(data: str) -> str:
    """``digits`` trains on the bundled training split (the evaluation uses the test split)."""
    return "digits:train" if data in ("digits", "digits:test") else data


@dataclass(frozen=True)
class Trust:
    """Who must have signed (keys or a policy) and what the ledger must show."""

    keys: Sequence[PublicKey] = ()
    policy: Policy | None = None
    ledger_url: str | None = None
    require_ledger: bool = False

    @property
    def trusted_keys(self) -> list[PublicKey]:
        return self.policy.trusted_keys if self.policy is not None else list(self.keys)


def verify_and_hold_or_refuse(
    path: Path, trust: Trust, *, what: str, signature_path: Path | None = None
) -> VerifiedModel:
    """Verify a model (signature, digests, policy, ledger) or raise its typed error (exit 1),
    keeping the verified bytes: the only ones to load afterwards."""
    try:
        verified = verify_and_hold(
            path,
            signature_path,
            keys=trust.keys,
            policy=trust.policy,
            ledger_url=trust.ledger_url,
            require_ledger=trust.require_ledger,
            checks=STANDARD_CHECKS,
        )
    except VerificationError as error:
        raise type(error)(
            f"{what} {path} failed verification: {error.message}", details=error.details
        ) from None
    if verified.manifest is None:
        raise VerificationError(f"{what} {path}: the signature carries no modelguard manifest")
    return verified


@dataclass
class ComparisonRow:
    eps: float
    parent: float | None
    child: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "parent_worst_case": self.parent,
            "child_worst_case": self.child,
            "change": None if self.parent is None else self.child - self.parent,
        }


def compare(parent: Mapping[str, Any] | None, child: EvalResult) -> dict[str, Any]:
    """Parent vs child: clean accuracy and worst-case robust accuracy per eps."""
    parent_worst: dict[float, float] = {}
    if parent is not None:
        parent_worst = {float(r["eps"]): float(r["robust_accuracy"]) for r in parent["worst_case"]}
    rows = [
        ComparisonRow(
            float(r["eps"]),
            next((v for e, v in parent_worst.items() if math.isclose(e, r["eps"])), None),
            float(r["robust_accuracy"]),
        ).to_dict()
        for r in child.worst_case
    ]
    return {
        "clean": {
            "parent": None if parent is None else float(parent["clean_accuracy"]),
            "child": child.clean_accuracy,
        },
        "worst_case": rows,
        "child_soundness_warnings": child.soundness_warnings,
    }


def _comparable(config: EvalConfig) -> dict[str, Any]:
    """What makes two evaluations' numbers comparable (the data digest aside)."""
    return {k: v for k, v in config.resolved().to_dict().items() if k != "data_digest"}


@dataclass
class HardenResult:
    parent: str
    child: str
    method: str
    parent_root: str
    child_root: str
    hyperparameters: dict[str, Any]
    training: dict[str, Any]
    train_data_digest: str
    certificate: str
    certificate_digest: str
    parent_numbers: str  # the parent certificate used, or why the parent was re-evaluated
    comparison: dict[str, Any]
    evaluation: dict[str, Any]
    signature: dict[str, Any]
    ledger_entry: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, **{k: v for k, v in self.__dict__.items()}}


def _parent_numbers(
    parent: Path,
    parent_root: str,
    certificate_path: Path | None,
    trusted: Sequence[PublicKey],
) -> tuple[dict[str, Any] | None, EvalConfig | None, str]:
    """The parent's results and config from its certificate, and where they came from.

    A certificate named explicitly must be trusted and bound to the parent (else exit 1/2);
    one merely found beside the parent is used only if it is, and otherwise the parent is
    re-evaluated (the numbers only feed the comparison table, never a trust decision).
    """
    path = certificate_path or certificate_path_for(parent)
    if not path.is_file():
        if certificate_path is not None:
            raise BadInputError("parent certificate not found", path=str(path))
        return None, None, "no parent certificate: parent evaluated with the child's config"
    try:
        cert = load_certificate(path, trusted)
        if cert.manifest_root != parent_root:
            raise DigestMismatchError(
                f"parent certificate is bound to model root {cert.manifest_root[:16]}..., "
                f"the parent's is {parent_root[:16]}...",
                path=str(path),
            )
    except (VerificationError, BadInputError) as error:
        if certificate_path is not None:
            raise
        return None, None, f"parent certificate not used ({error}): parent re-evaluated"
    return dict(cert.predicate["results"]), cert.config, str(path)


def harden_model(
    model_dir: Path,
    *,
    method: str,
    out_dir: Path,
    key: PrivateKey,
    keys: Sequence[PublicKey] = (),
    policy: Policy | None = None,
    signature_path: Path | None = None,
    data: str = "digits",
    options: Mapping[str, Any] | None = None,
    members: Sequence[Path] = (),
    eval_config: EvalConfig | None = None,
    parent_certificate: Path | None = None,
    ledger_url: str | None = None,
    require_ledger: bool = False,
    name: str | None = None,
    version: str | None = None,
    force: bool = False,
    progress: ProgressHook | None = None,
) -> HardenResult:
    """Verify the parent, defend it, export, sign with lineage, certify and record (see module doc).

    ``progress`` hears every stage by name with its done/total: verify, train (batches),
    export, evaluate child (attack runs), sign, evaluate parent when it is re-evaluated."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    distributed.init_from_env()  # under torchrun: train with DDP across the ranks
    trust = Trust(keys, policy, ledger_url, require_ledger)
    with stage(progress, "verify parent"):
        parent = verify_and_hold_or_refuse(
            model_dir, trust, what="parent", signature_path=signature_path
        )
    parent_report = parent.report
    assert parent_report.manifest is not None
    parent_root = parent_report.manifest.layer_root
    member_models = []
    for member in members:
        with stage(progress, f"verify ensemble member {member}"):
            held = verify_and_hold_or_refuse(Path(member), trust, what="ensemble member")
        member_models.append(load_model_dir(member, files=held.files))
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise BadInputError(
                "output directory exists and is not empty (use --force)", path=str(out_dir)
            )
        shutil.rmtree(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise BadInputError("the hardened model needs its own --out directory", path=str(out_dir))

    parent_results, parent_config, parent_source = _parent_numbers(
        model_dir, parent_root, parent_certificate, trust.trusted_keys
    )
    parent_model, card = load_model_dir(model_dir, files=parent.files)  # the verified bytes
    train = load_dataset(training_data_spec(data))
    defended = apply_defense(
        method,
        parent_model,
        card,
        train,
        options,
        members=member_models,
        progress=prefixed(progress, method),
    )
    distributed.leave()  # ranks > 0 exit here; rank 0 alone exports, signs, certifies, records
    child_name = name or f"{card.name}-{method}"
    child_version = version or card.version
    hardening = {
        "method": method,
        "parent_root": parent_root,
        "hyperparameters": defended.hyperparameters,
        "train_data": {"spec": training_data_spec(data), "digest": train.digest},
    }
    with stage(progress, "export child"):
        export_model_dir(
            defended.model,
            out_dir,
            factory=defended.factory,
            kwargs=defended.kwargs,
            input_shape=card.input_shape,
            classes=defended.classes,
            name=child_name,
            version=child_version,
            extra={"hardening": hardening},
        )
    report_dir = robustness_dir_for(out_dir)
    if report_dir.exists():
        shutil.rmtree(report_dir)  # never leave an older run's certificate beside the child
    config = eval_config or parent_config or EvalConfig()
    config = replace(config, data_digest=None)  # the child is evaluated on today's data
    # Transactional: the exported child is evaluated, and its certificate built, before it is
    # signed or ledgered. If either fails the unsigned child is removed, so a failed harden
    # never leaves a signed model that looks hardened (the report, if any, stays for triage).
    try:
        result = evaluate_model_dir(out_dir, config, progress=prefixed(progress, "evaluate child"))
        if not result.parity_ok:
            write_outputs(result, report_dir)
        statement = build_certificate(result)
    except BaseException as error:
        shutil.rmtree(out_dir, ignore_errors=True)
        if isinstance(error, ModelGuardError):
            raise type(error)(
                f"harden: evaluating the exported child failed, so it was not signed and was "
                f"removed: {error.message}",
                path=error.path,
                details=error.details,
            ) from error
        raise
    with stage(progress, "sign child"):
        signed = sign_model(
            out_dir,
            key,
            name=child_name,
            version=child_version,
            parent=parent_root,
            ledger_url=ledger_url,
        )
    child_root = signed.manifest.layer_root
    if result.model.get("manifest_root") != child_root:
        raise DigestMismatchError(
            "the evaluated model is not the signed one (manifest roots differ)", path=str(out_dir)
        )
    if parent_config is not None and _comparable(parent_config) != _comparable(result.config):
        parent_results = None  # a different portfolio: re-run the parent like for like
        parent_source = "parent certificate has another evaluation config: parent re-evaluated"
    if parent_results is None:
        parent_results = evaluate_model_dir(
            model_dir, config, verified=parent, progress=prefixed(progress, "evaluate parent")
        ).results_dict()
    write_outputs(result, report_dir)
    issued = issue_certificate(statement, key, report_dir, ledger_url=ledger_url)
    cert_digest = issued.payload_digest
    comparison = compare(parent_results, result)
    if result.detector is not None:
        # Both accountings (the certificate records them and which one the gate uses).
        defended.report["detector"] = result.detector
    training = defended.summary()
    details = {
        "method": method,
        "hyperparameters": defended.hyperparameters,
        "train_data_digest": "sha256:" + train.digest,
        "certificate_digest": cert_digest,
        "parent": parent_root,
        "train_seconds": round(defended.train_seconds, 3),
        "defense_report": defended.report,
        "comparison": comparison,
    }
    entry = record_event(
        HARDEN_KIND,
        subject={
            "name": child_name,
            "version": child_version,
            "root": child_root,
            "parent": parent_root,
        },
        payload_digest=cert_digest,
        actor=key_id(key.public_key()),
        details=details,
        ledger_url=ledger_url,
    )
    return HardenResult(
        parent=str(model_dir),
        child=str(out_dir),
        method=method,
        parent_root=parent_root,
        child_root=child_root,
        hyperparameters=defended.hyperparameters,
        training=training,
        train_data_digest=train.digest,
        certificate=str(issued.path),
        certificate_digest=cert_digest,
        parent_numbers=parent_source,
        comparison=comparison,
        evaluation=result.summary(),
        signature=signed.to_dict(),
        ledger_entry=entry.to_dict(),
    )


@dataclass
class RecertifyResult:
    ok: bool
    model: str
    certificate: str
    certificate_digest: str
    model_root: str
    tolerance: float
    drifts: list[str]
    recorded: dict[str, Any]
    rerun: dict[str, Any]
    ledger_entry: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def locate(target: Path) -> tuple[Path, Path]:
    """``(model dir, certificate)`` from either of them (a certificate lives in ``M.robustness/``)."""
    target = Path(target)
    if target.is_dir() and not target.name.endswith(ROBUSTNESS_SUFFIX):
        return target, certificate_path_for(target)
    certificate = target / "certificate.sig" if target.is_dir() else target
    folder = certificate.parent
    if not folder.name.endswith(ROBUSTNESS_SUFFIX):
        raise BadInputError(
            f"cannot tell which model {certificate} certifies: give the model directory "
            f"(its certificate is MODEL{ROBUSTNESS_SUFFIX}/certificate.sig)",
            path=str(target),
        )
    return folder.with_name(folder.name.removesuffix(ROBUSTNESS_SUFFIX)), certificate


def recertify(
    target: Path,
    *,
    keys: Sequence[PublicKey] = (),
    policy: Policy | None = None,
    signature_path: Path | None = None,
    certificate: Path | None = None,
    ledger_url: str | None = None,
    require_ledger: bool = False,
    actor: str = "recertify",
    progress: ProgressHook | None = None,
) -> RecertifyResult:
    """Verify, re-run the certificate's exact evaluation, compare, record; raise on drift.

    ``progress`` hears the stages (verify model, re-run evaluation: attack runs) with done/total.

    Raises :class:`VerificationError` subclasses (exit 1) when the model no longer verifies,
    no longer matches the certificate's manifest root or ONNX digest, the data set no longer
    matches its digest, or a number drifted beyond the certificate's tolerance. A
    ``recertify`` ledger entry is appended in every one of those cases and on success.
    """
    model_dir, cert_path = locate(Path(target))
    if certificate is not None:
        cert_path = Path(certificate)
    trust = Trust(keys, policy, ledger_url, require_ledger)
    cert = load_certificate(cert_path, trust.trusted_keys)
    assert cert.payload_digest is not None
    subject = {
        "name": str(cert.predicate["model"].get("name") or model_dir.name),
        "root": cert.manifest_root,
    }
    if cert.predicate["model"].get("version"):
        subject["version"] = str(cert.predicate["model"]["version"])
    config = cert.config
    try:
        with stage(progress, "verify model"):
            held = verify_and_hold_or_refuse(
                model_dir, trust, what="model", signature_path=signature_path
            )
        rerun = evaluate_model_dir(  # the verified bytes
            model_dir, config, verified=held, progress=prefixed(progress, "re-run evaluation")
        )
        drifts = check_rerun(cert, rerun)
    except VerificationError as error:
        _record_recertify(cert, subject, actor, ledger_url, ok=False, drifts=[str(error)])
        raise
    entry = _record_recertify(cert, subject, actor, ledger_url, ok=not drifts, drifts=drifts)
    result = RecertifyResult(
        ok=not drifts,
        model=str(model_dir),
        certificate=str(cert_path),
        certificate_digest=cert.payload_digest,
        model_root=cert.manifest_root,
        tolerance=config.recertify_tolerance,
        drifts=drifts,
        recorded=dict(cert.predicate["summary"]),
        rerun=rerun.summary(),
        ledger_entry=entry,
    )
    if drifts:
        raise VerificationError(
            f"re-certification of {model_dir} drifted: {drifts[0]}"
            + (f" (+{len(drifts) - 1} more)" if len(drifts) > 1 else ""),
            details=result.to_dict(),
        )
    return result


def _record_recertify(
    cert: Certificate,
    subject: dict[str, str],
    actor: str,
    ledger_url: str | None,
    *,
    ok: bool,
    drifts: list[str],
) -> dict[str, Any]:
    assert cert.payload_digest is not None
    entry = record_event(
        RECERTIFY_KIND,
        subject=subject,
        payload_digest=cert.payload_digest,
        actor=actor,
        details={
            "ok": ok,
            "drifts": drifts[:20],
            "data_digest": cert.predicate["data"]["digest"],
            "tolerance": cert.config.recertify_tolerance,
            "certificate": str(cert.path),
        },
        ledger_url=ledger_url,
    )
    return entry.to_dict()
