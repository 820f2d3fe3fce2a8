"""``verify --require-ledger``: the ledger as a deployment control, trusting only signed tree heads.

    policy = with_ledger_trust(policy_from_keys([pub]), keys=["ledger.db.note.pub"])
    report = verify_model(path, policy=policy, ledger_url="sqlite:///ledger.db",
                          require_ledger=True)

The gate is read-only (the ledger is opened read-only; no key is created, no checkpoint is
signed) and trusts nothing but checkpoints signed by a ledger key the verifier was given
(``--ledger-key``, the policy's ``[ledger] key``, or ``$MODELGUARD_LEDGER_KEY``):

1. The newest stored checkpoint a trusted key signed is the tree head ("current").
2. Every optional cosignature check (witnesses, see :func:`add_checkpoint_check`) must pass.
3. The client trust state for the log's origin (the last checkpoint this client accepted,
   its compact range, and the facts derived from the entries it proved) is advanced to the
   current checkpoint by :func:`ledger.client.advance`: the entries appended since are read,
   hashed as leaves, folded onto the trusted compact range and must give the current root.
   A truncated, forked or rewritten log, a deleted or edited row, all fail here.
4. Decisions come from proven entry bodies only: the revocation set and the versions of
   every model name are facts derived from proven entries (kept in the trust state); the
   signature's own ``sign`` entry and each newer version relied on are fetched with an
   inclusion proof to the current checkpoint. The query columns only find candidates.
5. The trust state is written (atomically) only after the current checkpoint was proven.

Rollback rule: a signed ``name``/``version`` is refused when the ledger proves a sign entry
of the same name with a higher version that is not revoked. A version is revoked when each
of its sign entries has a revoked target (model digest, signature digest, layer root or
signing key id). So revoking v2 lets v1 deploy again; ``--allow-rollback`` skips the rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cmp_to_key
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger import (
    Checkpoint,
    Entry,
    Ledger,
    LedgerError,
    LedgerIntegrityError,
    NoteVerifier,
    open_checkpoint,
    open_ledger,
)
from ledger.client import TrustedHead, advance, newest_trusted_checkpoint
from ledger.merkle import leaf_hash
from modelguard.audit import (
    compare_versions,
    ledger_verifiers,
    normalize_digest,
    resolve_ledger_url,
)
from modelguard.errors import BadInputError
from modelguard.keys import atomic_write
from modelguard.manifest import Manifest
from modelguard.safeio import read_regular
from modelguard.signing.gate import Report, SignerFacts
from modelguard.transparency import policy_witness_reasons

if TYPE_CHECKING:
    from modelguard.policy import Policy

ENV_LEDGER_STATE = "MODELGUARD_LEDGER_STATE"
STATE_FORMAT = 1
MAX_STATE_BYTES = 256 * 1024 * 1024
NO_KEY_FIX = (
    "the ledger gate needs the ledger's checkpoint public key: give --ledger-key"
    " LEDGER.note.pub (written by `modelguard ledger init`, e.g. .modelguard/ledger.db.note.pub),"
    " set MODELGUARD_LEDGER_KEY to that file or to its one-line key, or add"
    ' [ledger] key = "..." to the policy'
)

# (signed checkpoint note, its parsed body) -> failure reasons; empty = accepted.
CheckpointCheck = Callable[[str, Checkpoint], list[str]]
_checkpoint_checks: list[CheckpointCheck] = []


def add_checkpoint_check(check: CheckpointCheck) -> None:
    """Install a check every accepted checkpoint must pass (e.g. a witness cosignature quorum).

    It receives the note exactly as stored (with every signature line) after its log
    signature verified, and returns the reasons to refuse it (empty: accept).
    """
    if check not in _checkpoint_checks:
        _checkpoint_checks.append(check)


def remove_checkpoint_check(check: CheckpointCheck) -> None:
    with contextlib.suppress(ValueError):
        _checkpoint_checks.remove(check)


# --- where trust comes from ------------------------------------------------------------


def default_state_dir() -> Path:
    """``$MODELGUARD_LEDGER_STATE``, else ``$XDG_CONFIG_HOME/modelguard/ledger-state``."""
    env = os.environ.get(ENV_LEDGER_STATE)
    if env:
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "modelguard" / "ledger-state"


def state_path(origin: str, directory: Path | None = None) -> Path:
    """One file per log origin: ``<readable origin>-<sha256(origin)[:16]>.json``."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", origin)[:64]
    digest = hashlib.sha256(origin.encode()).hexdigest()[:16]
    return (directory or default_state_dir()) / f"{readable}-{digest}.json"


