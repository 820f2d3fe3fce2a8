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

import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
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
from modelguard.formats import ModelFiles, parse_model_file
from modelguard.keys import PrivateKey, PublicKey, atomic_write, key_id, oms_hint
from modelguard.manifest import (
    SIGNING_FILE_HASH,
    SIGNING_LAYER_HASH,
    HashJob,
    Manifest,
    ManifestDiff,
    build_manifest,
    compare_manifests,
    file_slice,
    open_model,
    prove_tensor,
    run_hash_jobs,
    scan_model,
)
from modelguard.policy import NO_CHECKS, Policy, PolicyChecks, policy_from_keys
from modelguard.safeio import MAX_SIGNATURE_BYTES, open_regular
from modelguard.signing.bundle import dump_bundle, load_bundle_bytes, parse_bundle, read_bundle_file
from modelguard.signing.bundle import payload_digest as bundle_payload_digest
from modelguard.signing.gate import check_audits, check_certificate, check_policy
from modelguard.signing.gate import signer_label as _signer_label
from modelguard.signing.layout import (
    Segment,
    check_layouts,
    layouts_from_dict,
    layouts_from_scan,
    layouts_to_dict,
)
from modelguard.signing.ledger_check import check_ledger
from modelguard.signing.shards import (
    Serialization,
    describe_resource,
    resources_from_views,
    unsigned_files,
)
from modelguard.signing.statement import (
    DEFAULT_IGNORE_PATHS,
    ParsedStatement,
    model_statement,
    parse_oms_bundle,
    parse_statement,
)
from modelguard.signing.verify import sign_statement, verify_bundle

DEFAULT_SIGNATURE_NAME = "model.sig"
COSIGN_SUFFIX = ".d"  # model.sig.d/<key id>.sig holds every signer after the first
PREDICATE_SCHEMA = 1


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


def signed_manifest(path: Path, *, threads: int | None = None) -> Manifest:
    """The manifest a signature of ``path`` records (signing's hashes, signature files left out)."""
    path = Path(path)
    ignore = signing_ignore_paths(path, default_signature_path(path))
    return scan_model(open_model(path, ignore_paths=ignore), layout=False, threads=threads).manifest


def file_digests(files: ModelFiles, threads: int | None = None) -> dict[str, str]:
    """OMS-style file digests of the opened model (no parsing): ``{".": d}`` for a file, else ``{rel: d}``.

    Files are hashed concurrently (one SHA-256 pass each), their pages released as they go.
    """
    jobs = [
        HashJob(
            ("file", rel),
            rel,
            files.size(rel),
            file_slice(files, rel, 0, files.size(rel)),
            "sha256",
            0,
        )
        for rel in files.members
    ]
    digests = run_hash_jobs(files, jobs, threads=threads)
    return {("." if files.single else rel): digests[("file", rel)] for rel in files.members}


def _file_spec(spec: Serialization) -> str:
    """The manifest's whole-file hash for ``spec``: the OMS resource digests when they are the same
    function over the same bytes (computed once), else SHA-256."""
    return (
        spec.hash_type
        if spec.method == "files" and spec.hash_type in ("sha256", "blake3")
        else SIGNING_FILE_HASH
    )


def _resources_in_manifest(spec: Serialization, manifest: Manifest) -> bool:
    return spec.method == "files" and spec.hash_type == manifest.file_algorithm


def manifest_resources(model: Path, manifest: Manifest) -> dict[str, str]:
    """The OMS resources (name -> hex, the manifest's file hash) a manifest implies for ``model``."""
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


