"""Robustness certificates: a signed in-toto Statement over an evaluation, recorded in the ledger.

>>> from modelguard.keys import generate_key
>>> from modelguard.robustness.certificate import certify, load_certificate
>>> key = generate_key()
>>> issued = certify(result, key, "build/eval", ledger_url="sqlite:///l.db")   # doctest: +SKIP
>>> cert = load_certificate(issued.path, [key.public_key()])                   # doctest: +SKIP
>>> cert.worst_case_accuracy(0.1)                                              # doctest: +SKIP
0.62

docs/certificate.md specifies the format. In short: a Sigstore bundle v0.3 (DSSE, signed with
:func:`modelguard.signing.sign_statement` exactly like a model signature) over an in-toto
Statement v1 whose ``predicateType`` is :data:`PREDICATE_TYPE`; the subjects bind it to the
model's manifest layer root and the deployed ONNX file's sha256; the predicate carries the
full evaluation config (so ``recertify`` can re-run it exactly), the results, the soundness
checks and the environment. Certifying appends an ``evaluate`` entry to the ledger.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelguard import __version__
from modelguard.errors import (
    BadInputError,
    DigestMismatchError,
    FormatError,
    SignatureError,
    VerificationError,
)
from modelguard.keys import PrivateKey, PublicKey, key_id
from modelguard.robustness.config import GATE_METRIC, EvalConfig, proportion
from modelguard.robustness.stats import Proportion
from modelguard.signing.dsse import require_finite

if TYPE_CHECKING:
    from modelguard.robustness.results import EvalResult

PREDICATE_TYPE = "https://modelguard.dev/robustness-certificate/v1"
ROOT_DIGEST_NAME = "modelguard-manifest-root-sha256"
CERTIFICATE_NAME = "certificate.sig"
LEDGER_KIND = "evaluate"
PREDICATE_VERSION = 1


def build_certificate(result: EvalResult, *, issued_at: datetime | None = None) -> dict[str, Any]:
    """The unsigned in-toto Statement for ``result`` (refused when ONNX parity failed)."""
    from modelguard.signing.statement import STATEMENT_TYPE

    result.require_parity()
    model = result.model
    if not model.get("manifest_root"):
        raise FormatError("evaluation result has no model manifest root to bind the certificate to")
    subjects: list[dict[str, Any]] = [
        {
            "name": str(model.get("name") or "model"),
            "digest": {ROOT_DIGEST_NAME: str(model["manifest_root"])},
        }
    ]
    for role in ("onnx", "weights"):
        digest = model.get(f"{role}_sha256")
        if digest:
            subjects.append({"name": Path(str(model[role])).name, "digest": {"sha256": digest}})
    moment = (issued_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    public_model = {k: v for k, v in model.items() if k != "path"}
    predicate = {
        "version": PREDICATE_VERSION,
        "issuer": {"tool": "modelguard", "version": __version__},
        "issued_at": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": public_model,
        "data": result.data,
        "config": result.config.to_dict(),
        "environment": result.environment,
        "results": result.results_dict(),
        # Certified (randomized smoothing) numbers: their own section, never mixed with the
        # empirical results above, and about the smoothed classifier, not the base model.
        "certified": result.certified,
        # A detector system's two accountings, and which one the gate uses (null otherwise).
        "detector": result.detector,
        "summary": {
            "norm": result.config.norm,
            "n": result.n,
            "clean_accuracy": result.clean_accuracy,
            "clean": proportion(result.clean_accuracy, result.n),
            "onnx_clean_accuracy": result.onnx_clean_accuracy,
            "worst_case": [
                {
                    "eps": w["eps"],
                    "robust_accuracy": w["robust_accuracy"],
                    "n": w["robust"]["n"],
                    "correct": w["robust"]["correct"],
                    "ci95": w["robust"]["ci95"],
                }
                for w in result.worst_case
            ],
            "parity_ok": result.parity_ok,
            "soundness_warnings": result.soundness_warnings,
            "gradient_masking_suspected": bool(result.soundness_warnings),
            "gate_metric": GATE_METRIC,
        },
    }
    require_finite(predicate, "predicate", "certificate")
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": predicate,
    }


def sign_certificate(statement: Mapping[str, Any], key: PrivateKey) -> dict[str, Any]:
    """A Sigstore bundle v0.3 over the statement (H3's generic DSSE signing)."""
    from modelguard.signing import sign_statement

    return sign_statement(statement, key)


def write_signed_certificate(
    statement: Mapping[str, Any], key: PrivateKey, out_path: str | os.PathLike[str]
) -> Path:
    """Sign ``statement`` and write the bundle to ``out_path`` (atomically)."""
    from modelguard.signing.bundle import dump_bundle

    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dump_bundle(sign_certificate(statement, key))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def payload_digest(path: Path) -> str:
    """``sha256:<hex>`` of the bundle file bytes (the ledger's payload digest)."""
    from modelguard.signing.bundle import read_signed_bundle

    return read_signed_bundle(path, what="certificate").payload_digest


def record_certificate(
    statement: Mapping[str, Any],
    bundle_path: Path,
    signer: str,
    *,
    ledger_url: str | None = None,
) -> Any:
    """Append the ``evaluate`` ledger entry for a written certificate; returns the Entry."""
    from modelguard.audit import record_event

    predicate = statement["predicate"]
    model = predicate["model"]
    subject = {"name": str(model.get("name") or "model"), "root": str(model["manifest_root"])}
    if model.get("version"):
        subject["version"] = str(model["version"])
    summary = predicate["summary"]
    details = {
        "predicate_type": PREDICATE_TYPE,
        "certificate": str(bundle_path),
        "onnx_sha256": model.get("onnx_sha256"),
        "data_digest": predicate["data"]["digest"],
        "norm": summary["norm"],
        "clean_accuracy": summary["clean_accuracy"],
        "worst_case": {str(w["eps"]): w["robust_accuracy"] for w in summary["worst_case"]},
        "soundness_warnings": summary["soundness_warnings"],
        "attacks": predicate["config"]["attacks"],
    }
    return record_event(
        LEDGER_KIND,
        subject=subject,
        payload_digest=payload_digest(bundle_path),
        actor=signer,
        details=details,
        ledger_url=ledger_url,
    )


@dataclass
class IssuedCertificate:
    path: Path
    statement: dict[str, Any]
    payload_digest: str
    key_id: str
    ledger_entry: Any | None  # ledger.Entry when recorded

    def to_dict(self) -> dict[str, Any]:
        entry = self.ledger_entry
        return {
            "path": str(self.path),
            "payload_digest": self.payload_digest,
            "key_id": self.key_id,
            "predicate_type": PREDICATE_TYPE,
            "ledger_index": getattr(entry, "index", None),
        }


def certify(
    result: EvalResult,
    key: PrivateKey,
    out_dir: str | os.PathLike[str],
    *,
    name: str = CERTIFICATE_NAME,
    ledger_url: str | None = None,
    record: bool = True,
) -> IssuedCertificate:
    """Build, sign and write ``OUT/certificate.sig``; append the ``evaluate`` ledger entry.

    Only a model directory or ONNX file is certified: a certificate over a bare weights file
    (``--arch`` + ``--weights``) would not be bound to the signed model the gate checks."""
    if result.model.get("kind") == "arch+weights":
        raise BadInputError(
            "a certificate is bound to a signed model directory, not to a weights file: write "
            "its card (modelguard card DIR --arch ...), sign DIR, then evaluate DIR"
        )
    return issue_certificate(
        build_certificate(result), key, out_dir, name=name, ledger_url=ledger_url, record=record
    )


def issue_certificate(
    statement: Mapping[str, Any],
    key: PrivateKey,
    out_dir: str | os.PathLike[str],
    *,
    name: str = CERTIFICATE_NAME,
    ledger_url: str | None = None,
    record: bool = True,
) -> IssuedCertificate:
    """Sign and write an already built statement; append the ``evaluate`` ledger entry."""
    path = write_signed_certificate(statement, key, Path(out_dir) / name)
    signer = key_id(key.public_key())
    entry = record_certificate(statement, path, signer, ledger_url=ledger_url) if record else None
    return IssuedCertificate(path, dict(statement), payload_digest(path), signer, entry)


@dataclass
class Certificate:
    """A verified certificate: the statement, who signed it, and typed accessors."""

    statement: dict[str, Any]
    key_ids: tuple[str, ...]
    path: Path | None
    payload_digest: str | None

    @property
    def predicate(self) -> dict[str, Any]:
        return dict(self.statement["predicate"])

    @property
    def config(self) -> EvalConfig:
        """The exact evaluation config to re-run (data digest included)."""
        return EvalConfig.from_dict(self.predicate["config"], source=str(self.path))

    @property
    def manifest_root(self) -> str:
        return str(self.predicate["model"]["manifest_root"])

    @property
    def onnx_sha256(self) -> str | None:
        value = self.predicate["model"].get("onnx_sha256")
        return str(value) if value else None

    @property
    def norm(self) -> str:
        return str(self.predicate["summary"]["norm"])

    @property
    def soundness_warnings(self) -> list[str]:
        return list(self.predicate["summary"]["soundness_warnings"])

    def worst_case_accuracy(self, eps: float) -> float | None:
        """Worst-case robust accuracy at ``eps`` (None when that eps was not evaluated)."""
        for row in self.predicate["summary"]["worst_case"]:
            if math.isclose(float(row["eps"]), eps, rel_tol=0, abs_tol=1e-12):
                return float(row["robust_accuracy"])
        return None

    def robust_accuracy_at_least(self, eps: float) -> float | None:
        """Worst case at the smallest evaluated eps >= ``eps`` (a bound for ``eps`` by monotonicity)."""
        row = self._row_at_least(eps)
        return None if row is None else float(row["robust_accuracy"])

    def robust_proportion_at_least(self, eps: float) -> Proportion | None:
        """Like :meth:`robust_accuracy_at_least`, with n and the 95% Clopper-Pearson interval.

        The interval is recomputed from the signed count and n (a certificate without them,
        issued before intervals were recorded, uses the data set's size as n).
        """
        row = self._row_at_least(eps)
        if row is None:
            return None
        n = int(row.get("n", self.predicate["data"]["count"]))
        correct = int(row.get("correct", round(float(row["robust_accuracy"]) * n)))
        return Proportion.of(correct=correct, n=n)

    def _row_at_least(self, eps: float) -> dict[str, Any] | None:
        rows = [
            r for r in self.predicate["summary"]["worst_case"] if float(r["eps"]) >= eps - 1e-12
        ]
        return dict(min(rows, key=lambda r: float(r["eps"]))) if rows else None


def parse_certificate_statement(statement: Mapping[str, Any], *, source: str) -> None:
    """Structural checks of a verified statement (FormatError naming ``source``)."""
    if statement.get("predicateType") != PREDICATE_TYPE:
        raise FormatError(
            f"not a robustness certificate (predicateType {statement.get('predicateType')!r})",
            path=source,
        )
    predicate = statement.get("predicate")
    try:
        assert isinstance(predicate, dict)
        if int(predicate["version"]) != PREDICATE_VERSION:
            raise FormatError(
                f"unsupported certificate version {predicate['version']}", path=source
            )
        str(predicate["model"]["manifest_root"])
        [float(r["eps"]) + float(r["robust_accuracy"]) for r in predicate["summary"]["worst_case"]]
        EvalConfig.from_dict(predicate["config"], source=source)
        predicate["results"]["attacks"]
    except (AssertionError, KeyError, TypeError, ValueError) as error:
        raise FormatError(
            f"malformed robustness certificate ({type(error).__name__}: {error})", path=source
        ) from None


def load_certificate(
    path: str | os.PathLike[str], trusted_keys: Sequence[PublicKey]
) -> Certificate:
    """Read, verify (signature by a trusted key) and parse a certificate bundle.

    :class:`SignatureError` (exit 1) when no trusted key signed it; :class:`FormatError`
    (exit 2) when it is malformed or not a robustness certificate.
    """
    from modelguard.signing import verify_bundle
    from modelguard.signing.bundle import read_signed_bundle

    source = Path(path)
    if not source.is_file():
        raise FormatError("certificate file not found", path=str(source))
    bundle = read_signed_bundle(source, what="certificate")
    try:
        verified = verify_bundle(bundle.document, trusted_keys)
    except SignatureError as error:
        raise SignatureError(f"{source}: {error}", details=error.details) from None
    parse_certificate_statement(verified.statement, source=str(source))
    return Certificate(
        statement=verified.statement,
        key_ids=verified.key_ids,
        path=source,
        payload_digest=bundle.payload_digest,
    )


def compare_results(recorded: Mapping[str, Any], rerun: EvalResult, tolerance: float) -> list[str]:
    """Drifts between a certificate's recorded results and a re-run (empty = within tolerance)."""
    drifts: list[str] = []

    def close(name: str, a: float | None, b: float | None) -> None:
        if a is None or b is None:
            if a is not b:
                drifts.append(f"{name}: recorded {a}, now {b}")
            return
        if abs(float(a) - float(b)) > tolerance + 1e-12:
            drifts.append(
                f"{name}: recorded {float(a):.4f}, now {float(b):.4f} (tolerance {tolerance})"
            )

    close("clean accuracy", recorded.get("clean_accuracy"), rerun.clean_accuracy)
    close("ONNX clean accuracy", recorded.get("onnx_clean_accuracy"), rerun.onnx_clean_accuracy)
    now_attacks = {(a.attack, float(a.eps)): a for a in rerun.attacks}
    for row in recorded.get("attacks", []):
        key = (str(row["attack"]), float(row["eps"]))
        current = now_attacks.get(key)
        if current is None:
            drifts.append(f"{key[0]} at eps={key[1]}: recorded but not re-run")
            continue
        close(f"{key[0]} at eps={key[1]}", row["robust_accuracy"], current.robust_accuracy)
    now_worst = {float(w["eps"]): w["robust_accuracy"] for w in rerun.worst_case}
    for row in recorded.get("worst_case", []):
        close(
            f"worst case at eps={row['eps']}",
            row["robust_accuracy"],
            now_worst.get(float(row["eps"])),
        )
    if not rerun.parity_ok:
        drifts.append("PyTorch/ONNX parity now fails")
    return drifts


def check_rerun(certificate: Certificate, rerun: EvalResult) -> list[str]:
    """Everything recertify must check: same model, same ONNX, same data, numbers in tolerance.

    Raises :class:`DigestMismatchError` when the model or data no longer match the
    certificate; returns the list of numeric drifts (empty = re-certified).
    """
    if rerun.model.get("manifest_root") != certificate.manifest_root:
        raise DigestMismatchError(
            f"model manifest root {rerun.model.get('manifest_root')} differs from the certified "
            f"{certificate.manifest_root}"
        )
    if certificate.onnx_sha256 and rerun.model.get("onnx_sha256") != certificate.onnx_sha256:
        raise DigestMismatchError("the ONNX file differs from the certified one (sha256)")
    recorded_data = certificate.predicate["data"]["digest"]
    if rerun.data["digest"] != recorded_data:
        raise DigestMismatchError(
            f"data set digest {rerun.data['digest'][:16]}... differs from the certified "
            f"{recorded_data[:16]}..."
        )
    tolerance = float(certificate.predicate["config"].get("recertify_tolerance", 0.01))
    drifts = compare_results(certificate.predicate["results"], rerun, tolerance)
    recorded_certified = certificate.predicate.get("certified") or {}
    for method, section in recorded_certified.items():
        key = "radius" if method == "randomized_smoothing" else "eps"
        now = {
            float(r[key]): float(r["certified_accuracy"])
            for r in (rerun.certified or {}).get(method, {}).get("certified_accuracy", [])
        }
        for row in section["certified_accuracy"]:
            at, value = float(row[key]), float(row["certified_accuracy"])
            current = now.get(at)
            if current is None or abs(current - value) > tolerance + 1e-12:
                drifts.append(
                    f"{method} certified accuracy at {key} {at}: recorded {value:.4f}, now {current}"
                )
    return drifts


def require_rerun_matches(certificate: Certificate, rerun: EvalResult) -> None:
    """:func:`check_rerun`, raising :class:`VerificationError` (exit 1) on drift."""
    drifts = check_rerun(certificate, rerun)
    if drifts:
        raise VerificationError(
            f"re-certification drifted: {drifts[0]}"
            + (f" (+{len(drifts) - 1} more)" if len(drifts) > 1 else ""),
            details={"drifts": drifts},
        )


ESTIMATES = ("lower_bound", "point")


def check_requirement(
    certificate: Certificate,
    *,
    min_robust_accuracy: float,
    epsilon: float,
    norm: str = "linf",
    estimate: str = "lower_bound",
) -> list[str]:
    """Policy gate: reasons the certificate falls short (empty = satisfied).

    ``estimate="lower_bound"`` (the default) compares the threshold with the lower end of the
    95% Clopper-Pearson interval of the worst-case robust accuracy: the gate passes only when
    the evaluation shows, with 95% confidence, that the model meets the threshold on the data
    distribution it was drawn from. ``"point"`` compares the measured fraction itself.
    """
    if estimate not in ESTIMATES:
        raise ValueError(f"unknown estimate {estimate!r} (expected one of {ESTIMATES})")
    reasons = []
    if certificate.norm != norm:
        reasons.append(
            f"certificate is for the {certificate.norm} threat model, policy asks {norm}"
        )
        return reasons
    measured = certificate.robust_proportion_at_least(epsilon)
    if measured is None:
        reasons.append(f"certificate has no worst-case result at eps >= {epsilon}")
    elif estimate == "point" and measured.value < min_robust_accuracy:
        reasons.append(
            f"worst-case robust accuracy {measured.value:.3f} at eps={epsilon} is below the "
            f"required {min_robust_accuracy:.3f}"
        )
    elif estimate == "lower_bound" and measured.lower < min_robust_accuracy:
        reasons.append(
            f"worst-case robust accuracy {measured.value:.3f} at eps={epsilon} (n={measured.n}, "
            f"95% CI {measured.ci95[0]:.3f}-{measured.ci95[1]:.3f}): its lower bound is below "
            f"the required {min_robust_accuracy:.3f}"
        )
    if not certificate.predicate["summary"].get("parity_ok", False):
        reasons.append("certificate records a PyTorch/ONNX parity failure")
    return reasons


@dataclass
class EvaluationRun:
    """What :func:`evaluate_and_certify` produced."""

    result: EvalResult
    outputs: dict[str, Path]
    certificate: IssuedCertificate | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.result.parity_ok,
            "summary": self.result.summary(),
            "robust_accuracy": self.result.robust_table(),
            "soundness": [
                {"name": c["name"], "status": c["status"], "detail": c["detail"]}
                for c in self.result.soundness
            ],
            "parity": self.result.parity,
            "worst_case": [{"eps": w["eps"], **w["robust"]} for w in self.result.worst_case],
            "certified": self.result.certified,
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "certificate": self.certificate.to_dict() if self.certificate else None,
        }


