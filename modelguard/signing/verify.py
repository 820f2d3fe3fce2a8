"""Verify a model: every signature, then every file, tensor and structure, then policy and ledger.

Each file is opened once (:class:`modelguard.formats.ModelFiles`); the bytes hashed are the
bytes a caller of :func:`verify_and_hold` loads. The signed BLAKE3 tensor/gap layout alone
decides when it covers every byte and the policy allows its hash (docs/signature.md); else the
model is re-parsed and compared digest by digest, so a failure names the tensor that differs.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from modelguard.errors import (
    BadInputError,
    FormatError,
    SignatureError,
    UnsafeModelError,
)
from modelguard.formats import ModelFiles, parse_model_file
from modelguard.keys import PublicKey, key_id, oms_hint
from modelguard.manifest import (
    SIGNING_FILE_HASH,
    SIGNING_LAYER_HASH,
    Manifest,
    ManifestDiff,
    ProgressCallback,
    build_manifest,
    compare_manifests,
    open_model,
    prove_tensor,
)
from modelguard.policy import NO_CHECKS, Policy, PolicyChecks, policy_from_keys
from modelguard.safeio import MAX_SIGNATURE_BYTES, open_regular
from modelguard.signing.bundle import load_bundle_bytes, parse_bundle, read_bundle_file
from modelguard.signing.bundle import payload_digest as bundle_payload_digest
from modelguard.signing.envelope import verify_bundle
from modelguard.signing.files import (
    cosign_dir,
    default_signature_path,
    file_digests,
    manifest_resources,
    relative_inside,
    resources_in_manifest,
    resources_of,
    signature_files,
    view_resources,
)
from modelguard.signing.gate import check_audits, check_certificate, check_policy
from modelguard.signing.gate import signer_label as _signer_label
from modelguard.signing.layout import (
    Segment,
    check_layouts,
    layouts_from_dict,
)
from modelguard.signing.ledger_check import check_ledger
from modelguard.signing.report import (
    SignerResult,
    VerificationReport,
    VerifiedModel,
)
from modelguard.signing.shards import (
    describe_resource,
    unsigned_files,
)
from modelguard.signing.statement import (
    DEFAULT_IGNORE_PATHS,
    ParsedStatement,
    parse_oms_bundle,
    parse_statement,
)


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
    files: ModelFiles,
    scheme: tuple[str, str] | None,
    threads: int | None,
    progress: ProgressCallback | None = None,
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
                progress=progress,
            )
            if manifest.file_algorithm == "sha256":
                return _Actual(resources_of(files, manifest), manifest, None)
            return _Actual(file_digests(files, threads, progress), manifest, None)
        except (FormatError, UnsafeModelError) as error:
            return _Actual(file_digests(files, threads, progress), None, str(error))
    return _Actual(file_digests(files, threads, progress), None, None)


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
        resources_in_manifest(item.statement.serialization_spec, item.manifest)
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
    progress: ProgressCallback | None = None,
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
            progress=progress,
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
    progress: ProgressCallback | None = None,
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
        if _fast_check(report, files, item, threads, fast, allowed, tensors, progress):
            continue
        scheme = item.manifest.scheme if item.manifest is not None else None
        cache_key = (ignore, scheme)
        if cache_key not in cache:
            cache[cache_key] = _actual_state(files, scheme, threads, progress)
        actual = cache[cache_key]
        resources = {r.name: r.digest for r in item.statement.resources}
        spec = item.statement.serialization_spec
        on_disk = actual.files if spec.is_default else view_resources(files, spec, threads)
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
    progress: ProgressCallback | None = None,
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
    ``progress(n, total)``: bytes hashed so far (from worker threads), for a progress display.
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
        progress=progress,
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
    progress: ProgressCallback | None = None,
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
        progress=progress,
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
    progress: ProgressCallback | None = None,
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
                for rel in (relative_inside(p, path) for p in (sig_path, cosign_dir(sig_path)))
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
            progress,
        )
    check_policy(report, policy, signed, now or datetime.now(UTC).replace(microsecond=0))
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