def _existing_signer(data: bytes, source: str) -> tuple[set[str], ParsedStatement]:
    """Names the existing bundle gives its signer, and its (unverified) statement."""
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
    return names, statement


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
    serialization: Serialization | None = None,
) -> SignResult:
    """Hash ``path`` (files, tensors, structures), sign the OMS statement, write the bundle.

    A model already signed by another key gets a co-signature in ``model.sig.d/``; the
    files must still match what the first signer signed. With ``record`` the signature lands
    in the ledger as a ``sign`` entry. ``serialization`` picks the OMS resources (default:
    whole files, SHA-256; or shards and/or blake2b, blake3: modelguard.signing.shards).
    """
    path = Path(path)
    if not path.exists():
        raise BadInputError("no such model file or directory", path=str(path))
    if parent is not None and not re.fullmatch(r"(sha256:)?[0-9a-f]{64}", parent):
        raise BadInputError(f"--parent {parent!r} is not a sha256 digest (64 hex digits)")
    sig_path = Path(signature_path) if signature_path is not None else default_signature_path(path)
    ignore = signing_ignore_paths(path, sig_path)
    files = open_model(path, ignore_paths=ignore)
    spec = serialization or Serialization()
    # one pass: SHA-256 (or the OMS hash) of each file, BLAKE3 of each tensor and gap
    scan = scan_model(files, file_hash_algorithm=_file_spec(spec), threads=threads)
    manifest = scan.manifest
    resources = (
        manifest_resources(path, manifest)
        if _resources_in_manifest(spec, manifest)
        else _view_resources(files, spec, threads, for_signing=True)
    )
    public = key.public_key()
    kid = key_id(public)
    target, cosigned = sig_path, False
    if sig_path.exists():
        names, existing = _existing_signer(read_bundle_file(sig_path), str(sig_path))
        if not names & {kid, oms_hint(public)}:
            signed = {r.name: r.digest for r in existing.resources}
            now = (
                resources
                if existing.serialization_spec == spec
                else _view_resources(files, existing.serialization_spec, threads)
            )
            if signed != now:
                raise BadInputError(
                    "the model changed since it was signed; remove the old signature(s) "
                    "to sign the new content",
                    path=str(sig_path),
                )
            target, cosigned = cosign_dir(sig_path) / f"{kid}.sig", True
    model_name = name or path.resolve().name
    try:
        model_name.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(
            "the model's name is not valid UTF-8: give one with --name",
            path=os.fsencode(path).decode("utf-8", "backslashreplace"),
        ) from None
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
    layouts = layouts_from_scan(scan)
    if layouts is not None:
        predicate["layout"] = layouts_to_dict(layouts)
    statement = model_statement(
        model_name,
        sorted(resources.items()),
        ignore_paths=ignore,
        modelguard=predicate,
        serialization=spec,
    )
    data = dump_bundle(sign_statement(statement, key))
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    payload_digest = bundle_payload_digest(data)
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
    # the tensors checked when verification was partial (verify --tensors); None: every byte
    partial: list[str] | None = None

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
            "partial_tensors": self.partial,
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


@dataclass
class VerifiedModel:
    """A model that verified, holding the buffers that were checked: the only bytes to use.

    ``files`` are the model's files as read once for verification (private copies when asked
    for): ONNX Runtime, the decryptor and the certificate gate take their bytes from here and
    never re-open a path.
    """

    path: Path
    report: VerificationReport
    files: ModelFiles

    @property
    def manifest(self) -> Manifest | None:
        return self.report.manifest


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
        payload_digest = bundle_payload_digest(data)
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
                try:  # not ours to trust, but a malformed statement is bad input (exit 2)
                    parse_oms_bundle(document)
                except FormatError as malformed:
                    raise FormatError(malformed.message, path=str(file)) from None
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
    files: ModelFiles, scheme: tuple[str, str] | None, threads: int | None
) -> _Actual:
    """The model as it is: file digests, and with a ``scheme`` (tensor hash, file hash) its manifest."""
    if scheme is not None:
        try:
            manifest = build_manifest(
                files.root,
                hash_algorithm=scheme[0],
                file_hash_algorithm=scheme[1],
                threads=threads,
                files=files,
            )
            if manifest.file_algorithm == "sha256":
                return _Actual(_resources(files, manifest), manifest, None)
            return _Actual(file_digests(files, threads), manifest, None)
        except (FormatError, UnsafeModelError) as error:
            return _Actual(file_digests(files, threads), None, str(error))
    return _Actual(file_digests(files, threads), None, None)


def _view_resources(
    files: ModelFiles, spec: Serialization, threads: int | None, *, for_signing: bool = False
) -> dict[str, str]:
    """OMS resources (shards, blake2b, blake3) hashed from the buffers already read."""
    views = {rel: files.view(rel) for rel in files.members}
    return resources_from_views(
        views, spec, single=files.single, threads=threads, for_signing=for_signing
    )


def _resources(files: ModelFiles, manifest: Manifest) -> dict[str, str]:
    if files.single:
        return {".": manifest.files[0].digest} if len(manifest.files) == 1 else {}
    return {f.path: f.digest for f in manifest.files}


