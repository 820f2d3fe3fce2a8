"""The CLI a user meets: fast help without torch, one flag vocabulary, errors that name the flag
to use, -q everywhere, and output that survives CI logs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelguard.cli.output import ProgressReporter, eta_line, percent
from tests.tinymodels import model_dir

PASS = "correct horse battery staple"


def mg(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelguard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "MG_PASS": PASS, **(env or {})},
        check=False,
    )


@pytest.mark.parametrize("args", [["--help"], ["verify", "--help"], ["sign", "--help"]])
def test_help_imports_no_torch(args: list[str]) -> None:
    code = (
        "import sys\n"
        "from modelguard.cli.main import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'sklearn', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert "HEAVY []" in done.stderr, done.stderr


@pytest.fixture
def signed(tmp_path: Path) -> Path:
    """An encrypted-at-rest signing key and identity, and a signed model, made the README's way."""
    for args in (
        ["keygen", "--out", "keys", "--passphrase-env", "MG_PASS"],
        ["keygen", "--out", "keys", "--name", "alice", "--purpose", "encryption"]
        + ["--passphrase-env", "MG_PASS"],
    ):
        assert mg(*args, cwd=tmp_path).returncode == 0
    model_dir(tmp_path / "model")
    done = mg(
        "sign", "model", "--sign-key", "keys/modelguard.priv", "--sign-passphrase-env", "MG_PASS",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tmp_path


@pytest.mark.parametrize(
    ("args", "flags"),
    [
        (["sign", "model", "--sign-key", "keys/modelguard.priv", "--no-ledger"],
         "--sign-passphrase-env VAR or --sign-passphrase-file FILE"),
        (["sign", "model", "--key", "keys/modelguard.priv", "--no-ledger"],
         "--sign-passphrase-env VAR or --sign-passphrase-file FILE"),
        (["encrypt", "model", "--out", "m.enc", "--recipient", "keys/alice.pub",
          "--sign-key", "keys/modelguard.priv"],
         "--sign-passphrase-env VAR or --sign-passphrase-file FILE"),
        (["harden", "model", "--method", "pgd-at", "--out", "child",
          "--sign-key", "keys/modelguard.priv"],
         "--sign-passphrase-env VAR or --sign-passphrase-file FILE"),
    ],
)  # fmt: skip
def test_missing_passphrase_error_names_the_commands_flag(
    signed: Path, args: list[str], flags: str
) -> None:
    done = mg(*args, cwd=signed)
    assert done.returncode == 2, done.stderr
    assert flags in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_identity_passphrase_error_names_identity_flags(signed: Path) -> None:
    done = mg(
        "encrypt", "model", "--out", "m.enc", "--recipient", "keys/alice.pub",
        "--sign-key", "keys/modelguard.priv", "--sign-passphrase-env", "MG_PASS", cwd=signed,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = mg("decrypt", "m.enc", "--out", "plain", "--identity", "keys/alice.priv", cwd=signed)
    assert done.returncode == 2
    assert "--identity-passphrase-env VAR or --identity-passphrase-file FILE" in done.stderr
    (signed / "pass.txt").write_text(PASS + "\n")
    done = mg(
        "decrypt", "m.enc", "--out", "plain", "--identity", "keys/alice.priv",
        "--identity-passphrase-file", "pass.txt", cwd=signed,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_old_spellings_work_but_are_hidden(signed: Path) -> None:
    new = mg("verify", "model", "--trust-key", "keys/modelguard.pub", "--json", cwd=signed)
    old = mg("verify", "model", "--key", "keys/modelguard.pub", "--json", cwd=signed)
    assert new.returncode == old.returncode == 0
    assert json.loads(new.stdout)["ok"] is json.loads(old.stdout)["ok"] is True
    for command, hidden in (
        ("verify", "--key "),
        ("sign", "--passphrase-env"),
        ("recertify", "--key "),
    ):
        shown = mg(command, "--help", cwd=signed).stdout
        assert hidden not in shown, f"{command} --help shows {hidden}"
    assert "--trust-key" in mg("verify", "--help", cwd=signed).stdout
    assert "--sign-passphrase-env" in mg("sign", "--help", cwd=signed).stdout
    missing = mg("verify", "model", cwd=signed)
    assert missing.returncode == 2 and "--trust-key" in missing.stderr


@pytest.mark.parametrize("where", ["global", "command"])
def test_quiet_silences_verify(signed: Path, where: str) -> None:
    args = ["verify", "model", "--trust-key", "keys/modelguard.pub"]
    args = ["-q", *args] if where == "global" else [*args, "-q"]
    done = mg(*args, cwd=signed)
    assert done.returncode == 0
    assert done.stdout == ""
    tampered = signed / "model"
    weights = next(tampered.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    failed = mg(*args, cwd=signed)
    assert failed.returncode == 1
    assert failed.stdout == "" and "verification failed" in failed.stderr


def test_log_output_keeps_long_paths_and_hashes_whole(signed: Path) -> None:
    deep = signed / ("a-rather-long-directory-name-" * 4) / "model"
    model_dir(deep)
    done = mg(
        "sign", str(deep), "--sign-key", "keys/modelguard.priv", "--sign-passphrase-env", "MG_PASS",
        "--no-ledger", cwd=signed,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert str(deep / "model.sig") in done.stdout
    assert re.search(r"layer root [0-9a-f]{64}\b", done.stdout), done.stdout
    checked = mg("verify", str(deep), "--trust-key", "keys/modelguard.pub", cwd=signed)
    assert checked.returncode == 0
    assert f"Checks for {deep}" in checked.stdout
    assert "…" not in checked.stdout


def test_percent_and_progress_lines_for_logs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert percent(0.9611111111111111) == "96.1%"
    assert percent(None) == "-"
    assert eta_line("hashing", 2**30, 2**31, 4.0, unit="bytes") == (
        "hashing: 1024/2048 MiB (50.0%), 256.0 MiB/s, ETA 4s"
    )
    monkeypatch.setenv("MODELGUARD_PROGRESS_INTERVAL", "0")
    with ProgressReporter("evaluating", unit="attack runs") as reporter:
        reporter.update("fgsm eps=0.1", 1, 4)
        reporter.update("pgd eps=0.1", 2, 4)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("fgsm eps=0.1: 1/4 (25.0%), ")
    assert "ETA" in lines[1] and lines[1].startswith("pgd eps=0.1: 2/4 (50.0%)")
    assert lines[-1].startswith("evaluating: done in ")


def test_progress_lines_wait_for_the_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressReporter("hashing", 10, unit="bytes") as reporter:
        reporter.advance(5)
    assert capsys.readouterr().err == ""  # a quick stage prints nothing


def test_missing_key_errors_name_the_flags(signed: Path) -> None:
    done = mg("encrypt", "model", "--out", "m.enc", cwd=signed)
    assert done.returncode == 2
    assert "--recipient KEY.pub, --passphrase-env VAR or --key-file FILE" in done.stderr
    assert (
        mg(
            "encrypt", "model", "--out", "m.enc", "--recipient", "keys/alice.pub", cwd=signed
        ).returncode
        == 0
    )
    done = mg("decrypt", "m.enc", "--out", "plain", cwd=signed)
    assert done.returncode == 2
    assert "--identity KEY.priv, --passphrase-env VAR or --key-file FILE" in done.stderr
