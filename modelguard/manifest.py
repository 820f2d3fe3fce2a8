"""Per-layer model manifests: whole-file, structure and tensor digests plus an RFC 9162 layer root.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.manifest import Manifest, build_manifest, compare_manifests
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": np.ones(4, np.float32)}, d / "m.safetensors")
>>> m = build_manifest(d / "m.safetensors")
>>> [(f.path, f.format, [t.name for t in f.tensors]) for f in m.files]
[('m.safetensors', 'safetensors', ['w'])]
>>> Manifest.from_dict(m.to_dict()) == m and compare_manifests(m, m).identical
True

The manifest knows nothing about file formats: adapters in :mod:`modelguard.formats` give it
:class:`~modelguard.formats.TensorSlice` values and structure bytes, and it hashes them in a
thread pool (hashlib and blake3 release the GIL), reading through mmap views in bounded chunks.
Digests depend only on the bytes, never on thread count, chunk size or platform. The format of
the JSON document and of the Merkle leaves is specified in docs/manifest.md.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import blake3
import rfc8785

from modelguard.errors import BadInputError, DigestMismatchError, FormatError, UnsafeModelError
from modelguard.formats import DTYPE_BITS, ModelFiles, ParsedModel, TensorSlice, parse_model_file
from modelguard.hashing import HASH_ALGORITHMS, Hasher, check_algorithm, new_hasher

if TYPE_CHECKING:
    import numpy as np

MANIFEST_VERSION = 1
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024
# What a signature's manifest uses (docs/signature.md): tensors, structures and the byte layout
# in BLAKE3, whole files in SHA-256 (the same digests as the OMS resources, computed once).
SIGNING_LAYER_HASH = "blake3"
SIGNING_FILE_HASH = "sha256"
RECORD_FORMATS = ("onnx", "safetensors", "pytorch", "raw")
_HEX64 = re.compile(r"[0-9a-f]{64}")

# progress(n, total): n more bytes hashed, of ``total`` bytes of hashing planned for this pass
# (a byte hashed by two functions counts twice); called from worker threads
ProgressCallback = Callable[[int, int], None]


# --- value objects ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorRecord:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    digest: str  # hex digest of the canonical tensor bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "nbytes": self.nbytes,
            "digest": self.digest,
        }


@dataclass(frozen=True)
class FileRecord:
    path: str  # posix, relative to the model root
    size: int
    digest: str  # whole-file digest
    format: str  # "onnx" | "safetensors" | "pytorch" | "raw"
    structure_digest: str | None
    tensors: tuple[TensorRecord, ...]  # sorted by name

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "digest": self.digest,
            "format": self.format,
            "structure_digest": self.structure_digest,
            "tensors": [t.to_dict() for t in self.tensors],
        }

    def tensor(self, name: str) -> TensorRecord | None:
        return next((t for t in self.tensors if t.name == name), None)


def _leaves(
    hash_algorithm: str, files: Iterable[FileRecord], file_algorithm: str | None = None
) -> list[bytes]:
    leaves: list[bytes] = []
    for record in files:
        leaves.append(
            rfc8785.dumps(
                {
                    "kind": "file",
                    "hash_algorithm": file_algorithm or hash_algorithm,
                    "path": record.path,
                    "format": record.format,
                    "size": record.size,
                    "digest": record.digest,
                }
            )
        )
        if record.structure_digest is not None:
            leaves.append(
                rfc8785.dumps(
                    {
                        "kind": "structure",
                        "hash_algorithm": hash_algorithm,
                        "path": record.path,
                        "digest": record.structure_digest,
                    }
                )
            )
        for t in record.tensors:
            leaves.append(
                rfc8785.dumps(
                    {
                        "kind": "tensor",
                        "hash_algorithm": hash_algorithm,
                        "path": record.path,
                        "name": t.name,
                        "dtype": t.dtype,
                        "shape": list(t.shape),
                        "nbytes": t.nbytes,
                        "digest": t.digest,
                    }
                )
            )
    return leaves


@dataclass(frozen=True)
class Manifest:
    hash_algorithm: (
        str  # tensor and structure digests (and file digests unless file_hash_algorithm)
    )
    files: tuple[FileRecord, ...]  # sorted by path
    layer_root: str  # hex RFC 9162 Merkle tree hash over layer_leaves()
    version: int = MANIFEST_VERSION
    # whole-file digests, when another function than hash_algorithm (None: the same)
    file_hash_algorithm: str | None = None

    @classmethod
    def create(
        cls,
        hash_algorithm: str,
        files: Iterable[FileRecord],
        file_hash_algorithm: str | None = None,
    ) -> Manifest:
        ordered = tuple(sorted(files, key=lambda f: f.path))
        if file_hash_algorithm == hash_algorithm:
            file_hash_algorithm = None
        leaves = _leaves(hash_algorithm, ordered, file_hash_algorithm)
        from ledger.merkle import root_hash  # here: `sign` starts hashing before ledger loads

        return cls(
            hash_algorithm,
            ordered,
            root_hash(leaves).hex(),
            file_hash_algorithm=file_hash_algorithm,
        )

    @property
    def file_algorithm(self) -> str:
        """The function of the whole-file digests."""
        return self.file_hash_algorithm or self.hash_algorithm

    @property
    def scheme(self) -> tuple[str, str]:
        """(tensor and structure hash, whole-file hash): two manifests compare only if equal."""
        return self.hash_algorithm, self.file_algorithm

    def layer_leaves(self) -> list[bytes]:
        """Leaf data in tree order: per file a file leaf, a structure leaf, then tensor leaves."""
        return _leaves(self.hash_algorithm, self.files, self.file_hash_algorithm)

    def leaf_index(self, path: str, tensor: str | None = None) -> int:
        """Index of a file's leaf (tensor None) or of one tensor's leaf, for membership proofs."""
        index = 0
        for record in self.files:
            if record.path == path:
                if tensor is None:
                    return index
                offset = 2 if record.structure_digest is not None else 1
                for position, t in enumerate(record.tensors):
                    if t.name == tensor:
                        return index + offset + position
                break
            index += 1 + (record.structure_digest is not None) + len(record.tensors)
        raise KeyError(f"{path}:{tensor}" if tensor else path)

    def file(self, path: str) -> FileRecord | None:
        return next((f for f in self.files if f.path == path), None)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def tensor_count(self) -> int:
        return sum(len(f.tensors) for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": self.version,
            "hash_algorithm": self.hash_algorithm,
            "layer_root": self.layer_root,
            "files": [f.to_dict() for f in self.files],
        }
        if self.file_hash_algorithm is not None:
            out["file_hash_algorithm"] = self.file_hash_algorithm
        return out

    def canonical_json(self) -> bytes:
        """RFC 8785 (JCS) bytes of :meth:`to_dict`."""
        return bytes(rfc8785.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Validate and rebuild; FormatError names the first problem (including a wrong layer_root)."""
        required = {"version", "hash_algorithm", "layer_root", "files"}
        optional = {"file_hash_algorithm"} if isinstance(data, Mapping) else set()
        _keys(data, required | (optional & set(data)), "manifest")
        if data["version"] != MANIFEST_VERSION:
            raise FormatError(f"manifest: unsupported version {data['version']!r}")
        algorithm = data["hash_algorithm"]
        if algorithm not in HASH_ALGORITHMS:
            raise FormatError(f"manifest: unknown hash_algorithm {algorithm!r}")
        file_algorithm = data.get("file_hash_algorithm")
        if file_algorithm is not None and (
            file_algorithm not in HASH_ALGORITHMS or file_algorithm == algorithm
        ):
            raise FormatError(f"manifest: bad file_hash_algorithm {file_algorithm!r}")
        if not isinstance(data["files"], list):
            raise FormatError("manifest: files must be a list")
        files = tuple(_file_from_dict(f) for f in data["files"])
        paths = [f.path for f in files]
        if paths != sorted(set(paths)):
            raise FormatError("manifest: files must be sorted by path and unique")
        manifest = cls.create(algorithm, files, file_algorithm)
        if data["layer_root"] != manifest.layer_root:
            raise FormatError(
                f"manifest: layer_root {data['layer_root']!r} does not match its leaves ({manifest.layer_root})"
            )
        return manifest


