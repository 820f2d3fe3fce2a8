"""modelguard's glue to the ledger: where the ledger lives, and the events modelguard records.

>>> import os, tempfile
>>> from modelguard.audit import record_event, find_sign_entry, newest_version
>>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "ledger.db")
>>> e = record_event("sign", subject={"name": "digits", "version": "1.0", "root": "ab" * 32},
...                  payload_digest="sha256:" + "cd" * 32, actor="k1", ledger_url=url)
>>> find_sign_entry("sha256:" + "cd" * 32, url).index
0
>>> newest_version("digits", url)
'1.0'

Ledger URL: ``--ledger`` (``ledger_url=``), else ``$MODELGUARD_LEDGER``, else
``sqlite:///<cwd>/.modelguard/ledger.db``; created on first write. The checkpoint-signing
Ed25519 note key: ``key_path=`` (``--note-key``), else ``$MODELGUARD_LEDGER_KEY`` (when it
names a file), else next to a SQLite ledger (``<db>.note.key``, mode 0600, and
``<db>.note.pub``), else (PostgreSQL) ``<cwd>/.modelguard/ledger-note.key``; created by
writers on first use, named after the log's origin. Writers sign a fresh checkpoint after
every append when the note key is at hand (always for SQLite), so that readers can prove
the entry. Readers (the gate, ``check_inclusion``, ``check_consistency``) never create a
key or sign: they trust only the public keys they are given.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ledger import (
    Checkpoint,
    ConsistencyProof,
    Entry,
    EventSpec,
    InclusionProof,
    Ledger,
    LedgerInputError,
    LedgerIntegrityError,
    NoteSigner,
    NoteVerifier,
    VerifyReport,
    open_checkpoint,
    open_ledger,
)
from ledger import sqlite_path as _sqlite_path
from ledger.client import check_not_behind, newest_trusted_checkpoint
from ledger.log import verify_jsonl
from ledger.note import split_note
from modelguard.errors import BadInputError, KeyFileError, LedgerVerificationError
from modelguard.safeio import MAX_KEY_BYTES, read_regular

ENV_LEDGER = "MODELGUARD_LEDGER"
ENV_NOTE_KEY = "MODELGUARD_LEDGER_KEY"
SIGN_KINDS = ("sign",)

__all__ = [
    "ENV_LEDGER",
    "ENV_NOTE_KEY",
    "ConsistencyResult",
    "LineageNode",
    "check_consistency",
    "check_inclusion",
    "check_proof",
    "compare_versions",
    "export_ledger",
    "find_sign_entry",
    "init_ledger",
    "is_verifier_key_string",
    "lineage",
    "list_entries",
    "ledger_session",
    "ledger_verifiers",
    "load_note_signer",
    "load_note_verifier",
    "newest_version",
    "normalize_digest",
    "note_key_path",
    "note_public_key_path",
    "open_audit_ledger",
    "prove_entry",
    "prove_with_checkpoint",
    "record_event",
    "record_events",
    "resolve_ledger_url",
    "revocation_for",
    "revoke",
    "sign_checkpoint",
    "signed_name",
    "verify_ledger",
]


def resolve_ledger_url(value: str | None) -> str:
    """``--ledger`` value, else $MODELGUARD_LEDGER, else the default under the cwd."""
    if value:
        return value
    env = os.environ.get(ENV_LEDGER)
    if env:
        return env
    return f"sqlite:///{Path.cwd() / '.modelguard' / 'ledger.db'}"


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Ledger library errors -> modelguard's typed errors (exit 2 / exit 1)."""
    try:
        yield
    except LedgerInputError as error:
        raise BadInputError(str(error)) from None
    except LedgerIntegrityError as error:
        raise LedgerVerificationError(str(error)) from None


def _exists(url: str) -> bool:
    path = _sqlite_path(url)
    return path is None or path.exists()


def open_audit_ledger(ledger_url: str | None = None, *, create: bool = True) -> Ledger:
    """Open the resolved ledger (creating it unless ``create=False``); errors mapped."""
    url = resolve_ledger_url(ledger_url)
    with mapped_errors():
        return open_ledger(url, create=create)


@contextmanager
def ledger_session(ledger_url: str | None = None, *, create: bool = True) -> Iterator[Ledger]:
    """The one open ledger of an operation (each function here opens it once), errors mapped.

    >>> import os, tempfile
    >>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "ledger.db")
    >>> with ledger_session(url) as log:
    ...     log.size()
    0
    """
    with open_audit_ledger(ledger_url, create=create) as log, mapped_errors():
        yield log


