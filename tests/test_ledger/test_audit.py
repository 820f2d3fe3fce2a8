"""modelguard.audit: ledger URL resolution, events, revocation, rollback, proofs, lineage."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from ledger import EventSpec, open_ledger
from modelguard import audit
from modelguard.errors import BadInputError, LedgerVerificationError


def _sign(url: str, name: str, version: str, root: str, parent: str | None = None) -> None:
    subject = {"name": name, "version": version, "root": root}
    if parent:
        subject["parent"] = parent
    audit.record_event(
        "sign", subject=subject, payload_digest=f"sha256:{root}", actor="k1", ledger_url=url
    )


def test_url_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(audit.ENV_LEDGER, raising=False)
    assert audit.resolve_ledger_url(None) == f"sqlite:///{tmp_path}/.modelguard/ledger.db"
    monkeypatch.setenv(audit.ENV_LEDGER, "sqlite:///env.db")
    assert audit.resolve_ledger_url(None) == "sqlite:///env.db"
    assert audit.resolve_ledger_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_default_ledger_is_created_on_first_write_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(audit.ENV_LEDGER, raising=False)
    monkeypatch.delenv(audit.ENV_NOTE_KEY, raising=False)
    assert audit.find_sign_entry("sha256:00") is None
    assert audit.newest_version("m") is None and audit.revocation_for("x") is None
    assert not (tmp_path / ".modelguard").exists()
    _sign(None, "m", "1", "aa")  # type: ignore[arg-type]
    assert (tmp_path / ".modelguard" / "ledger.db").exists()
    assert audit.find_sign_entry("sha256:aa") is not None


def test_sign_entries_revocations_and_newest_version(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    for version, root in (("1.2", "a1"), ("1.10", "a2"), ("1.9", "a3")):
        _sign(url, "digits", version, root)
    _sign(url, "other", "7.0", "b1")
    assert audit.newest_version("digits", url) == "1.10"
    found = audit.find_sign_entry("sha256:a3", url)
    assert found is not None and found.subject["version"] == "1.9"
    assert audit.find_sign_entry("sha256:ff", url) is None

    assert audit.revocation_for("sha256:a2", url) is None
    entry = audit.revoke("sha256:A2", reason="leaked weights", actor="sec", ledger_url=url)
    assert entry.kind == "revoke" and entry.details == {"reason": "leaked weights"}
    hit = audit.revocation_for("a2", url)
    assert hit is not None and hit.index == entry.index
    with pytest.raises(BadInputError):
        audit.revoke("x", reason=" ", ledger_url=url)


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [("1.10", "1.9", 1), ("1.0", "1.0.0", -1), ("v2", "2", 0), ("1.0rc1", "1.0.1", -1)],
)
def test_compare_versions(a: str, b: str, want: int) -> None:
    assert audit.compare_versions(a, b) == want
    assert audit.compare_versions(b, a) == -want


def test_note_key_created_private_and_checkpoints_verify(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _sign(url, "m", "1", "aa")
    note = audit.sign_checkpoint(url)
    key = tmp_path / "l.db.note.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pub = tmp_path / "l.db.note.pub"
    assert "PRIVATE" not in pub.read_text()
    proof_doc = audit.prove_with_checkpoint(0, url)
    proof, cp = audit.check_proof(proof_doc, [pub])
    assert (proof.leaf_index, cp.size) == (0, 1)
    assert note.startswith(cp.origin + "\n1\n")
    other = audit.load_note_signer(None, tmp_path / "other.key")
    (tmp_path / "other.pub").write_text(other.verifier().to_key_string())
    with pytest.raises(LedgerVerificationError):
        audit.check_proof(proof_doc, [tmp_path / "other.pub"])


def test_check_inclusion_uses_a_signed_checkpoint(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _sign(url, "m", "1", "aa")
    entry = audit.find_sign_entry("sha256:aa", url)
    assert entry is not None
    pub = [tmp_path / "l.db.note.pub"]
    proof = audit.check_inclusion(entry, pub, url)
    assert proof.tree_size == 1
    _sign(url, "m", "2", "bb")
    later = audit.find_sign_entry("sha256:bb", url)
    assert later is not None and audit.check_inclusion(later, pub, url).tree_size == 2
    forged = type(entry)(**{**entry.__dict__, "actor": "mallory", "_canonical": b""})
    with pytest.raises(LedgerVerificationError):
        audit.check_inclusion(forged, pub, url)
    with pytest.raises(BadInputError, match="public note key"):
        audit.check_inclusion(entry, [], url)


def test_consistency_with_a_saved_checkpoint_and_a_forked_log(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with open_ledger(url) as log:
        log.append_many([EventSpec("t", {}, f"d{i}", "a") for i in range(3)])
    saved = audit.sign_checkpoint(url)
    # A fork: a copy of the log (and its key) that goes its own way from entry 3 on.
    for suffix in ("", ".note.key", ".note.pub"):
        shutil.copy(tmp_path / f"a.db{suffix}", tmp_path / f"b.db{suffix}")
    fork = f"sqlite:///{tmp_path / 'b.db'}"
    with open_ledger(url) as log:
        log.append_many([EventSpec("t", {}, f"honest{i}", "a") for i in range(3)])
    with open_ledger(fork) as log:
        log.append_many([EventSpec("t", {}, f"forked{i}", "a") for i in range(3)])
    audit.sign_checkpoint(url)
    audit.sign_checkpoint(fork)
    pub = [tmp_path / "a.db.note.pub"]
    result = audit.check_consistency(saved, pub, url)
    assert result.ok and (result.proof.old_size, result.proof.new_size) == (3, 6)
    later = audit.sign_checkpoint(url)
    with pytest.raises(LedgerVerificationError, match="different roots"):
        audit.check_consistency(later, pub, fork)
    with open_ledger(fork) as log:
        log.append(kind="t", subject={}, payload_digest="more", actor="a")
    audit.sign_checkpoint(fork)
    with pytest.raises(LedgerVerificationError):
        audit.check_consistency(later, pub, fork)


def test_lineage_follows_parent_links(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    _sign(url, "digits", "1.0", "r1")
    _sign(url, "digits", "1.1", "r2", parent="sha256:r1")
    _sign(url, "digits", "1.2", "r3", parent="r2")
    _sign(url, "digits-alt", "1.0", "r4", parent="r1")
    _sign(url, "unrelated", "1.0", "r9")
    [tree] = audit.lineage("r3", url)
    assert tree.root == "r1"
    assert [c.root for c in tree.children] == ["r2", "r4"]
    assert [c.root for c in tree.children[0].children] == ["r3"]
    assert audit.lineage("unrelated", url)[0].children == []
    assert audit.lineage("nothing", url) == []
    assert tree.to_dict()["children"][0]["label"].startswith("digits 1.1")


def test_each_operation_opens_the_ledger_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One ledger session per operation: appending and checkpointing, a query that reads
    revocations and versions, a proof with a fresh checkpoint, the first key creation."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.delenv(audit.ENV_NOTE_KEY, raising=False)
    opened: list[str] = []
    real = audit.open_ledger

    def counting(*args: object, **kwargs: object) -> object:
        opened.append(str(args[0]))
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit, "open_ledger", counting)

    def opens(operation: object) -> int:
        opened.clear()
        assert callable(operation)
        operation()
        return len(opened)

    assert opens(lambda: _sign(url, "m", "1", "aa" * 32)) == 1  # creates the note key too
    assert audit.note_key_path(url).exists()
    assert opens(lambda: _sign(url, "m", "2", "bb" * 32)) == 1
    assert opens(lambda: audit.newest_version("m", url)) == 1
    assert opens(lambda: audit.prove_with_checkpoint(0, url)) == 1
    assert opens(lambda: audit.sign_checkpoint(url)) == 1
    assert opens(lambda: audit.lineage("m", url)) == 1
