"""The ``modelguard`` entry point: command registry and the one place errors become exit codes.

$ modelguard --help
$ modelguard manifest model.onnx --json
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
import traceback
from typing import Any

import click

from modelguard import __version__
from modelguard.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, ModelGuardError

# name -> "module:attribute"; modules load lazily so `modelguard --help` stays fast.
COMMANDS: dict[str, str] = {
    "keygen": "modelguard.cli.keys:keygen",
    "manifest": "modelguard.cli.manifest:manifest",
    "diff": "modelguard.cli.manifest:diff",
    "sign": "modelguard.cli.signing:sign",
    "verify": "modelguard.cli.signing:verify",
    "encrypt": "modelguard.cli.crypto:encrypt",
    "decrypt": "modelguard.cli.crypto:decrypt",
    "run": "modelguard.cli.run:run",
    "eval": "modelguard.cli.robustness:evaluate",
    "harden": "modelguard.cli.hardening:harden",
    "recertify": "modelguard.cli.hardening:recertify",
    "ledger": "modelguard.cli.ledger:ledger",
    "demo": "modelguard.cli.demo:demo",
}


def _available(name: str) -> bool:
    module = COMMANDS[name].split(":", 1)[0]
    return importlib.util.find_spec(module) is not None


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if _available(name))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None or not _available(cmd_name):
            return None
        module_name, attr = target.split(":", 1)
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="modelguard")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or chatter.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """modelguard: sign, ledger, encrypt, verify and harden ML models.

    \b
    Exit codes: 0 ok; 1 verification failed or policy refused;
                2 bad usage or bad input; 3 internal error.
    """
    obj = ctx.ensure_object(dict)
    obj["debug"] = debug
    obj["quiet"] = quiet


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
            traceback.print_exc()
        click.echo(f"modelguard: error: {error}", err=True)
        if want_json:
            click.echo(_error_document(error.to_dict(), error.exit_code))
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        click.echo("modelguard: interrupted", err=True)
        sys.exit(130)
    except (RecursionError, UnicodeError) as error:  # bad input that slipped past a parser
        if debug:
            traceback.print_exc()
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
        if debug:
            traceback.print_exc()
        line = (
            f"{type(error).__name__}: {error}".splitlines()[0]
            if str(error)
            else type(error).__name__
        )
        click.echo(
            f"modelguard: internal error: {line} (rerun with --debug for a traceback)", err=True
        )
        if want_json:
            click.echo(_error_document({"type": "InternalError", "message": line}, EXIT_INTERNAL))
        sys.exit(EXIT_INTERNAL)
    sys.exit(returned if isinstance(returned, int) else 0)
