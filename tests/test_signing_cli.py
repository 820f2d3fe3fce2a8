"""The sign/verify CLI: exit codes, one JSON document, and the ledger wiring (--require-ledger)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from modelguard import audit
from modelguard.cli import main as cli_main
from modelguard.keys import generate_key, key_id, write_keypair
from tests.test_ledger.conftest import pg_url  # noqa: F401  (fixture)
from tests.tinymodels import model_dir


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main(list(args))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("MG_TEST_PASS", "pass phrase")
    monkeypatch.chdir(tmp_path)
    key = generate_key()
    priv, pub = write_keypair(tmp_path / "keys", "signer", key, b"pass phrase")
    return {
        "priv": str(priv),
        "pub": str(pub),
        "key_id": key_id(key.public_key()),
        "model": model_dir(tmp_path / "model"),
        "ledger": f"sqlite:///{tmp_path / 'ledger.db'}",
        "ledger_key": str(tmp_path / "ledger.db.note.pub"),
    }


def sign(
    capsys: pytest.CaptureFixture[str], s: dict[str, Any], *extra: str, model: Path | None = None
) -> dict[str, Any]:
    code, out, err = run_cli(
        capsys,
        "sign",
        str(model or s["model"]),
        "--key",
        s["priv"],
        "--passphrase-env",
        "MG_TEST_PASS",
        "--json",
        *extra,
    )
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def verify(
    capsys: pytest.CaptureFixture[str], s: dict[str, Any], *extra: str, model: Path | None = None
) -> tuple[int, dict[str, Any], str]:
    code, out, err = run_cli(
        capsys, "verify", str(model or s["model"]), "--key", s["pub"], "--json", *extra
    )
    return code, json.loads(out), err


def test_sign_and_verify_json(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    signed = sign(capsys, setup, "--no-ledger", "--name", "tiny", "--version", "1")
    assert signed["ok"] and signed["key_id"] == setup["key_id"] and signed["ledger_entry"] is None
    assert signed["tensors"] == 8
    code, report, _ = verify(capsys, setup)
    assert code == 0 and report["ok"] and report["layer_detail"]


def test_verify_failure_is_exit_1_with_one_json_document_naming_the_tensor(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    sign(capsys, setup, "--no-ledger")
    weights = setup["model"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x40
    weights.write_bytes(bytes(data))
    code, report, err = verify(capsys, setup)
    assert code == 1 and report["ok"] is False
    assert any("tensor 'fc2.weight'" in f for f in report["failures"])
    assert "verification failed" in err and "fc2.weight" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "verify", str(setup["model"]), "--key", setup["pub"])
    assert code == 1 and "VERIFICATION FAILED" in out and "fc2.weight" in out


def test_bad_input_is_exit_2_one_line(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    sign(capsys, setup, "--no-ledger")
    (setup["model"] / "model.sig").write_text(
        '{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"'
    )
    code, _, err = run_cli(capsys, "verify", str(setup["model"]), "--key", setup["pub"])
    assert code == 2 and "model.sig" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(
        capsys, "verify", str(setup["model"]), "--key", setup["pub"], "--policy", "p.toml"
    )
    assert code == 2
    code, _, err = run_cli(
        capsys, "sign", str(setup["model"]), "--key", setup["priv"], "--no-ledger"
    )
    assert code == 2 and "passphrase" in err and "Traceback" not in err


def test_sign_records_in_the_ledger_and_require_ledger_checks_it(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    signed = sign(capsys, setup, "--ledger", setup["ledger"], "--name", "tiny", "--version", "1.0")
    entry = signed["ledger_entry"]
    assert entry["kind"] == "sign" and entry["actor"] == setup["key_id"]
    assert entry["payload_digest"] == signed["payload_digest"]
    assert entry["subject"] == {"name": "tiny", "version": "1.0", "root": signed["layer_root"]}
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--require-ledger",
        "--ledger-key",
        setup["ledger_key"],
    )
    assert code == 0, report["failures"]
    assert report["ledger"]["entries"][0]["index"] == entry["index"]


def test_require_ledger_fails_without_an_entry(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    sign(capsys, setup, "--no-ledger")
    audit.record_event(
        "evaluate",
        subject={"name": "x"},
        payload_digest="sha256:" + "0" * 64,
        actor="t",
        ledger_url=setup["ledger"],
    )
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--require-ledger",
        "--ledger-key",
        setup["ledger_key"],
    )
    assert code == 1 and any("no sign entry" in f for f in report["failures"])


@pytest.mark.parametrize("what", ["key", "model"])
def test_require_ledger_refuses_revoked_keys_and_models(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str], what: str
) -> None:
    signed = sign(capsys, setup, "--ledger", setup["ledger"])
    target = setup["key_id"] if what == "key" else "sha256:" + signed["subject_digest"]
    audit.revoke(target, reason="compromised", ledger_url=setup["ledger"])
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--require-ledger",
        "--ledger-key",
        setup["ledger_key"],
    )
    assert code == 1 and any("revoked" in f and "compromised" in f for f in report["failures"])


def test_require_ledger_refuses_rollback_unless_allowed(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sign(capsys, setup, "--ledger", setup["ledger"], "--name", "tiny", "--version", "1.9")
    newer = model_dir(tmp_path / "newer", seed=1)
    sign(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--name",
        "tiny",
        "--version",
        "1.10",
        model=newer,
    )
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--require-ledger",
        "--ledger-key",
        setup["ledger_key"],
    )
    assert code == 1 and any("rollback" in f and "1.10" in f for f in report["failures"])
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--require-ledger",
        "--ledger-key",
        setup["ledger_key"],
        "--allow-rollback",
    )
    assert code == 0, report["failures"]
    code, _, _ = verify(
        capsys,
        setup,
        "--ledger",
        setup["ledger"],
        "--require-ledger",
        "--ledger-key",
        setup["ledger_key"],
        model=newer,
    )
    assert code == 0


def test_default_ledger_is_under_the_working_directory(
    setup: dict[str, Any], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sign(capsys, setup)
    assert (tmp_path / ".modelguard" / "ledger.db").exists()
    shutil.rmtree(tmp_path / ".modelguard")
    code, report, _ = verify(capsys, setup, "--require-ledger")
    assert code != 0


@pytest.mark.postgres
def test_sign_and_require_ledger_on_postgresql(
    setup: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
    pg_url: str,  # noqa: F811  (the fixture imported above)
) -> None:
    signed = sign(capsys, setup, "--ledger", pg_url, "--name", "tiny", "--version", "3")
    assert signed["ledger_entry"]["kind"] == "sign"
    # A shared PostgreSQL log has one note key, held by whoever checkpoints it (here: created
    # by `ledger checkpoint`); writers without it append but do not checkpoint.
    audit.sign_checkpoint(pg_url)
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        pg_url,
        "--require-ledger",
        "--ledger-key",
        ".modelguard/ledger-note.pub",
    )
    assert code == 0, report["failures"]
    audit.revoke(setup["key_id"], reason="rotated", ledger_url=pg_url)
    code, report, _ = verify(
        capsys,
        setup,
        "--ledger",
        pg_url,
        "--require-ledger",
        "--ledger-key",
        ".modelguard/ledger-note.pub",
    )
    assert code == 1 and any("revoked" in f for f in report["failures"])
