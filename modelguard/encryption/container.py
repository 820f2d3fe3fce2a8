"""The encrypted container, version 2: one plaintext file -> one ``.mgenc`` file (docs/format.md).

>>> import os, tempfile, pathlib
>>> from modelguard.encryption.container import FilePlan, write_container, ContainerReader
>>> from modelguard.encryption.keywrap import RawKeyRecipient, RawKeyIdentity
>>> d = pathlib.Path(tempfile.mkdtemp()); (d / "notes.txt").write_bytes(b"hello")
5
>>> key = os.urandom(32)
>>> write_container(FilePlan(d / "notes.txt", "notes.txt"), d / "notes.txt.mgenc", [RawKeyRecipient(key)])
>>> with ContainerReader(d / "notes.txt.mgenc") as reader:
...     reader.unlock([RawKeyIdentity(key)]).read_all()
b'hello'

Layout: preamble (magic, version, header length), a canonical-JSON header (recipients, salt,
key commitment, clear plaintext layer root and the hash functions behind it), HMAC-SHA256 over
both, then AES-256-GCM segments: 0 = index (tensor table + plaintext manifest), then structure
chunks, the ONNX runtime graph, and tensor chunks. Every nonce is the segment number under a
per-file key, and each segment's associated data names the file, its number, the segment count
and what it holds, so nothing can be swapped, reordered, dropped, duplicated or transplanted
unnoticed. Version 2 segments do not depend on the digests: :class:`ContainerWriter` seals
them while the model is being hashed, then writes the index and the header. Version 1
containers (whose segments also bind the header's SHA-256) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelguard.encryption.keywrap import Identity, Recipient, unwrap_data_key
from modelguard.errors import DecryptionError, FormatError, InternalError
from modelguard.hashing import Hasher, new_hasher
from modelguard.safeio import open_regular

MAGIC = b"\x89MGENC\r\n"
VERSION = 2  # what this modelguard writes
READ_VERSIONS = (1, 2)  # what it reads
FORMAT_NAME = "modelguard-encrypted-file"
SUFFIX = ".mgenc"
PREAMBLE = struct.Struct(">8sHHI")  # magic, version, reserved (0), header length
MAC_SIZE = 32
TAG_SIZE = 16
MAX_HEADER = 1 << 24
MAX_RECIPIENTS = 64  # recipient stanzas per file
MAX_INDEX = 1 << 28
# 4 MiB: a decrypted chunk is hashed while still in cache; AES-GCM takes < 2^31 bytes a call
DEFAULT_CHUNK = 4 << 20
MAX_CHUNK = (1 << 31) - 1 - TAG_SIZE


def close_map(mapped: mmap.mmap) -> None:
    """Close an mmap; if an error left views on it alive, leave it to the garbage collector."""
    with contextlib.suppress(BufferError):  # a traceback still holds a view; the error matters
        mapped.close()


def pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (it may write less than asked)."""
    while data.nbytes:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class SegmentBuffers:
    """One preallocated buffer per worker thread, reused for every segment it handles.

    Ciphertext goes to the file with ``pwrite`` from here: faulting fresh pages of a sparse
    mmap'd output costs more than the copy into the page cache.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._local = threading.local()

    def get(self, length: int) -> memoryview:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None:
            buffer = self._local.buffer = bytearray(self._size)
        return memoryview(buffer)[:length]


def default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def canonical(value: Any) -> bytes:
    return bytes(rfc8785.dumps(value))


def _derive(data_key: bytes, salt: bytes, label: str, file_id: bytes) -> bytes:
    info = b"modelguard/v1/" + label.encode() + b"/" + file_id
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)


def nonce(segment: int) -> bytes:
    return b"\x00\x00\x00\x00" + segment.to_bytes(8, "big")


@dataclass(frozen=True)
class TensorEntry:
    """A tensor whose bytes lie verbatim at ``offset`` in the plaintext file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    length: int
    record: str  # the manifest file record listing this tensor (differs for ONNX external data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "record": self.record,
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "length": self.length,
        }