# --- facts derived from proven entries --------------------------------------------------


@dataclass
class LedgerFacts:
    """What the gate knows from proven entry bodies: revocations and versions per model."""

    revoked: dict[str, dict[str, Any]] = field(default_factory=dict)  # target -> index, reason
    versions: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # name -> v -> idx

    def add(self, entry: Entry) -> None:
        if entry.kind == "revoke":
            target = normalize_digest(entry.subject.get("revoked", ""))
            if target and target not in self.revoked:
                reason = entry.details.get("reason", "")
                self.revoked[target] = {"index": entry.index, "reason": str(reason)}
        elif entry.kind == "sign":
            name, version = entry.subject.get("name"), entry.subject.get("version")
            if name and version:
                self.versions.setdefault(name, {}).setdefault(version, []).append(entry.index)

    def merged(self, later: LedgerFacts) -> LedgerFacts:
        """These facts followed by those of later entries (the earliest revocation wins)."""
        revoked = {**later.revoked, **self.revoked}
        versions = {name: dict(by_version) for name, by_version in self.versions.items()}
        for name, by_version in later.versions.items():
            mine = versions.setdefault(name, {})
            for version, indices in by_version.items():
                mine[version] = [*mine.get(version, []), *indices]
        return LedgerFacts(revoked, versions)

    def revocation(self, targets: Sequence[str]) -> tuple[str, dict[str, Any]] | None:
        for target in targets:
            hit = self.revoked.get(normalize_digest(target))
            if hit is not None:
                return target, hit
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"revoked": self.revoked, "versions": self.versions}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> LedgerFacts:
        revoked, versions = document.get("revoked"), document.get("versions")
        well_formed = (
            isinstance(revoked, dict)
            and all(
                isinstance(r, dict)
                and type(r.get("index")) is int
                and isinstance(r.get("reason"), str)
                for r in revoked.values()
            )
            and isinstance(versions, dict)
            and all(
                isinstance(by_version, dict)
                and all(
                    isinstance(indices, list) and all(type(i) is int for i in indices)
                    for indices in by_version.values()
                )
                for by_version in versions.values()
            )
        )
        if not well_formed or not isinstance(revoked, dict) or not isinstance(versions, dict):
            raise BadInputError("ledger trust state: facts are malformed; delete it to start over")
        return cls(revoked=revoked, versions=versions)


def may_matter(body: bytes) -> bool:
    """False only for entries whose kind is certainly neither ``sign`` nor ``revoke``.

    A JSON string spells its letters out unless it uses a ``\\u`` escape, so an entry of
    either kind, in UTF-8, contains ``"sign"`` or ``"revoke"`` verbatim, or a ``\\u``
    somewhere; JSON in UTF-16 or UTF-32 (which the parser also accepts) contains NUL bytes.
    Skipping the others saves parsing most entries on a first run over a large log.
    """
    return b'"sign"' in body or b'"revoke"' in body or b"\\u" in body or b"\x00" in body


def sign_entry_targets(entry: Entry) -> list[str]:
    """Everything a revocation may name for this sign entry."""
    targets = [entry.payload_digest, entry.subject.get("root", ""), entry.actor]
    model_digest = entry.details.get("model_digest")
    if isinstance(model_digest, str):
        targets.append(model_digest)
    return [t for t in targets if t]


# --- the trust state file ----------------------------------------------------------------


@dataclass
class TrustState:
    head: TrustedHead
    facts: LedgerFacts

    def dumps(self) -> bytes:
        document = {"format": STATE_FORMAT, "head": self.head.to_dict(), **self.facts.to_dict()}
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, data: bytes, source: str) -> TrustState:
        try:
            document = json.loads(data)
            if document.get("format") != STATE_FORMAT:
                raise BadInputError("unknown ledger trust state format", path=source)
            return cls(TrustedHead.from_dict(document["head"]), LedgerFacts.from_dict(document))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
            raise BadInputError(
                f"ledger trust state is malformed ({error}); delete it to start over",
                path=source,
            ) from None