def _keys(data: Any, expected: set[str], what: str) -> None:
    if not isinstance(data, Mapping) or set(data) != expected:
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise FormatError(f"{what}: expected keys {sorted(expected)}, got {got}")


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FormatError(f"{what} must be a non-negative integer")
    return value


def _digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise FormatError(f"{what} must be 64 lowercase hex characters")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise FormatError(f"{what} must be a non-empty string")
    return value


def _file_from_dict(data: Any) -> FileRecord:
    _keys(
        data, {"path", "size", "digest", "format", "structure_digest", "tensors"}, "manifest file"
    )
    path = _str(data["path"], "file path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or pure.as_posix() != path:
        raise FormatError(f"manifest: file path {path!r} is not a normalized relative posix path")
    if data["format"] not in RECORD_FORMATS:
        raise FormatError(f"manifest: {path}: unknown format {data['format']!r}")
    structure = data["structure_digest"]
    if (structure is None) != (data["format"] == "raw"):
        raise FormatError(
            f"manifest: {path}: structure_digest must be present exactly for model files"
        )
    if not isinstance(data["tensors"], list):
        raise FormatError(f"manifest: {path}: tensors must be a list")
    tensors = []
    for t in data["tensors"]:
        _keys(t, {"name", "dtype", "shape", "nbytes", "digest"}, f"manifest tensor in {path}")
        if t["dtype"] not in DTYPE_BITS:
            raise FormatError(f"manifest: {path}: unknown dtype {t['dtype']!r}")
        if not isinstance(t["shape"], list):
            raise FormatError(f"manifest: {path}: shape must be a list")
        tensors.append(
            TensorRecord(
                _str(t["name"], "tensor name"),
                t["dtype"],
                tuple(_int(d, "shape entry") for d in t["shape"]),
                _int(t["nbytes"], "nbytes"),
                _digest(t["digest"], "tensor digest"),
            )
        )
    names = [t.name for t in tensors]
    if names != sorted(set(names)):
        raise FormatError(f"manifest: {path}: tensors must be sorted by name and unique")
    if data["format"] == "raw" and tensors:
        raise FormatError(f"manifest: {path}: a raw file has no tensors")
    return FileRecord(
        path,
        _int(data["size"], "file size"),
        _digest(data["digest"], "file digest"),
        data["format"],
        None if structure is None else _digest(structure, "structure digest"),
        tuple(tensors),
    )


# --- tensor inclusion proofs ----------------------------------------------------------------


@dataclass(frozen=True)
class TensorProof:
    """RFC 9162 inclusion proof: one tensor's leaf is in a manifest's layer root.

    Whoever holds a trusted layer root (a verified signature's, or a ledger entry's) can check
    one tensor with this proof and the tensor's bytes alone, without the rest of the manifest.
    """

    layer_root: str
    tree_size: int
    leaf_index: int
    leaf: dict[str, Any]  # the tensor leaf's JSON object (docs/manifest.md)
    audit_path: tuple[str, ...]  # hex node hashes, bottom first (RFC 9162 PATH)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer_root": self.layer_root,
            "tree_size": self.tree_size,
            "leaf_index": self.leaf_index,
            "leaf": self.leaf,
            "audit_path": list(self.audit_path),
        }

    @classmethod
    def from_dict(cls, data: Any) -> TensorProof:
        _keys(data, {"layer_root", "tree_size", "leaf_index", "leaf", "audit_path"}, "proof")
        leaf = data["leaf"]
        _keys(
            leaf,
            {"kind", "hash_algorithm", "path", "name", "dtype", "shape", "nbytes", "digest"},
            "proof leaf",
        )
        if leaf["kind"] != "tensor" or leaf["hash_algorithm"] not in HASH_ALGORITHMS:
            raise FormatError("proof leaf is not a tensor leaf with a known hash algorithm")
        path = data["audit_path"]
        if not isinstance(path, list) or len(path) > 64:
            raise FormatError("proof audit_path must be a list of at most 64 digests")
        return cls(
            _digest(data["layer_root"], "proof layer_root"),
            _int(data["tree_size"], "proof tree_size"),
            _int(data["leaf_index"], "proof leaf_index"),
            dict(leaf),
            tuple(_digest(h, "proof node") for h in path),
        )

    def check(self, layer_root: str, data: bytes | memoryview | None = None) -> None:
        """Raise :class:`DigestMismatchError` unless the leaf is in ``layer_root`` (the trusted
        root, never the proof's own) and, when given, ``data`` hashes to the leaf's digest."""
        from ledger.errors import ProofError
        from ledger.merkle import leaf_hash, root_from_inclusion_proof

        name = f"tensor {self.leaf['name']!r} in {self.leaf['path']!r}"
        try:
            implied = root_from_inclusion_proof(
                self.leaf_index,
                self.tree_size,
                leaf_hash(bytes(rfc8785.dumps(self.leaf))),
                [bytes.fromhex(h) for h in self.audit_path],
            )
        except ProofError as error:
            raise DigestMismatchError(f"{name}: {error}") from None
        if implied.hex() != layer_root:
            raise DigestMismatchError(f"{name}: the proof does not lead to layer root {layer_root}")
        if data is not None:
            view = memoryview(data).cast("B")
            if view.nbytes != self.leaf["nbytes"] or (
                hash_view(view, self.leaf["hash_algorithm"]) != self.leaf["digest"]
            ):
                raise DigestMismatchError(f"{name}: the bytes differ from the proven digest")


