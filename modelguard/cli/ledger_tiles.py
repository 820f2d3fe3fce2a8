"""``modelguard ledger export-tiles`` and ``ledger verify --tiles``: the log as static files.

$ modelguard ledger export-tiles public/log
$ modelguard ledger verify --tiles public/log --key ledger.db.note.pub --old-checkpoint cp.txt
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from modelguard import transparency
from modelguard.cli.output import emit, json_option
from modelguard.errors import LedgerVerificationError


@click.command("export-tiles")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    help="sqlite:///path.db or postgresql://... (default: $MODELGUARD_LEDGER, else"
    " sqlite:///.modelguard/ledger.db under the current directory).",
)
@click.option(
    "--note-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The log's checkpoint-signing key (default: as for `ledger checkpoint`).",
)
@click.option(
    "--checkpoint",
    "checkpoint_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Publish this checkpoint (e.g. one carrying witness cosignatures) instead of"
    " signing a fresh one.",
)
@json_option
def export_tiles(
    directory: Path,
    ledger_url: str | None,
    note_key: Path | None,
    checkpoint_file: Path | None,
    as_json: bool,
) -> None:
    """Write the ledger as C2SP tlog-tiles under DIRECTORY (only new tiles are written).

    The tree (checkpoint, tile/<L>/<N>, tile/entries/<N>) is plain files: serve it with any
    static web server or copy it to an object store; a mirror needs nothing else.
    """
    note = (
        transparency.read_text_file(checkpoint_file, what="checkpoint") if checkpoint_file else None
    )
    report = transparency.export_tile_tree(directory, ledger_url, note_key, checkpoint_note=note)

    def human(console: Console) -> None:
        console.print(
            f"[green bold]exported[/] {report.size} entries to {directory}:"
            f" {report.written_count - 1} new tile(s), {report.unchanged} unchanged"
        )

    emit(report.to_dict(), as_json, human)


def verify_tiles_command(
    ctx: click.Context,
    directory: Path,
    public_keys: tuple[Path, ...],
    old_checkpoint: Path | None,
    as_json: bool,
) -> None:
    """The body of ``ledger verify --tiles DIR``: audit a tile tree offline (exit 1 on failure)."""
    old = transparency.read_text_file(old_checkpoint, what="checkpoint") if old_checkpoint else None
    report = transparency.verify_tile_tree(directory, public_keys, old_checkpoint_note=old)

    def human(console: Console) -> None:
        if report.ok:
            console.print(f"[green bold]OK[/] {report.summary()}")
            return
        console.print("[red bold]TILES FAIL VERIFICATION[/]")
        for p in report.audit.problems[:50]:
            console.print(f"  {p.what}: {p.message}", markup=False)

    emit(report.to_dict(), as_json, human)
    if not report.ok:
        click.echo(f"modelguard: verification failed: {report.summary()}", err=True)
        ctx.exit(LedgerVerificationError.exit_code)
