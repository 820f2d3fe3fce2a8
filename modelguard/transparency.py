"""modelguard's glue to the ledger's transparency formats: static tiles, offline proofs, witnesses.

>>> import os, tempfile
>>> from pathlib import Path
>>> from modelguard.audit import record_event, note_public_key_path
>>> from modelguard.transparency import export_tile_tree, verify_tile_tree
>>> url = "sqlite:///" + os.path.join(tempfile.mkdtemp(), "ledger.db")
>>> _ = record_event("sign", subject={"name": "m"}, payload_digest="sha256:00", actor="k",
...                  ledger_url=url)
>>> out = Path(tempfile.mkdtemp())
>>> export_tile_tree(out, url).size
1
>>> verify_tile_tree(out, [note_public_key_path(url)]).ok
True

Every function maps the ledger library's errors to modelguard's: bad input exits 2, a failed
check exits 1. Trust comes only from the public key files the caller names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ledger import (
    Checkpoint,
    Entry,
    Ledger,
    LedgerInputError,
    LedgerIntegrityError,
    NoteSigner,
    NoteVerifier,
)
from ledger.note import open_checkpoint, sign_note, split_note
from ledger.tiles import ExportReport, TilesReport, export_tiles, verify_tiles
from ledger.tlog_proof import MAX_PROOF_BYTES, TlogProof, entry_proof, verify_entry_proof
from ledger.witness import (
    DEFAULT_MAX_COSIGNATURE_AGE,
    Cosigner,
    CosignerVerifier,
    Witness,
    require_cosignatures,
)
from ledger.witness_http import Transport, collect_cosignature, http_transport, record_cosigned
from modelguard.audit import (
    ledger_verifiers,
    load_note_signer,
    load_note_verifier,
    mapped_errors,
    open_audit_ledger,
)
from modelguard.errors import BadInputError, KeyFileError, LedgerVerificationError
from modelguard.safeio import MAX_KEY_BYTES, open_regular, read_all

if TYPE_CHECKING:
    from modelguard.policy import Policy
    from modelguard.signing.report import VerificationReport

__all__ = [
    "ProofCheck",
    "check_entry_proof",
    "check_signature_proof",
    "cosign_checkpoint",
    "export_tile_tree",
    "init_witness",
    "load_witness_key",
    "load_witness_keys",
    "mapped_errors",
    "read_text_file",
    "require_witness_quorum",
    "verify_tile_tree",
    "witness_add_checkpoint",
    "witness_quorum_reasons",
    "write_entry_proof",
]


def read_text_file(path: Path, *, max_size: int = MAX_KEY_BYTES, what: str = "file") -> str:
    """An untrusted UTF-8 text file (checkpoint, proof, request), size-bounded."""
    with open_regular(path, max_size=max_size, what=what) as handle:
        data = read_all(handle, max_size=max_size)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{what} is not UTF-8 text", path=str(path)) from None


def export_tile_tree(
    directory: Path,
    ledger_url: str | None = None,
    key_path: str | Path | None = None,
    *,
    checkpoint_note: str | None = None,
) -> ExportReport:
    """Write the ledger as C2SP tlog-tiles under ``directory`` (only new tiles are written)."""
    signer = load_note_signer(ledger_url, key_path)
    with open_audit_ledger(ledger_url, create=False) as log, mapped_errors():
        return export_tiles(log, Path(directory), signer, checkpoint_note=checkpoint_note)


def verify_tile_tree(
    directory: Path,
    public_keys: Sequence[str | Path],
    *,
    old_checkpoint_note: str | None = None,
) -> TilesReport:
    """Offline audit of a tile tree against the log's public note key(s)."""
    if not public_keys:
        raise BadInputError("verifying tiles needs the log's public note key (--key)")
    verifiers = [load_note_verifier(p) for p in public_keys]
    if not Path(directory).is_dir():
        raise BadInputError("not a directory", path=str(directory))
    with mapped_errors():
        return verify_tiles(Path(directory), verifiers, old_checkpoint=old_checkpoint_note)


# --- witnesses ------------------------------------------------------------------------------


def load_witness_key(spec: str | Path) -> CosignerVerifier:
    """A witness public key: a file holding ``<name>+<hex id>+<base64(0x04 || key)>``, or
    that one-line key itself (as a policy may give it)."""
    path = Path(spec)
    if path.exists():
        text = read_text_file(path, what="witness key")
    elif isinstance(spec, str) and spec.count("+") >= 2:
        text = spec
    else:
        raise KeyFileError("no such witness key file", path=str(spec))
    try:
        return CosignerVerifier.from_key_string(text)
    except LedgerInputError as error:
        raise KeyFileError(str(error), path=str(spec)) from None


