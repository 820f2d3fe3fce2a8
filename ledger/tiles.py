"""C2SP tlog-tiles: the log as static files any web server or object store can serve.

>>> import os, tempfile
>>> from pathlib import Path
>>> from ledger import open_ledger, NoteSigner
>>> from ledger.tiles import export_tiles, verify_tiles, tile_path
>>> log = open_ledger("sqlite:///" + os.path.join(tempfile.mkdtemp(), "l.db"), origin="ex/log")
>>> _ = log.append("sign", subject={"name": "m"}, payload_digest="sha256:00", actor="k")
>>> signer, out = NoteSigner.generate("ex/log"), Path(tempfile.mkdtemp())
>>> export_tiles(log, out, signer).written
['tile/0/000.p/1', 'tile/entries/000.p/1', 'checkpoint']
>>> verify_tiles(out, [signer.verifier()]).ok
True
>>> tile_path(0, 1234067)
'tile/0/x001/x234/067'

Layout (https://c2sp.org/tlog-tiles): ``checkpoint`` (the signed note), ``tile/<L>/<N>``
(256 hashes of 32 bytes; level 0 holds the leaf hashes, level L the Merkle Tree Hashes of the
full tiles at level L-1), ``tile/entries/<N>`` (the entries, each a big-endian uint16 length
then the entry's canonical JSON, whose RFC 9162 leaf hash is the level-0 tile's hash), and
``.p/<W>`` partial tiles of width W < 256 at the right edge. ``<N>`` is written in 3-digit
groups, all but the last prefixed with ``x``.

Export is incremental: full tiles are immutable, so an existing one is compared (a difference
means the log was rewritten: refused) and never rewritten; the checkpoint is written last, so
a reader never sees a checkpoint whose tiles are not yet there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger.errors import LedgerInputError, LedgerIntegrityError, NoteVerificationError
from ledger.log import BODY_BATCH
from ledger.merkle import EMPTY_ROOT, HASH_SIZE, CompactRange, leaf_hash, root_from_leaf_hashes
from ledger.note import Checkpoint, NoteSigner, NoteVerifier, open_checkpoint, split_note
from ledger.proofs import b64
from ledger.verify import Problem, StoredRow, VerifyReport, verify_entries

if TYPE_CHECKING:
    from ledger.log import Ledger

TILE_WIDTH = 256
TILE_BYTES = TILE_WIDTH * HASH_SIZE
MAX_ENTRY_BYTES = 0xFFFF  # an entry bundle's length prefix is a uint16
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + MAX_ENTRY_BYTES)
MAX_CHECKPOINT_BYTES = 64 * 1024
ENTRIES = "entries"  # the "level" of entry bundles in their path
_TILE_PATH = re.compile(
    r"^tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([0-9]+))?$"
)


def encode_index(index: int) -> str:
    """``1234067`` -> ``x001/x234/067``: 3-digit groups, all but the last prefixed with x."""
    if index < 0:
        raise ValueError(f"tile index {index} is negative")
    groups = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if not index:
            break
    groups.reverse()
    return "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """The path of a hash tile (``level`` 0..63) or an entry bundle (``level`` "entries")."""
    if not 1 <= width <= TILE_WIDTH:
        raise ValueError(f"tile width {width} is outside 1..{TILE_WIDTH}")
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encode_index(index)}{suffix}"


@dataclass(frozen=True, order=True)
class TileRef:
    """One tile: ``level`` (0..63) or -1 for an entry bundle, index, width (1..256)."""

    level: int
    index: int
    width: int

    @property
    def path(self) -> str:
        return tile_path(ENTRIES if self.level < 0 else self.level, self.index, self.width)

    @classmethod
    def parse(cls, path: str) -> TileRef:
        match = _TILE_PATH.match(path)
        if match is None:
            raise LedgerInputError(f"{path}: not a tile path")
        level_text, index_text, width_text = match.groups()
        level = -1 if level_text == ENTRIES else int(level_text)
        if level > 63:
            raise LedgerInputError(f"{path}: tile level above 63")
        index = int(index_text.replace("x", "").replace("/", ""))
        if encode_index(index) != index_text:
            raise LedgerInputError(f"{path}: tile index is not in canonical form")
        width = TILE_WIDTH
        if width_text is not None:
            width = int(width_text)
            if str(width) != width_text or not 1 <= width < TILE_WIDTH:
                raise LedgerInputError(f"{path}: partial tile width must be 1..255")
        return cls(level, index, width)


def tiles_for_size(size: int) -> list[TileRef]:
    """Every hash tile and entry bundle a tree of ``size`` leaves is served as."""
    refs: list[TileRef] = []
    level = 0
    while size >> (8 * level):
        count = size >> (8 * level)  # hashes at this level
        refs += [TileRef(level, n, TILE_WIDTH) for n in range(count // TILE_WIDTH)]
        if count % TILE_WIDTH:
            refs.append(TileRef(level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    refs += [TileRef(-1, r.index, r.width) for r in refs if r.level == 0]
    return refs


class TileBuilder:
    """Hash tiles made as leaf hashes arrive, each handed to ``emit`` as soon as it is full.

    Every tile hash comes from the one compact range that also gives the root: the perfect
    subtree at level 8·L, index i, is hash i of tile level L. Memory: one unfinished tile per
    level (at most 256 hashes each), whatever the number of leaves.
    """

    def __init__(self, emit: Callable[[TileRef, bytes], None]) -> None:
        self.compact = CompactRange()
        self._emit = emit
        self._pending: list[list[bytes]] = []  # the unfinished tile's hashes, per tile level

    def add(self, leaf: bytes) -> None:
        self.compact.append(leaf, self._on_node)

    def _on_node(self, level: int, index: int, node: bytes) -> None:
        if level % 8:
            return
        tier = level // 8
        if tier == len(self._pending):
            self._pending.append([])
        hashes = self._pending[tier]
        hashes.append(node)
        if len(hashes) == TILE_WIDTH:
            self._emit(TileRef(tier, index // TILE_WIDTH, TILE_WIDTH), b"".join(hashes))
            hashes.clear()

    def finish(self) -> None:
        """Emit the partial tile at the right edge of each level (never hashed upwards)."""
        for tier, hashes in enumerate(self._pending):
            if hashes:
                count = self.compact.size >> (8 * tier)
                self._emit(TileRef(tier, count // TILE_WIDTH, len(hashes)), b"".join(hashes))
                hashes.clear()


def hash_tiles(leaves: Iterable[bytes]) -> dict[TileRef, bytes]:
    """The hash tiles of a tree given its leaf hashes."""
    tiles: dict[TileRef, bytes] = {}
    builder = TileBuilder(tiles.__setitem__)
    for leaf in leaves:
        builder.add(leaf)
    builder.finish()
    return tiles


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length and its bytes."""
    out = bytearray()
    for data in entries:
        if len(data) > MAX_ENTRY_BYTES:
            raise LedgerInputError(
                f"an entry of {len(data)} bytes does not fit a tile bundle (at most {MAX_ENTRY_BYTES})"
            )
        out += len(data).to_bytes(2, "big") + data
    return bytes(out)


