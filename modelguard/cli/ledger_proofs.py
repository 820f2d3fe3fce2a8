"""Offline ledger proofs as C2SP tlog-proof files: ``ledger prove --tlog-proof``, ``check-tlog-proof``.

$ modelguard ledger prove 0 --tlog-proof model.sig.tlog-proof
$ modelguard ledger check-tlog-proof model.sig.tlog-proof --key ledger.db.note.pub \\
      --witness-key w1.pub --witness-key w2.pub --quorum 2 --max-cosignature-age 12h
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from ledger.witness import DEFAULT_MAX_COSIGNATURE_AGE
from modelguard import transparency
from modelguard.audit import load_note_verifier
from modelguard.cli.options import AliasOption
from modelguard.cli.output import emit, json_option
from modelguard.errors import BadInputError
from modelguard.policy import parse_age


class AgeParam(click.ParamType):
    """A duration like policy ages: an integer of seconds, or 90m, 12h, 30d."""

    name = "AGE"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_age(value, "--max-cosignature-age", "maximum cosignature age")
        except BadInputError:
            self.fail(f"{value!r} is not like 3600, '90m', '12h' or '30d'", param, ctx)


def prove_command(
    index: int, output: Path, ledger_url: str | None, note_key: Path | None, as_json: bool
) -> None:
    """The body of ``ledger prove INDEX --tlog-proof FILE``."""
    info = transparency.write_entry_proof(index, output, ledger_url, note_key)

    def human(console: Console) -> None:
        console.print(
            f"tlog proof of entry {index} in tree size {info['checkpoint']['size']}"
            f" ({info['cosignatures']} witness cosignature(s)) written to {output}"
        )

    emit(info, as_json, human)


@click.command("check-tlog-proof")
@click.argument("proof_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--ledger-key",
    "--key",
    "public_keys",
    cls=AliasOption,
    hidden_aliases=("--key",),
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted public note key of the log; repeatable.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Trusted witness public key (cosignature/v1); repeatable.",
)
@click.option(
    "--quorum", type=click.IntRange(min=0), default=0, help="Witness cosignatures required."
)
@click.option(
    "--max-cosignature-age",
    "max_age",
    type=AgeParam(),
    default=DEFAULT_MAX_COSIGNATURE_AGE,
    show_default="24h",
    help="A witness cosignature older than this (seconds, or 90m, 12h, 30d) does not count"
    " toward --quorum (stops a frozen, outdated view).",
)
@json_option
def check_tlog_proof(
    proof_file: Path,
    public_keys: tuple[Path, ...],
    witness_keys: tuple[Path, ...],
    quorum: int,
    max_age: int,
    as_json: bool,
) -> None:
    """Offline: check a tlog proof's checkpoint, cosignatures and inclusion (exit 1 if not)."""
    witnesses = transparency.load_witness_keys(witness_keys)
    log_keys = [load_note_verifier(p) for p in public_keys]
    checked = transparency.check_entry_proof(proof_file, log_keys, witnesses, quorum, max_age)

    def human(console: Console) -> None:
        cosigned = f", cosigned by {', '.join(checked.witnesses)}" if checked.witnesses else ""
        console.print(
            f"[green bold]OK[/] entry {checked.entry.index} ({checked.entry.kind}"
            f" {checked.entry.payload_digest}) is in {checked.checkpoint.origin} at size"
            f" {checked.checkpoint.size}{cosigned}",
            markup=True,
        )

    emit({"ok": True, **checked.to_dict()}, as_json, human)
