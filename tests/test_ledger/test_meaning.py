"""What the ledger says about a model: lineage by path, one name, revocations, the newest version."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from modelguard import audit
from modelguard.cli import main as cli_main
from modelguard.keys import generate_key
from modelguard.signing.sign import sign_model
from tests.tinymodels import model_dir


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    with pytest.raises(SystemExit) as done:
        cli_main.main([*args, "--json"])
    out = capsys.readouterr()
    return int(done.value.code or 0), json.loads(out.out) if out.out.strip() else {}, out.err


def test_lineage_by_model_path_keeps_the_signed_name_and_marks_revocations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    model = model_dir(tmp_path / "model")
    signed = sign_model(model, generate_key(), name="digits-cnn", version="1", ledger_url=url)
    root = signed.manifest.layer_root
    audit.record_event("encrypt", subject={"name": "digits.enc", "root": root},
                       payload_digest="sha256:" + "1" * 64, actor="k", ledger_url=url)  # fmt: skip
    code, doc, err = cli(capsys, "ledger", "lineage", str(model), "--ledger", url)
    assert code == 0, err
    (tree,) = doc["lineage"]
    assert doc["root"] == root and tree["root"] == root
    assert tree["label"].startswith("digits-cnn 1 (") and not tree["revoked"]
    assert [e["kind"] for e in tree["entries"]] == ["sign", "encrypt"]
    audit.revoke("sha256:" + signed.subject_digest, reason="backdoor", ledger_url=url)
    code, doc, _ = cli(capsys, "ledger", "lineage", "digits-cnn", "--ledger", url)
    (tree,) = doc["lineage"]
    assert tree["revoked"][0]["reason"] == "backdoor" and "[REVOKED]" in tree["label"]


def test_a_revoked_version_is_not_the_newest(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    for version, root in (("1", "a1"), ("2", "a2")):
        audit.record_event("sign", subject={"name": "m", "version": version, "root": root},
                           payload_digest=f"sha256:{root}", actor="k", ledger_url=url)  # fmt: skip
    assert audit.newest_version("m", url) == "2"
    audit.revoke("a2", reason="bad", ledger_url=url)
    assert audit.newest_version("m", url) == "1"
    audit.revoke("k", reason="key leaked", ledger_url=url)
    assert audit.newest_version("m", url) is None


def test_consistency_is_read_only_and_reports_edited_bodies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "l.db"
    url = f"sqlite:///{db}"
    for i in range(3):
        audit.record_event("t", subject={}, payload_digest=f"d{i}", actor="a", ledger_url=url)
    saved = tmp_path / "cp.txt"
    saved.write_text(audit.sign_checkpoint(url))
    audit.record_event("t", subject={}, payload_digest="d3", actor="a", ledger_url=url)
    pub = str(tmp_path / "l.db.note.pub")
    with sqlite3.connect(db) as conn:
        checkpoints = conn.execute("SELECT count(*) FROM ledger_checkpoints").fetchone()
        body = conn.execute("SELECT body FROM ledger_entries WHERE idx = 1").fetchone()[0]
        conn.execute("UPDATE ledger_entries SET body = ? WHERE idx = 1",
                     (bytes(body).replace(b'"d1"', b'"dX"'),))  # fmt: skip
    code, doc, err = cli(capsys, "ledger", "consistency", str(saved), "--key", pub, "--ledger", url)
    assert code == 1 and doc["ok"] is False
    assert doc["proof"]["old_size"] == 3 and doc["proof"]["new_size"] == 4
    assert any(p["index"] == 1 and p["what"] == "edited" for p in doc["ledger"]["problems"])
    assert "entry 1" in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_checkpoints").fetchone() == checkpoints


def test_a_writer_given_only_the_public_key_appends_without_signing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CI job that pins the ledger's public key for the gate may still record events."""
    url = f"sqlite:///{tmp_path / 'l.db'}"
    audit.record_event("t", subject={}, payload_digest="d0", actor="a", ledger_url=url)
    monkeypatch.setenv(audit.ENV_NOTE_KEY, str(tmp_path / "l.db.note.pub"))
    entry = audit.record_event("t", subject={}, payload_digest="d1", actor="a", ledger_url=url)
    assert entry.index == 1
    with sqlite3.connect(tmp_path / "l.db") as conn:
        assert conn.execute("SELECT MAX(tree_size) FROM ledger_checkpoints").fetchone() == (1,)


def test_encrypting_keeps_the_name_the_model_was_signed_with(tmp_path: Path) -> None:
    from modelguard.encryption import encrypt_model

    url = f"sqlite:///{tmp_path / 'l.db'}"
    key = generate_key()
    model = model_dir(tmp_path / "model")
    signed = sign_model(model, key, name="digits-cnn", version="1", ledger_url=url)
    encrypt_model(model, tmp_path / "out.enc", key=bytes(32), sign_key=key, ledger_url=url)
    (event,) = audit.list_entries(url, kind="encrypt")[1]
    assert event.subject["name"] == "digits-cnn"
    assert event.subject["root"] == signed.manifest.layer_root
    encrypt_model(model, tmp_path / "renamed.enc", key=bytes(32), sign_key=key, name="renamed",
                  ledger_url=url)  # fmt: skip
    assert audit.list_entries(url, kind="encrypt")[1][-1].subject["name"] == "renamed"
