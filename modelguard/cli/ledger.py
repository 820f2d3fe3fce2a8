"""``modelguard ledger``: the tamper-evident audit log.

$ modelguard ledger init
$ modelguard ledger show --kind sign --limit 10
$ modelguard ledger checkpoint -o cp.txt
$ modelguard ledger prove 0 -o proof.json
$ modelguard ledger check-proof proof.json --ledger-key .modelguard/ledger.db.note.pub
$ modelguard ledger consistency cp.txt --ledger-key .modelguard/ledger.db.note.pub
$ modelguard ledger export ledger.jsonl && modelguard ledger verify --file ledger.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from modelguard import audit
from modelguard.cli import ledger_proofs, ledger_tiles, ledger_witness
from modelguard.cli.options import AliasOption
from modelguard.cli.output import emit, emit_json, json_option
from modelguard.errors import BadInputError, LedgerVerificationError
from modelguard.safeio import MAX_SIGNATURE_BYTES, read_regular

_FILE = click.Path(dir_okay=False, path_type=Path)
_EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


def ledger_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--ledger",
        "ledger_url",
        metavar="URL",
        help="sqlite:///path.db or postgresql://... (default: $MODELGUARD_LEDGER, else"
        " sqlite:///.modelguard/ledger.db under the current directory).",
    )(func)


def note_key_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--note-key",
        "note_key",
        type=_FILE,
        help="The log's checkpoint-signing key (default: $MODELGUARD_LEDGER_KEY, else"
        " <db>.note.key next to a SQLite ledger; created on first use).",
    )(func)


def public_key_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--ledger-key",
        "--key",
        "public_keys",
        cls=AliasOption,
        hidden_aliases=("--key",),
        type=_EXISTING,
        multiple=True,
        help="Trusted ledger (note) public key file (<name>+<id>+<base64>); repeatable.",
    )(func)


def _read_text(path: Path) -> str:
    data = read_regular(path, max_size=MAX_SIGNATURE_BYTES, what="file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError("not UTF-8 text", path=str(path)) from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(_read_text(path))
    except (ValueError, RecursionError) as error:
        raise BadInputError(f"not JSON: {error}", path=str(path)) from None
    if not isinstance(document, dict):
        raise BadInputError("not a JSON object", path=str(path))
    return document


def _write(path: Path | None, text: str) -> None:
    if path is None:
        return
    try:
        path.write_text(text)
    except OSError as error:
        raise BadInputError(f"cannot write: {error.strerror}", path=str(path)) from None


@click.group()
def ledger() -> None:
    """The append-only, tamper-evident ledger (hash chain + RFC 9162 Merkle tree)."""


@ledger.command()
@ledger_option
@note_key_option
@click.option("--origin", help="The log's name in its checkpoints (default: random).")
@json_option
def init(ledger_url: str | None, note_key: Path | None, origin: str | None, as_json: bool) -> None:
    """Create the ledger and its checkpoint-signing key (both also appear on first use)."""
    info = audit.init_ledger(ledger_url, origin=origin, key_path=note_key)

    def human(console: Console) -> None:
        console.print(f"ledger [bold]{info['url']}[/] ({info['size']} entries)")
        console.print(f"origin      {info['origin']}")
        console.print(f"note key    {info['note_key']}")
        console.print(f"public key  {info['public_key']}")

    emit(info, as_json, human)


@ledger.command()
@ledger_option
@click.option("--kind", help="Only entries of this kind (sign, harden, revoke, ...).")
@click.option("--subject", help="Only entries whose subject name or root is this.")
@click.option(
    "--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Newest N (0: all)."
)
@json_option
def show(
    ledger_url: str | None, kind: str | None, subject: str | None, limit: int, as_json: bool
) -> None:
    """List entries, newest last."""
    size, entries = audit.list_entries(ledger_url, kind=kind, subject=subject, limit=limit or None)
    document = {"size": size, "entries": [e.to_dict() for e in entries]}

    def human(console: Console) -> None:
        table = Table(title=f"Ledger: {size} entries")
        for column in ("#", "time (UTC)", "kind", "subject", "payload", "actor"):
            table.add_column(column, overflow="fold")
        for e in entries:
            subject_text = " ".join(
                f"{k}={v[:16] if k in ('root', 'parent') else v}" for k, v in e.subject.items()
            )
            table.add_row(
                str(e.index),
                e.timestamp[:19].replace("T", " "),
                e.kind,
                subject_text,
                e.payload_digest[:23],
                e.actor[:16],
            )
        console.print(table)

    emit(document, as_json, human)


@ledger.command()
@ledger_option
@note_key_option
@public_key_option
@click.option("--file", "jsonl", type=_EXISTING, help="Audit an exported JSONL file offline.")
@click.option(
    "--checkpoint", type=_EXISTING, help="With --file: a signed checkpoint the file must match."
)
@click.option(
    "--tiles",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Audit a C2SP tile tree (from `export-tiles`) offline against --key.",
)
@click.option(
    "--old-checkpoint",
    type=_EXISTING,
    help="With --tiles: a kept checkpoint the tiles must extend.",
)
@json_option
@click.pass_context
def verify(
    ctx: click.Context,
    ledger_url: str | None,
    note_key: Path | None,
    public_keys: tuple[Path, ...],
    jsonl: Path | None,
    checkpoint: Path | None,
    tiles: Path | None,
    old_checkpoint: Path | None,
    as_json: bool,
) -> None:
    """Recompute chain and tree; on tampering name the first bad index (exit 1)."""
    if tiles is not None:
        ledger_tiles.verify_tiles_command(ctx, tiles, public_keys, old_checkpoint, as_json)
        return
    report = audit.verify_ledger(
        ledger_url,
        jsonl=jsonl,
        checkpoint_note=_read_text(checkpoint) if checkpoint else None,
        key_path=note_key,
        public_keys=public_keys,
    )

    def human(console: Console) -> None:
        if report.ok:
            console.print(f"[green bold]OK[/] {report.summary()}")
            console.print(f"signed checkpoints checked: {report.checkpoints_checked}")
            return
        table = Table(title="[red bold]LEDGER TAMPERED[/]")
        for column in ("index", "what", "problem"):
            table.add_column(column, overflow="fold")
        for p in report.problems[:50]:
            table.add_row("-" if p.index is None else str(p.index), p.what, p.message)
        console.print(table)

    emit(report.to_dict(), as_json, human)
    if not report.ok:
        click.echo(f"modelguard: verification failed: {report.summary()}", err=True)
        ctx.exit(LedgerVerificationError.exit_code)


@ledger.command()
@click.argument("index", type=click.IntRange(min=0))
@ledger_option
@note_key_option
@click.option("-o", "--output", type=_FILE, help="Write the proof document here.")
@click.option(
    "--tlog-proof",
    type=_FILE,
    help="Instead write a C2SP tlog-proof (checkpoint, cosignatures, inclusion proof) here.",
)
@json_option
def prove(
    index: int,
    ledger_url: str | None,
    note_key: Path | None,
    output: Path | None,
    tlog_proof: Path | None,
    as_json: bool,
) -> None:
    """Inclusion proof of entry INDEX, with a freshly signed checkpoint it checks against.

    Check it offline with `modelguard ledger check-proof FILE --ledger-key <db>.note.pub`.
    """
    if tlog_proof is not None:
        ledger_proofs.prove_command(index, tlog_proof, ledger_url, note_key, as_json)
        return
    document = audit.prove_with_checkpoint(index, ledger_url, note_key)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    _write(output, text)
    if as_json or output is None:
        emit_json(document)
    else:
        proof = document["proof"]
        click.echo(
            f"inclusion proof of entry {index} in tree size {proof['tree_size']}"
            f" ({len(proof['proof'])} hashes) written to {output}"
        )


@ledger.command("check-proof")
@click.argument("proof_file", type=_EXISTING)
@public_key_option
@click.option(
    "--checkpoint",
    type=_EXISTING,
    help="Signed checkpoint note (default: the one inside the proof document).",
)
@json_option
def check_proof(
    proof_file: Path, public_keys: tuple[Path, ...], checkpoint: Path | None, as_json: bool
) -> None:
    """Offline: check an inclusion proof against a signed checkpoint and the log's key."""
    proof, cp = audit.check_proof(
        _read_json(proof_file), public_keys, _read_text(checkpoint) if checkpoint else None
    )
    document = {
        "ok": True,
        "leaf_index": proof.leaf_index,
        "checkpoint": cp.to_dict(),
        "entry": dict(proof.entry) if proof.entry is not None else None,
    }

    def human(console: Console) -> None:
        console.print(
            f"[green bold]OK[/] entry {proof.leaf_index} is in {cp.origin} at size {cp.size}"
        )

    emit(document, as_json, human)