def record_event(
    kind: str,
    *,
    subject: Mapping[str, str],
    payload_digest: str,
    actor: str,
    details: Mapping[str, Any] | None = None,
    ledger_url: str | None = None,
) -> Entry:
    """Append one event; it is durable, chained and (key at hand) checkpointed on return."""
    return record_events([EventSpec(kind, subject, payload_digest, actor, details)], ledger_url)[0]


def record_events(events: Sequence[EventSpec], ledger_url: str | None = None) -> list[Entry]:
    """Append several events in one durable transaction, then sign a checkpoint over them
    (one ledger session for both)."""
    url = resolve_ledger_url(ledger_url)
    key = note_key_path(url)
    with ledger_session(url) as log:
        entries = log.append_many(events)
        if key.exists() and not _holds_private_key(key):
            return entries  # a verifier's public key (e.g. $MODELGUARD_LEDGER_KEY): not a writer
        if _sqlite_path(url) is not None or key.exists():
            log.checkpoint(load_note_signer(url, origin=log.origin))
    return entries


def _holds_private_key(path: Path) -> bool:
    return _read_key_text(path).startswith("PRIVATE+KEY+")


def _query(ledger_url: str | None, *queries: Mapping[str, Any]) -> list[list[Entry]]:
    """Entries matching each of ``queries`` (filters for ``Ledger.entries``), read in one
    session; an absent SQLite ledger has none (and is not created)."""
    url = resolve_ledger_url(ledger_url)
    if not _exists(url):
        return [[] for _ in queries]
    with ledger_session(url, create=False) as log:
        return [log.entries(**filters) for filters in queries]


def find_sign_entry(payload_digest: str, ledger_url: str | None = None) -> Entry | None:
    """The newest ``sign`` entry for this signature bundle digest ("sha256:<hex>")."""
    [found] = _query(ledger_url, {"kind": "sign", "payload_digest": payload_digest})
    return found[-1] if found else None


def signed_name(root: str, ledger_url: str | None = None) -> str | None:
    """The name the newest ``sign`` entry for this layer root gives the model, if any."""
    [found] = _query(ledger_url, {"kind": "sign", "subject": {"root": normalize_digest(root)}})
    return found[-1].subject.get("name") if found else None


def normalize_digest(value: str) -> str:
    """Lowercase, without an ``<algorithm>:`` prefix: "sha256:AB" and "ab" compare equal."""
    return value.strip().lower().split(":", 1)[-1]


def revocation_for(digest_or_key_id: str, ledger_url: str | None = None) -> Entry | None:
    """The first ``revoke`` entry naming this digest or key id (prefix-insensitive)."""
    wanted = normalize_digest(digest_or_key_id)
    [revocations] = _query(ledger_url, {"kind": "revoke"})
    for entry in revocations:
        if normalize_digest(entry.subject.get("revoked", "")) == wanted:
            return entry
    return None


def revoke(
    digest_or_key_id: str, *, reason: str, actor: str = "", ledger_url: str | None = None
) -> Entry:
    """Record that a model digest, signature digest or key id must no longer be trusted."""
    if not digest_or_key_id.strip():
        raise BadInputError("nothing to revoke: empty digest or key id")
    if not reason.strip():
        raise BadInputError("a revocation needs a reason")
    return record_event(
        "revoke",
        subject={"revoked": digest_or_key_id.strip()},
        payload_digest=digest_or_key_id.strip(),
        actor=actor or os.environ.get("USER", "unknown"),
        details={"reason": reason},
        ledger_url=ledger_url,
    )


