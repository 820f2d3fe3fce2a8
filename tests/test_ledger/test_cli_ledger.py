"""``modelguard ledger ...``: every command, its --json document and its exit code."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from modelguard.cli import main as cli_main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main.main(list(args))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def run_json(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> Any:
    rc, out, err = run(capsys, *args, "--json")
    assert rc == code, err
    return json.loads(out)  # exactly one JSON document


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'l.db'}"


def test_full_round_trip(capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path) -> None:
    info = run_json(capsys, "ledger", "init", "--ledger", url, "--origin", "example.org/log")
    assert info["origin"] == "example.org/log" and info["size"] == 0
    pub = tmp_path / "l.db.note.pub"
    assert pub.read_text().strip() == info["public_key"]

    for digest in ("sha256:aa", "sha256:bb", "deadbeef"):
        entry = run_json(capsys, "ledger", "revoke", digest, "--reason", "r", "--ledger", url)
        assert entry["kind"] == "revoke"
    shown = run_json(capsys, "ledger", "show", "--ledger", url, "--limit", "2")
    assert shown["size"] == 3 and [e["index"] for e in shown["entries"]] == [1, 2]
    rc, out, _ = run(capsys, "ledger", "show", "--ledger", url)
    assert rc == 0 and "revoke" in out

    cp = run_json(capsys, "ledger", "checkpoint", "--ledger", url, "-o", str(tmp_path / "cp"))
    assert (cp["origin"], cp["size"]) == ("example.org/log", 3)

    proof = tmp_path / "proof.json"
    rc, _, _ = run(capsys, "ledger", "prove", "1", "--ledger", url, "-o", str(proof))
    assert rc == 0
    checked = run_json(capsys, "ledger", "check-proof", str(proof), "--key", str(pub))
    assert checked["ok"] and checked["entry"]["payload_digest"] == "sha256:bb"

    run_json(capsys, "ledger", "revoke", "x", "--reason", "r", "--ledger", url)
    before = (tmp_path / "l.db").read_bytes()
    cons = run_json(
        capsys, "ledger", "consistency", str(tmp_path / "cp"), "--ledger", url, "--key", str(pub)
    )
    assert (cons["proof"]["old_size"], cons["proof"]["new_size"]) == (3, 4)
    assert cons["ok"] and (tmp_path / "l.db").read_bytes() == before  # read-only

    out_file = tmp_path / "l.jsonl"
    assert run_json(capsys, "ledger", "export", str(out_file), "--ledger", url)["entries"] == 4
    report = run_json(
        capsys, "ledger", "verify", "--file", str(out_file),
        "--checkpoint", str(tmp_path / "cp"), "--key", str(pub),
    )  # fmt: skip
    assert report["ok"] and report["size"] == 4 and report["checkpoints_checked"] == 1
    assert run_json(capsys, "ledger", "verify", "--ledger", url)["ok"]


def test_verify_names_the_tampered_index(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    for i in range(5):
        run_json(capsys, "ledger", "revoke", f"d{i}", "--reason", "r", "--ledger", url)
    db = sqlite3.connect(tmp_path / "l.db")
    db.execute("DELETE FROM ledger_entries WHERE idx = 2")
    db.commit()
    db.close()
    report = run_json(capsys, "ledger", "verify", "--ledger", url, code=1)
    assert report["first_bad_index"] == 2 and report["problems"][0]["what"] == "deleted"
    rc, out, err = run(capsys, "ledger", "verify", "--ledger", url)
    assert rc == 1 and "TAMPERED" in out and "entry 2" in err


def test_proof_checked_against_a_wrong_key_fails(
    capsys: pytest.CaptureFixture[str], url: str, tmp_path: Path
) -> None:
    run_json(capsys, "ledger", "revoke", "d", "--reason", "r", "--ledger", url)
    proof = tmp_path / "p.json"
    run(capsys, "ledger", "prove", "0", "--ledger", url, "-o", str(proof))
    other = tmp_path / "other.db"
    run_json(capsys, "ledger", "init", "--ledger", f"sqlite:///{other}")
    doc = run_json(
        capsys, "ledger", "check-proof", str(proof), "--key", str(tmp_path / "other.db.note.pub"),
        code=1,
    )  # fmt: skip
    assert doc["ok"] is False and "trusted" in doc["error"]["message"]


def test_lineage_tree(capsys: pytest.CaptureFixture[str], url: str) -> None:
    from modelguard.audit import record_event

    for version, root, parent in (("1", "r1", None), ("2", "r2", "r1")):
        subject = {"name": "digits", "version": version, "root": root}
        if parent:
            subject["parent"] = parent
        record_event("sign", subject=subject, payload_digest=root, actor="k", ledger_url=url)
    doc = run_json(capsys, "ledger", "lineage", "r2", "--ledger", url)
    assert doc["lineage"][0]["root"] == "r1"
    assert doc["lineage"][0]["children"][0]["root"] == "r2"
    rc, out, _ = run(capsys, "ledger", "lineage", "digits", "--ledger", url)
    assert rc == 0 and "digits 1" in out and "digits 2" in out
    rc, _, err = run(capsys, "ledger", "lineage", "nope", "--ledger", url)
    assert rc == 2 and "nope" in err


def test_missing_ledger_and_bad_input_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rc, _, err = run(capsys, "ledger", "show", "--ledger", f"sqlite:///{tmp_path / 'none.db'}")
    assert rc == 2 and "ledger init" in err and "Traceback" not in err
    rc, _, err = run(capsys, "ledger", "show", "--ledger", "ftp://x")
    assert rc == 2
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    pub = tmp_path / "k.pub"
    pub.write_text("name+00000000+AAAA")
    rc, _, err = run(capsys, "ledger", "check-proof", str(bad), "--key", str(pub))
    assert rc == 2
