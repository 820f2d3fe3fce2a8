"""The ``modelguard`` entry point: command registry and the one place errors become exit codes.

$ modelguard --help
$ modelguard manifest model.onnx --json
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from modelguard import __version__
from modelguard.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, BadInputError, ModelGuardError


@dataclass(frozen=True)
class CommandEntry:
    target: str  # "module:attribute", imported only when the command runs
    summary: str  # the line `modelguard --help` shows, so the listing imports nothing
    extra: str | None = None  # the pip extra the command needs beyond the base install


# Modules load lazily so `modelguard --help` stays fast and imports no torch.
COMMANDS: dict[str, CommandEntry] = {
    "keygen": CommandEntry(
        "modelguard.cli.keys:keygen", "Generate a signing or encryption key pair."
    ),
    "manifest": CommandEntry(
        "modelguard.cli.manifest:manifest", "Hash a model file by file, layer by layer."
    ),
    "diff": CommandEntry("modelguard.cli.manifest:diff", "Compare two models tensor by tensor."),
    "sign": CommandEntry("modelguard.cli.signing:sign", "Sign a model (OpenSSF Model Signing)."),
    "verify": CommandEntry(
        "modelguard.cli.signing:verify", "Verify signatures, digests, policy and ledger: the gate."
    ),
    "encrypt": CommandEntry(
        "modelguard.cli.crypto:encrypt", "Encrypt a model tensor by tensor for recipients."
    ),
    "decrypt": CommandEntry(
        "modelguard.cli.crypto:decrypt", "Decrypt a container, checking every tensor."
    ),
    "run": CommandEntry(
        "modelguard.cli.run:run", "Verify, decrypt in memory and run with ONNX Runtime.", "runtime"
    ),
    "card": CommandEntry(
        "modelguard.cli.card:card", "Write modelguard.json for your own model.", "robustness"
    ),
    "eval": CommandEntry(
        "modelguard.cli.robustness:evaluate",
        "Attack a model; signed worst-case robustness certificate.",
        "robustness",
    ),
    "harden": CommandEntry(
        "modelguard.cli.hardening:harden",
        "Harden a verified model, re-sign with lineage.",
        "robustness",
    ),
    "recertify": CommandEntry(
        "modelguard.cli.hardening:recertify",
        "Re-run a certificate's evaluation; exit 1 on drift.",
        "robustness",
    ),
    "ledger": CommandEntry(
        "modelguard.cli.ledger:ledger", "The append-only, tamper-evident ledger."
    ),
    "audit": CommandEntry(
        "modelguard.cli.audit:audit",
        "Audit a model: label-flip poisoning, membership inference (signed attestations).",
        "robustness",
    ),
    "demo": CommandEntry(
        "modelguard.cli.demo:demo", "The whole pipeline on the bundled digits data.", "robustness"
    ),
}

# Optional dependency (top-level module) -> the extra that installs it.
EXTRA_FOR_MODULE: dict[str, str] = {
    "torch": "robustness",
    "sklearn": "robustness",
    "matplotlib": "robustness",
    "onnxruntime": "runtime",
    "psycopg": "postgres",
}


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The extra to install when ``error`` is an optional dependency that is not installed."""
    top = (error.name or "").split(".", 1)[0]
    return EXTRA_FOR_MODULE.get(top)


def install_hint(module: str, extra: str) -> str:
    return f"needs {module}, which the base install leaves out: pip install 'modelguard[{extra}]'"


def _needs_extra(name: str, error: ModuleNotFoundError, extra: str) -> click.Command:
    """Stands in for a command whose extra is missing: one line, exit 2, for any arguments."""

    def refuse() -> None:
        raise BadInputError(f"modelguard {name} {install_hint(error.name or '?', extra)}")

    return click.Command(
        name,
        callback=refuse,
        help=f"(needs the [{extra}] extra) {COMMANDS[name].summary}",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        add_help_option=False,
    )


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry.target.split(":", 1)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            extra = missing_extra(error)
            if extra is None:
                raise
            return _needs_extra(cmd_name, error, extra)
        command = getattr(module, attr)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # From the registry, not the modules: listing commands must not import torch.
        rows = [
            (name, entry.summary + (f" [{entry.extra}]" if entry.extra else ""))
            for name, entry in sorted(COMMANDS.items())
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="modelguard")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or chatter (every command).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """modelguard: sign, ledger, encrypt, verify and harden ML models.

    \b
    Exit codes: 0 ok; 1 verification failed or policy refused;
                2 bad usage or bad input; 3 internal error.
    Commands marked [extra] need `pip install 'modelguard[extra]'`
    (the base install is the CI gate: keygen, manifest, sign, verify, ledger).
    """
    obj = ctx.ensure_object(dict)
    obj["debug"] = debug
    obj["quiet"] = quiet


def _print_traceback() -> None:
    import traceback  # only with --debug: not on every command's start-up path

    traceback.print_exc()


def _error_document(error: dict[str, Any], exit_code: int) -> str:
    return json.dumps({"ok": False, "exit_code": exit_code, "error": error}, indent=2)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; never lets a traceback out unless ``--debug`` was given."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    want_json = "--json" in args
    try:
        # standalone_mode=False: ctx.exit(n) comes back as the return value.
        returned = cli.main(args=args, prog_name="modelguard", standalone_mode=False)
    except click.Abort:
        click.echo("modelguard: aborted", err=True)
        sys.exit(EXIT_BAD_INPUT)
    except click.ClickException as usage:
        usage.show()
        if want_json:
            click.echo(
                _error_document(
                    {"type": "UsageError", "message": usage.format_message()}, EXIT_BAD_INPUT
                )
            )
        sys.exit(EXIT_BAD_INPUT)
    except ModelGuardError as error:
        if debug:
            _print_traceback()
        click.echo(f"modelguard: error: {error}", err=True)
        if want_json:
            click.echo(_error_document(error.to_dict(), error.exit_code))
        sys.exit(error.exit_code)
    except ModuleNotFoundError as error:
        extra = missing_extra(error)
        if extra is None:
            _internal_error(error, debug, want_json)
        if debug:
            _print_traceback()
        command = next((a for a in args if a in COMMANDS), "this command")
        message = f"modelguard {command} {install_hint(error.name or '?', extra)}"
        click.echo(f"modelguard: error: {message}", err=True)
        if want_json:
            click.echo(
                _error_document({"type": "MissingDependency", "message": message}, EXIT_BAD_INPUT)
            )
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        click.echo("modelguard: interrupted", err=True)
        sys.exit(130)
    except (RecursionError, UnicodeError) as error:  # bad input that slipped past a parser
        if debug:
            _print_traceback()
        message = (
            "input is nested too deeply to parse"
            if isinstance(error, RecursionError)
            else f"input is not valid UTF-8 text ({type(error).__name__})"
        )
        click.echo(f"modelguard: error: {message}", err=True)
        if want_json:
            click.echo(
                _error_document({"type": "BadInputError", "message": message}, EXIT_BAD_INPUT)
            )
        sys.exit(EXIT_BAD_INPUT)
    except Exception as error:  # the last line of defence: exit 3, one line
        _internal_error(error, debug, want_json)
    sys.exit(returned if isinstance(returned, int) else 0)


def _internal_error(error: Exception, debug: bool, want_json: bool) -> NoReturn:
    if debug:
        _print_traceback()
    line = (
        f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    )
    click.echo(f"modelguard: internal error: {line} (rerun with --debug for a traceback)", err=True)
    if want_json:
        click.echo(_error_document({"type": "InternalError", "message": line}, EXIT_INTERNAL))
    sys.exit(EXIT_INTERNAL)