_VERSION_PART = re.compile(r"\d+|[A-Za-z]+")


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    # Numbers compare as numbers and rank above words ("1.0.1" > "1.0" > "1.0rc1" is not
    # attempted: pre-release words rank below numbers, so "1.0rc1" < "1.0.1").
    parts = _VERSION_PART.findall(version.lower().removeprefix("v"))
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in parts)


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as version ``a`` is older than, equal to, or newer than ``b``."""
    ka, kb = _version_key(a), _version_key(b)
    return (ka > kb) - (ka < kb)


def newest_version(model_name: str, ledger_url: str | None = None) -> str | None:
    """The highest version in a ``sign`` entry for this name that is not revoked.

    A version is revoked when every sign entry of it has a revoked target (its signature or
    model digest, its root, or its signing key): revoking v2 makes v1 the newest again. This
    reads rows as stored (a display helper); the gate applies the same rule to proven entries.
    """
    revocations, signs = _query(
        ledger_url, {"kind": "revoke"}, {"kind": "sign", "subject": {"name": model_name}}
    )
    revoked = {
        normalize_digest(e.subject["revoked"])
        for e in revocations
        if e.subject.get("revoked", "").strip()
    }
    live: list[str] = []
    for entry in signs:
        targets = {entry.payload_digest, entry.subject.get("root", ""), entry.actor}
        model_digest = entry.details.get("model_digest")
        if isinstance(model_digest, str):
            targets.add(model_digest)
        if "version" in entry.subject and not {normalize_digest(t) for t in targets} & revoked:
            live.append(entry.subject["version"])
    if not live:
        return None
    newest = live[0]
    for version in live[1:]:
        if compare_versions(version, newest) > 0:
            newest = version
    return newest


def list_entries(
    ledger_url: str | None = None,
    *,
    kind: str | None = None,
    subject: str | None = None,
    limit: int | None = None,
) -> tuple[int, list[Entry]]:
    """(ledger size, matching entries in index order; ``limit`` keeps the newest)."""
    with ledger_session(ledger_url, create=False) as log:
        return log.size(), log.entries(kind=kind, subject=subject, limit=limit)


def export_ledger(path: str | Path, ledger_url: str | None = None) -> int:
    """Write the ledger as JSONL (one canonical entry per line); return the entry count."""
    with ledger_session(ledger_url, create=False) as log:
        try:
            return log.export_jsonl(Path(path))
        except OSError as error:
            raise BadInputError(f"cannot write: {error.strerror}", path=str(path)) from None


# --- checkpoints and proofs -------------------------------------------------------------


_VERIFIER_STRING = re.compile(r"[^\s+]+\+[0-9a-fA-F]{8}\+[A-Za-z0-9+/]{44}")


def is_verifier_key_string(value: str) -> bool:
    """True for a one-line note verifier key (``<name>+<hex id>+<base64>``), not a path."""
    return _VERIFIER_STRING.fullmatch(value.strip()) is not None


def note_key_path(ledger_url: str | None = None, key_path: str | Path | None = None) -> Path:
    """Where the ledger's checkpoint-signing key lives (see the module docstring)."""
    if key_path:
        return Path(key_path)
    env = os.environ.get(ENV_NOTE_KEY)
    if env and not is_verifier_key_string(env):  # a verifier string is for readers only
        return Path(env)
    db = _sqlite_path(resolve_ledger_url(ledger_url))
    if db is not None:
        return db.with_name(db.name + ".note.key")
    return Path.cwd() / ".modelguard" / "ledger-note.key"


def _public_path(private: Path) -> Path:
    name = private.name[: -len(".key")] if private.name.endswith(".key") else private.name
    return private.with_name(name + ".pub")


def note_public_key_path(ledger_url: str | None = None, key_path: str | Path | None = None) -> Path:
    """The public half of the note key (``<name>.pub`` next to ``<name>.key``)."""
    return _public_path(note_key_path(ledger_url, key_path))


def load_note_signer(
    ledger_url: str | None = None,
    key_path: str | Path | None = None,
    *,
    create: bool = True,
    origin: str | None = None,
) -> NoteSigner:
    """The note signing key, created (mode 0600, named after the log's origin) if missing.

    ``origin``: the log's origin when the caller holds the ledger open (else it is opened
    to read it, only when the key has to be created).
    """
    path = note_key_path(ledger_url, key_path)
    if not path.exists():
        if not create:
            raise KeyFileError("no ledger note key (sign a checkpoint first)", path=str(path))
        if origin is None:
            with ledger_session(ledger_url) as log:
                origin = log.origin
        signer = NoteSigner.generate(origin)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write a private temp file, then link it into place: a concurrent creator loses
        # cleanly (FileExistsError) and reads the winner's key.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".note-key-")
        try:
            os.write(fd, (signer.to_key_string() + "\n").encode())
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(tmp, path)
                _public_path(path).write_text(signer.verifier().to_key_string() + "\n")
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    text = _read_key_text(path)
    try:
        return NoteSigner.from_key_string(text)
    except LedgerInputError as error:
        raise KeyFileError(str(error), path=str(path)) from None