def prove_tensor(manifest: Manifest, name: str, path: str | None = None) -> TensorProof:
    """The inclusion proof of tensor ``name`` (in file ``path`` when several files hold one)."""
    holders = [f.path for f in manifest.files if f.tensor(name) is not None]
    if path is not None:
        holders = [p for p in holders if p == path]
    if not holders:
        raise BadInputError(
            f"no tensor {name!r} in the manifest" + (f" file {path!r}" if path else "")
        )
    if len(holders) > 1:
        raise BadInputError(
            f"tensor {name!r} is in several files ({', '.join(holders)}): name the file"
        )
    from ledger.merkle import inclusion_path_ranges, root_hash

    leaves = manifest.layer_leaves()
    index = manifest.leaf_index(holders[0], name)
    audit = [root_hash(leaves[lo:hi]).hex() for lo, hi in inclusion_path_ranges(index, len(leaves))]
    return TensorProof(
        manifest.layer_root, len(leaves), index, json.loads(leaves[index]), tuple(audit)
    )


# --- walking a model --------------------------------------------------------------------------


def model_root(path: Path) -> Path:
    """A directory is its own root; a single file's root is its parent directory."""
    return path if path.is_dir() else path.parent


def _ignored(rel: str, ignore: Sequence[str]) -> bool:
    return any(rel == p or rel.startswith(p.rstrip("/") + "/") for p in ignore)