def load_witness_keys(specs: Sequence[str | Path]) -> list[CosignerVerifier]:
    """Witness public keys (files or one-line keys), one per entry."""
    return [load_witness_key(spec) for spec in specs]


def witness_quorum_reasons(
    note: str,
    witness_keys: Sequence[str | Path],
    quorum: int,
    max_age: int = DEFAULT_MAX_COSIGNATURE_AGE,
) -> list[str]:
    """The gate's policy check (``[ledger] witnesses``, ``witness_quorum``,
    ``max_cosignature_age``) as refusal reasons.

    ``note`` is a checkpoint whose log signature already verified; empty list: accepted.
    """
    if quorum <= 0:
        return []
    keys = load_witness_keys(witness_keys)
    try:
        require_cosignatures(note, keys, quorum, max_age=max_age)
    except (LedgerInputError, LedgerIntegrityError) as error:
        return [str(error)]
    return []


def require_witness_quorum(
    note: str,
    witnesses: Sequence[CosignerVerifier],
    quorum: int,
    max_age: int = DEFAULT_MAX_COSIGNATURE_AGE,
) -> list[str]:
    """The gate's check: ``quorum`` trusted witnesses cosigned this (log-verified) checkpoint
    within the last ``max_age`` seconds.

    Returns the witnesses' names; LedgerVerificationError (exit 1) when the quorum is not met.
    """
    with mapped_errors():
        return require_cosignatures(note, witnesses, quorum, max_age=max_age)


def policy_witness_reasons(note: str, policy: Policy | None) -> list[str]:
    """Refusal reasons for a (log-verified) checkpoint under the policy's witness quorum."""
    trust = policy.ledger if policy is not None else None
    if trust is None or trust.witness_quorum <= 0:
        return []
    return witness_quorum_reasons(
        note, trust.witnesses, trust.witness_quorum, trust.max_cosignature_age
    )


def init_witness(state: Path, name: str, log_keys: Sequence[str | Path]) -> dict[str, Any]:
    """Create (or extend with more trusted logs) a witness state directory."""
    verifiers: list[NoteVerifier] = [load_note_verifier(p) for p in log_keys]
    with mapped_errors():
        if (Path(state) / "witness.key").exists():
            witness = Witness.load(Path(state))
        else:
            witness = Witness(Path(state), Cosigner.generate(name), {})
        for verifier in verifiers:
            known = witness.logs.setdefault(verifier.name, [])
            if verifier not in known:
                known.append(verifier)
        witness.save()
        return {"state": str(state), **witness.to_config()}


def witness_add_checkpoint(state: Path, request: bytes) -> str:
    """Process one ``add-checkpoint`` request with the witness in ``state``: its cosignature."""
    with mapped_errors():
        return Witness.load(Path(state)).add_checkpoint(request)


def _transport(witness: str) -> Transport:
    if witness.startswith(("http://", "https://")):
        return http_transport(witness)
    state = Path(witness)
    if not (state / "witness.json").is_file():
        raise BadInputError("not a witness URL or witness state directory", path=witness)
    return lambda body: Witness.load(state).add_checkpoint(body)


def cosign_checkpoint(
    witnesses: Sequence[str], ledger_url: str | None = None, key_path: str | Path | None = None
) -> dict[str, Any]:
    """Sign the tree head, have each witness (URL or local state dir) cosign it, and keep it.

    The cosigned checkpoint joins the ledger's checkpoints, so verifiers that demand a witness
    quorum find it. A witness that refuses (a fork, a rollback) fails the whole call.
    """
    signer = load_note_signer(ledger_url, key_path)
    transports = [_transport(w) for w in witnesses]
    with open_audit_ledger(ledger_url, create=False) as log, mapped_errors():
        # Signed but not stored: only the cosigned note joins the ledger's checkpoints, so
        # the newest stored checkpoint carries the cosignatures.
        size = log.size()
        checkpoint = Checkpoint(log.origin, size, log.root(size))
        note = sign_note(checkpoint.to_text(), [signer])
        lines = [collect_cosignature(log, note, submit) for submit in transports]
        cosigned = note + "".join(lines)
        record_cosigned(log, cosigned)
    return {
        "checkpoint": cosigned,
        "size": checkpoint.size,
        "origin": checkpoint.origin,
        "witnesses": [line.split(" ")[1] for line in lines],
    }


# --- offline proofs (C2SP tlog-proof) -------------------------------------------------------