def _read_key_text(path: Path) -> str:
    data = read_regular(path, max_size=MAX_KEY_BYTES, what="ledger key file")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise KeyFileError("not a ledger note key (not UTF-8 text)", path=str(path)) from None


def load_note_verifier(spec: str | Path) -> NoteVerifier:
    """A verifier key: a one-line key string, a key file, or the signer key file it belongs to."""
    if isinstance(spec, str) and is_verifier_key_string(spec):
        try:
            return NoteVerifier.from_key_string(spec)
        except LedgerInputError as error:
            raise KeyFileError(str(error), path="ledger key") from None
    text = _read_key_text(Path(spec))
    try:
        if text.startswith("PRIVATE+KEY+"):
            return NoteSigner.from_key_string(text).verifier()
        return NoteVerifier.from_key_string(text)
    except LedgerInputError as error:
        raise KeyFileError(str(error), path=str(spec)) from None


def ledger_verifiers(specs: Sequence[str]) -> list[NoteVerifier]:
    """The checkpoint keys a reader (the gate, ``verify --ledger-proof``) trusts: ``specs``
    (``--ledger-key``, the policy's ``[ledger] key``), else ``$MODELGUARD_LEDGER_KEY``."""
    if not specs:
        env = os.environ.get(ENV_NOTE_KEY, "").strip()
        specs = [env] if env else []
    return [load_note_verifier(spec) for spec in specs]


def _trusted(
    ledger_url: str | None, key_path: str | Path | None, public_keys: Sequence[str | Path]
) -> list[NoteVerifier]:
    """Verifiers given explicitly, else the local note key's (if it exists)."""
    if public_keys:
        return [load_note_verifier(p) for p in public_keys]
    path = note_key_path(ledger_url, key_path)
    return [load_note_verifier(path)] if path.exists() else []


def init_ledger(
    ledger_url: str | None = None, *, origin: str | None = None, key_path: str | Path | None = None
) -> dict[str, Any]:
    """Create the ledger and its note key if missing; describe them."""
    url = resolve_ledger_url(ledger_url)
    with mapped_errors(), open_ledger(url, create=True, origin=origin) as log:
        size, log_origin = log.size(), log.origin
        signer = load_note_signer(url, key_path, origin=log_origin)
    return {
        "url": url,
        "origin": log_origin,
        "size": size,
        "note_key": str(note_key_path(url, key_path)),
        "public_key": signer.verifier().to_key_string(),
    }


def sign_checkpoint(ledger_url: str | None = None, key_path: str | Path | None = None) -> str:
    """Sign the current tree head with the ledger's note key; return the C2SP note."""
    with ledger_session(ledger_url) as log:
        return log.checkpoint(load_note_signer(ledger_url, key_path, origin=log.origin))


def prove_entry(
    index: int, ledger_url: str | None = None, tree_size: int | None = None
) -> InclusionProof:
    """Inclusion proof of entry ``index`` (it carries the entry); checked before returning."""
    with ledger_session(ledger_url, create=False) as log:
        proof = log.inclusion_proof(index, tree_size)
        proof.verify()
        return proof


def prove_with_checkpoint(
    index: int, ledger_url: str | None = None, key_path: str | Path | None = None
) -> dict[str, Any]:
    """``{"proof": inclusion proof JSON, "checkpoint": signed note}`` for entry ``index``.

    The checkpoint is freshly signed, and the proof is for exactly its tree size, so the pair
    checks offline with nothing but the log's public key (:func:`check_proof`).
    """
    with ledger_session(ledger_url) as log:
        note = log.checkpoint(load_note_signer(ledger_url, key_path, origin=log.origin))
        checkpoint = Checkpoint.from_text(split_note(note)[0])
        proof = log.inclusion_proof(index, checkpoint.size)
        proof.verify(checkpoint)
    return {"proof": proof.to_dict(), "checkpoint": note}


