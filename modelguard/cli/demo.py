"""``modelguard demo``: the whole pipeline on the bundled digits data, in a fresh work dir."""

from __future__ import annotations

import click

from modelguard.cli.output import console as make_console
from modelguard.cli.output import emit_json, is_quiet, json_option
from modelguard.demo import run_demo


@click.command(epilog="Example:\n\n\b\n  modelguard demo --workdir build/demo")
@click.option(
    "--workdir",
    default="build/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Directory for the demo's models, keys, ledger and reports (recreated).",
)
@json_option
def demo(workdir: str, as_json: bool) -> None:
    """Train, sign, ledger, encrypt, run, evaluate and harden a digits model end to end."""
    console = make_console()  # outside a terminal: no wrapping at 80 columns
    console.quiet = as_json or is_quiet()
    summary = run_demo(workdir, console=console)
    if as_json:
        emit_json(summary)
    else:
        console.print(
            f"[green]demo finished in {summary['seconds']} s[/]; everything is in {summary['workdir']}"
        )
