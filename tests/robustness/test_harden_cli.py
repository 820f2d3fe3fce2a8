"""``modelguard harden`` / ``recertify`` on the command line: progress for logs, --ledger-key."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from modelguard.cli.main import cli
from modelguard.keys import generate_key, write_keypair
from modelguard.robustness.data import load_dataset
from modelguard.signing.sign import sign_model

# A progress line for logs: "<stage>: done/total (pct), rate/s, ETA ..."
PROGRESS = re.compile(r"^(?P<stage>.+?): (?P<done>\d+)/(?P<total>\d+) \(\d+\.\d%\), ")


@pytest.fixture
def signed(tmp_path: Path, digits_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.delenv("MODELGUARD_LEDGER_KEY", raising=False)
    parent = tmp_path / "digits"
    shutil.copytree(digits_model_dir, parent)
    key = generate_key()
    priv, pub = write_keypair(tmp_path, "mg", key, None)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    sign_model(parent, key, name="digits", version="1", ledger_url=url)
    return {
        "tmp": tmp_path,
        "parent": parent,
        "priv": str(priv),
        "pub": str(pub),
        "url": url,
        "ledger_key": str(tmp_path / "ledger.db.note.pub"),
    }


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def exit_code(result: Result) -> int:
    """The exit code ``modelguard`` gives (``cli.main`` maps typed errors as this does)."""
    return int(getattr(result.exception, "exit_code", result.exit_code))


def harden_args(s: dict, out: str, *extra: str) -> list[str]:
    return [
        "harden",
        str(s["parent"]),
        "--method",
        "pgd-at",
        "--epochs",
        "2",
        "--steps",
        "1",
        "--batch-size",
        "256",
        "--attacks",
        "fgsm",
        "--eval-eps",
        "0.1",
        "--limit",
        "30",
        "--sign-key",
        s["priv"],
        "--out",
        str(s["tmp"] / out),
        "--ledger",
        s["url"],
        *extra,
    ]


def progress_lines(stderr: str) -> list[tuple[str, int, int]]:
    found = []
    for line in stderr.splitlines():
        match = PROGRESS.match(line)
        if match:
            found.append((match["stage"], int(match["done"]), int(match["total"])))
    return found


def test_harden_and_recertify_print_progress_lines_for_logs(
    signed: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELGUARD_PROGRESS_INTERVAL", "0")  # every update makes a line
    done = invoke(*harden_args(signed, "child"))  # CliRunner's stdout is no terminal: a log
    assert done.exit_code == 0, done.output
    assert "hardened" in done.stdout and not progress_lines(done.stdout)  # progress: stderr
    lines = progress_lines(done.stderr)
    stages = {stage for stage, _, _ in lines}
    assert {"verify parent", "export child", "sign child"} <= stages, done.stderr
    training = [(d, t) for s, d, t in lines if s.startswith("pgd-at: train epoch ")]
    batches_per_epoch = -(-len(load_dataset("digits:train")) // 256)
    assert training[-1] == (2 * batches_per_epoch, 2 * batches_per_epoch)
    assert any(s == "pgd-at: train epoch 2/2, batches" for s, _, _ in lines)
    evaluation = [(d, t) for s, d, t in lines if s.startswith("evaluate child: ")]
    assert evaluation and evaluation[-1][0] == evaluation[-1][1]  # the last attack run: n/n
    assert ("evaluate child: fgsm eps=0.1", 1, evaluation[0][1]) in lines
    assert done.stderr.splitlines()[-1].startswith("harden: done in ")

    child = str(signed["tmp"] / "child")
    again = invoke("recertify", child, "--trust-key", signed["pub"])
    assert again.exit_code == 0, again.output
    assert "RE-CERTIFIED" in again.stdout
    rerun = progress_lines(again.stderr)
    assert ("verify model", 1, 1) in rerun
    assert any(s.startswith("re-run evaluation: fgsm eps=0.1") for s, _, _ in rerun)
    assert again.stderr.splitlines()[-1].startswith("recertify: done in ")

    # --json: stdout is the one JSON document, and no progress line anywhere; -q: silence.
    as_json = invoke("recertify", child, "--trust-key", signed["pub"], "--json")
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["ok"] is True
    assert as_json.stderr == ""
    quiet = invoke("recertify", child, "--trust-key", signed["pub"], "-q")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""


def test_harden_and_recertify_take_the_ledger_key_on_the_command_line(signed: dict) -> None:
    refused = invoke(*harden_args(signed, "refused"), "--require-ledger", "-q")
    assert exit_code(refused) == 1
    assert "--ledger-key" in str(refused.exception)  # the error names the flag that fixes it
    done = invoke(
        *harden_args(signed, "child"),
        "--require-ledger",
        "--ledger-key",
        signed["ledger_key"],
        "-q",
    )
    assert exit_code(done) == 0, done.exception
    child = str(signed["tmp"] / "child")
    base = ["recertify", child, "--trust-key", signed["pub"], "--ledger", signed["url"]]
    assert exit_code(invoke(*base, "--require-ledger", "-q")) == 1
    ok = invoke(*base, "--require-ledger", "--ledger-key", signed["ledger_key"], "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    # The checkpoint key of another ledger is not this ledger's: refused (exit 1).
    other = signed["tmp"] / "other"
    shutil.copytree(signed["parent"], other)
    (other / "model.sig").unlink()
    sign_model(other, generate_key(), ledger_url=f"sqlite:///{signed['tmp'] / 'other.db'}")
    stranger = str(signed["tmp"] / "other.db.note.pub")
    wrong = invoke(*base, "--require-ledger", "--ledger-key", stranger, "-q")
    assert exit_code(wrong) == 1, wrong.exception


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_rate_restarts_with_each_stage_and_a_silent_stage_is_repeated(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelguard.cli import output

    clock = FakeClock()
    monkeypatch.setattr(output.time, "monotonic", clock)
    monkeypatch.setenv("MODELGUARD_PROGRESS_INTERVAL", "5")
    reporter = output.ProgressReporter("harden")
    reporter._mode = "log"  # as outside a terminal (the ticker thread is not started here)
    clock.now += 60  # a minute of training
    reporter.update("train epoch 1/1, batches", 60, 60)
    clock.now += 2  # the next stage starts where the last one reported, not at the start
    reporter.update("evaluate child: pgd eps=0.1", 1, 4)
    clock.now += 4
    reporter.repeat_if_silent(5.0)  # 4 s since the last line: nothing yet
    clock.now += 2
    reporter.repeat_if_silent(5.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "train epoch 1/1, batches: 60/60 (100.0%), 1.0/s, ETA 0s"
    # 1 run in the 6 s since the stage began (not in the 66 s since the start): 0.2/s
    assert lines[1] == "evaluate child: pgd eps=0.1: 1/4 (25.0%), 0.2/s, ETA 18s, 1m06s elapsed"
    assert len(lines) == 2