def _check_binding(report: VerificationReport, model: Path, item: _Signed) -> bool:
    """The signature names this target: a single file by its name, a directory by its file set.

    A single-file signature never covers a sibling: its manifest records the file's name, which
    must be the name given. Signed resources and signed manifest must agree on every file.
    """
    who = _signer_label(item.signer)
    names = list(item.statement.paths)
    given = model.name
    if model.is_dir() and "." in names:
        report.check(
            "target",
            False,
            f"{who}: signs a single file, but {given!r} is a directory",
            "signature",
        )
        return False
    if not model.is_dir() and names != ["."]:
        report.check(
            "target",
            False,
            f"{who}: signs a directory ({len(names)} file(s)), but {given!r} is a single file",
            "signature",
        )
        return False
    if item.manifest is None:
        return True
    signed = [f.path for f in item.manifest.files]
    if not model.is_dir() and signed != [given]:
        report.check(
            "target",
            False,
            f"{who}: signature is for {', '.join(map(repr, signed)) or 'nothing'}, "
            f"not for {given!r}",
            "signature",
        )
        return False
    resources = {r.name: r.digest for r in item.statement.resources}
    if (
        _resources_in_manifest(item.statement.serialization_spec, item.manifest)
        and manifest_resources(model, item.manifest) != resources
    ):
        report.check(
            "statement", False, f"{who}: signed manifest and signed resources disagree", "signature"
        )
        return False
    return True


def _compare_files(
    report: VerificationReport,
    who: str,
    signed: Mapping[str, str],
    actual: Mapping[str, str],
    method: str = "files",
) -> bool:
    ok = True
    for name in sorted(set(signed) | set(actual)):
        label = describe_resource(name, method)
        if name not in actual:
            report.check("files", False, f"{who}: {label} is missing", "digest")
        elif name not in signed:
            report.check("files", False, f"{who}: unexpected {label} (not signed)", "digest")
        elif signed[name] != actual[name]:
            report.check(
                "files",
                False,
                f"{who}: {label} differs (digest {actual[name][:16]}…, signed {signed[name][:16]}…)",
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
    files: ModelFiles,
    item: _Signed,
    threads: int | None,
    done: dict[str, bool],
    allowed: Sequence[str],
    tensors: frozenset[str] | None = None,
) -> bool:
    """Every byte through the signed layout's tensor and gap digests, hashed in parallel.

    True when everything matched (checks added); False sends the caller to the full path,
    which re-parses and re-hashes the model to name what differs. The bytes hashed are the
    buffers of ``files`` (one read per file), and every ONNX file is walked so that each
    external tensor reference is confined to the signed set.
    """
    extra = item.statement.modelguard or {}
    if item.manifest is None or "layout" not in extra:
        return False
    if not set(item.manifest.scheme) <= set(allowed):
        return False  # the policy does not accept the layout's hash alone: check the files too
    if item.statement.serialization_spec.method != "files":
        return False  # shard resources name byte ranges: checked on the full path
    try:
        layouts = layouts_from_dict(extra["layout"], item.manifest)
    except (FormatError, UnsafeModelError, BadInputError):
        return False
    resources = {r.name: r.digest for r in item.statement.resources}
    if ({"."} if files.single else set(files.members)) != set(resources):
        return False
    whole = {f.path: f.digest for f in item.manifest.files if f.path not in layouts}
    only = None
    if tensors is not None:
        placed = {s.tensor for v in layouts.values() for s in v if s.tensor is not None}
        if not tensors <= placed:
            return False  # a named tensor is not stored verbatim: check everything
        for record in item.manifest.files:  # each named leaf is in the signed root (RFC 9162)
            for name in sorted(tensors & {t.name for t in record.tensors}):
                prove_tensor(item.manifest, name, record.path).check(item.manifest.layer_root)
        only = functools.partial(_selected, tensors)
    key = json.dumps(
        [extra["layout"], sorted(whole.items()), files.ignore, sorted(tensors or ())],
        sort_keys=True,
    )
    if key not in done:
        done[key] = not check_layouts(
            files,
            layouts,
            whole,
            algorithm=item.manifest.hash_algorithm,
            file_algorithm=item.manifest.file_algorithm,
            threads=threads,
            only=only,
        ) and _references_ok(files, item.manifest)
    if not done[key]:
        return False
    who = _signer_label(item.signer)
    if tensors is not None:
        rest = sum(t.name not in tensors for f in item.manifest.files for t in f.tensors)
        report.check(
            "files",
            True,
            f"{who}: PARTIAL: every non-tensor byte and the {len(tensors)} named tensor(s) match "
            f"(each proven in the signed layer root); {rest} other tensor(s) NOT checked",
            "digest",
        )
        report.partial = sorted(tensors)
        if report.manifest is None:
            report.manifest = item.manifest
        report.layer_detail = True
        return True
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


def _references_ok(files: ModelFiles, manifest: Manifest) -> bool:
    """Every tensor reference of every ONNX file resolves inside the signed set (walk only)."""
    return _reference_problem(files, [f.path for f in manifest.files if f.format == "onnx"]) is None


