"""``modelguard ledger witness …`` and ``ledger cosign``: witnesses against split views.

$ modelguard ledger witness init wstate --name witness.example/w1 --log-key ledger.db.note.pub
$ modelguard ledger witness serve wstate --port 8099          # loopback HTTP
$ modelguard ledger cosign --witness http://127.0.0.1:8099 --witness wstate2 -o cp.cosigned
$ modelguard ledger witness add-checkpoint wstate request.txt  # the same protocol over files
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ledger.witness import MAX_REQUEST_BYTES
from ledger.witness_http import serve as serve_witness
from modelguard import transparency
from modelguard.cli.output import emit, json_option
from modelguard.errors import BadInputError
from modelguard.safeio import open_regular, read_all

_STATE = click.Path(file_okay=False, path_type=Path)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as error:
        raise BadInputError(f"cannot write: {error.strerror}", path=str(path)) from None


@click.group()
def witness() -> None:
    """A witness: keeps its own view of logs and cosigns only consistent checkpoints."""


@witness.command()
@click.argument("state", type=_STATE)
@click.option("--name", required=True, help="The witness's name, e.g. witness.example.org/w1.")
@click.option(
    "--log-key",
    "log_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Public note key of a log to witness (its name is the log's origin); repeatable.",
)
@json_option
def init(state: Path, name: str, log_keys: tuple[Path, ...], as_json: bool) -> None:
    """Create a witness in STATE (key 0600, witness.pub, trusted logs), or add logs to it."""
    info = transparency.init_witness(state, name, log_keys)

    def human(console: Console) -> None:
        console.print(f"witness [bold]{info['name']}[/] in {state}")
        console.print(f"public key  {info['public_key']}", markup=False)
        for origin in info["logs"]:
            console.print(f"witnesses   {origin}", markup=False)

    emit(info, as_json, human)


@witness.command("add-checkpoint")
@click.argument("state", type=_STATE)
@click.argument("request", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the cosignature here.",
)
@json_option
def add_checkpoint(state: Path, request: Path, output: Path | None, as_json: bool) -> None:
    """Process an add-checkpoint REQUEST file (C2SP tlog-witness body); print the cosignature.

    Refuses (exit 1) a checkpoint not signed by the log's key or not consistent with the
    last one this witness cosigned.
    """
    with open_regular(request, max_size=MAX_REQUEST_BYTES, what="witness request") as handle:
        body = read_all(handle, max_size=MAX_REQUEST_BYTES)
    line = transparency.witness_add_checkpoint(state, body)
    if output is not None:
        _write(output, line)
    emit({"cosignature": line}, as_json, lambda console: click.echo(line, nl=False))


@witness.command()
@click.argument("state", type=_STATE)
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (0: any free one).")
@json_option
def serve(state: Path, host: str, port: int, as_json: bool) -> None:
    """Serve the witness over HTTP on loopback (POST /add-checkpoint) until interrupted."""
    from ledger.witness import Witness

    with transparency.mapped_errors():
        server = serve_witness(Witness.load(state), host, port)
    url = f"http://{host}:{server.server_address[1]}"
    emit({"url": url}, as_json, lambda console: console.print(f"witness listening on {url}"))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@click.command()
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    required=True,
    help="A witness: http://127.0.0.1:PORT, or a local witness state directory; repeatable.",
)
@click.option(
    "--ledger",
    "ledger_url",
    metavar="URL",
    help="sqlite:///path.db or postgresql://... (default: $MODELGUARD_LEDGER).",
)
@click.option(
    "--note-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The log's checkpoint-signing key.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the cosigned checkpoint here.",
)
@json_option
def cosign(
    witnesses: tuple[str, ...],
    ledger_url: str | None,
    note_key: Path | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Sign the tree head and have each witness cosign it (kept among the log's checkpoints).

    A witness that saw a different history refuses, and this exits 1.
    """
    result = transparency.cosign_checkpoint(witnesses, ledger_url, note_key)
    if output is not None:
        _write(output, result["checkpoint"])

    def human(console: Console) -> None:
        console.print(
            f"[green bold]cosigned[/] size {result['size']} by {', '.join(result['witnesses'])}"
        )
        console.print(result["checkpoint"], end="", markup=False, highlight=False)

    emit(result, as_json, human)


__all__ = ["cosign", "witness"]