@dataclass(frozen=True)
class Segment:
    """One AES-GCM segment: a chunk of the index, structure, graph or a tensor."""

    number: int
    kind: str  # "index" | "structure" | "graph" | "tensor"
    chunk: int
    chunks: int
    start: int  # offset of this chunk inside its stream (structure stream, graph, tensor)
    length: int  # plaintext bytes
    tensor: TensorEntry | None = None

    def aad(
        self, file_id: bytes, count: int, version: int = VERSION, header_digest: bytes = b""
    ) -> bytes:
        """Associated data; version 1 also binds ``header_digest`` (SHA-256 of the header)."""
        doc: dict[str, Any] = {
            "format": FORMAT_NAME,
            "version": version,
            "file_id": file_id.hex(),
            "segment": self.number,
            "segment_count": count,
            "kind": self.kind,
            "chunk": self.chunk,
            "chunks": self.chunks,
            "start": self.start,
            "length": self.length,
        }
        if version == 1:
            doc["header_sha256"] = header_digest.hex()
        if self.tensor is not None:
            doc["tensor"] = self.tensor.to_dict()
        return canonical(doc)


def _chunks(
    kind: str, total: int, chunk_size: int, tensor: TensorEntry | None = None
) -> list[tuple]:
    count = max(1, -(-total // chunk_size))
    return [
        (kind, c, count, c * chunk_size, min(chunk_size, total - c * chunk_size), tensor)
        for c in range(count)
    ]


def plan_segments(
    index_length: int,
    structure_length: int,
    graph_length: int,
    tensors: Sequence[TensorEntry],
    chunk_size: int,
) -> list[Segment]:
    """The segment list, derived from the index: index, structure chunks, graph chunks, tensors."""
    rows: list[tuple] = [("index", 0, 1, 0, index_length, None)]
    rows += _chunks("structure", structure_length, chunk_size)
    if graph_length:
        rows += _chunks("graph", graph_length, chunk_size)
    for tensor in tensors:
        rows += _chunks("tensor", tensor.length, chunk_size, tensor)
    return [Segment(n, *row) for n, row in enumerate(rows)]


def structure_ranges(size: int, tensors: Sequence[TensorEntry]) -> list[tuple[int, int]]:
    """The byte ranges of the file outside every tensor, in order: (offset, length)."""
    ranges, cursor = [], 0
    for tensor in tensors:
        if tensor.offset > cursor:
            ranges.append((cursor, tensor.offset - cursor))
        cursor = tensor.offset + tensor.length
    if size > cursor:
        ranges.append((cursor, size - cursor))
    return ranges


def _pieces(
    ranges: Sequence[tuple[int, int]], start: int, length: int
) -> Iterator[tuple[int, int]]:
    """File (offset, length) pieces of the structure stream's [start, start + length)."""
    stream = 0
    for offset, size in ranges:
        lo, hi = max(start, stream), min(start + length, stream + size)
        if lo < hi:
            yield offset + lo - stream, hi - lo
        stream += size


# ---------------------------------------------------------------------------- plan + write


@dataclass
class FilePlan:
    """What to encrypt: a plaintext file, its tensors, and what the index should carry.

    ``manifest`` and ``layer_root`` may be placeholders of the final values' shape (same
    digest lengths) when :class:`ContainerWriter` seals the payload before the digests exist.
    """

    source: Path
    path: str  # posix, relative to the model root
    tensors: tuple[TensorEntry, ...] = ()
    graph: bytes = b""  # ONNX model with initializers marked external (runtime, no disk)
    manifest: Mapping[str, Any] | None = None  # plaintext Manifest.to_dict()
    layer_root: str | None = None
    hash_algorithm: str | None = None  # tensor and structure digests
    file_hash_algorithm: str | None = None  # whole-file digests (None: hash_algorithm)
    format: str = "raw"
    chunk_size: int = DEFAULT_CHUNK


def _validate_tensors(tensors: Sequence[TensorEntry], size: int, where: str) -> None:
    cursor = 0
    for tensor in tensors:
        if tensor.offset < cursor or tensor.length < 0 or tensor.offset + tensor.length > size:
            raise FormatError(
                f"tensor {tensor.name!r} overlaps another or lies outside the file", path=where
            )
        cursor = tensor.offset + tensor.length


def _index(plan: FilePlan, tensors: Sequence[TensorEntry], size: int) -> bytes:
    return canonical(
        {
            "path": plan.path,
            "format": plan.format,
            "size": size,
            "chunk_size": plan.chunk_size,
            "graph_length": len(plan.graph),
            "tensors": [t.to_dict() for t in tensors],
            "manifest": dict(plan.manifest) if plan.manifest is not None else None,
        }
    )


class ContainerWriter:
    """Writes one container in two steps: :meth:`seal_payload`, then :meth:`finish`.

    Every segment but the index depends only on the plaintext and the layout, so it can be
    sealed while the model's digests are still being computed (from the same buffer);
    :meth:`finish` then seals the index (with the real manifest) and writes the header. The
    plan's manifest and root fix the index and header lengths up front: digests are
    fixed-length hex, so the final ones must serialize to exactly as many bytes (checked).
    """

    def __init__(
        self,
        plan: FilePlan,
        out: Path,
        recipients: Sequence[Recipient],
        source: memoryview,
    ) -> None:
        if not recipients:
            raise FormatError("at least one recipient is needed")
        if not 1 <= plan.chunk_size <= MAX_CHUNK:
            raise FormatError(f"chunk size {plan.chunk_size} outside [1, {MAX_CHUNK}]")
        self.plan, self.out, self.source = plan, out, source
        self.tensors = tuple(sorted(plan.tensors, key=lambda t: t.offset))
        self.size = source.nbytes
        _validate_tensors(self.tensors, self.size, str(plan.source))
        self._data_key, self._salt, self.file_id = os.urandom(32), os.urandom(32), os.urandom(16)
        self._recipients = [r.wrap(self._data_key, self.file_id) for r in recipients]
        self.ranges = structure_ranges(self.size, self.tensors)
        self.index_length = len(_index(plan, self.tensors, self.size))
        self.segments = plan_segments(
            self.index_length,
            sum(n for _, n in self.ranges),
            len(plan.graph),
            self.tensors,
            plan.chunk_size,
        )
        self.header_length = len(self._header(plan.layer_root))
        self.offsets, cursor = [], PREAMBLE.size + self.header_length + MAC_SIZE
        for segment in self.segments:
            self.offsets.append(cursor)
            cursor += segment.length + TAG_SIZE
        self._aead = AESGCM(_derive(self._data_key, self._salt, "enc", self.file_id))
        self._sink = open(out, "wb")  # noqa: SIM115 -- closed by finish() or close()
        self._sink.truncate(cursor)

    def _header(self, layer_root: str | None) -> bytes:
        return canonical(
            {
                "format": FORMAT_NAME,
                "version": VERSION,
                "aead": "AES-256-GCM",
                "kdf": "HKDF-SHA256",
                "file_id": self.file_id.hex(),
                "salt": self._salt.hex(),
                "key_commitment": _derive(self._data_key, self._salt, "commit", self.file_id).hex(),
                "recipients": self._recipients,
                "segment_count": len(self.segments),
                "index_length": self.index_length,
                "payload_length": sum(s.length + TAG_SIZE for s in self.segments),
                "plaintext": {
                    "layer_root": layer_root,
                    "hash_algorithm": self.plan.hash_algorithm,
                    "file_hash_algorithm": self.plan.file_hash_algorithm
                    or self.plan.hash_algorithm,
                },
            }
        )

    def _plaintext(self, segment: Segment) -> bytes | memoryview:
        if segment.kind == "graph":
            return memoryview(self.plan.graph)[segment.start : segment.start + segment.length]
        if segment.kind == "tensor":
            assert segment.tensor is not None
            begin = segment.tensor.offset + segment.start
            return self.source[begin : begin + segment.length]
        parts = list(_pieces(self.ranges, segment.start, segment.length))
        if len(parts) == 1:
            return self.source[parts[0][0] : parts[0][0] + parts[0][1]]
        return b"".join(self.source[o : o + n] for o, n in parts)

    def _seal(
        self, segment: Segment, plaintext: bytes | memoryview, buffers: SegmentBuffers
    ) -> None:
        aad = segment.aad(self.file_id, len(self.segments))
        buf = buffers.get(segment.length + TAG_SIZE)
        self._aead.encrypt_into(nonce(segment.number), plaintext, aad, buf)
        pwrite_all(self._sink.fileno(), buf, self.offsets[segment.number])

    def seal_payload(self, threads: int | None = None) -> None:
        """Seal and write every segment but the index (it needs the digests)."""
        payload = self.segments[1:]
        if not payload:
            return
        buffers = SegmentBuffers(max(s.length for s in payload) + TAG_SIZE)
        _run_parallel(
            lambda s: self._seal(s, self._plaintext(s), buffers),
            payload,
            threads,
            lambda s: s.length,
        )

    def finish(self, manifest: Mapping[str, Any] | None, layer_root: str | None) -> None:
        """Seal the index with the final ``manifest``, write the header and its MAC, close."""
        plan = replace(self.plan, manifest=manifest, layer_root=layer_root)
        index = _index(plan, self.tensors, self.size)
        header = self._header(layer_root)
        if len(index) != self.index_length or len(header) != self.header_length:
            raise InternalError(
                "the final manifest does not serialize to the planned length", path=str(self.out)
            )
        self._seal(self.segments[0], index, SegmentBuffers(len(index) + TAG_SIZE))
        head = PREAMBLE.pack(MAGIC, VERSION, 0, len(header)) + header
        key = _derive(self._data_key, self._salt, "header-mac", self.file_id)
        pwrite_all(
            self._sink.fileno(), memoryview(head + hmac.new(key, head, "sha256").digest()), 0
        )
        self.close()

    def close(self) -> None:
        self._sink.close()


def write_container(
    plan: FilePlan,
    out: Path,
    recipients: Sequence[Recipient],
    *,
    threads: int | None = None,
) -> None:
    """Encrypt ``plan.source`` into ``out`` (the caller renames it into place)."""
    with open_regular(plan.source, what="model file") as handle:
        size = os.fstat(handle.fileno()).st_size
        source = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
    try:
        with memoryview(source if source is not None else b"") as view:
            writer = ContainerWriter(plan, out, recipients, view)
            try:
                writer.seal_payload(threads)
                writer.finish(plan.manifest, plan.layer_root)
            finally:
                writer.close()
    finally:
        if source is not None:
            close_map(source)


T = TypeVar("T")


def _run_parallel(
    work: Callable[[T], None], items: Sequence[T], threads: int | None, size: Callable[[T], int]
) -> None:
    """Run ``work`` over items, biggest first, on a thread pool (AES-GCM and hashlib drop the GIL)."""
    order = sorted(items, key=lambda item: -size(item))
    workers = threads or default_threads()
    if workers == 1 or len(order) <= 1:
        for item in order:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelguard-aead") as pool:
        for future in [pool.submit(work, item) for item in order]:
            future.result()


# ---------------------------------------------------------------------------- read


@dataclass
class ContainerIndex:
    """The decrypted index: where everything lives in the plaintext file."""

    path: str
    format: str
    size: int
    chunk_size: int
    graph_length: int
    tensors: tuple[TensorEntry, ...]
    manifest: dict[str, Any] | None
    segments: list[Segment] = field(default_factory=list)

    def structure_ranges(self) -> list[tuple[int, int]]:
        return structure_ranges(self.size, self.tensors)


def _field(doc: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise FormatError(f"container field {name!r} is missing or has the wrong type", path=where)
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise FormatError(f"container field {name!r} is negative", path=where)
    return value


def _parse_index(raw: bytes, where: str) -> ContainerIndex:
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise FormatError("container index is nested too deeply", path=where) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"container index is not JSON: {error}", path=where) from None
    if not isinstance(doc, dict):
        raise FormatError("container index is not an object", path=where)
    tensors = []
    for item in _field(doc, "tensors", list, where):
        if not isinstance(item, dict):
            raise FormatError("container index tensor entry is not an object", path=where)
        shape = _field(item, "shape", list, where)
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise FormatError("container index has a bad tensor shape", path=where)
        tensors.append(
            TensorEntry(
                _field(item, "name", str, where),
                _field(item, "dtype", str, where),
                tuple(shape),
                _field(item, "offset", int, where),
                _field(item, "length", int, where),
                _field(item, "record", str, where),
            )
        )
    manifest = doc.get("manifest")
    if manifest is not None and not isinstance(manifest, dict):
        raise FormatError("container index manifest is not an object", path=where)
    index = ContainerIndex(
        path=_field(doc, "path", str, where),
        format=_field(doc, "format", str, where),
        size=_field(doc, "size", int, where),
        chunk_size=_field(doc, "chunk_size", int, where),
        graph_length=_field(doc, "graph_length", int, where),
        tensors=tuple(tensors),
        manifest=manifest,
    )
    if not 1 <= index.chunk_size <= MAX_CHUNK:
        raise FormatError(f"container chunk size {index.chunk_size} out of range", path=where)
    _validate_tensors(index.tensors, index.size, where)
    return index


class ContainerReader:
    """Reads one container: header checks on open, segments after :meth:`unlock`."""

    def __init__(self, path: Path, data: memoryview | None = None) -> None:
        """``data``: the container's bytes, already read (and verified) by the caller, used
        instead of opening ``path`` (which then only names the container in messages)."""
        self.path = path
        self._where = str(path)
        self._handle: Any = None
        self._map: mmap.mmap | memoryview | None = None
        if data is None:
            # Regular files only, checked on the descriptor that is then mapped (no FIFO hang).
            self._handle = open_regular(path, what="container")
        try:
            if data is None:
                self._size = os.fstat(self._handle.fileno()).st_size
                if self._size:
                    self._map = mmap.mmap(self._handle.fileno(), 0, access=mmap.ACCESS_READ)
            else:
                self._size = data.nbytes
                self._map = data if data.nbytes else None
            self._parse_header()
        except BaseException:
            self.close()
            raise
        self._aead: AESGCM | None = None
        self._index: ContainerIndex | None = None
        self._offsets: list[int] = []
        self._by_tensor: dict[int, list[Segment]] | None = None

    def __enter__(self) -> ContainerReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(getattr(self, "_map", None), mmap.mmap):
            assert isinstance(self._map, mmap.mmap)
            close_map(self._map)
        self._map = None
        if self._handle is not None:
            self._handle.close()

    def _bytes(self, start: int, length: int) -> memoryview:
        if self._map is None or start + length > self._size:
            raise FormatError("container is truncated", path=self._where)
        return memoryview(self._map)[start : start + length]

    def _parse_header(self) -> None:
        if self._size < PREAMBLE.size:
            raise FormatError("not a modelguard container (too short)", path=self._where)
        magic, version, reserved, header_length = PREAMBLE.unpack(self._bytes(0, PREAMBLE.size))
        if magic != MAGIC:
            raise FormatError("not a modelguard container (bad magic)", path=self._where)
        if version not in READ_VERSIONS:
            raise FormatError(
                f"unsupported container version {version} (this modelguard reads versions "
                f"{', '.join(map(str, READ_VERSIONS))})",
                path=self._where,
            )
        self.version: int = version
        if reserved != 0 or header_length > MAX_HEADER:
            raise FormatError("container preamble is malformed", path=self._where)
        self._head = bytes(self._bytes(0, PREAMBLE.size + header_length))
        self._mac = bytes(self._bytes(len(self._head), MAC_SIZE))
        try:
            doc = json.loads(self._head[PREAMBLE.size :])
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise FormatError("container header is not JSON", path=self._where) from None
        if (
            not isinstance(doc, dict)
            or doc.get("format") != FORMAT_NAME
            or doc.get("version") != version
        ):
            raise FormatError("container header names another format or version", path=self._where)
        if doc.get("aead") != "AES-256-GCM" or doc.get("kdf") != "HKDF-SHA256":
            raise FormatError("container uses an unknown cipher suite", path=self._where)
        try:
            self.file_id = bytes.fromhex(_field(doc, "file_id", str, self._where))
            self.salt = bytes.fromhex(_field(doc, "salt", str, self._where))
            self._commitment = bytes.fromhex(_field(doc, "key_commitment", str, self._where))
        except ValueError:
            raise FormatError("container header has bad hex", path=self._where) from None
        if len(self.file_id) != 16 or len(self.salt) != 32 or len(self._commitment) != 32:
            raise FormatError("container header field has the wrong length", path=self._where)
        self.recipients = _field(doc, "recipients", list, self._where)
        if not 1 <= len(self.recipients) <= MAX_RECIPIENTS:
            raise FormatError(
                f"container has {len(self.recipients)} recipient stanzas (1..{MAX_RECIPIENTS})",
                path=self._where,
            )
        if not all(isinstance(r, dict) for r in self.recipients):
            raise FormatError("container recipient stanza is not an object", path=self._where)
        self.segment_count = _field(doc, "segment_count", int, self._where)
        self.index_length = _field(doc, "index_length", int, self._where)
        self.payload_length = _field(doc, "payload_length", int, self._where)
        if self.index_length > MAX_INDEX or self.segment_count < 1:
            raise FormatError("container header is malformed", path=self._where)
        plaintext = _field(doc, "plaintext", dict, self._where)
        self.layer_root: str | None = plaintext.get("layer_root")
        self.hash_algorithm: str | None = plaintext.get("hash_algorithm")
        # version 1 hashed whole files with the tensors' function and did not say so
        self.file_hash_algorithm: str | None = (
            plaintext.get("file_hash_algorithm") if version >= 2 else self.hash_algorithm
        )
        for value in (self.layer_root, self.hash_algorithm, self.file_hash_algorithm):
            if value is not None and not isinstance(value, str):
                raise FormatError(
                    "container header plaintext field is not a string", path=self._where
                )
        self.payload_start = len(self._head) + MAC_SIZE
        expected = self.payload_start + self.payload_length
        if self._size != expected:
            what = "truncated" if self._size < expected else "longer than its header says"
            raise FormatError(
                f"container is {what} ({self._size} bytes, header says {expected})",
                path=self._where,
            )
        self.header = doc

    def unlock(self, identities: Sequence[Identity]) -> ContainerReader:
        """Unwrap the data key, check the key commitment and the header MAC, read the index."""
        data_key = unwrap_data_key(self.recipients, self.file_id, identities)
        commitment = _derive(data_key, self.salt, "commit", self.file_id)
        if not hmac.compare_digest(commitment, self._commitment):
            raise DecryptionError(
                "key commitment does not match: wrong key or altered header", path=self._where
            )
        mac = hmac.new(
            _derive(data_key, self.salt, "header-mac", self.file_id), self._head, "sha256"
        ).digest()
        if not hmac.compare_digest(mac, self._mac):
            raise DecryptionError(
                "header authentication failed: the header was altered", path=self._where
            )
        self._aead = AESGCM(_derive(data_key, self.salt, "enc", self.file_id))
        self._header_digest = hashlib.sha256(self._head).digest()
        first = Segment(0, "index", 0, 1, 0, self.index_length)
        raw = bytearray(self.index_length)
        self._offsets = [self.payload_start]
        self._decrypt(first, raw)
        index = _parse_index(bytes(raw), self._where)
        structure = index.size - sum(t.length for t in index.tensors)
        index.segments = plan_segments(
            self.index_length, structure, index.graph_length, index.tensors, index.chunk_size
        )
        if len(index.segments) != self.segment_count:
            raise DecryptionError(
                "segment count in the index disagrees with the header", path=self._where
            )
        cursor = self.payload_start
        self._offsets = []
        for segment in index.segments:
            self._offsets.append(cursor)
            cursor += segment.length + TAG_SIZE
        if cursor != self._size:
            raise DecryptionError(
                "segment lengths disagree with the container size", path=self._where
            )
        self._index = index
        return self

    @property
    def index(self) -> ContainerIndex:
        if self._index is None:
            raise FormatError("container is locked: unlock() it first", path=self._where)
        return self._index

    def _decrypt(self, segment: Segment, out: bytearray | memoryview) -> None:
        assert self._aead is not None
        begin = self._offsets[segment.number]
        data = self._bytes(begin, segment.length + TAG_SIZE)
        aad = segment.aad(self.file_id, self.segment_count, self.version, self._header_digest)
        try:
            self._aead.decrypt_into(nonce(segment.number), data, aad, out)
        except InvalidTag:
            what = f"tensor {segment.tensor.name!r}" if segment.tensor else segment.kind
            raise DecryptionError(
                f"segment {segment.number} ({what}, chunk {segment.chunk}) failed authentication: altered, moved or truncated",
                path=self._where,
            ) from None

    def tensor_segments(self, tensor: TensorEntry) -> list[Segment]:
        if self._by_tensor is None:
            self._by_tensor = {}
            for segment in self.index.segments:
                if segment.tensor is not None:
                    self._by_tensor.setdefault(id(segment.tensor), []).append(segment)
        return self._by_tensor.get(id(tensor), [])

    def decrypt_tensor_into(
        self, tensor: TensorEntry, out: memoryview, hasher: Hasher | None = None
    ) -> None:
        """Decrypt one tensor (all its chunks) into ``out`` (``tensor.length`` bytes).

        ``hasher`` is fed each chunk right after it is decrypted, while it is still in cache.
        """
        for segment in self.tensor_segments(tensor):
            piece = out[segment.start : segment.start + segment.length]
            self._decrypt(segment, piece)
            if hasher is not None:
                hasher.update(piece)

    def read_stream(self, kind: str) -> bytes:
        """The whole structure or graph stream (small: no tensor bytes)."""
        parts = [s for s in self.index.segments if s.kind == kind]
        out = bytearray(sum(s.length for s in parts))
        for segment in parts:
            self._decrypt(segment, memoryview(out)[segment.start : segment.start + segment.length])
        return bytes(out)

    def decrypt_into(
        self,
        out: memoryview,
        *,
        threads: int | None = None,
        on_tensor: Callable[[TensorEntry, memoryview], None] | None = None,
    ) -> None:
        """Reassemble the plaintext file into ``out`` (``index.size`` bytes), byte for byte.

        ``on_tensor`` runs in the worker thread once a tensor's last chunk is in place (digests).
        """
        index = self.index
        ranges = index.structure_ranges()
        self.read_stream("graph")  # not part of the file, but every segment must authenticate
        structure = memoryview(self.read_stream("structure"))
        stream = 0
        for offset, length in ranges:
            out[offset : offset + length] = structure[stream : stream + length]
            stream += length
        done: dict[int, int] = {}
        lock = threading.Lock()

        def work(segment: Segment) -> None:
            tensor = segment.tensor
            assert tensor is not None
            begin = tensor.offset + segment.start
            self._decrypt(segment, out[begin : begin + segment.length])
            if on_tensor is not None and segment.chunks == 1:
                on_tensor(tensor, out[tensor.offset : tensor.offset + tensor.length])
            elif on_tensor is not None:
                with lock:
                    done[tensor.offset] = finished = done.get(tensor.offset, 0) + 1
                if finished == segment.chunks:
                    on_tensor(tensor, out[tensor.offset : tensor.offset + tensor.length])

        tensor_segments = [s for s in index.segments if s.kind == "tensor"]
        _run_parallel(work, tensor_segments, threads, lambda s: s.length)

    def write_to(
        self,
        fd: int,
        *,
        threads: int | None = None,
        hash_algorithm: str | None = None,
        on_digest: Callable[[TensorEntry, str], None] | None = None,
    ) -> None:
        """Write the plaintext file to ``fd`` (sized already), tensor by tensor, chunk by chunk.

        Each worker decrypts a chunk into its own preallocated buffer, hashes it (``on_digest``
        gets each tensor's hex digest) and ``pwrite``s it: plaintext is held once, in pieces.
        """
        index = self.index
        self.read_stream("graph")  # not part of the file, but every segment must authenticate
        structure = memoryview(self.read_stream("structure"))
        stream = 0
        for offset, length in index.structure_ranges():
            pwrite_all(fd, structure[stream : stream + length], offset)
            stream += length
        tensors = [t for t in index.tensors if self.tensor_segments(t)]
        buffers = SegmentBuffers(max((min(t.length, index.chunk_size) for t in tensors), default=0))

        def work(tensor: TensorEntry) -> None:
            hasher = new_hasher(hash_algorithm) if hash_algorithm else None
            for segment in self.tensor_segments(tensor):
                buf = buffers.get(segment.length)
                self._decrypt(segment, buf)
                if hasher is not None:
                    hasher.update(buf)
                pwrite_all(fd, buf, tensor.offset + segment.start)
            if hasher is not None and on_digest is not None:
                on_digest(tensor, hasher.hexdigest())

        _run_parallel(work, tensors, threads, lambda t: t.length)

    def read_all(self) -> bytes:
        out = bytearray(self.index.size)
        self.decrypt_into(memoryview(out))
        return bytes(out)
