"""Byte layouts: a model file tiled into tensor and gap segments, each with its own digest.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.manifest import build_manifest
>>> from modelguard.signing.layout import build_layouts, check_layouts
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": np.ones(4, np.float32)}, d / "m.safetensors")
>>> m = build_manifest(d)
>>> layouts = build_layouts(d, m)
>>> [(s.offset, s.length, s.tensor) for s in layouts["m.safetensors"]]
[(0, 64, None), (64, 16, 'w')]
>>> check_layouts(d, layouts)
[]

Why: a whole-file SHA-256 is one serial pass. When every tensor of a file lies verbatim in it
(safetensors, ONNX raw_data and external data), the file is exactly the concatenation of its
tensors and the bytes between them ("gaps": headers, padding). A signed list of (offset,
length, digest) segments that tiles ``[0, size)`` lets a verifier check every byte -- and
literally every tensor digest -- with all cores at once: if each segment of the file on disk
hashes to its signed digest and the size matches, the file is byte-identical to the signed
one (so its structure is too). Gaps are cut into segments of at most ``GAP_SEGMENT`` bytes.
Files without tensors are not tiled (their whole-file digest is the check).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelguard.errors import BadInputError, FormatError
from modelguard.formats import ModelFiles, parse_model_file
from modelguard.manifest import Manifest, open_model

GAP_SEGMENT = 64 * 1024 * 1024
_CHUNK = 32 * 1024 * 1024


@dataclass(frozen=True)
class Segment:
    offset: int
    length: int
    tensor: str | None  # the tensor whose canonical bytes these are; None for a gap
    digest: str  # hex SHA-256 of file[offset : offset + length]

    def to_list(self) -> list[Any]:
        return [self.offset, self.length, self.tensor, self.digest]


def _sha256(view: memoryview) -> str:
    hasher = hashlib.sha256()
    for start in range(0, view.nbytes, _CHUNK):
        hasher.update(view[start : start + _CHUNK])
    return hasher.hexdigest()


def _files(model: Path | ModelFiles) -> ModelFiles:
    return model if isinstance(model, ModelFiles) else open_model(Path(model))


def build_layouts(model: Path | ModelFiles, manifest: Manifest) -> dict[str, list[Segment]] | None:
    """Layouts of every file that holds tensors, or None when a tensor is not stored verbatim.

    Tensor digests come from ``manifest`` (sha256); only the gaps are hashed here. ``model``:
    a path, or the :class:`ModelFiles` the manifest was built from (nothing is read twice).
    """
    if manifest.hash_algorithm != "sha256":
        return None
    files = _files(model)
    root = files.root
    placed: dict[str, list[tuple[int, int, str, str]]] = {}
    for record in manifest.files:
        if record.format == "raw":
            continue
        parsed = parse_model_file(root / record.path, root=root, files=files)
        if parsed is None:
            return None
        for tensor in parsed.tensors:
            signed = record.tensor(tensor.name)
            if tensor.location is None or signed is None or tensor.location[2] != tensor.nbytes:
                return None
            where, offset, length = tensor.location
            placed.setdefault(where, []).append((offset, length, tensor.name, signed.digest))
    sizes = {f.path: f.size for f in manifest.files}
    layouts: dict[str, list[Segment]] = {}
    for path, tensors in placed.items():
        if path not in sizes:
            return None
        segments: list[Segment] = []
        view = files.view(path)
        if view.nbytes != sizes[path]:
            raise FormatError("file changed while it was being signed", path=path)
        cursor = 0
        for offset, length, name, digest in sorted(tensors):
            if offset < cursor or offset + length > view.nbytes:
                return None  # overlapping or out-of-range tensors: no tiling
            segments.extend(_gaps(view, cursor, offset))
            segments.append(Segment(offset, length, name, digest))
            cursor = offset + length
        segments.extend(_gaps(view, cursor, view.nbytes))
        layouts[path] = segments
    return layouts


def _gaps(view: memoryview, start: int, end: int) -> list[Segment]:
    return [
        Segment(
            at, min(GAP_SEGMENT, end - at), None, _sha256(view[at : min(end, at + GAP_SEGMENT)])
        )
        for at in range(start, end, GAP_SEGMENT)
    ]


def layouts_to_dict(layouts: Mapping[str, Sequence[Segment]]) -> dict[str, list[list[Any]]]:
    return {path: [s.to_list() for s in segments] for path, segments in sorted(layouts.items())}


def layouts_from_dict(data: object, manifest: Manifest) -> dict[str, list[Segment]]:
    """Validate a signed layout against the signed manifest; :class:`FormatError` if unusable."""
    if not isinstance(data, Mapping):
        raise FormatError("layout is not an object")
    files = {f.path: f for f in manifest.files}
    # a name may repeat across files (shards); ONNX external data lies in another file
    tensors: dict[str, set[str]] = {}
    for f in manifest.files:
        for t in f.tensors:
            tensors.setdefault(t.name, set()).add(t.digest)
    layouts: dict[str, list[Segment]] = {}
    for path, raw in data.items():
        record = files.get(path)
        if record is None or not isinstance(raw, list):
            raise FormatError(f"layout names a file {path!r} that the manifest does not list")
        segments, cursor = [], 0
        for item in raw:
            if not (isinstance(item, list) and len(item) == 4):
                raise FormatError(f"layout of {path!r} has a malformed segment")
            offset, length, tensor, digest = item
            if not (
                isinstance(offset, int)
                and isinstance(length, int)
                and offset == cursor
                and length > 0
            ):
                raise FormatError(f"layout of {path!r} does not tile the file")
            if not isinstance(digest, str) or (
                tensor is not None and digest not in tensors.get(tensor, set())
            ):
                raise FormatError(
                    f"layout of {path!r} disagrees with the manifest's tensor digests"
                )
            segments.append(Segment(offset, length, tensor, digest))
            cursor += length
        if cursor != record.size:
            raise FormatError(
                f"layout of {path!r} covers {cursor} bytes, the file has {record.size}"
            )
        layouts[path] = segments
    return layouts


def check_layouts(
    model: Path | ModelFiles,
    layouts: Mapping[str, Sequence[Segment]],
    whole_files: Mapping[str, str] | None = None,
    *,
    threads: int | None = None,
) -> list[str]:
    """Hash every segment (and every ``whole_files`` path -> sha256) in parallel.

    Returns the paths (and tensor or gap names) that differ; empty when every byte matches.
    ``model``: a path, or the model's :class:`ModelFiles` (the buffers then used are these).
    """
    files = _files(model)
    views: dict[str, memoryview] = {}
    problems: list[str] = []
    jobs: list[tuple[str, str, memoryview, str]] = []
    try:
        for path in sorted({*layouts, *(whole_files or {})}):
            try:
                views[path] = files.view(path)
            except BadInputError:
                problems.append(f"{path}: unreadable")
        for path, segments in layouts.items():
            view = views.get(path)
            if view is None:
                continue
            if view.nbytes != sum(s.length for s in segments):
                problems.append(f"{path}: size")
                continue
            for s in segments:
                label = (
                    f"tensor {s.tensor!r}"
                    if s.tensor
                    else f"bytes {s.offset}..{s.offset + s.length}"
                )
                jobs.append((path, label, view[s.offset : s.offset + s.length], s.digest))
        for path, digest in (whole_files or {}).items():
            if path in views:
                jobs.append((path, "file", views[path][:], digest))
        jobs.sort(key=lambda job: -job[2].nbytes)  # largest first keeps every core busy
        workers = threads or os.cpu_count() or 1
        with ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="modelguard-verify"
        ) as pool:
            digests = list(pool.map(lambda job: _sha256(job[2]), jobs))
        problems += [
            f"{path}: {label}"
            for (path, label, _, want), got in zip(jobs, digests, strict=True)
            if got != want
        ]
        return problems
    finally:
        for _, _, view, _ in jobs:
            view.release()