def _covering_checkpoint(log: Ledger, index: int, signer: NoteSigner) -> str:
    """The newest kept checkpoint (cosigned ones included) whose tree holds ``index``; else a
    freshly signed one."""
    for note in reversed(log.checkpoints()):
        checkpoint = Checkpoint.from_text(split_note(note)[0])
        if checkpoint.size > index and checkpoint.origin == log.origin:
            try:
                open_checkpoint(note, [signer.verifier()])
            except LedgerIntegrityError:
                continue
            return note
    return log.checkpoint(signer)


def write_entry_proof(
    index: int,
    output: Path,
    ledger_url: str | None = None,
    key_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the tlog proof of ledger entry ``index`` to ``output``; describe it."""
    signer = load_note_signer(ledger_url, key_path)
    with open_audit_ledger(ledger_url, create=False) as log, mapped_errors():
        if not 0 <= index < log.size():
            raise LedgerInputError(f"{log.url}: no entry {index}")
        proof = entry_proof(log, index, _covering_checkpoint(log, index, signer))
        entry, checkpoint = verify_entry_proof(proof.to_text(), [signer.verifier()])
    try:
        Path(output).write_text(proof.to_text())
    except OSError as error:
        raise BadInputError(f"cannot write: {error.strerror}", path=str(output)) from None
    return {
        "file": str(output),
        "index": index,
        "payload_digest": entry.payload_digest,
        "checkpoint": checkpoint.to_dict(),
        "cosignatures": len(split_note(proof.checkpoint)[1]) - 1,
    }


@dataclass(frozen=True)
class ProofCheck:
    entry: Entry
    checkpoint: Checkpoint
    witnesses: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.entry.index,
            "kind": self.entry.kind,
            "payload_digest": self.entry.payload_digest,
            "checkpoint": self.checkpoint.to_dict(),
            "witnesses": list(self.witnesses),
        }


def check_entry_proof(
    proof_file: Path,
    log_keys: Sequence[NoteVerifier],
    witness_keys: Sequence[CosignerVerifier] = (),
    quorum: int = 0,
    max_age: int = DEFAULT_MAX_COSIGNATURE_AGE,
) -> ProofCheck:
    """Offline: the entry a tlog proof file carries, proven against the log's key(s) and a
    witness quorum (cosignatures at most ``max_age`` seconds old). LedgerVerificationError
    (exit 1) when anything fails to verify."""
    if not log_keys:
        raise BadInputError(
            "checking a ledger proof needs the ledger's public key (--ledger-key, policy"
            " [ledger] key, or $MODELGUARD_LEDGER_KEY)"
        )
    text = read_text_file(proof_file, max_size=MAX_PROOF_BYTES, what="ledger proof")
    with mapped_errors():
        entry, checkpoint = verify_entry_proof(
            text, log_keys, witness_keys, quorum, max_age=max_age
        )
        names = require_cosignatures(
            TlogProof.from_text(text).checkpoint, witness_keys, 0, max_age=max_age
        )
    return ProofCheck(entry, checkpoint, tuple(names))


def check_signature_proof(report: VerificationReport, proof_file: Path, policy: Policy) -> None:
    """``verify --ledger-proof``: the proof must show a ``sign`` entry for a verified signature.

    Trust: the ledger key(s) the gate would use (``--ledger-key``, policy ``[ledger] key``,
    ``$MODELGUARD_LEDGER_KEY``) and the policy's witness quorum. The entry's payload digest
    must be the SHA-256 of a bundle this verification read and verified (the same bytes), so
    a proof for another signature, or another log, fails.
    """
    trust = policy.ledger
    witnesses = load_witness_keys(trust.witnesses) if trust else []
    quorum = trust.witness_quorum if trust else 0
    max_age = trust.max_cosignature_age if trust else DEFAULT_MAX_COSIGNATURE_AGE
    try:
        keys = ledger_verifiers(trust.keys if trust else ())
        checked = check_entry_proof(proof_file, keys, witnesses, quorum, max_age)
    except LedgerVerificationError as error:
        report.check("ledger", False, f"ledger proof {proof_file}: {error}", "ledger")
        return
    verified = {s.payload_digest for s in report.signers if s.status == "verified"}
    entry = checked.entry
    if entry.kind != "sign" or entry.payload_digest not in verified:
        report.check(
            "ledger",
            False,
            f"ledger proof {proof_file}: entry {entry.index} ({entry.kind} {entry.payload_digest})"
            " is not the sign entry of a verified signature",
            "ledger",
        )
        return
    report.ledger = {**(report.ledger or {}), "offline_proof": checked.to_dict()}
    cosigned = f", cosigned by {', '.join(checked.witnesses)}" if checked.witnesses else ""
    report.check(
        "ledger",
        True,
        f"sign entry {entry.index} is in {checked.checkpoint.origin} (offline proof to a signed"
        f" checkpoint of size {checked.checkpoint.size}{cosigned})",
        "ledger",
    )
