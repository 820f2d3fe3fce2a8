"""OMS v1.0 serializations: whole files or fixed-size shards, hashed with the spec's registry.

>>> from modelguard.signing.shards import Serialization, shard_ranges, shard_name, parse_shard_name
>>> shard_ranges(1116, 500)
[(0, 500), (500, 1000), (1000, 1116)]
>>> parse_shard_name(shard_name("model.onnx", 500, 1000))
('model.onnx', 500, 1000)
>>> Serialization("shards", "sha256", 500).resource_algorithm_ok("sha256-sharded-500")
True

The OpenSSF Model Signing v1.0 predicate records how the model was cut into resources:

- ``files``: one resource per regular file, named by its POSIX path relative to the model
  (``"."`` when the model is a single file), digest over the whole file.
- ``shards``: every non-empty file is cut into ``shard_size``-byte ranges (the last one
  shorter), one resource per range named ``path:start:end`` (start inclusive, end exclusive),
  digest over those bytes. Empty files have no shard (what ``model_signing`` 1.1.1 does), so
  they cannot be signed in this mode; :func:`compute_resources` reports them as
  ``path:0:0`` so that a verifier sees them as unsigned (spec section 8.5).

Hash registry (spec): ``sha256`` (required), ``blake2b`` (BLAKE2b-512, 64-byte digests, as
``hashlib.blake2b()`` and ``model_signing`` compute it) and ``blake3`` (32 bytes). The subject
digest stays SHA-256 over the concatenated raw resource digests in every mode.
``model_signing`` 1.1.1 labels shard digests ``sha256-sharded-N``; the v1.0 schema allows
only the registry names, so modelguard writes ``sha256`` and accepts the old label on verify.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from modelguard.errors import BadInputError, FormatError
from modelguard.hashing import Hasher
from modelguard.manifest import feed, list_model_files
from modelguard.safeio import open_regular

METHODS: tuple[str, ...] = ("files", "shards")
OMS_HASHES: tuple[str, ...] = ("sha256", "blake2b", "blake3")
DIGEST_HEX_LENGTH = {"sha256": 64, "blake2b": 128, "blake3": 64}
DEFAULT_SHARD_SIZE = 1_000_000_000  # model_signing's default
MAX_SHARD_SIZE = 1 << 62
_CHUNK = 8 * 1024 * 1024
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_LEGACY_SHARDED = re.compile(r"([a-z0-9]+)-sharded-([1-9][0-9]{0,18})")


def oms_hasher(algorithm: str) -> Hasher:
    """A fresh hasher for an OMS registry name (blake2b here is BLAKE2b-512, as in OMS)."""
    if algorithm == "sha256":
        return hashlib.sha256()
    if algorithm == "blake2b":
        return hashlib.blake2b()
    if algorithm == "blake3":
        return blake3.blake3()
    raise BadInputError(
        f"hash algorithm {algorithm!r} is not in the OMS registry ({', '.join(OMS_HASHES)})"
    )


@dataclass(frozen=True)
class Serialization:
    """How a signature cut the model into resources (the predicate's ``serialization``)."""

    method: str = "files"
    hash_type: str = "sha256"
    shard_size: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BadInputError(f"serialization {self.method!r} is not one of {list(METHODS)}")
        oms_hasher(self.hash_type)
        if self.method == "shards":
            size = self.shard_size
            if (
                not isinstance(size, int)
                or isinstance(size, bool)
                or not 0 < size <= MAX_SHARD_SIZE
            ):
                raise BadInputError(f"shard size {size!r} is not a positive integer")
        elif self.shard_size is not None:
            raise BadInputError("a shard size only applies to shard serialization")

    @property
    def is_default(self) -> bool:
        """Whole files, SHA-256: what every OMS verifier (and the model_signing CLI) checks."""
        return self.method == "files" and self.hash_type == "sha256"

    def to_predicate(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"method": self.method, "hash_type": self.hash_type}
        if self.shard_size is not None:
            fields["shard_size"] = self.shard_size
        return fields

    def resource_algorithm_ok(self, label: object) -> bool:
        """The registry name, or model_signing 1.1.1's ``<hash>-sharded-<shard_size>`` label."""
        if label == self.hash_type:
            return True
        legacy = _LEGACY_SHARDED.fullmatch(label) if isinstance(label, str) else None
        return (
            self.method == "shards"
            and legacy is not None
            and legacy.group(1) == self.hash_type
            and int(legacy.group(2)) == self.shard_size
        )


def shard_name(path: str, start: int, end: int) -> str:
    return f"{path}:{start}:{end}"


def parse_shard_name(name: object, *, allow_empty: bool = False) -> tuple[str, int, int]:
    """``path:start:end`` -> (path, start, end); offsets are plain decimals, start < end.

    ``allow_empty`` admits ``path:0:0``, the name :func:`compute_resources` gives an empty file.
    """
    if not isinstance(name, str):
        raise FormatError("shard resource name is missing")
    parts = name.rsplit(":", 2)
    if len(parts) != 3 or not all(_DECIMAL.fullmatch(p) for p in parts[1:]):
        raise FormatError(f"shard resource name {name!r} is not 'path:start:end'")
    start, end = int(parts[1]), int(parts[2])
    if start >= end and not (allow_empty and start == end == 0):
        raise FormatError(f"shard resource {name!r} is empty or reversed")
    return parts[0], start, end


def shard_ranges(size: int, shard_size: int) -> list[tuple[int, int]]:
    """model_signing's cut: ``[0, s), [s, 2s), ..., [ks, size)``; nothing for an empty file."""
    return [(start, min(start + shard_size, size)) for start in range(0, size, shard_size)]


def resource_sort_key(name: str, method: str) -> tuple[Any, ...]:
    """The order model_signing lists resources in (PurePosixPath order, then offsets)."""
    if method == "shards":
        path, start, end = parse_shard_name(name)
        return (_parts(path), start, end)
    return (_parts(name),)


def _parts(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part not in ("", "."))


def _hash_view(view: memoryview, algorithm: str) -> str:
    hasher = oms_hasher(algorithm)
    for start in range(0, view.nbytes, _CHUNK):
        feed(hasher, view[start : start + _CHUNK], algorithm)
    return hasher.hexdigest()


def resources_from_views(
    views: Mapping[str, memoryview],
    serialization: Serialization,
    *,
    single: bool,
    threads: int | None = None,
    for_signing: bool = False,
) -> dict[str, str]:
    """The resources (name -> hex digest) of files already read or mapped (``rel -> bytes``).

    ``single``: the model is one file, whose resource is named ``"."``. With ``for_signing``,
    files that shard serialization cannot name (empty, or with ``:`` in the path) are refused;
    otherwise an empty file shows up as ``path:0:0``, so that a verifier sees it as unsigned.
    """
    jobs: list[tuple[str, memoryview]] = []
    empty: list[str] = []
    for rel, view in sorted(views.items()):
        name = "." if single else rel
        if serialization.method == "files":
            jobs.append((name, view))
            continue
        if for_signing and ":" in name:
            raise BadInputError(
                "a ':' in a file name cannot be named in shard serialization "
                "(use --serialization files)",
                path=rel,
            )
        if view.nbytes == 0:
            if for_signing:
                raise BadInputError(
                    "an empty file has no shard, so shard serialization cannot sign it "
                    "(remove it, ignore it, or use --serialization files)",
                    path=rel,
                )
            empty.append(shard_name(name, 0, 0))
        assert serialization.shard_size is not None  # checked in Serialization
        for start, end in shard_ranges(view.nbytes, serialization.shard_size):
            jobs.append((shard_name(name, start, end), view[start:end]))
    jobs.sort(key=lambda job: -job[1].nbytes)  # largest first keeps every core busy
    with ThreadPoolExecutor(
        max_workers=threads or os.cpu_count() or 1, thread_name_prefix="modelguard-oms"
    ) as pool:
        digests = list(pool.map(lambda job: _hash_view(job[1], serialization.hash_type), jobs))
    resources = {name: digest for (name, _), digest in zip(jobs, digests, strict=True)}
    empty_digest = oms_hasher(serialization.hash_type).hexdigest()
    resources.update({name: empty_digest for name in empty})
    return resources


def compute_resources(
    model: Path,
    serialization: Serialization,
    *,
    ignore_paths: Sequence[str] = (),
    threads: int | None = None,
    for_signing: bool = False,
) -> dict[str, str]:
    """The resources ``serialization`` gives the model as it is on disk.

    Each file is opened once (regular files only, via :mod:`modelguard.safeio`) and mapped
    read-only from that descriptor; every range is hashed from the mapping in a thread pool.
    """
    root, rels = list_model_files(model, ignore_paths=ignore_paths)
    views: dict[str, memoryview] = {}
    try:
        for rel in rels:
            with open_regular(root / rel, what="model file") as handle:
                size = os.fstat(handle.fileno()).st_size
                views[rel] = (
                    memoryview(mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ))
                    if size
                    else memoryview(b"")
                )
        try:
            return resources_from_views(
                views,
                serialization,
                single=not model.is_dir(),
                threads=threads,
                for_signing=for_signing,
            )
        except BadInputError as error:
            raise BadInputError(error.message, path=str(root / (error.path or ""))) from None
    finally:
        for view in views.values():
            view.release()


def resource_path(name: str, method: str) -> str:
    """The file a resource belongs to (its name for files, the path part of a shard)."""
    return parse_shard_name(name, allow_empty=True)[0] if method == "shards" else name


def describe_resource(name: str, method: str) -> str:
    """How a report names a resource: the model file, a file, or a byte range of a file."""
    if method == "shards":
        path, start, end = parse_shard_name(name, allow_empty=True)
        where = "the model file" if path == "." else f"file {path!r}"
        return f"{where} (empty, no shard)" if end == 0 else f"bytes {start}..{end} of {where}"
    return "the model file" if name == "." else f"file {name!r}"


def unsigned_files(model: Path, signed_paths: set[str], ignore_paths: Sequence[str]) -> list[str]:
    """Files of a directory model that no resource covers (what ``--ignore-unsigned-files`` skips)."""
    if not model.is_dir():
        return []
    _, rels = list_model_files(model, ignore_paths=ignore_paths)
    return [rel for rel in rels if rel not in signed_paths]
