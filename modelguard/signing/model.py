"""Sign a model (file or directory) and verify it: signatures, then every file, tensor, structure.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.keys import generate_key
>>> from modelguard.signing.model import sign_model, verify_model
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": np.ones((2, 2), dtype=np.float32)}, d / "m.safetensors")
>>> key = generate_key()
>>> result = sign_model(d, key, record=False)
>>> verify_model(d, keys=[key.public_key()]).ok
True

Layout (docs/signature.md): the first signer's bundle is ``model.sig`` (inside a directory
model, next to a single-file model), an OpenSSF Model Signing v1.0 bundle that
``model_signing verify key`` accepts. Every further signer's bundle is
``model.sig.d/<key id>.sig``, also a complete OMS bundle over the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelguard import __version__
from modelguard.errors import (
    BadInputError,
    DigestMismatchError,
    FormatError,
    LedgerVerificationError,
    PolicyError,
    RevokedError,
    SignatureError,
    UnsafeModelError,
    VerificationError,
)
from modelguard.keys import PrivateKey, PublicKey, atomic_write, key_id, oms_hint
from modelguard.manifest import (
    Manifest,
    ManifestDiff,
    build_manifest,
    compare_manifests,
    list_model_files,
)
from modelguard.policy import Policy, audit_check, certificate_check, policy_from_keys
from modelguard.signing.bundle import dump_bundle, load_bundle_bytes, parse_bundle, read_bundle_file
from modelguard.signing.layout import (
    build_layouts,
    check_layouts,
    layouts_from_dict,
    layouts_to_dict,
)
from modelguard.signing.statement import (
    DEFAULT_IGNORE_PATHS,
    ParsedStatement,
    model_statement,
    parse_statement,
)
from modelguard.signing.verify import sign_statement, verify_bundle

DEFAULT_SIGNATURE_NAME = "model.sig"
COSIGN_SUFFIX = ".d"  # model.sig.d/<key id>.sig holds every signer after the first
PREDICATE_SCHEMA = 1
CLOCK_SKEW_S = 300
_HASH_CHUNK = 8 * 1024 * 1024


def default_signature_path(path: Path) -> Path:
    """``DIR/model.sig`` for a directory model, ``model.sig`` beside a single-file model."""
    return path / DEFAULT_SIGNATURE_NAME if path.is_dir() else path.parent / DEFAULT_SIGNATURE_NAME


def cosign_dir(signature_path: Path) -> Path:
    return signature_path.with_name(signature_path.name + COSIGN_SUFFIX)


def signature_files(signature_path: Path) -> list[Path]:
    """The primary bundle followed by every co-signature, in key-id order."""
    extra = cosign_dir(signature_path)
    cosigns = sorted(extra.glob("*.sig")) if extra.is_dir() else []
    return [signature_path, *cosigns]


def _relative_inside(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def signing_ignore_paths(model: Path, signature_path: Path) -> tuple[str, ...]:
    """OMS's defaults plus the signature file and its co-signature directory, if inside."""
    ignore = list(DEFAULT_IGNORE_PATHS)
    if model.is_dir():
        for candidate in (signature_path, cosign_dir(signature_path)):
            rel = _relative_inside(candidate, model)
            if rel and rel not in ignore:
                ignore.append(rel)
    return tuple(ignore)


def is_ignored(rel: str, ignore: Sequence[str]) -> bool:
    parts = rel.split("/")
    for pattern in ignore:
        prefix = [p for p in pattern.strip("/").split("/") if p]
        if prefix and parts[: len(prefix)] == prefix:
            return True
    return False