@ledger.command()
@click.argument("old_checkpoint", type=_EXISTING)
@ledger_option
@public_key_option
@json_option
@click.pass_context
def consistency(
    ctx: click.Context,
    old_checkpoint: Path,
    ledger_url: str | None,
    public_keys: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Read-only: prove the log extends a saved checkpoint, and find edited entries.

    A fork, rewrite or truncation exits 1, and so does any entry whose body no longer
    matches its leaf in the tree. Nothing is written (no checkpoint is signed).
    """
    result = audit.check_consistency(_read_text(old_checkpoint), public_keys, ledger_url)
    proof, report = result.proof, result.problems
    document = {
        "ok": result.ok,
        "proof": proof.to_dict(),
        "checkpoint": result.checkpoint,
        "ledger": report.to_dict(),
    }

    def human(console: Console) -> None:
        console.print(
            f"[green bold]OK[/] the signed checkpoint of size {proof.new_size} extends the saved"
            f" checkpoint of size {proof.old_size} ({len(proof.hashes)} proof hashes)"
        )
        if report.ok:
            console.print(f"[green bold]OK[/] {report.summary()}")
        for p in report.problems[:50]:
            console.print(f"[red bold]TAMPERED[/] {p.message}")

    emit(document, as_json, human)
    if not result.ok:
        click.echo(f"modelguard: verification failed: {report.summary()}", err=True)
        ctx.exit(LedgerVerificationError.exit_code)


@ledger.command()
@ledger_option
@note_key_option
@click.option("-o", "--output", type=_FILE, help="Also write the note to this file.")
@json_option
def checkpoint(
    ledger_url: str | None, note_key: Path | None, output: Path | None, as_json: bool
) -> None:
    """Sign the current tree head (C2SP tlog-checkpoint) and print it."""
    note = audit.sign_checkpoint(ledger_url, note_key)
    _write(output, note)
    if as_json:
        body = note[: note.rfind("\n\n") + 1].splitlines()
        emit_json({"checkpoint": note, "origin": body[0], "size": int(body[1]), "root": body[2]})
    else:
        click.echo(note, nl=False)


@ledger.command()
@click.argument("file", type=_FILE)
@ledger_option
@json_option
def export(file: Path, ledger_url: str | None, as_json: bool) -> None:
    """Write every entry as canonical JSON, one per line (audit it with `verify --file`)."""
    count = audit.export_ledger(file, ledger_url)
    emit(
        {"file": str(file), "entries": count},
        as_json,
        lambda console: console.print(f"exported {count} entries to {file}"),
    )


@ledger.command()
@click.argument("digest")
@click.option("--reason", required=True, help="Why it must no longer be trusted.")
@click.option("--actor", default="", help="Who revokes (default: $USER).")
@ledger_option
@json_option
def revoke(digest: str, reason: str, actor: str, ledger_url: str | None, as_json: bool) -> None:
    """Revoke a model digest, signature digest or signing key id."""
    entry = audit.revoke(digest, reason=reason, actor=actor, ledger_url=ledger_url)
    emit(
        entry.to_dict(),
        as_json,
        lambda console: console.print(f"revoked {digest} (ledger entry {entry.index})"),
    )


def lineage_tree(title: str, trees: list[audit.LineageNode]) -> Tree:
    """A rich tree of model families, each node with the ledger entries about it."""
    tree = Tree(title)
    for node in trees:
        _add_node(tree, node)
    return tree


def _add_node(tree: Tree, node: audit.LineageNode) -> None:
    kinds = ", ".join(f"{e.kind}#{e.index}" for e in node.entries) or "not in ledger"
    revoked = "".join(f"  [red]revoked in #{r['index']}: {r['reason']}[/]" for r in node.revoked)
    label = escape(node.label)
    branch = tree.add(f"[bold]{label}[/]  [dim]{kinds}[/]{revoked}")
    for child in node.children:
        _add_node(branch, child)


def model_root(path: Path) -> str:
    """The layer root a signature of ``path`` records (signature files left out)."""
    from modelguard.manifest import SIGNING_FILE_HASH, SIGNING_LAYER_HASH, build_manifest
    from modelguard.signing.files import default_signature_path, signing_ignore_paths

    ignore = signing_ignore_paths(path, default_signature_path(path))
    return build_manifest(
        path,
        hash_algorithm=SIGNING_LAYER_HASH,
        file_hash_algorithm=SIGNING_FILE_HASH,
        ignore_paths=ignore,
    ).layer_root


@ledger.command()
@click.argument("model_or_name")
@ledger_option
@json_option
def lineage(model_or_name: str, ledger_url: str | None, as_json: bool) -> None:
    """Ancestry and descendants of a model: a model path (its root is computed), a name,
    a manifest root or a payload digest. Revoked models are marked."""
    query = model_root(Path(model_or_name)) if Path(model_or_name).exists() else model_or_name
    trees = audit.lineage(query, ledger_url)
    if not trees:
        raise BadInputError(f"no ledger entry mentions {model_or_name}")

    def human(console: Console) -> None:
        console.print(lineage_tree(f"lineage of {model_or_name}", trees))

    emit(
        {"query": model_or_name, "root": query, "lineage": [t.to_dict() for t in trees]},
        as_json,
        human,
    )


ledger.add_command(ledger_tiles.export_tiles)
ledger.add_command(ledger_witness.witness)
ledger.add_command(ledger_witness.cosign)
ledger.add_command(ledger_proofs.check_tlog_proof)