def _reference_problem(files: ModelFiles, onnx_files: Sequence[str] | None = None) -> str | None:
    """Why an ONNX file's tensor data is not confined to the signed set (None when it is).

    Run even for plain OpenSSF Model Signing bundles (no modelguard manifest): their file
    digests say nothing about where a graph's external data points.
    """
    names = onnx_files if onnx_files is not None else files.members
    for rel in names:
        if not rel.lower().endswith(".onnx"):
            continue
        try:
            parse_model_file(files.root / rel, root=files.root, files=files)
        except (FormatError, UnsafeModelError, BadInputError) as error:
            return f"cannot use the model's tensors: {error}"
    return None


def _selected(tensors: frozenset[str], segment: Segment) -> bool:
    return segment.tensor is None or segment.tensor in tensors


def _check_content(
    report: VerificationReport,
    model: Path,
    signed: list[_Signed],
    sig_ignore: list[str],
    threads: int | None,
    private: bool | Callable[[str], bool],
    ignore_unsigned_files: bool = False,
    allowed: Sequence[str] = ("sha256",),
    tensors: frozenset[str] | None = None,
) -> ModelFiles | None:
    """Check every signer's files, tensors and structures; the opened model that verified.

    ``allowed``: the hash functions the policy accepts; the signed layout alone decides only
    when its functions are among them (else the whole-file digests are checked too).
    """
    opened: dict[tuple[str, ...], ModelFiles] = {}
    cache: dict[tuple[tuple[str, ...], tuple[str, str] | None], _Actual] = {}
    fast: dict[str, bool] = {}
    first: ModelFiles | None = None
    for item in signed:
        who = _signer_label(item.signer)
        if not _check_binding(report, model, item):
            continue
        ignore = tuple(
            dict.fromkeys([*item.statement.ignore_paths, *DEFAULT_IGNORE_PATHS[:4], *sig_ignore])
        )
        if ignore_unsigned_files:
            skipped = unsigned_files(model, set(item.statement.paths), ignore)
            if skipped:
                ignore = (*ignore, *skipped)
                report.check(
                    "files",
                    True,
                    f"{who}: ignoring {len(skipped)} unsigned file(s) as asked: {', '.join(skipped)}",
                    "digest",
                )
        if ignore not in opened:
            opened[ignore] = open_model(model, ignore_paths=ignore, private=private)
        files = opened[ignore]
        first = first or files
        if tensors is not None and item.manifest is not None:
            unknown = sorted(tensors - {t.name for f in item.manifest.files for t in f.tensors})
            if unknown:
                raise BadInputError(
                    f"no tensor {', '.join(map(repr, unknown))} in the signed manifest"
                )
        if _fast_check(report, files, item, threads, fast, allowed, tensors):
            continue
        scheme = item.manifest.scheme if item.manifest is not None else None
        cache_key = (ignore, scheme)
        if cache_key not in cache:
            cache[cache_key] = _actual_state(files, scheme, threads)
        actual = cache[cache_key]
        resources = {r.name: r.digest for r in item.statement.resources}
        spec = item.statement.serialization_spec
        on_disk = actual.files if spec.is_default else _view_resources(files, spec, threads)
        files_ok = _compare_files(report, who, resources, on_disk, spec.method)
        if files_ok:
            report.check(
                "files",
                True,
                f"{who}: all {len(resources)} {'shard' if spec.method == 'shards' else 'file'} "
                f"digest(s) match",
                "digest",
            )
        if item.manifest is None:
            refused = _reference_problem(files)
            report.check(
                "layers",
                refused is None,
                f"{who}: {refused}"
                if refused
                else f"{who}: no layer detail available (signature made without modelguard)",
                "digest",
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
            count = item.manifest.tensor_count
            report.check(
                "layers", True, f"{who}: all {count} tensor and structure digests match", "digest"
            )
    return first


def _verified_root(
    report: VerificationReport, files: ModelFiles | None, threads: int | None
) -> str | None:
    """The layer root of the bytes that verified (never the files re-read by path)."""
    if report.manifest is not None:
        return report.manifest.layer_root
    if files is not None and report.ok:  # a plain OMS signature: the manifest of what verified
        try:
            return build_manifest(
                files.root,
                hash_algorithm=SIGNING_LAYER_HASH,
                file_hash_algorithm=SIGNING_FILE_HASH,
                threads=threads,
                files=files,
            ).layer_root
        except (FormatError, UnsafeModelError):
            return None
    return None


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
    ignore_unsigned_files: bool = False,
    checks: PolicyChecks = NO_CHECKS,
    tensors: Sequence[str] | None = None,
) -> VerificationReport:
    """Verify every signature on ``path``, then every file, tensor and structure digest.

    Files of the model that no signature lists fail verification (OMS spec 8.5) unless
    ``ignore_unsigned_files`` (like ``model_signing verify --ignore_unsigned_files``).
    ``checks``: the checks behind the policy's ``[certificate]`` and ``[audit.*]`` tables
    (``modelguard.gates.STANDARD_CHECKS``); a table whose check is missing fails closed.

    Returns a report (``.ok``, ``.failures``; ``.raise_if_failed()`` raises the typed error).
    Malformed input (bundle, statement, key) raises :class:`FormatError`/``BadInputError``.
    Each file is read once, through one descriptor (see :func:`verify_and_hold`).

    ``tensors``: partial verification: only these tensors plus every non-tensor byte (headers,
    graphs, files without tensors) are hashed, each named tensor proven in the signed layer
    root; ``report.partial`` lists them. Needs a signed layout (else everything is checked).
    """
    report, _ = _verify(
        Path(path),
        signature_path,
        keys=keys,
        policy=policy,
        ledger_url=ledger_url,
        require_ledger=require_ledger,
        allow_rollback=allow_rollback,
        now=now,
        threads=threads,
        private=False,
        ignore_unsigned_files=ignore_unsigned_files,
        checks=checks,
        tensors=frozenset(tensors) if tensors is not None else None,
    )
    return report