def check_inclusion(
    entry: Entry, public_keys: Sequence[str | Path], ledger_url: str | None = None
) -> InclusionProof:
    """Demand that ``entry`` is in the ledger: inclusion proof to a trusted signed checkpoint.

    Read-only: the newest stored checkpoint that one of ``public_keys`` signed must cover
    the entry (writers sign one after each append; else run ``ledger checkpoint``). Raises
    LedgerVerificationError otherwise, BadInputError when no key is given.
    """
    if not public_keys:
        raise BadInputError("checking inclusion needs the ledger's public note key (--key)")
    trusted = [load_note_verifier(p) for p in public_keys]
    with (
        mapped_errors(),
        open_ledger(resolve_ledger_url(ledger_url), create=False, read_only=True) as log,
    ):
        _, checkpoint = newest_trusted_checkpoint(log, trusted)
        if checkpoint.size <= entry.index:
            raise LedgerVerificationError(
                f"entry {entry.index} is not covered by a signed checkpoint (the newest covers"
                f" {checkpoint.size} entries): run `modelguard ledger checkpoint`"
            )
        proof = log.inclusion_proof(entry.index, checkpoint.size)
        if proof.leaf_hash != entry.leaf_hash:
            raise LedgerVerificationError(
                f"ledger entry {entry.index} differs from the entry that was looked up"
            )
        proof.verify(checkpoint)
    return proof


def check_proof(
    document: Mapping[str, Any],
    public_keys: Sequence[str | Path],
    checkpoint_note: str | None = None,
) -> tuple[InclusionProof, Checkpoint]:
    """Offline: an inclusion proof against a signed checkpoint and the log's public key(s).

    ``document``: the output of :func:`prove_with_checkpoint` (proof + checkpoint), or a bare
    proof JSON with ``checkpoint_note`` given separately (which then takes precedence).
    """
    if not public_keys:
        raise BadInputError("checking a proof needs the log's public note key (--key)")
    proof_doc = document.get("proof") if "checkpoint" in document else document
    note = checkpoint_note or document.get("checkpoint")
    if not isinstance(proof_doc, Mapping) or not isinstance(note, str):
        raise BadInputError("need an inclusion proof and a signed checkpoint (--checkpoint)")
    with mapped_errors():
        checkpoint = open_checkpoint(note, [load_note_verifier(p) for p in public_keys])
        proof = InclusionProof.from_dict(proof_doc)
        proof.verify(checkpoint)
    return proof, checkpoint


@dataclass(frozen=True)
class ConsistencyResult:
    """A saved checkpoint against the log: the proof, the checkpoint used, tampered entries."""

    proof: ConsistencyProof
    checkpoint: str  # the newest stored checkpoint a trusted key signed
    problems: VerifyReport  # entries whose bodies no longer match their leaves, and so on

    @property
    def ok(self) -> bool:
        return self.problems.ok


def check_consistency(
    old_checkpoint_note: str,
    public_keys: Sequence[str | Path],
    ledger_url: str | None = None,
) -> ConsistencyResult:
    """Read-only: prove the newest trusted checkpoint extends a saved one, and audit the rows.

    A forked, rewritten or truncated log fails with LedgerVerificationError. Entries whose
    bodies no longer match their tree leaves (an edited row) are reported in ``problems``.
    Nothing is written: no checkpoint is signed, no key created.
    """
    if not public_keys:
        raise BadInputError("checking consistency needs the ledger's public note key (--key)")
    trusted = [load_note_verifier(p) for p in public_keys]
    with mapped_errors():
        old = open_checkpoint(old_checkpoint_note, trusted)
        with open_ledger(resolve_ledger_url(ledger_url), create=False, read_only=True) as log:
            new_note, new = newest_trusted_checkpoint(log, trusted)
            check_not_behind(old, new)  # another log, truncated, or forked: exit 1
            hashes = log.consistency_proof(old.size, new.size).hashes
            problems = log.verify(trusted)
        proof = ConsistencyProof(old.size, new.size, old.root, new.root, hashes, new.origin)
        proof.verify()
    return ConsistencyResult(proof, new_note, problems)


def verify_ledger(
    ledger_url: str | None = None,
    *,
    jsonl: str | Path | None = None,
    checkpoint_note: str | None = None,
    key_path: str | Path | None = None,
    public_keys: Sequence[str | Path] = (),
) -> VerifyReport:
    """Recompute the ledger (or an exported JSONL file) and report the first bad index."""
    trusted = _trusted(ledger_url, key_path, public_keys) if jsonl is None or public_keys else []
    with mapped_errors():
        if jsonl is not None:
            if checkpoint_note and not trusted:
                raise LedgerInputError("checking a checkpoint needs the log's public key (--key)")
            return verify_jsonl(Path(jsonl), checkpoint=checkpoint_note, verifiers=trusted)
        with open_audit_ledger(ledger_url, create=False) as log:
            return log.verify(trusted)