def read_state(path: Path) -> TrustState | None:
    if not path.exists():
        return None
    return TrustState.loads(
        read_regular(path, max_size=MAX_STATE_BYTES, what="ledger state"), str(path)
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_state(path: Path, state: TrustState) -> None:
    """Replace the state atomically, never with an older head than the one on disk."""
    with _locked(path):
        current = read_state(path)
        if current is not None and current.head.size > state.head.size:
            return
        atomic_write(path, state.dumps(), 0o600)


# --- the gate ----------------------------------------------------------------------------


class _Refused(Exception):
    """The ledger cannot back any decision; the message says why."""


@dataclass
class _Proven:
    log: Ledger
    note: str
    checkpoint: Checkpoint
    facts: LedgerFacts
    state_file: Path
    trusted_from: int

    def entry(self, index: int) -> Entry:
        """Entry ``index``, its stored bytes proven to be leaf ``index`` of the current tree."""
        proof = replace(self.log.inclusion_proof(index, self.checkpoint.size), entry=None)
        proof.verify(self.checkpoint)
        stored = list(self.log.bodies(index, index + 1))
        if not stored or leaf_hash(stored[0][1]) != proof.leaf_hash:
            raise LedgerIntegrityError(f"entry {index} does not match its proven leaf")
        return Entry.from_canonical(stored[0][1])


def _prove(url: str, verifiers: Sequence[NoteVerifier], policy: Policy | None) -> _Proven:
    try:
        log = open_ledger(url, create=False, read_only=True)
    except LedgerError as error:
        raise _Refused(f"cannot open the ledger: {error}") from None
    try:
        note, checkpoint = newest_trusted_checkpoint(log, verifiers)
        reasons = [r for check in _checkpoint_checks for r in check(note, checkpoint)]
        reasons += policy_witness_reasons(note, policy)  # [ledger] witnesses, witness_quorum
        if reasons:
            raise _Refused(f"checkpoint of size {checkpoint.size}: " + "; ".join(reasons))
        directory = policy.ledger.state if policy and policy.ledger else None
        path = state_path(checkpoint.origin, directory)
        state = read_state(path)
        if state is not None:
            try:
                open_checkpoint(state.head.note, verifiers)
            except LedgerError:
                raise _Refused(
                    f"the trust state {path} holds a checkpoint no given ledger key signed"
                    " (was the ledger key rotated? delete the file to trust the log anew)"
                ) from None
        # Facts from the new entries are kept apart, and merged only once the head is proven.
        new = LedgerFacts()
        head = advance(log, state.head if state else None, note, checkpoint, new.add, may_matter)
        facts = state.facts.merged(new) if state else new
    except (LedgerError, _Refused) as error:
        log.close()
        raise _Refused(str(error)) from None
    except BaseException:
        log.close()
        raise
    if state is None or head.size > state.head.size:
        write_state(path, TrustState(head, facts))
    return _Proven(log, note, checkpoint, facts, path, state.head.size if state else 0)


def _sign_entry(proven: _Proven, payload_digest: str) -> Entry | str:
    """The newest proven sign entry for this bundle digest, or why there is none."""
    candidates = proven.log.entries(kind="sign", payload_digest=payload_digest)
    size = proven.checkpoint.size
    covered = [e for e in candidates if e.index < size]
    if not covered:
        if candidates:
            return (
                f"the sign entry {candidates[-1].index} for {payload_digest} is not yet covered"
                f" by a signed checkpoint (the newest covers {size} entries): the ledger's"
                " writer must run `modelguard ledger checkpoint`"
            )
        return f"no sign entry for {payload_digest} in the ledger"
    for candidate in reversed(covered):
        try:
            entry = proven.entry(candidate.index)
        except LedgerError as error:
            return f"sign entry {candidate.index}: inclusion proof fails: {error}"
        if entry.kind == "sign" and entry.payload_digest == payload_digest:
            return entry
    return f"no proven sign entry for {payload_digest} (the rows that claim one do not)"


def _newer_live_version(proven: _Proven, name: str, version: str) -> str | None:
    """The highest version above ``version`` with a sign entry that is not revoked."""
    newer = [v for v in proven.facts.versions.get(name, {}) if compare_versions(v, version) > 0]
    newer.sort(key=cmp_to_key(compare_versions), reverse=True)
    for candidate in newer:
        for index in proven.facts.versions[name][candidate]:
            entry = proven.entry(index)
            if proven.facts.revocation(sign_entry_targets(entry)) is None:
                return candidate
    return None


def check_ledger(
    report: Report,
    signed: Sequence[tuple[str, SignerFacts, str, Manifest | None]],
    *,
    ledger_url: str | None,
    allow_rollback: bool,
    policy: Policy | None = None,
) -> None:
    """Add ledger checks to ``report`` for each (payload digest, signer, subject digest, manifest)."""
    url = resolve_ledger_url(ledger_url)
    summary: dict[str, Any] = {"url": url, "entries": []}
    report.ledger = summary
    if not signed:
        report.check("ledger", False, "no verified signature to look up in the ledger", "ledger")
        return
    # --ledger-key / the policy's [ledger] key, else the env; unreadable key file: exit 2
    verifiers = ledger_verifiers(policy.ledger.keys if policy and policy.ledger else ())
    if not verifiers:
        report.check("ledger", False, NO_KEY_FIX, "ledger")
        return
    try:
        proven = _prove(url, verifiers, policy)
    except _Refused as error:
        report.check("ledger", False, f"ledger refused: {error}", "ledger")
        return
    summary.update(
        origin=proven.checkpoint.origin,
        checkpoint_size=proven.checkpoint.size,
        trusted_from=proven.trusted_from,
        state=str(proven.state_file),
    )
    try:
        for payload_digest, signer, subject_digest, manifest in signed:
            _check_signer(
                report, proven, payload_digest, signer, subject_digest, manifest, allow_rollback
            )
    except LedgerError as error:
        report.check("ledger", False, f"ledger refused: {error}", "ledger")
    finally:
        proven.log.close()


def _check_signer(
    report: Report,
    proven: _Proven,
    payload_digest: str,
    signer: SignerFacts,
    subject_digest: str,
    manifest: Manifest | None,
    allow_rollback: bool,
) -> None:
    who = f"signer {signer.name or (signer.key_id or '')[:16]}"
    found = _sign_entry(proven, payload_digest)
    if isinstance(found, str):
        report.check("ledger", False, f"{who}: {found}", "ledger")
        return
    report.ledger["entries"].append(  # type: ignore[index]
        {
            "index": found.index,
            "payload_digest": payload_digest,
            "tree_size": proven.checkpoint.size,
        }
    )
    report.check(
        "ledger",
        True,
        f"{who}: sign entry {found.index} is proven in the log (signed checkpoint of size"
        f" {proven.checkpoint.size}, consistent with the one this client trusted at size"
        f" {proven.trusted_from})",
        "ledger",
    )
    targets = [subject_digest, payload_digest, *sign_entry_targets(found)]
    if manifest is not None:
        targets.append(manifest.layer_root)
    if signer.key_id:
        targets.append(signer.key_id)
    hit = proven.facts.revocation(targets)
    if hit is not None:
        target, revocation = hit
        report.check(
            "revocation",
            False,
            f"{who}: {target} was revoked in ledger entry {revocation['index']}:"
            f" {revocation['reason']}",
            "revoked",
        )
    else:
        report.check(
            "revocation", True, f"{who}: neither the model nor the key is revoked", "revoked"
        )
    name, version = signer.model_name, signer.model_version
    if not (name and version):
        return
    newer = _newer_live_version(proven, name, version)
    if newer is not None and not allow_rollback:
        report.check(
            "rollback",
            False,
            f"{who}: {name} {version} is older than ledgered version {newer} (rollback;"
            " --allow-rollback accepts it)",
            "policy",
        )
    else:
        report.check(
            "rollback",
            True,
            f"{who}: {name} {version} is not older than any unrevoked ledgered version",
            "policy",
        )