def _sha256_file(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_digests(model: Path, ignore: Sequence[str]) -> dict[str, str]:
    """OMS-style file digests (no parsing): ``{"." : d}`` for a file, else ``{rel: d}``."""
    if model.is_symlink():
        raise UnsafeModelError("model path is a symbolic link", path=str(model))
    if model.is_file():
        return {".": _sha256_file(model)}
    digests: dict[str, str] = {}
    for directory, subdirs, names in os.walk(model, followlinks=False):
        base = Path(directory)
        for name in sorted(subdirs):
            if (base / name).is_symlink():
                raise UnsafeModelError("symbolic link in model directory", path=str(base / name))
        for name in names:
            full = base / name
            rel = full.relative_to(model).as_posix()
            if is_ignored(rel, ignore):
                continue
            if full.is_symlink():
                raise UnsafeModelError("symbolic link in model directory", path=str(full))
            if full.is_file():
                digests[rel] = _sha256_file(full)
    return digests


def manifest_resources(model: Path, manifest: Manifest) -> dict[str, str]:
    """The OMS resources (name -> sha256 hex) a modelguard manifest implies for ``model``."""
    if manifest.hash_algorithm != "sha256":
        raise BadInputError("OMS resources need a sha256 manifest")
    if model.is_file():
        if len(manifest.files) != 1:
            raise FormatError(
                "a single-file model must have exactly one manifest record",
                path=str(model),
            )
        return {".": manifest.files[0].digest}
    return {f.path: f.digest for f in manifest.files}


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _timestamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class SignResult:
    signature_path: Path
    key_id: str
    subject_digest: str  # sha256 hex over the resource digests (the OMS subject)
    payload_digest: str  # "sha256:<hex>" of the bundle file bytes (the ledger's payload digest)
    manifest: Manifest
    statement: dict[str, Any]
    cosigned: bool  # True when this signature was added beside an existing one
    ledger_entry: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "signature": str(self.signature_path),
            "key_id": self.key_id,
            "subject_digest": self.subject_digest,
            "payload_digest": self.payload_digest,
            "layer_root": self.manifest.layer_root,
            "files": len(self.manifest.files),
            "tensors": sum(len(f.tensors) for f in self.manifest.files),
            "cosigned": self.cosigned,
            "ledger_entry": self.ledger_entry,
        }


def _existing_signer(data: bytes, source: str) -> tuple[set[str], dict[str, str]]:
    """Names the existing bundle gives its signer, and its (unverified) resources."""
    document = load_bundle_bytes(data, source=source)
    parsed = parse_bundle(document)
    try:
        statement = parse_statement(json.loads(parsed.envelope.payload))
    except (ValueError, FormatError) as error:
        raise FormatError(
            f"existing signature is not an OMS statement ({error})", path=source
        ) from None
    names = {s.keyid for s in parsed.envelope.signatures if s.keyid}
    if parsed.hint:
        names.add(parsed.hint)
    return names, {r.name: r.digest for r in statement.resources}


