"""Byte layouts: a model file tiled into tensor and gap segments, each with its own digest.

>>> import numpy as np, tempfile, pathlib
>>> from safetensors.numpy import save_file
>>> from modelguard.manifest import open_model, scan_model
>>> from modelguard.signing.layout import check_layouts, layouts_from_scan
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> save_file({"w": np.ones(4, np.float32)}, d / "m.safetensors")
>>> scan = scan_model(open_model(d))
>>> layouts = layouts_from_scan(scan)
>>> [(s.offset, s.length, s.tensor) for s in layouts["m.safetensors"]]
[(0, 64, None), (64, 16, 'w')]
>>> check_layouts(d, layouts, algorithm=scan.manifest.hash_algorithm)
[]

Why: when every tensor of a file lies verbatim in it (safetensors, ONNX raw_data and external
data), the file is exactly the concatenation of its tensors and the bytes between them
("gaps": headers, padding). A signed list of (offset, length, digest) segments that tiles
``[0, size)`` lets a verifier check every byte -- and literally every tensor digest -- with all
cores at once, in the manifest's tensor hash (BLAKE3 for signatures made since issue 15, SHA-256
before): if each segment of the file on disk hashes to its signed digest and the size matches,
the file is byte-identical to the signed one (so its structure is too). Gaps are cut into
segments of at most ``GAP_SEGMENT`` bytes and hashed in the same pass as the manifest
(:func:`modelguard.manifest.scan_model`). Files without tensors are not tiled (their whole-file
digest is the check). docs/signature.md gives the security argument.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelguard.errors import BadInputError, FormatError
from modelguard.formats import ModelFiles
from modelguard.manifest import (
    GAP_SEGMENT,
    HashJob,
    Manifest,
    ProgressCallback,
    Scan,
    file_slice,
    open_model,
    run_hash_jobs,
)

__all__ = ["GAP_SEGMENT", "Segment", "check_layouts", "layouts_from_dict", "layouts_from_scan"]


@dataclass(frozen=True)
class Segment:
    offset: int
    length: int
    tensor: str | None  # the tensor whose canonical bytes these are; None for a gap
    digest: str  # hex digest (the manifest's hash_algorithm) of file[offset : offset + length]

    def to_list(self) -> list[Any]:
        return [self.offset, self.length, self.tensor, self.digest]


def _files(model: Path | ModelFiles) -> ModelFiles:
    return model if isinstance(model, ModelFiles) else open_model(Path(model))


def layouts_from_scan(scan: Scan) -> dict[str, list[Segment]] | None:
    """The layouts a scan computed (None when some tensor is not stored verbatim)."""
    if scan.layout is None:
        return None
    return {
        path: [Segment(*segment) for segment in segments] for path, segments in scan.layout.items()
    }


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
    algorithm: str,
    file_algorithm: str | None = None,
    threads: int | None = None,
    only: Callable[[Segment], bool] | None = None,
    progress: ProgressCallback | None = None,
) -> list[str]:
    """Hash every segment (``algorithm``) and every ``whole_files`` path (``file_algorithm``).

    Returns the paths (and tensor or gap names) that differ; empty when every byte matches.
    ``model``: a path, or the model's :class:`ModelFiles` (the buffers then used are these).
    Each byte is hashed once, all cores at once, one file's pages released after the other.
    ``only``: hash just the segments it selects (partial verification); sizes are still checked.
    """
    files = _files(model)
    problems: list[str] = []
    jobs: list[HashJob] = []
    labels: dict[tuple[str, ...], tuple[str, str, str]] = {}
    for path in sorted({*layouts, *(whole_files or {})}):
        try:
            size = files.size(path)
        except BadInputError:
            problems.append(f"{path}: unreadable")
            continue
        segments = layouts.get(path)
        if segments is not None:
            if size != sum(s.length for s in segments):
                problems.append(f"{path}: size")
                continue
            for s in segments:
                if only is not None and not only(s):
                    continue
                label = (
                    f"tensor {s.tensor!r}"
                    if s.tensor
                    else f"bytes {s.offset}..{s.offset + s.length}"
                )
                key: tuple[str, ...] = ("segment", path, str(s.offset))
                labels[key] = (path, label, s.digest)
                jobs.append(
                    HashJob(
                        key,
                        path,
                        s.length,
                        file_slice(files, path, s.offset, s.length),
                        algorithm,
                        s.offset,
                    )
                )
        elif whole_files is not None:
            key = ("file", path, "")
            labels[key] = (path, "file", whole_files[path])
            jobs.append(
                HashJob(
                    key,
                    path,
                    size,
                    file_slice(files, path, 0, size),
                    file_algorithm or algorithm,
                    0,
                )
            )
    digests = run_hash_jobs(files, jobs, threads=threads, progress=progress)
    problems += [
        f"{path}: {label}" for key, (path, label, want) in labels.items() if digests[key] != want
    ]
    return problems