def verify_and_hold(
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
    private: bool | Callable[[str], bool] = True,
    checks: PolicyChecks = NO_CHECKS,
) -> VerifiedModel:
    """Verify like :func:`verify_model` and keep the checked bytes, or raise the typed error.

    Every file of the model is copied once into private memory through one open descriptor,
    then hashed; the returned :class:`VerifiedModel` holds exactly those buffers, so whatever
    happens to the files on disk afterwards (renamed, replaced, rewritten in place, removed)
    cannot reach what the caller loads. ``private``: a predicate naming the files the caller
    will load (the others are only mapped and hashed, and must not be loaded from).
    """
    report, files = _verify(
        Path(path),
        signature_path,
        keys=keys,
        policy=policy,
        ledger_url=ledger_url,
        require_ledger=require_ledger,
        allow_rollback=allow_rollback,
        now=now,
        threads=threads,
        private=private,
        checks=checks,
    )
    report.raise_if_failed()
    if files is None:
        raise SignatureError("nothing was verified", path=str(path))
    return VerifiedModel(Path(path), report, files)


def _verify(
    path: Path,
    signature_path: Path | None,
    *,
    keys: Sequence[PublicKey],
    policy: Policy | None,
    ledger_url: str | None,
    require_ledger: bool,
    allow_rollback: bool,
    now: datetime | None,
    threads: int | None,
    private: bool | Callable[[str], bool],
    ignore_unsigned_files: bool = False,
    checks: PolicyChecks = NO_CHECKS,
    tensors: frozenset[str] | None = None,
) -> tuple[VerificationReport, ModelFiles | None]:
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
    if sig_path.exists() and not sig_path.is_file():
        # A FIFO, device, socket or directory where the signature should be is bad input
        # (exit 2), not a missing signature: open_regular names what it is, without reading.
        with open_regular(sig_path, max_size=MAX_SIGNATURE_BYTES, what="signature"):
            pass
    if not sig_path.is_file():
        report.check("signature", False, f"no signature file at {sig_path}")
        return report, None
    signed = _read_signatures(report, signature_files(sig_path), policy, policy.trusted_keys)
    files: ModelFiles | None = None
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
        files = _check_content(
            report,
            path,
            signed,
            sig_ignore,
            threads,
            private,
            ignore_unsigned_files,
            policy.allowed_hash_algorithms,
            tensors,
        )
    check_policy(report, policy, signed, now or _now())
    roots: list[str | None] = []

    def root() -> str | None:  # computed once, only when a certificate or audit needs it
        if not roots:
            roots.append(_verified_root(report, files, threads))
        return roots[0]

    check_certificate(report, policy, checks, path, sig_path, root)
    check_audits(report, policy, checks, path, root)
    if require_ledger:
        check_ledger(
            report,
            [(s.payload_digest, s.signer, s.statement.subject_digest, s.manifest) for s in signed],
            ledger_url=ledger_url,
            allow_rollback=allow_rollback,
            policy=policy,
        )
    return report, files