def decode_bundle(data: bytes, count: int) -> list[bytes]:
    """Split an entry bundle into exactly ``count`` entries; LedgerInputError if it is not that."""
    entries, offset = [], 0
    while offset < len(data):
        if offset + 2 > len(data):
            raise LedgerInputError("entry bundle ends inside a length prefix")
        length = int.from_bytes(data[offset : offset + 2], "big")
        offset += 2
        if offset + length > len(data):
            raise LedgerInputError("entry bundle ends inside an entry")
        entries.append(data[offset : offset + length])
        offset += length
    if len(entries) != count:
        raise LedgerInputError(f"entry bundle holds {len(entries)} entries, expected {count}")
    return entries


def read_bounded(path: Path, limit: int) -> bytes:
    """A regular file's bytes, refusing anything larger than ``limit`` (checked on the descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise LedgerInputError(f"{path}: missing") from None
    except OSError as error:
        raise LedgerInputError(f"{path}: cannot open: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise LedgerInputError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise LedgerInputError(f"{path}: {info.st_size} bytes, more than {limit}")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise LedgerInputError(f"{path}: grew beyond {limit} bytes while read")
    return data


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o644)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MAX_LISTED = 1000  # file names an ExportReport lists (it counts them all)


@dataclass
class ExportReport:
    """What an export did: ``written`` lists the first MAX_LISTED new files (in the order they
    were made), ``written_count`` counts them all, the checkpoint included."""

    directory: str
    size: int
    root: bytes
    checkpoint: str
    written: list[str] = field(default_factory=list)
    written_count: int = 0
    unchanged: int = 0

    def add_written(self, rel: str) -> None:
        self.written_count += 1
        if len(self.written) < MAX_LISTED:
            self.written.append(rel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "size": self.size,
            "root": b64(self.root),
            "checkpoint": self.checkpoint,
            "written": self.written,
            "written_count": self.written_count,
            "unchanged": self.unchanged,
        }


def _existing_checkpoint(directory: Path) -> Checkpoint | None:
    path = directory / "checkpoint"
    if not path.exists():
        return None
    text, _ = split_note(read_bounded(path, MAX_CHECKPOINT_BYTES).decode("utf-8", "replace"))
    return Checkpoint.from_text(text)


class _TileSink:
    """Where each finished tile goes: compared with the published file when there is one (a
    full tile never changes), else staged under ``staging`` until the whole tree is proven."""

    def __init__(self, directory: Path, staging: Path, report: ExportReport) -> None:
        self.directory, self.staging, self.report = directory, staging, report

    def put(self, ref: TileRef, data: bytes) -> None:
        published = self.directory / ref.path
        if published.exists():
            if read_bounded(published, MAX_BUNDLE_BYTES) != data:
                raise LedgerIntegrityError(
                    f"{published}: the published tile differs from the log (history rewritten)"
                )
            self.report.unchanged += 1
            return
        _write_file(self.staging / ref.path, data)
        self.report.add_written(ref.path)

    def publish(self) -> None:
        """Move every staged tile into place (each rename atomic)."""
        for base, _dirs, names in os.walk(self.staging / "tile"):
            for name in names:
                staged = Path(base) / name
                target = self.directory / staged.relative_to(self.staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)


def _stream_tiles(
    log: Ledger,
    checkpoint: Checkpoint,
    previous: Checkpoint | None,
    sink: _TileSink,
    batch: int,
) -> None:
    """Read the log's first ``checkpoint.size`` entries ``batch`` rows at a time and hand each
    tile to ``sink`` as it fills; check the prefix ``previous`` covers, and the root.

    Memory: one batch of rows, one entry bundle and a TileBuilder, whatever the log's size.
    """
    if previous is not None and previous.size == 0 and previous.root != EMPTY_ROOT:
        raise LedgerIntegrityError(f"{sink.directory}: the published empty checkpoint is invalid")
    builder = TileBuilder(sink.put)
    compact = builder.compact
    bundle: list[bytes] = []
    with contextlib.closing(log.bodies(0, checkpoint.size, batch=batch)) as rows:
        for index, body in rows:
            if index != compact.size:
                break
            bundle.append(body)
            builder.add(leaf_hash(body))
            if len(bundle) == TILE_WIDTH:
                sink.put(TileRef(-1, index // TILE_WIDTH, TILE_WIDTH), encode_bundle(bundle))
                bundle.clear()
            if (
                previous is not None
                and compact.size == previous.size
                and compact.root() != previous.root
            ):
                raise LedgerIntegrityError(
                    f"{sink.directory}: the published checkpoint (size {previous.size}) is not a"
                    " prefix of the log: its history was rewritten since the last export"
                )
    if compact.size != checkpoint.size:
        raise LedgerIntegrityError(f"{log.url}: entries missing below size {checkpoint.size}")
    if compact.root() != checkpoint.root:
        raise LedgerIntegrityError(f"{log.url}: entries do not hash to the checkpoint root")
    builder.finish()
    if bundle:
        sink.put(TileRef(-1, checkpoint.size // TILE_WIDTH, len(bundle)), encode_bundle(bundle))


def export_tiles(
    log: Ledger,
    directory: Path,
    signer: NoteSigner,
    *,
    checkpoint_note: str | None = None,
    batch: int = BODY_BATCH,
) -> ExportReport:
    """Write (or bring up to date) the tile tree of ``log`` under ``directory``.

    Signs a fresh checkpoint with ``signer`` unless ``checkpoint_note`` (a checkpoint the log
    already signed, e.g. one carrying witness cosignatures) is given. Streams: entries are
    read ``batch`` rows at a time and each tile is made as it fills, so memory does not grow
    with the log. New tiles are staged in ``directory/.tmp-export-*`` and moved into place
    only once the entries hash to the checkpoint's root; refuses, publishing nothing, when
    the log no longer matches what was exported before (a rewritten history).
    """
    directory = Path(directory)
    note = checkpoint_note if checkpoint_note is not None else log.checkpoint(signer)
    checkpoint = open_checkpoint(note, [signer.verifier()])
    previous = _existing_checkpoint(directory)
    if previous is not None:
        if previous.origin != checkpoint.origin:
            raise LedgerInputError(
                f"{directory}: holds the tiles of another log ({previous.origin})"
            )
        if previous.size > checkpoint.size:
            raise LedgerInputError(
                f"{directory}: the published checkpoint (size {previous.size}) is newer than the"
                f" one to publish (size {checkpoint.size}); a mirror never goes back"
            )
    report = ExportReport(str(directory), checkpoint.size, checkpoint.root, note)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp-export-"))
    try:
        sink = _TileSink(directory, staging, report)
        _stream_tiles(log, checkpoint, previous, sink, batch)
        sink.publish()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_atomic(directory / "checkpoint", note.encode())
    report.add_written("checkpoint")
    return report


@dataclass
class TilesReport:
    """What ``verify_tiles`` found: the entry-level audit plus tile counts."""

    audit: VerifyReport
    checkpoint: Checkpoint | None = None
    tiles_checked: int = 0

    @property
    def ok(self) -> bool:
        return self.checkpoint is not None and self.audit.ok

    def problem(self, what: str, message: str, index: int | None = None) -> None:
        self.audit.problems.append(Problem(index, what, message))

    def summary(self) -> str:
        if self.ok:
            return f"tiles ok: {self.audit.size} entries, {self.tiles_checked} tiles, root {b64(self.audit.root)}"
        return f"tiles fail verification: {self.audit.problems[0].message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.audit.to_dict(),
            "ok": self.ok,
            "tiles_checked": self.tiles_checked,
            "checkpoint": self.checkpoint.to_dict() if self.checkpoint else None,
        }


def _tile_files(directory: Path) -> list[str]:
    root = directory / "tile"
    if not root.is_dir():
        return []
    found = []
    for base, _dirs, names in os.walk(root):
        for name in names:
            found.append((Path(base) / name).relative_to(directory).as_posix())
    return sorted(found)


def verify_tiles(
    directory: Path, verifiers: Sequence[NoteVerifier], *, old_checkpoint: str | None = None
) -> TilesReport:
    """Offline audit of a tile tree against the log's trusted note keys.

    Checks the checkpoint signature; every tile the checkpoint's size needs (present, exact
    length, each level-0 hash the leaf hash of its bundle entry, each higher hash the MTH of
    the full tile below); the entries (chain and indices); the root against the checkpoint;
    every other file under ``tile/`` (an older partial tile must be a prefix of the current
    tile, anything else is reported); and, given ``old_checkpoint`` (a signed note the caller
    kept), that the tree extends it.
    """
    directory = Path(directory)
    report = TilesReport(VerifyReport())
    if not verifiers:
        raise LedgerInputError("verifying tiles needs the log's public note key")
    try:
        note = read_bounded(directory / "checkpoint", MAX_CHECKPOINT_BYTES).decode("utf-8")
        checkpoint = open_checkpoint(note, verifiers)
    except (LedgerInputError, NoteVerificationError, UnicodeDecodeError) as error:
        report.problem("checkpoint", f"{directory / 'checkpoint'}: {error}")
        return report
    report.checkpoint = checkpoint
    tiles: dict[TileRef, bytes] = {}
    for ref in tiles_for_size(checkpoint.size):
        limit = MAX_BUNDLE_BYTES if ref.level < 0 else ref.width * HASH_SIZE
        try:
            data = read_bounded(directory / ref.path, limit)
        except LedgerInputError as error:
            report.problem("tile", str(error))
            continue
        report.tiles_checked += 1
        if ref.level >= 0 and len(data) != ref.width * HASH_SIZE:
            report.problem(
                "tile", f"{ref.path}: {len(data)} bytes, expected {ref.width * HASH_SIZE}"
            )
            continue
        tiles[ref] = data
    rows = _bundle_rows(tiles, checkpoint.size, report)
    notes = [note] if old_checkpoint is None else [note, old_checkpoint]
    audit = verify_entries(rows, checkpoints=notes, verifiers=verifiers, origin=checkpoint.origin)
    audit.problems[:0] = report.audit.problems
    report.audit = audit
    if audit.size != checkpoint.size:
        report.problem(
            "tile", f"the tiles hold {audit.size} entries, the checkpoint {checkpoint.size}"
        )
    _check_upper_levels(tiles, report)
    _check_extra_files(directory, tiles, checkpoint.size, report)
    return report


def _bundle_rows(tiles: dict[TileRef, bytes], size: int, report: TilesReport) -> list[StoredRow]:
    """The entries of every bundle whose level-0 tile agrees with it, as rows for the audit."""
    rows: list[StoredRow] = []
    for ref in tiles_for_size(size):
        if ref.level != 0:
            continue
        bundle_ref = TileRef(-1, ref.index, ref.width)
        hashes, bundle = tiles.get(ref), tiles.get(bundle_ref)
        if hashes is None or bundle is None:
            continue  # already reported missing
        try:
            entries = decode_bundle(bundle, ref.width)
        except LedgerInputError as error:
            report.problem("tile", f"{bundle_ref.path}: {error}")
            continue
        start = ref.index * TILE_WIDTH
        for i, data in enumerate(entries):
            if leaf_hash(data) != hashes[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                report.problem(
                    "tile",
                    f"{bundle_ref.path}: entry {start + i} does not hash to its leaf in {ref.path}",
                    start + i,
                )
            rows.append(StoredRow(start + i, data))
    return rows


def _check_upper_levels(tiles: dict[TileRef, bytes], report: TilesReport) -> None:
    for ref, data in tiles.items():
        if ref.level <= 0:
            continue
        for i in range(ref.width):
            below = tiles.get(TileRef(ref.level - 1, ref.index * TILE_WIDTH + i, TILE_WIDTH))
            if below is None:
                continue  # reported missing
            hashes = [below[j : j + HASH_SIZE] for j in range(0, TILE_BYTES, HASH_SIZE)]
            if root_from_leaf_hashes(hashes) != data[i * HASH_SIZE : (i + 1) * HASH_SIZE]:
                report.problem(
                    "tile",
                    f"{ref.path}: hash {i} is not the Merkle Tree Hash of the tile below",
                )


def _check_extra_files(
    directory: Path, tiles: dict[TileRef, bytes], size: int, report: TilesReport
) -> None:
    """Files beyond those the checkpoint needs: older partial tiles must agree with the tree."""
    wanted = {ref.path for ref in tiles_for_size(size)}
    for rel in _tile_files(directory):
        if rel in wanted or Path(rel).name.startswith(".tmp-"):
            continue
        try:
            ref = TileRef.parse(rel)
        except LedgerInputError as error:
            report.problem("tile", f"unexpected file: {error}")
            continue
        current = [t for t in tiles if (t.level, t.index) == (ref.level, ref.index)]
        if not current or current[0].width < ref.width:
            report.problem("tile", f"{rel}: beyond the checkpoint's tree size {size}")
            continue
        limit = MAX_BUNDLE_BYTES if ref.level < 0 else ref.width * HASH_SIZE
        try:
            data = read_bounded(directory / rel, limit)
        except LedgerInputError as error:
            report.problem("tile", str(error))
            continue
        report.tiles_checked += 1
        full = tiles[current[0]]
        if ref.level < 0:
            try:
                older = decode_bundle(data, ref.width)
                newer = decode_bundle(full, current[0].width)[: ref.width]
            except LedgerInputError as error:
                report.problem("tile", f"{rel}: {error}")
                continue
            same = older == newer
        else:
            same = data == full[: len(data)]
        if not same:
            report.problem("tile", f"{rel}: an older partial tile disagrees with the tree")
