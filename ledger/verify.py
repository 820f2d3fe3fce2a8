"""Full recomputation of a log: hash chain, Merkle tree, stored checkpoints.

>>> from ledger.verify import verify_entries
>>> verify_entries([]).ok
True

Used both for a database (with its stored tree nodes and checkpoints) and for an exported
JSONL file (entries only, optionally a checkpoint). Reports every problem found, in index
order; ``first_bad_index`` names the earliest entry that is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ledger.entry import FIELDS, GENESIS_PREV
from ledger.errors import LedgerInputError, LedgerIntegrityError
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    compact_range,
    fold_cover,
    leaf_hash,
    node_id,
)
from ledger.note import Checkpoint, NoteVerifier, open_checkpoint
from ledger.proofs import b64

# Columns kept next to each entry for queries; they must agree with the entry's content.
MAX_PROBLEMS = 1000
_FIELD_SET = frozenset(FIELDS)
_decode = json.JSONDecoder().decode
INDEXED_COLUMNS = ("kind", "subject_name", "subject_root", "payload_digest", "actor")


def indexed_values(body: Mapping[str, Any]) -> tuple[str | None, ...]:
    subject = body.get("subject") or {}
    return (
        body.get("kind"),
        subject.get("name"),
        subject.get("root"),
        body.get("payload_digest"),
        body.get("actor"),
    )


@dataclass(frozen=True)
class Problem:
    index: int | None  # the first entry concerned; None when no single entry can be named
    what: str  # edited | deleted | reordered | inserted | tree | checkpoint | malformed
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "what": self.what, "message": self.message}


class StoredRow(NamedTuple):
    position: int  # idx column (database) or 0-based line number (file)
    body: bytes
    columns: tuple[str | None, ...] | None = None  # INDEXED_COLUMNS as stored, if any


@dataclass
class VerifyReport:
    size: int = 0
    root: bytes = EMPTY_ROOT
    problems: list[Problem] = field(default_factory=list)
    checkpoints_checked: int = 0
    omitted: int = 0  # problems beyond MAX_PROBLEMS, not listed

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        indices = [p.index for p in self.problems if p.index is not None]
        return min(indices) if indices else None

    def summary(self) -> str:
        if self.ok:
            return f"ledger ok: {self.size} entries, root {b64(self.root)}"
        return f"ledger tampered: {self.problems[0].message}"

    def raise_for_problems(self) -> None:
        if not self.ok:
            raise LedgerIntegrityError(self.summary())

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "size": self.size,
            "root": b64(self.root),
            "first_bad_index": self.first_bad_index,
            "checkpoints_checked": self.checkpoints_checked,
            "problems": [p.to_dict() for p in self.problems],
            "problems_omitted": self.omitted,
        }


def _entry_is_sound(row: StoredRow, expected: int, prev: str) -> bool:
    """True when the entry parses, has the entry fields, index, prev and query columns."""
    try:
        body = _decode(row.body.decode())
        if (
            type(body) is not dict
            or type(body["index"]) is not int
            or body["index"] != expected
            or body["prev"] != prev
            or body.keys() != _FIELD_SET
        ):
            return False
        if row.columns is None:
            return True
        subject = body["subject"]
        return type(subject) is dict and row.columns == (
            body["kind"],
            subject.get("name"),
            subject.get("root"),
            body["payload_digest"],
            body["actor"],
        )
    except (ValueError, UnicodeDecodeError, KeyError, RecursionError):
        return False


def _check_row(row: StoredRow, expected: int, prev: str, report: VerifyReport) -> tuple[bytes, str]:
    """Check one entry; return its recomputed leaf hash and the prev for the next entry."""
    problems = report.problems
    h = leaf_hash(row.body)
    try:
        body = _decode(row.body.decode())
    except (ValueError, UnicodeDecodeError, RecursionError):  # deeply nested: RecursionError
        problems.append(Problem(expected, "edited", f"entry {expected}: content is not valid JSON"))
        return h, h.hex()
    if not isinstance(body, dict) or body.keys() != _FIELD_SET:
        problems.append(
            Problem(expected, "edited", f"entry {expected}: fields are not the entry fields")
        )
        return h, h.hex()
    index = body.get("index")
    if index != expected:
        problems.append(
            Problem(
                expected,
                "reordered",
                f"entry {expected}: holds the content of entry {index} (entries reordered or"
                " inserted)",
            )
        )
    elif body.get("prev") != prev:
        problems.append(
            Problem(
                max(expected - 1, 0),
                "edited",
                f"entry {expected}: prev does not match the hash of entry {expected - 1}"
                f" (entry {expected - 1} altered, or entries inserted or deleted)",
            )
        )
    if row.columns is not None and tuple(row.columns) != indexed_values(body):
        problems.append(
            Problem(
                expected,
                "edited",
                f"entry {expected}: its query columns disagree with its content (edited)",
            )
        )
    return h, h.hex()


def verify_entries(
    rows: Iterable[StoredRow],
    *,
    nodes: Mapping[int, bytes] | None = None,
    checkpoints: Sequence[str] = (),
    verifiers: Sequence[NoteVerifier] = (),
    origin: str | None = None,
) -> VerifyReport:
    """Recompute chain and tree over ``rows`` (in stored order) and compare.

    ``nodes``: the stored perfect-subtree hashes by :func:`ledger.merkle.node_id`, when the
    log keeps them. ``checkpoints``: signed notes the log issued (their signatures are
    checked against ``verifiers`` when given; their roots always against the recomputation).
    """
    report = VerifyReport()
    prev = GENESIS_PREV
    expected = 0  # the index the next stored row should have
    computed: dict[int, bytes] = {}
    compact = CompactRange()  # over the rows as stored; every completed node goes to computed

    def keep(level: int, index: int, node: bytes) -> None:
        computed[node_id(level, index)] = node

    for row in rows:
        if row.position != expected:  # positions only ever increase (primary key, lines)
            report.problems.append(
                Problem(
                    expected,
                    "deleted",
                    f"entry {expected} is missing (deleted); the next stored entry is"
                    f" {row.position}",
                )
            )
            # Carry on from the stored position so that later problems are still reported.
            expected = row.position
        if _entry_is_sound(row, expected, prev):  # the fast path; details only on failure
            h = leaf_hash(row.body)
            prev = h.hex()
        else:
            h, prev = _check_row(row, expected, prev, report)
        if nodes is not None:
            stored = nodes.get(node_id(0, row.position))
            if stored is None:
                report.problems.append(
                    Problem(
                        expected, "inserted", f"entry {expected} has no leaf in the tree (inserted)"
                    )
                )
            elif stored != h:
                report.problems.append(
                    Problem(
                        expected,
                        "edited",
                        f"entry {expected}: content does not match its leaf hash in the tree"
                        " (edited)",
                    )
                )
        compact.append(h, keep)
        expected += 1
    report.size = compact.size
    report.root = compact.root()
    if nodes is not None:
        _compare_nodes(nodes, computed, report)
    for note in checkpoints:
        _check_checkpoint(note, computed, report, verifiers, origin)
    report.problems.sort(key=lambda p: (p.index is None, p.index or 0))
    if len(report.problems) > MAX_PROBLEMS:
        report.omitted = len(report.problems) - MAX_PROBLEMS
        del report.problems[MAX_PROBLEMS:]
    return report


def _leaf_range(nid: int) -> tuple[int, int, int]:
    level, idx = nid >> 56, nid & ((1 << 56) - 1)
    return level, idx << level, ((idx + 1) << level) - 1


def _compare_nodes(
    nodes: Mapping[int, bytes], computed: Mapping[int, bytes], report: VerifyReport
) -> None:
    if nodes == computed:  # the common case, compared in C
        return
    for nid, h in nodes.items():
        mine = computed.get(nid)
        if mine == h:
            continue
        level, first, last = _leaf_range(nid)
        if mine is None:
            report.problems.append(
                Problem(
                    report.size,
                    "deleted",
                    f"the tree holds entries {first}..{last} but the log ends at"
                    f" {report.size - 1} (entries deleted)",
                )
            )
        elif level:
            # The entries under it recompute to another hash; which one changed shows in the
            # per-entry checks (when the stored leaf was rewritten too, in the next prev).
            report.problems.append(
                Problem(None, "tree", f"tree node over entries {first}..{last} was altered")
            )
    for nid in computed.keys() - nodes.keys():
        level, first, last = _leaf_range(nid)
        if level:
            report.problems.append(
                Problem(None, "tree", f"tree node over entries {first}..{last} is missing")
            )


def _check_checkpoint(
    note: str,
    computed: Mapping[int, bytes],
    report: VerifyReport,
    verifiers: Sequence[NoteVerifier],
    origin: str | None,
) -> None:
    try:
        if verifiers:
            checkpoint = open_checkpoint(note, verifiers)
        else:
            checkpoint = Checkpoint.from_text(note[: note.rfind("\n\n") + 1])
    except (LedgerInputError, LedgerIntegrityError) as error:
        report.problems.append(Problem(None, "checkpoint", f"stored checkpoint: {error}"))
        return
    report.checkpoints_checked += 1
    if origin is not None and checkpoint.origin != origin:
        report.problems.append(
            Problem(None, "checkpoint", f"checkpoint for another log ({checkpoint.origin})")
        )
    elif checkpoint.size > report.size:
        report.problems.append(
            Problem(
                report.size,
                "deleted",
                f"a signed checkpoint covers {checkpoint.size} entries but only {report.size}"
                " remain (entries deleted from the end)",
            )
        )
    else:
        root = fold_cover([computed[node_id(*k)] for k in compact_range(checkpoint.size)])
        if root != checkpoint.root:
            report.problems.append(
                Problem(
                    None,
                    "checkpoint",
                    f"the first {checkpoint.size} entries no longer match the signed checkpoint"
                    " of that size (history rewritten)",
                )
            )
