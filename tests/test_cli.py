"""The CLI contract: --help, --version, python -m, exit codes, one-line errors, --json errors."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from modelguard import __version__
from modelguard.cli import main as cli_main
from modelguard.errors import FormatError, SignatureError


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard", *args], capture_output=True, text=True, check=False
    )


def test_version_and_module_entry_point() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert __version__ in done.stdout


def test_help_lists_every_available_command() -> None:
    done = run("--help")
    assert done.returncode == 0
    for name in cli_main.COMMANDS:
        assert name in done.stdout


def test_unknown_command_is_usage_error() -> None:
    done = run("no-such-command")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def _register(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    @click.command()
    @click.option("--json", "as_json", is_flag=True)
    def boom(as_json: bool) -> None:
        raise error

    monkeypatch.setitem(
        cli_main.COMMANDS, "boom", cli_main.CommandEntry("tests.test_cli:_unused", "boom")
    )
    original = cli_main.LazyGroup.get_command

    def get_command(self: click.Group, ctx: click.Context, name: str) -> click.Command | None:
        return boom if name == "boom" else original(self, ctx, name)

    monkeypatch.setattr(cli_main.LazyGroup, "get_command", get_command)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (FormatError("truncated header", path="m.safetensors"), 2),
        (SignatureError("no trusted signature"), 1),
        (RuntimeError("bug\nsecond line"), 3),
    ],
)
def test_errors_map_to_exit_codes_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, code: int
) -> None:
    _register(monkeypatch, error)
    with pytest.raises(SystemExit) as stop:
        cli_main.main(["boom"])
    assert stop.value.code == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_json_error_document(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(monkeypatch, FormatError("bad header", path="x.onnx"))
    with pytest.raises(SystemExit):
        cli_main.main(["boom", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert document["ok"] is False
    assert document["exit_code"] == 2
    assert document["error"]["path"] == "x.onnx"


def test_debug_shows_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _register(monkeypatch, RuntimeError("bug"))
    with pytest.raises(SystemExit):
        cli_main.main(["--debug", "boom"])
    assert "Traceback" in capsys.readouterr().err