# --- lineage ----------------------------------------------------------------------------


@dataclass
class LineageNode:
    """One model (a manifest root) with the entries about it and the models derived from it.

    ``revoked``: the revocations that hit this model (its root, a signature or model digest
    of one of its entries, or the key that signed it), as ``{index, target, reason}``.
    """

    root: str
    entries: list[Entry] = field(default_factory=list)
    children: list[LineageNode] = field(default_factory=list)
    revoked: list[dict[str, Any]] = field(default_factory=list)

    @property
    def label(self) -> str:
        # The name it was signed under, whatever later entries (encrypt, evaluate) called it.
        signs = [e for e in self.entries if e.kind == "sign"]
        subject = (signs or self.entries[-1:])[0].subject if self.entries else {}
        name = subject.get("name", "?")
        version = subject.get("version")
        mark = " [REVOKED]" if self.revoked else ""
        return f"{name}{' ' + version if version else ''} ({self.root[:16]}){mark}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "label": self.label,
            "revoked": self.revoked,
            "entries": [
                {"index": e.index, "kind": e.kind, "subject": e.subject, "timestamp": e.timestamp}
                for e in self.entries
            ],
            "children": [c.to_dict() for c in self.children],
        }


def _revocations_of(
    root: str, entries: Sequence[Entry], revoked: Mapping[str, Entry]
) -> list[dict[str, Any]]:
    targets = {root}
    for entry in entries:
        targets.add(normalize_digest(entry.payload_digest))
        model_digest = entry.details.get("model_digest")
        if isinstance(model_digest, str):
            targets.add(normalize_digest(model_digest))
        if entry.kind == "sign" and entry.actor:
            targets.add(normalize_digest(entry.actor))
    return [
        {"index": revoked[t].index, "target": t, "reason": revoked[t].details.get("reason", "")}
        for t in sorted(targets & revoked.keys(), key=lambda t: revoked[t].index)
    ]


def lineage(name_or_digest: str, ledger_url: str | None = None) -> list[LineageNode]:
    """Ancestry (through ``subject.parent`` links, e.g. harden entries) and descendants.

    Matches a model name, a manifest root or a payload digest; returns the family trees
    (oldest ancestor at the top) that contain a match. Empty when nothing matches. A display
    of the rows as stored; the deployment gate proves what it relies on.
    """
    [everything] = _query(ledger_url, {})
    revoked: dict[str, Entry] = {}
    for entry in everything:
        if entry.kind == "revoke" and entry.subject.get("revoked"):
            revoked.setdefault(normalize_digest(entry.subject["revoked"]), entry)
    all_entries = [e for e in everything if "root" in e.subject]
    by_root: dict[str, list[Entry]] = {}
    parent_of: dict[str, str] = {}
    for entry in all_entries:
        root = normalize_digest(entry.subject["root"])
        by_root.setdefault(root, []).append(entry)
        if entry.subject.get("parent"):
            parent_of.setdefault(root, normalize_digest(entry.subject["parent"]))
    wanted = normalize_digest(name_or_digest)
    matches = {
        normalize_digest(e.subject["root"])
        for e in all_entries
        if name_or_digest in (e.subject.get("name"), e.payload_digest)
        or normalize_digest(e.subject["root"]) == wanted
        or normalize_digest(e.payload_digest) == wanted
    }
    tops: list[str] = []
    for root in sorted(matches):
        seen = {root}
        while root in parent_of and parent_of[root] not in seen:
            root = parent_of[root]
            seen.add(root)
        if root not in tops:
            tops.append(root)
    children: dict[str, list[str]] = {}
    for child, parent in parent_of.items():
        children.setdefault(parent, []).append(child)

    def build(root: str, seen: frozenset[str]) -> LineageNode:
        entries = by_root.get(root, [])
        node = LineageNode(root, entries, revoked=_revocations_of(root, entries, revoked))
        for child in sorted(children.get(root, []), key=lambda r: by_root[r][0].index):
            if child not in seen:
                node.children.append(build(child, seen | {child}))
        return node

    return [build(top, frozenset({top})) for top in tops]