def evaluate_and_certify(
    target: str | os.PathLike[str],
    config: EvalConfig,
    out_dir: str | os.PathLike[str],
    *,
    key: PrivateKey | None = None,
    ledger_url: str | None = None,
    record: bool = True,
    arch: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    device: str = "cpu",
    progress: Any = None,
) -> EvaluationRun:
    """``modelguard eval`` as one call: evaluate, write the reports, sign + record a certificate.

    Outputs are written even when ONNX parity fails (the report says FAILED); then no
    certificate is issued and :class:`VerificationError` (exit 1) is raised.
    """
    from modelguard.robustness import distributed
    from modelguard.robustness.evaluate import evaluate
    from modelguard.robustness.report import write_outputs

    distributed.init_from_env(device)  # under torchrun: share the attacks across ranks
    result = evaluate(
        target,
        config,
        arch=arch,
        weights=weights,
        arch_kwargs=arch_kwargs,
        progress=progress,
        device=device,
    )
    distributed.leave()  # ranks > 0 exit here; rank 0 writes, signs and records
    outputs = write_outputs(result, out_dir)
    result.require_parity()
    issued = None
    if key is not None:
        issued = certify(result, key, out_dir, ledger_url=ledger_url, record=record)
        outputs["certificate"] = issued.path
    return EvaluationRun(result, outputs, issued)
