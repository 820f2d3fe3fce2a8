"""Sign a model (file or directory): hash it once, write the OMS bundle, record it in the ledger.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.keys import generate_key
>>> from modelguard.signing.sign import sign_model
>>> from modelguard.signing.verify import verify_model
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": np.ones((2, 2), dtype=np.float32)}, d / "m.safetensors")
>>> key = generate_key()
>>> result = sign_model(d, key, record=False)
>>> verify_model(d, keys=[key.public_key()]).ok
True

One scan (:func:`modelguard.manifest.scan_model`) gives the OMS resource digests, the manifest
and the tensor/gap layout; a second signer's bundle goes to ``model.sig.d/``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelguard import __version__
from modelguard.errors import (
    BadInputError,
    FormatError,
)
from modelguard.keys import PrivateKey, atomic_write, key_id, oms_hint
from modelguard.manifest import (
    Manifest,
    ProgressCallback,
    open_model,
    scan_model,
)
from modelguard.signing.bundle import dump_bundle, load_bundle_bytes, parse_bundle, read_bundle_file
from modelguard.signing.bundle import payload_digest as bundle_payload_digest
from modelguard.signing.envelope import sign_statement
from modelguard.signing.files import (
    cosign_dir,
    default_signature_path,
    file_spec,
    manifest_resources,
    resources_in_manifest,
    signing_ignore_paths,
    view_resources,
)
from modelguard.signing.layout import (
    layouts_from_scan,
    layouts_to_dict,
)
from modelguard.signing.shards import (
    Serialization,
)
from modelguard.signing.statement import (
    ParsedStatement,
    model_statement,
    parse_statement,
)

PREDICATE_SCHEMA = 1


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
    progress: ProgressCallback | None = None,
) -> SignResult:
    """Hash ``path`` (files, tensors, structures), sign the OMS statement, write the bundle.

    A model already signed by another key gets a co-signature in ``model.sig.d/``; the
    files must still match what the first signer signed. With ``record`` the signature lands
    in the ledger as a ``sign`` entry. ``serialization`` picks the OMS resources (default:
    whole files, SHA-256; or shards and/or blake2b, blake3: modelguard.signing.shards).
    ``progress(n, total)``: bytes hashed so far (from worker threads), for a progress display.
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
    scan = scan_model(
        files, file_hash_algorithm=file_spec(spec), threads=threads, progress=progress
    )
    manifest = scan.manifest
    resources = (
        manifest_resources(path, manifest)
        if resources_in_manifest(spec, manifest)
        else view_resources(files, spec, threads, for_signing=True)
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
                else view_resources(files, existing.serialization_spec, threads)
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
