"""What a model signature covers: where the bundles live, which paths are left out, file digests.

Shared by signing (:mod:`modelguard.signing.sign`) and verification
(:mod:`modelguard.signing.verify`). Layout (docs/signature.md): the first signer's bundle is
``model.sig`` (inside a directory model, next to a single-file model), an OpenSSF Model Signing
v1.0 bundle that ``model_signing verify key`` accepts. Every further signer's bundle is
``model.sig.d/<key id>.sig``, also a complete OMS bundle over the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modelguard.errors import (
    FormatError,
)
from modelguard.formats import ModelFiles
from modelguard.manifest import (
    SIGNING_FILE_HASH,
    HashJob,
    Manifest,
    ProgressCallback,
    file_slice,
    open_model,
    run_hash_jobs,
    scan_model,
)
from modelguard.signing.shards import (
    Serialization,
    resources_from_views,
)
from modelguard.signing.statement import (
    DEFAULT_IGNORE_PATHS,
)

DEFAULT_SIGNATURE_NAME = "model.sig"
COSIGN_SUFFIX = ".d"  # model.sig.d/<key id>.sig holds every signer after the first


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


def relative_inside(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def signing_ignore_paths(model: Path, signature_path: Path) -> tuple[str, ...]:
    """OMS's defaults plus the signature file and its co-signature directory, if inside."""
    ignore = list(DEFAULT_IGNORE_PATHS)
    if model.is_dir():
        for candidate in (signature_path, cosign_dir(signature_path)):
            rel = relative_inside(candidate, model)
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


def file_digests(
    files: ModelFiles, threads: int | None = None, progress: ProgressCallback | None = None
) -> dict[str, str]:
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
    digests = run_hash_jobs(files, jobs, threads=threads, progress=progress)
    return {("." if files.single else rel): digests[("file", rel)] for rel in files.members}


def file_spec(spec: Serialization) -> str:
    """The manifest's whole-file hash for ``spec``: the OMS resource digests when they are the same
    function over the same bytes (computed once), else SHA-256."""
    return (
        spec.hash_type
        if spec.method == "files" and spec.hash_type in ("sha256", "blake3")
        else SIGNING_FILE_HASH
    )


def resources_in_manifest(spec: Serialization, manifest: Manifest) -> bool:
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


def view_resources(
    files: ModelFiles, spec: Serialization, threads: int | None, *, for_signing: bool = False
) -> dict[str, str]:
    """OMS resources (shards, blake2b, blake3) hashed from the buffers already read."""
    views = {rel: files.view(rel) for rel in files.members}
    return resources_from_views(
        views, spec, single=files.single, threads=threads, for_signing=for_signing
    )


def resources_of(files: ModelFiles, manifest: Manifest) -> dict[str, str]:
    if files.single:
        return {".": manifest.files[0].digest} if len(manifest.files) == 1 else {}
    return {f.path: f.digest for f in manifest.files}