def sign_model(
    path: Path,
    key: PrivateKey,
    *,
    signature_path: Path | None = None,
    name: str | None = None,
    version: str | None = None,
    parent: str | None = None,
    ledger_url: str | None = None,
    record: bool = True,
    threads: int | None = None,
) -> SignResult:
    """Hash ``path`` (files, tensors, structures), sign the OMS statement, write the bundle.

    A model already signed by another key gets a co-signature in ``model.sig.d/``; the
    files must still match what the first signer signed. With ``record`` the signature lands
    in the ledger as a ``sign`` entry.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError("no such model file or directory", path=str(path))
    if parent is not None and not re.fullmatch(r"(sha256:)?[0-9a-f]{64}", parent):
        raise BadInputError(f"--parent {parent!r} is not a sha256 digest (64 hex digits)")
    sig_path = Path(signature_path) if signature_path is not None else default_signature_path(path)
    ignore = signing_ignore_paths(path, sig_path)
    manifest = build_manifest(path, hash_algorithm="sha256", ignore_paths=ignore, threads=threads)
    resources = manifest_resources(path, manifest)
    public = key.public_key()
    kid = key_id(public)
    target, cosigned = sig_path, False
    if sig_path.exists():
        names, signed = _existing_signer(read_bundle_file(sig_path), str(sig_path))
        if not names & {kid, oms_hint(public)}:
            if signed != resources:
                raise BadInputError(
                    "the model changed since it was signed; remove the old signature(s) "
                    "to sign the new content",
                    path=str(sig_path),
                )
            target, cosigned = cosign_dir(sig_path) / f"{kid}.sig", True
    model_name = name or path.resolve().name
    predicate: dict[str, Any] = {
        "schema": PREDICATE_SCHEMA,
        "tool": "modelguard",
        "tool_version": __version__,
        "name": model_name,
        "version": version,
        "parent": parent,
        "signed_at": _timestamp(_now()),
        "signer_key_id": kid,
        "manifest": manifest.to_dict(),
    }
    layouts = build_layouts(path, manifest)
    if layouts is not None:
        predicate["layout"] = layouts_to_dict(layouts)
    statement = model_statement(
        model_name, sorted(resources.items()), ignore_paths=ignore, modelguard=predicate
    )
    data = dump_bundle(sign_statement(statement, key))
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    payload_digest = "sha256:" + hashlib.sha256(data).hexdigest()
    subject = statement["subject"][0]["digest"]["sha256"]
    entry: dict[str, Any] | None = None
    if record:
        from modelguard.audit import record_event

        ledger_subject = {"name": model_name, "root": manifest.layer_root}
        if version is not None:
            ledger_subject["version"] = version
        if parent is not None:
            ledger_subject["parent"] = parent.removeprefix("sha256:")
        recorded = record_event(
            "sign",
            subject=ledger_subject,
            payload_digest=payload_digest,
            actor=kid,
            details={"model_digest": f"sha256:{subject}", "signature": target.name},
            ledger_url=ledger_url,
        )
        entry = recorded.to_dict()
    return SignResult(
        signature_path=target,
        key_id=kid,
        subject_digest=subject,
        payload_digest=payload_digest,
        manifest=manifest,
        statement=statement,
        cosigned=cosigned,
        ledger_entry=entry,
    )


# ---- verification -------------------------------------------------------------------------

_KIND_ERRORS: dict[str, type[VerificationError]] = {
    "signature": SignatureError,
    "digest": DigestMismatchError,
    "policy": PolicyError,
    "revoked": RevokedError,
    "ledger": LedgerVerificationError,
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    kind: str = "signature"

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail, "kind": self.kind}


@dataclass
class SignerResult:
    signature: str
    status: str  # verified | untrusted | invalid | revoked
    key_id: str | None = None
    name: str | None = None
    signed_at: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    layer_detail: bool = False
    reason: str | None = None
    payload_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerificationReport:
    model: str
    signature: str
    signers: list[SignerResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    manifest: Manifest | None = None
    subject_digest: str | None = None
    layer_detail: bool = False
    ledger: dict[str, Any] | None = None

    @property
    def failures(self) -> list[str]:
        return [c.detail for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, ok: bool, detail: str, kind: str = "signature") -> None:
        self.checks.append(Check(name, ok, detail, kind))

    def error(self) -> VerificationError | None:
        """The typed error for the first failed check (None when everything passed)."""
        failed = [c for c in self.checks if not c.ok]
        if not failed and self.ok:
            return None
        if not failed:
            return SignatureError("nothing was verified", path=self.model)
        # The most specific failure first: a named tensor or structure beats a file digest.
        first = next((c for c in failed if c.name == "layers"), failed[0])
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return _KIND_ERRORS.get(first.kind, VerificationError)(
            first.detail + more, path=self.model, details={"failures": self.failures}
        )

    def raise_if_failed(self) -> None:
        error = self.error()
        if error is not None:
            raise error

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "signature": self.signature,
            "subject_digest": self.subject_digest,
            "layer_root": self.manifest.layer_root if self.manifest else None,
            "layer_detail": self.layer_detail,
            "signers": [s.to_dict() for s in self.signers],
            "checks": [c.to_dict() for c in self.checks],
            "failures": self.failures,
            "ledger": self.ledger,
        }


@dataclass
class _Signed:
    file: Path
    payload_digest: str
    statement: ParsedStatement
    signer: SignerResult
    manifest: Manifest | None


@dataclass
class _Actual:
    files: dict[str, str]
    manifest: Manifest | None
    parse_error: str | None


def _signer_label(signer: SignerResult) -> str:
    who = signer.name or (signer.key_id[:16] if signer.key_id else "unknown")
    return f"signer {who}"


def _read_signatures(
    report: VerificationReport, files: list[Path], policy: Policy, trusted: list[PublicKey]
) -> list[_Signed]:
    revoked_keys = [s.public_key for s in policy.signers if s.key_id in policy.revoked_key_ids]
    signed: list[_Signed] = []
    for file in files:
        data = read_bundle_file(file)
        document = load_bundle_bytes(data, source=str(file))
        try:
            parsed = parse_bundle(document)
        except FormatError as error:
            raise FormatError(error.message, path=str(file)) from None
        claimed = {s.keyid for s in parsed.envelope.signatures if s.keyid} | (
            {parsed.hint} if parsed.hint else set()
        )
        revoked_claim = claimed & (
            set(policy.revoked_key_ids)
            | {oms_hint(k) for k in revoked_keys}
            | {key_id(k) for k in revoked_keys}
        )
        payload_digest = "sha256:" + hashlib.sha256(data).hexdigest()
        signer = SignerResult(signature=str(file), status="invalid", payload_digest=payload_digest)
        report.signers.append(signer)
        if revoked_claim:
            signer.status, signer.key_id = "revoked", sorted(revoked_claim)[0]
            signer.reason = "signed by a revoked key"
            report.check(
                "revocation",
                False,
                f"{file.name}: signed by revoked key {signer.key_id}",
                "revoked",
            )
            continue
        try:
            verified = verify_bundle(document, trusted)
        except SignatureError as error:
            if error.details.get("reason") == "untrusted":
                signer.status, signer.reason = "untrusted", error.message
                signer.key_id = parsed.envelope.signatures[0].keyid or parsed.hint
                continue
            signer.reason = error.message
            ids = error.details.get("key_ids") or [None]
            signer.key_id = ids[0]
            signer.name = policy.signer_name(ids[0]) if ids[0] else None
            report.check(
                "signature", False, f"{file.name}: {_signer_label(signer)}: {error.message}"
            )
            continue
        except FormatError as error:
            raise FormatError(error.message, path=str(file)) from None
        try:
            statement = parse_statement(verified.statement)
            extra = statement.modelguard
            manifest = (
                Manifest.from_dict(extra["manifest"]) if extra and "manifest" in extra else None
            )
        except (FormatError, KeyError, TypeError) as error:
            raise FormatError(f"signed statement is not usable: {error}", path=str(file)) from None
        signer.status = "verified"
        signer.key_id = verified.key_ids[0]
        signer.name = policy.signer_name(signer.key_id)
        signer.layer_detail = manifest is not None
        if extra:
            signer.signed_at = (
                extra.get("signed_at") if isinstance(extra.get("signed_at"), str) else None
            )
            signer.model_name = extra.get("name") if isinstance(extra.get("name"), str) else None
            signer.model_version = (
                extra.get("version") if isinstance(extra.get("version"), str) else None
            )
        signer.model_name = signer.model_name or statement.model_name
        report.check("signature", True, f"{file.name}: valid signature by {_signer_label(signer)}")
        signed.append(_Signed(file, payload_digest, statement, signer, manifest))
    return signed


def _actual_state(
    model: Path, ignore: tuple[str, ...], want_layers: bool, threads: int | None
) -> _Actual:
    if want_layers:
        try:
            manifest = build_manifest(
                model, hash_algorithm="sha256", ignore_paths=ignore, threads=threads
            )
            return _Actual(manifest_resources(model, manifest), manifest, None)
        except (FormatError, UnsafeModelError) as error:
            return _Actual(file_digests(model, ignore), None, str(error))
    return _Actual(file_digests(model, ignore), None, None)


def _compare_files(
    report: VerificationReport, who: str, signed: Mapping[str, str], actual: Mapping[str, str]
) -> bool:
    ok = True
    for name in sorted(set(signed) | set(actual)):
        label = "the model file" if name == "." else f"file {name!r}"
        if name not in actual:
            report.check("files", False, f"{who}: {label} is missing", "digest")
        elif name not in signed:
            report.check("files", False, f"{who}: unexpected {label} (not signed)", "digest")
        elif signed[name] != actual[name]:
            report.check(
                "files",
                False,
                f"{who}: {label} differs (sha256 {actual[name][:16]}…, signed {signed[name][:16]}…)",
                "digest",
            )
        else:
            continue
        ok = False
    return ok


def _describe_diff(diff: ManifestDiff) -> list[str]:
    """One line per differing structure or tensor (file-level changes are reported apart)."""
    lines = [f"structure of {path!r} differs" for path in diff.structure_changed]
    for change in diff.tensors:
        where = f"tensor {change.name!r} in {change.path!r}"
        if change.change == "changed":
            lines.append(f"{where} differs")
        elif change.change == "added":
            lines.append(f"{where} is not signed (added)")
        else:
            lines.append(f"{where} is missing (removed)")
    return lines


def _fast_check(
    report: VerificationReport,
    model: Path,
    item: _Signed,
    ignore: tuple[str, ...],
    threads: int | None,
    done: dict[str, bool],
) -> bool:
    """Every byte through the signed layout's tensor and gap digests, hashed in parallel.

    True when everything matched (checks added); False sends the caller to the full path,
    which re-parses and re-hashes the model to name what differs.
    """
    extra = item.statement.modelguard or {}
    if item.manifest is None or "layout" not in extra:
        return False
    try:
        layouts = layouts_from_dict(extra["layout"], item.manifest)
        _, rels = list_model_files(model, ignore_paths=ignore)
    except (FormatError, UnsafeModelError, BadInputError):
        return False
    resources = {r.name: r.digest for r in item.statement.resources}
    if ({"."} if model.is_file() else set(rels)) != set(resources):
        return False
    whole = {f.path: f.digest for f in item.manifest.files if f.path not in layouts}
    key = json.dumps([extra["layout"], sorted(whole.items()), ignore], sort_keys=True)
    if key not in done:
        done[key] = not check_layouts(model, layouts, whole, threads=threads)
    if not done[key]:
        return False
    who = _signer_label(item.signer)
    segments = sum(len(v) for v in layouts.values())
    report.check(
        "files",
        True,
        f"{who}: all {len(resources)} file(s) match, every byte hashed "
        f"({segments} tensor/gap segments, {len(whole)} whole file(s))",
        "digest",
    )
    report.check(
        "layers",
        True,
        f"{who}: all {item.manifest.tensor_count} tensor digests match; structures byte-identical",
        "digest",
    )
    if report.manifest is None:
        report.manifest = item.manifest
    report.layer_detail = True
    return True


def _check_content(
    report: VerificationReport,
    model: Path,
    signed: list[_Signed],
    sig_ignore: list[str],
    threads: int | None,
) -> None:
    cache: dict[tuple[tuple[str, ...], bool], _Actual] = {}
    fast: dict[str, bool] = {}
    for item in signed:
        who = _signer_label(item.signer)
        ignore = tuple(
            dict.fromkeys([*item.statement.ignore_paths, *DEFAULT_IGNORE_PATHS[:4], *sig_ignore])
        )
        if _fast_check(report, model, item, ignore, threads, fast):
            continue
        want_layers = item.manifest is not None
        cache_key = (ignore, want_layers)
        if cache_key not in cache:
            cache[cache_key] = _actual_state(model, ignore, want_layers, threads)
        actual = cache[cache_key]
        resources = {r.name: r.digest for r in item.statement.resources}
        files_ok = _compare_files(report, who, resources, actual.files)
        if files_ok:
            report.check(
                "files", True, f"{who}: all {len(resources)} file digest(s) match", "digest"
            )
        if item.manifest is None:
            report.check(
                "layers",
                True,
                f"{who}: no layer detail available (signature made without modelguard)",
                "digest",
            )
            continue
        if (
            item.manifest.hash_algorithm == "sha256"
            and manifest_resources(model, item.manifest) != resources
        ):
            report.check(
                "statement",
                False,
                f"{who}: signed manifest and signed resources disagree",
                "signature",
            )
            continue
        if actual.manifest is None:
            report.check(
                "layers",
                False,
                f"{who}: cannot read the model's layers: {actual.parse_error}",
                "digest",
            )
            continue
        if report.manifest is None:
            report.manifest = actual.manifest
        report.layer_detail = True
        lines = _describe_diff(compare_manifests(item.manifest, actual.manifest))
        for line in lines:
            report.check("layers", False, f"{who}: {line}", "digest")
        if not lines:
            tensors = item.manifest.tensor_count
            report.check(
                "layers", True, f"{who}: all {tensors} tensor and structure digests match", "digest"
            )


def _check_policy(
    report: VerificationReport, policy: Policy, signed: list[_Signed], now: datetime
) -> None:
    for item in signed:
        who = _signer_label(item.signer)
        algorithms = {r.algorithm for r in item.statement.resources}
        if item.manifest is not None:
            algorithms.add(item.manifest.hash_algorithm)
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


def _check_certificate(report: VerificationReport, policy: Policy, model: Path, sig: Path) -> None:
    if policy.certificate is None:
        return
    check = certificate_check()
    if check is None:
        if policy.certificate.required:
            report.check(
                "certificate",
                False,
                "policy requires a robustness certificate, but no certificate check is installed",
                "policy",
            )
        return
    reasons = check(policy.certificate, model, sig, policy.trusted_keys)
    for reason in reasons:
        report.check("certificate", False, reason, "policy")
    if not reasons:
        report.check("certificate", True, "robustness certificate satisfies the policy", "policy")


def _check_audits(report: VerificationReport, policy: Policy, model: Path) -> None:
    for requirement in policy.audits:
        reasons = audit_check()(requirement, model, policy.trusted_keys)
        for reason in reasons:
            report.check("audit", False, reason, "policy")
        if not reasons:
            report.check("audit", True, f"{requirement.audit} audit satisfies the policy", "policy")


def verify_model(
    path: Path,
    signature_path: Path | None = None,
    *,
    keys: Sequence[PublicKey] = (),
    policy: Policy | None = None,
    ledger_url: str | None = None,
    require_ledger: bool = False,
    allow_rollback: bool = False,
    now: datetime | None = None,
    threads: int | None = None,
) -> VerificationReport:
    """Verify every signature on ``path``, then every file, tensor and structure digest.

    Returns a report (``.ok``, ``.failures``; ``.raise_if_failed()`` raises the typed error).
    Malformed input (bundle, statement, key) raises :class:`FormatError`/``BadInputError``.
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError("no such model file or directory", path=str(path))
    if policy is not None and keys:
        raise BadInputError("give trusted keys or a policy, not both")
    if policy is None:
        if not keys:
            raise BadInputError("no trusted key: give --key PUB or --policy POLICY")
        policy = policy_from_keys(keys)
    sig_path = Path(signature_path) if signature_path is not None else default_signature_path(path)
    report = VerificationReport(model=str(path), signature=str(sig_path))
    if not sig_path.is_file():
        report.check("signature", False, f"no signature file at {sig_path}")
        return report
    signed = _read_signatures(report, signature_files(sig_path), policy, policy.trusted_keys)
    if signed:
        report.subject_digest = signed[0].statement.subject_digest
        sig_ignore = (
            [
                rel
                for rel in (_relative_inside(p, path) for p in (sig_path, cosign_dir(sig_path)))
                if rel
            ]
            if path.is_dir()
            else []
        )
        _check_content(report, path, signed, sig_ignore, threads)
    _check_policy(report, policy, signed, now or _now())
    _check_certificate(report, policy, path, sig_path)
    _check_audits(report, policy, path)
    if require_ledger:
        from modelguard.signing.ledger_check import check_ledger

        check_ledger(
            report,
            [(s.payload_digest, s.signer, s.statement.subject_digest, s.manifest) for s in signed],
            ledger_url=ledger_url,
            allow_rollback=allow_rollback,
        )
    return report