def _utf8_name(rel: str, full: Path) -> str:
    """File names travel in signed JSON: refuse one that is not valid UTF-8 (exit 2)."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(full).decode("utf-8", "backslashreplace")
        raise BadInputError("file name is not valid UTF-8", path=shown) from None
    return rel


def open_model(
    path: Path,
    *,
    allow_symlinks: bool = False,
    ignore_paths: Sequence[str] = (),
    private: bool | Callable[[str], bool] = False,
) -> ModelFiles:
    """List the model's files once and return them as a :class:`ModelFiles` (opened on first use).

    Everything that reads the model afterwards (manifest, layout check, ONNX Runtime) takes its
    bytes from the result, so each file is read once, through one descriptor.
    """
    root, rels = list_model_files(
        Path(path), allow_symlinks=allow_symlinks, ignore_paths=ignore_paths
    )
    return ModelFiles(
        root,
        rels,
        single=not Path(path).is_dir(),
        ignore=ignore_paths,
        private=private,
        follow_symlinks=allow_symlinks,
    )


def list_model_files(
    path: Path, *, allow_symlinks: bool = False, ignore_paths: Sequence[str] = ()
) -> tuple[Path, list[str]]:
    """(model root, posix paths of every regular file under it, sorted); refuses symlinks by default."""
    try:
        info = os.lstat(path)
    except OSError as error:
        raise BadInputError(f"cannot read: {error.strerror or error}", path=str(path)) from error
    if stat.S_ISLNK(info.st_mode) and not allow_symlinks:
        raise UnsafeModelError("is a symlink (pass --allow-symlinks to follow it)", path=str(path))
    ignore = [PurePosixPath(p.replace("\\", "/")).as_posix() for p in ignore_paths]
    if not path.is_dir():
        if not path.is_file():
            raise BadInputError("not a regular file or directory", path=str(path))
        return path.parent, [_utf8_name(path.name, path)]
    found: list[str] = []
    seen_dirs = {os.path.realpath(path)}
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as error:
            raise BadInputError(
                f"cannot list directory: {error.strerror or error}", path=str(directory)
            ) from error
        for entry in entries:
            full = Path(entry.path)
            rel = _utf8_name(full.relative_to(path).as_posix(), full)
            if _ignored(rel, ignore):
                continue
            if entry.is_symlink():
                if not allow_symlinks:
                    raise UnsafeModelError(
                        "is a symlink (pass --allow-symlinks to follow it)", path=str(full)
                    )
                real = os.path.realpath(full)
                if entry.is_dir(follow_symlinks=True):
                    if real in seen_dirs:
                        raise UnsafeModelError("symlink loop", path=str(full))
                    seen_dirs.add(real)
                    stack.append(full)
                    continue
            if entry.is_dir(follow_symlinks=allow_symlinks):
                stack.append(full)
            elif entry.is_file(follow_symlinks=allow_symlinks):
                found.append(rel)
            else:
                raise UnsafeModelError(
                    "not a regular file (device, fifo or socket)", path=str(full)
                )
    return path, sorted(found)


# --- hashing ----------------------------------------------------------------------------------


def _hasher(algorithm: str, parallel: bool) -> Hasher:
    if algorithm == "blake3" and parallel:
        # blake3's own tree parallelism: same digest for any thread count
        return blake3.blake3(max_threads=blake3.blake3.AUTO)
    return new_hasher(algorithm)


# SHA-256 and BLAKE2 stall on input that is not in cache (on this VM, hashing straight from
# mapped page-cache pages was 35 % slower than from a small buffer); BLAKE3's wide SIMD does
# not, so it reads the mapping directly. bench/oms_peers.py measures both.
_BOUNCE = 1024 * 1024
_bounce = threading.local()


def _buffer() -> memoryview:
    """This thread's cache-sized buffer."""
    buffer = getattr(_bounce, "buffer", None)
    if buffer is None:
        buffer = _bounce.buffer = memoryview(bytearray(_BOUNCE))
    return buffer


def feed(hasher: Hasher, data: memoryview, algorithm: str) -> None:
    """``hasher.update(data)``, through a per-thread cache-sized buffer unless BLAKE3."""
    if algorithm == "blake3" or data.nbytes <= _BOUNCE:
        hasher.update(data)
        return
    buffer = _buffer()
    for start in range(0, data.nbytes, _BOUNCE):
        piece = data[start : start + _BOUNCE]
        size = piece.nbytes
        buffer[:size] = piece  # a copy of the same bytes; the digest is the same
        hasher.update(buffer[:size])


def hash_view(
    view: memoryview,
    algorithm: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    parallel: bool = False,
    progress: ProgressCallback | None = None,
) -> str:
    """Hex digest of ``view`` fed in chunks of ``chunk_size`` bytes."""
    hasher = _hasher(algorithm, parallel)
    for start in range(0, view.nbytes, chunk_size):
        chunk = view[start : start + chunk_size]
        feed(hasher, chunk, algorithm)
        if progress is not None:
            progress(chunk.nbytes, view.nbytes)
    return hasher.hexdigest()


def hash_bytes(data: bytes, algorithm: str) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return hasher.hexdigest()


@dataclass
class HashJob:
    """One digest to compute: ``length`` bytes of file ``rel`` (read through ``view``)."""

    key: tuple[str, ...]
    rel: str  # the model file whose buffer is read (its pages are dropped once all its jobs ran)
    size: int
    view: Callable[[], memoryview]
    algorithm: str
    offset: int | None = None  # where the bytes lie in ``rel`` (None: decoded, not the file's)
    # digests of byte ranges of the same bytes, computed in the same read: (key, offset, length)
    parts: tuple[tuple[tuple[str, ...], int, int], ...] = ()
    part_algorithm: str = ""


def run_hash_jobs(
    files: ModelFiles,
    jobs: Sequence[HashJob],
    *,
    threads: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> dict[tuple[str, ...], str]:
    """Every job's hex digest, computed concurrently, one file after another.

    Jobs run grouped by file (in ``files.members`` order, largest first inside a file), so the
    threads share one file's pages; each chunk's pages are released once hashed, and a file's
    once its last job finished (:meth:`ModelFiles.drop_pages`, read-only mappings only): resident
    memory is a few chunks per thread, whatever the model's size. Each job's bytes go through
    its own function exactly once. Once ``stop`` is set, every job raises :class:`ScanCancelled`
    at its next chunk.
    """
    workers = threads if threads is not None else default_threads()
    if workers < 1:
        raise BadInputError("threads must be at least 1")
    order = {rel: i for i, rel in enumerate(files.members)}
    ordered = sorted(jobs, key=lambda j: (order.get(j.rel, len(order)), -j.size, j.key))
    pending: dict[str, int] = {}
    for job in ordered:
        pending[job.rel] = pending.get(job.rel, 0) + 1
    lock = threading.Lock()
    work = sum(job.size * (2 if job.parts else 1) for job in jobs)

    def advance(n: int) -> None:
        if progress is not None:
            with lock:
                progress(n, work)

    def run(job: HashJob) -> list[tuple[tuple[str, ...], str]]:
        hasher = new_hasher(job.algorithm)
        parts = [new_hasher(job.part_algorithm) for _ in job.parts]
        # an own view of the reader's buffer (a reader may hand out the same view every time)
        with memoryview(job.view()) as view:
            for start in range(0, view.nbytes, chunk_size):
                if stop is not None and stop.is_set():
                    raise ScanCancelled
                chunk = view[start : start + chunk_size]
                if job.parts:
                    _feed_parts(
                        chunk, start, hasher, job.parts, parts, copy=job.algorithm != "blake3"
                    )
                else:
                    feed(hasher, chunk, job.algorithm)
                advance(chunk.nbytes * (2 if job.parts else 1))
                if job.offset is not None:
                    files.drop_pages(job.rel, job.offset + start, chunk.nbytes)
        with lock:
            pending[job.rel] -= 1
            last = pending[job.rel] == 0
        if last:
            files.drop_pages(job.rel)
        done = [(part[0], h.hexdigest()) for part, h in zip(job.parts, parts, strict=True)]
        return [(job.key, hasher.hexdigest()), *done]

    if workers == 1 or len(ordered) <= 1:
        return {k: d for job in ordered for k, d in run(job)}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelguard-hash") as pool:
        return {k: d for result in pool.map(run, ordered) for k, d in result}


def _feed_parts(
    chunk: memoryview,
    at: int,
    whole: Hasher,
    ranges: Sequence[tuple[tuple[str, ...], int, int]],
    hashers: Sequence[Hasher],
    *,
    copy: bool = True,
) -> None:
    """Feed ``chunk`` (file offset ``at``) to ``whole`` and each overlapping range's hasher,
    one cache-sized window at a time: the bytes are read from memory once for both functions.

    ``copy``: through this thread's buffer (what SHA-256 needs, :func:`feed`); BLAKE3 hashes the
    window in place and the ranges find it still in cache (measured: 15 % less CPU than a copy).
    """
    buffer = _buffer()
    first = 0
    for w0 in range(at, at + chunk.nbytes, _BOUNCE):
        w1 = min(at + chunk.nbytes, w0 + _BOUNCE)
        if copy:
            window = buffer[: w1 - w0]
            window[:] = chunk[w0 - at : w1 - at]
        else:
            window = chunk[w0 - at : w1 - at]
        whole.update(window)
        while first < len(ranges) and ranges[first][1] + ranges[first][2] <= w0:
            first += 1
        i = first
        while i < len(ranges) and ranges[i][1] < w1:
            lo, hi = max(ranges[i][1], w0), min(ranges[i][1] + ranges[i][2], w1)
            if hi > lo:
                hashers[i].update(window[lo - w0 : hi - w0])
            i += 1


def default_threads() -> int:
    """The CPUs this process may run on (``taskset`` and cgroups respected where visible)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# A tiled file's bytes between tensors are cut into segments of at most this many bytes.
GAP_SEGMENT = 64 * 1024 * 1024

# (offset, length, tensor name or None for a gap, hex digest) tiling one file
LayoutSegment = tuple[int, int, str | None, str]


@dataclass
class _Plan:
    files: dict[str, tuple[int, str, ParsedModel | None]] = field(
        default_factory=dict
    )  # path -> (size, format, parsed)
    jobs: list[HashJob] = field(default_factory=list)
    # file -> [(offset, length, tensor name or None)] when every tensor lies verbatim in a file
    tiles: dict[str, list[tuple[int, int, str | None]]] | None = None


def file_slice(files: ModelFiles, rel: str, offset: int, length: int) -> Callable[[], memoryview]:
    """A reader of ``length`` bytes of ``rel`` at ``offset`` (from the model's one buffer)."""
    return lambda: files.view(rel)[offset : offset + length]


def _tiles(
    files: ModelFiles, parsed: Mapping[str, ParsedModel | None]
) -> dict[str, list[tuple[int, int, str | None]]] | None:
    """Tensor and gap ranges tiling every non-empty file; None if some tensor is not verbatim."""
    placed: dict[str, list[tuple[int, int, str]]] = {}
    for model in parsed.values():
        if model is None:
            continue
        for tensor in model.tensors:
            if tensor.location is None or tensor.location[2] != tensor.nbytes:
                return None
            where, offset, length = tensor.location
            if where not in files.members:
                return None
            placed.setdefault(where, []).append((offset, length, tensor.name))
    tiles: dict[str, list[tuple[int, int, str | None]]] = {}
    for where, tensors in placed.items():
        size = files.size(where)
        segments: list[tuple[int, int, str | None]] = []
        cursor = 0
        for offset, length, name in sorted(tensors):
            if offset < cursor or offset + length > size:
                return None  # overlapping or out-of-range tensors: no tiling
            segments += _gap_ranges(cursor, offset)
            segments.append((offset, length, name))
            cursor = offset + length
        segments += _gap_ranges(cursor, size)
        tiles[where] = segments
    for rel in files.members:  # files without tensors (configs, containers): gap segments too,
        if rel not in tiles and files.size(rel):  # so verify hashes every byte on all cores
            tiles[rel] = _gap_ranges(0, files.size(rel))
    return tiles


def _gap_ranges(start: int, end: int) -> list[tuple[int, int, str | None]]:
    return [(at, min(GAP_SEGMENT, end - at), None) for at in range(start, end, GAP_SEGMENT)]


def _plan(
    files: ModelFiles,
    hash_algorithm: str,
    file_algorithm: str,
    tile: bool,
    known: Mapping[str, ParsedModel | None] | None = None,
) -> _Plan:
    plan = _Plan()
    for rel in files.members:
        parsed = (
            known[rel]
            if known is not None and rel in known
            else parse_model_file(files.root / rel, root=files.root, files=files)
        )
        size = files.size(rel)
        plan.files[rel] = (size, parsed.format if parsed else "raw", parsed)
        plan.jobs.append(
            HashJob(("file", rel), rel, size, file_slice(files, rel, 0, size), file_algorithm, 0)
        )
        if parsed is not None:
            for t in parsed.tensors:
                where, at = (t.location[0], t.location[1]) if t.location else (rel, None)
                plan.jobs.append(
                    HashJob(("tensor", rel, t.name), where, t.nbytes, t.read, hash_algorithm, at)
                )
    if tile:
        plan.tiles = _tiles(files, {rel: entry[2] for rel, entry in plan.files.items()})
        for where, segments in (plan.tiles or {}).items():
            for offset, length, name in segments:
                if name is None:
                    job = HashJob(
                        ("gap", where, str(offset)),
                        where,
                        length,
                        file_slice(files, where, offset, length),
                        hash_algorithm,
                        offset,
                    )
                    plan.jobs.append(job)
    return plan


def _fuse(plan: _Plan, hash_algorithm: str) -> None:
    """One job per tiled file: its whole-file digest and its segments' digests in one read."""
    assert plan.tiles is not None
    keys: dict[tuple[str, int, str], tuple[str, ...]] = {}
    kept: list[HashJob] = []
    files: dict[str, HashJob] = {}
    for job in plan.jobs:
        if job.rel not in plan.tiles:
            kept.append(job)
        elif job.key[0] == "file":
            files[job.rel] = job
        elif job.key[0] == "tensor":
            assert job.offset is not None  # tiled: every tensor lies verbatim in its file
            keys[(job.rel, job.offset, job.key[2])] = job.key
    for where, segments in plan.tiles.items():
        parts = tuple(
            (
                ("gap", where, str(offset)) if name is None else keys[(where, offset, name)],
                offset,
                length,
            )
            for offset, length, name in segments
        )
        job = files[where]
        kept.append(
            HashJob(
                job.key,
                where,
                job.size,
                job.view,
                job.algorithm,
                0,
                parts,
                hash_algorithm,
            )
        )
    plan.jobs = kept


@dataclass(frozen=True)
class Scan:
    """One pass over a model: its manifest and, when every tensor lies verbatim, its byte layout."""

    manifest: Manifest
    # file -> segments tiling it (tensor digests from the manifest, gaps hashed in the same pass)
    layout: dict[str, list[LayoutSegment]] | None


def scan_model(
    files: ModelFiles,
    *,
    hash_algorithm: str = SIGNING_LAYER_HASH,
    file_hash_algorithm: str | None = SIGNING_FILE_HASH,
    layout: bool = True,
    threads: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    parsed_files: Mapping[str, ParsedModel | None] | None = None,
    stop: threading.Event | None = None,
) -> Scan:
    """Parse each file once and compute every digest once, concurrently, from the same buffers.

    Whole files are hashed with ``file_hash_algorithm`` (default: SHA-256, the OMS resource
    digests), tensors, structures and the gaps between tensors with ``hash_algorithm`` (default
    BLAKE3). No byte goes through the same function twice. ``parsed_files``: files the caller has
    already parsed from these ``files`` (``parse_model_file``), not parsed again.
    ``progress(n, total)``: bytes just hashed (from worker threads); ``stop``: once set, the
    scan raises :class:`ScanCancelled`.
    """
    check_algorithm(hash_algorithm)
    file_algorithm = check_algorithm(file_hash_algorithm or hash_algorithm)
    if chunk_size <= 0:
        raise BadInputError("chunk size must be positive")
    plan = _plan(files, hash_algorithm, file_algorithm, layout, parsed_files)
    workers = threads or default_threads()
    tiled_files = len(plan.tiles or ())
    if tiled_files and (tiled_files % workers == 0 or tiled_files >= 4 * workers):
        # the files alone keep every thread busy to the end: read each file once for both
        _fuse(plan, hash_algorithm)
    digests = run_hash_jobs(
        files, plan.jobs, threads=threads, chunk_size=chunk_size, progress=progress, stop=stop
    )
    records = []
    for rel, (size, kind, parsed) in plan.files.items():
        tensors: tuple[TensorRecord, ...] = ()
        structure_digest = None
        if parsed is not None:
            structure_digest = hash_bytes(parsed.structure, hash_algorithm)
            tensors = tuple(
                TensorRecord(t.name, t.dtype, t.shape, t.nbytes, digests[("tensor", rel, t.name)])
                for t in parsed.tensors
            )
        records.append(
            FileRecord(rel, size, digests[("file", rel)], kind, structure_digest, tensors)
        )
    manifest = Manifest.create(hash_algorithm, records, file_algorithm)
    tiled: dict[str, list[LayoutSegment]] | None = None
    if plan.tiles is not None:
        by_name = {
            (t.location[0], t.location[1], t.name): digests[("tensor", rel, t.name)]
            for rel, (_, _, parsed) in plan.files.items()
            if parsed is not None
            for t in parsed.tensors
            if t.location is not None
        }
        tiled = {
            where: [
                (
                    offset,
                    length,
                    name,
                    digests[("gap", where, str(offset))]
                    if name is None
                    else by_name[(where, offset, name)],
                )
                for offset, length, name in segments
            ]
            for where, segments in plan.tiles.items()
        }
    return Scan(manifest, tiled)


class ScanCancelled(Exception):
    """A started scan was cancelled (:meth:`StartedScan.cancel`); never reaches a user."""


class StartedScan:
    """A :func:`scan_model` already running in the background (:func:`start_scan`).

    One file's SHA-256 is one serial pass, the longest part of signing it: started first, it
    runs while the caller does everything else it needs (imports, key loading, checking an
    existing signature). :meth:`result` waits for it and raises what the scan raised;
    :meth:`cancel` stops it within one chunk (call it when the caller gives up, so the process
    does not wait for hashing nobody needs).
    """

    def __init__(self, files: ModelFiles, options: Mapping[str, Any]) -> None:
        self.files = files
        self.options = dict(options)  # scan_model's keyword arguments, for a caller to check
        self._stop = threading.Event()
        self._scan: Scan | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="modelguard-scan", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._scan = scan_model(self.files, stop=self._stop, **self.options)
        except BaseException as error:  # re-raised in the caller's thread by result()
            self._error = error

    def result(self) -> Scan:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._scan is not None
        return self._scan

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


def start_scan(
    files: ModelFiles,
    *,
    hash_algorithm: str = SIGNING_LAYER_HASH,
    file_hash_algorithm: str | None = SIGNING_FILE_HASH,
    layout: bool = True,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
) -> StartedScan:
    """:func:`scan_model` of ``files`` in a background thread; returns at once."""
    check_algorithm(hash_algorithm)
    check_algorithm(file_hash_algorithm or hash_algorithm)
    options = {
        "hash_algorithm": hash_algorithm,
        "file_hash_algorithm": file_hash_algorithm,
        "layout": layout,
        "threads": threads,
        "progress": progress,
    }
    return StartedScan(files, options)


def build_manifest(
    path: Path,
    *,
    hash_algorithm: str = "sha256",
    file_hash_algorithm: str | None = None,
    allow_symlinks: bool = False,
    ignore_paths: Sequence[str] = (),
    threads: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: ProgressCallback | None = None,
    files: ModelFiles | None = None,
) -> Manifest:
    """Parse every file under ``path`` (refusing unsafe ones) and hash files, structures and tensors.

    ``threads``: worker threads (default: the CPUs available). ``progress(n, total)`` is called
    from worker threads with the bytes just hashed and the bytes of hashing planned in all.
    ``files``: the model already opened (:func:`open_model`); its buffers are what is hashed.
    ``file_hash_algorithm``: hash whole files with another function (what signatures do:
    :data:`SIGNING_FILE_HASH` files, :data:`SIGNING_LAYER_HASH` tensors).
    """
    if files is None:
        files = open_model(Path(path), allow_symlinks=allow_symlinks, ignore_paths=ignore_paths)
    return scan_model(
        files,
        hash_algorithm=hash_algorithm,
        file_hash_algorithm=file_hash_algorithm,
        layout=False,
        threads=threads,
        chunk_size=chunk_size,
        progress=progress,
    ).manifest


# --- comparing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorChange:
    path: str
    name: str
    change: str  # "added" | "removed" | "changed"
    expected: TensorRecord | None
    actual: TensorRecord | None
    max_abs: float | None = None  # of actual - expected, when dtype and shape match
    l2: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "name": self.name, "change": self.change}
        if self.expected is not None:
            out["expected"] = self.expected.to_dict()
        if self.actual is not None:
            out["actual"] = self.actual.to_dict()
        if self.change == "changed":
            out["max_abs"] = _json_float(self.max_abs)
            out["l2"] = _json_float(self.l2)
        return out


def _json_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return repr(value)


@dataclass(frozen=True)
class ManifestDiff:
    files_added: tuple[str, ...] = ()
    files_removed: tuple[str, ...] = ()
    files_changed: tuple[str, ...] = ()  # whole-file digest or size differs
    # model files whose structure digest (or format) differs
    structure_changed: tuple[str, ...] = ()
    tensors: tuple[TensorChange, ...] = ()
    # what changed inside a structure (filled by diff_models for ONNX graphs)
    structure_details: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return not (
            self.files_added
            or self.files_removed
            or self.files_changed
            or self.structure_changed
            or self.tensors
        )

    def changed_tensor_names(self) -> list[str]:
        return [t.name for t in self.tensors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "files_added": list(self.files_added),
            "files_removed": list(self.files_removed),
            "files_changed": list(self.files_changed),
            "structure_changed": list(self.structure_changed),
            "tensors_added": [t.to_dict() for t in self.tensors if t.change == "added"],
            "tensors_removed": [t.to_dict() for t in self.tensors if t.change == "removed"],
            "tensors_changed": [t.to_dict() for t in self.tensors if t.change == "changed"],
            "structure_details": list(self.structure_details),
        }

    def lines(self) -> list[str]:
        """One human-readable line per difference (empty when identical)."""
        out = [f"file added: {p}" for p in self.files_added]
        out += [f"file removed: {p}" for p in self.files_removed]
        out += [f"file changed: {p} (whole-file digest differs)" for p in self.files_changed]
        out += [f"structure changed: {p}" for p in self.structure_changed]
        out += [f"  {detail}" for detail in self.structure_details]
        for t in self.tensors:
            line = f"tensor {t.change}: {t.path}:{t.name}"
            if (
                t.expected is not None
                and t.actual is not None
                and t.expected.shape != t.actual.shape
            ):
                line += f" (shape {list(t.expected.shape)} -> {list(t.actual.shape)})"
            elif t.max_abs is not None:
                line += f" (max |delta| {t.max_abs:.6g}, L2 {t.l2:.6g})"
            out.append(line)
        return out


def describe_diff(diff: ManifestDiff) -> list[str]:
    """One line per differing file, structure or tensor (see :meth:`ManifestDiff.lines`)."""
    return diff.lines()


def _compare_records(
    expected: FileRecord, actual: FileRecord, path: str
) -> tuple[bool, list[TensorChange]]:
    structure = (
        expected.format != actual.format or expected.structure_digest != actual.structure_digest
    )
    changes: list[TensorChange] = []
    theirs = {t.name: t for t in actual.tensors}
    ours = {t.name: t for t in expected.tensors}
    for name in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(name), theirs.get(name)
        if a is None:
            changes.append(TensorChange(path, name, "added", None, b))
        elif b is None:
            changes.append(TensorChange(path, name, "removed", a, None))
        elif a != b:
            changes.append(TensorChange(path, name, "changed", a, b))
    return structure, changes


def compare_manifests(
    expected: Manifest, actual: Manifest, *, rename: Mapping[str, str] | None = None
) -> ManifestDiff:
    """What differs between two manifests (``rename`` maps actual paths onto expected ones)."""
    if expected.scheme != actual.scheme:
        raise BadInputError(
            f"cannot compare manifests hashed with {'/'.join(expected.scheme)} and "
            f"{'/'.join(actual.scheme)}"
        )
    rename = rename or {}
    ours = {f.path: f for f in expected.files}
    theirs = {rename.get(f.path, f.path): f for f in actual.files}
    added, removed, changed, structure = [], [], [], []
    tensors: list[TensorChange] = []
    for path in sorted(ours.keys() | theirs.keys()):
        a, b = ours.get(path), theirs.get(path)
        if a is None:
            added.append(path)
        elif b is None:
            removed.append(path)
        else:
            if (a.digest, a.size) != (b.digest, b.size):
                changed.append(path)
            structure_differs, tensor_changes = _compare_records(a, b, path)
            if structure_differs:
                structure.append(path)
            tensors.extend(tensor_changes)
    return ManifestDiff(
        tuple(added), tuple(removed), tuple(changed), tuple(structure), tuple(tensors)
    )


def _as_float(data: memoryview, dtype: str) -> np.ndarray | None:
    """Tensor bytes as float64 values, or None for dtypes without a plain numeric reading."""
    import ml_dtypes
    import numpy as np

    plain = {
        "float64": "<f8",
        "float32": "<f4",
        "float16": "<f2",
        "int64": "<i8",
        "int32": "<i4",
        "int16": "<i2",
        "int8": "i1",
        "uint64": "<u8",
        "uint32": "<u4",
        "uint16": "<u2",
        "uint8": "u1",
        "bool": "u1",
    }
    if dtype in plain:
        return np.frombuffer(data, dtype=plain[dtype]).astype(np.float64)
    special = {
        "bfloat16": ml_dtypes.bfloat16,
        "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
        "float8_e5m2": ml_dtypes.float8_e5m2,
        "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
        "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    }
    if dtype in special:
        return np.frombuffer(data, dtype=special[dtype]).astype(np.float64)
    return None


def change_stats(
    a: TensorSlice, b: TensorSlice, *, chunk_elements: int = 1 << 22
) -> tuple[float | None, float | None]:
    """(max |b - a|, ||b - a||_2) computed in bounded chunks; (None, None) when not comparable."""
    import numpy as np  # only diffs need it: signing and verifying start without numpy

    if a.dtype != b.dtype or a.shape != b.shape:
        return None, None
    bits = DTYPE_BITS[a.dtype]
    if bits % 8:
        return None, None
    step = chunk_elements * bits // 8
    view_a, view_b = a.read(), b.read()
    max_abs, squares = 0.0, 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, view_a.nbytes, step):
            xa = _as_float(view_a[start : start + step], a.dtype)
            xb = _as_float(view_b[start : start + step], b.dtype)
            if xa is None or xb is None:
                return None, None
            delta = xb - xa
            delta[np.isnan(xa) & np.isnan(xb)] = 0.0
            if delta.size:
                max_abs = max(max_abs, float(np.max(np.abs(delta))))
                squares += float(np.dot(delta, delta))
    return max_abs, math.sqrt(squares)


def diff_models(
    a: Path,
    b: Path,
    *,
    hash_algorithm: str = "sha256",
    allow_symlinks: bool = False,
    ignore_paths: Sequence[str] = (),
    threads: int | None = None,
) -> ManifestDiff:
    """Compare two models (files or directories); changed same-shape tensors get max-abs and L2."""
    a, b = Path(a), Path(b)
    kwargs: dict[str, Any] = {
        "hash_algorithm": hash_algorithm,
        "allow_symlinks": allow_symlinks,
        "ignore_paths": ignore_paths,
        "threads": threads,
    }
    ma, mb = build_manifest(a, **kwargs), build_manifest(b, **kwargs)
    rename = {b.name: a.name} if not a.is_dir() and not b.is_dir() else {}
    diff = compare_manifests(ma, mb, rename=rename)
    back = {v: k for k, v in rename.items()}
    parsed: dict[tuple[str, str], ParsedModel | None] = {}
    details: list[str] = []
    for path in diff.structure_changed:
        pa = parse_model_file(model_root(a) / path, root=model_root(a))
        pb = parse_model_file(model_root(b) / back.get(path, path), root=model_root(b))
        if pa is not None and pb is not None and pa.format == pb.format == "onnx":
            from modelguard.formats.onnx import describe_structure_change

            details += [
                f"{path}: {line}" for line in describe_structure_change(pa.structure, pb.structure)
            ]
    enriched = []
    for change in diff.tensors:
        if change.change == "changed":
            for side, root in (("a", model_root(a)), ("b", model_root(b))):
                rel = change.path if side == "a" else back.get(change.path, change.path)
                if (side, change.path) not in parsed:
                    parsed[(side, change.path)] = parse_model_file(root / rel, root=root)
            pa, pb = parsed[("a", change.path)], parsed[("b", change.path)]
            if pa is not None and pb is not None:
                ta = next(t for t in pa.tensors if t.name == change.name)
                tb = next(t for t in pb.tensors if t.name == change.name)
                max_abs, l2 = change_stats(ta, tb)
                change = TensorChange(
                    change.path,
                    change.name,
                    change.change,
                    change.expected,
                    change.actual,
                    max_abs,
                    l2,
                )
        enriched.append(change)
    return ManifestDiff(
        diff.files_added,
        diff.files_removed,
        diff.files_changed,
        diff.structure_changed,
        tuple(enriched),
        tuple(details),
    )
