"""Class 4: the ledger gate decided by editable rows. Every attack here must be refused.

The adversary can write the ledger database and the files next to it (including the
note key), but holds neither the model signing key nor the ledger key the verifier pinned.
Setup: model "m" v1 and v2 are signed and ledgered; deploying v1 is a rollback, so the gate
must refuse it. Each attack edits the ledger to make v1 look deployable (or a revoked model
look clean) and must fail.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import NoteSigner, open_ledger
from ledger.merkle import leaf_hash, node_id
from modelguard import audit
from modelguard.cli import main as cli_main
from modelguard.keys import generate_key, key_id
from modelguard.policy import policy_from_keys, with_ledger_trust
from modelguard.signing import ledger_check
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model
from tests.tinymodels import model_dir


class World:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.db = tmp_path / "ledger" / "l.db"
        self.url = f"sqlite:///{self.db}"
        self.key = generate_key()
        self.v1 = model_dir(tmp_path / "v1", seed=1)
        self.v2 = model_dir(tmp_path / "v2", seed=2)
        self.signed1 = sign_model(self.v1, self.key, name="m", version="1", ledger_url=self.url)
        self.signed2 = sign_model(self.v2, self.key, name="m", version="2", ledger_url=self.url)
        # The verifier's own copy of the ledger key, taken when the ledger was set up.
        self.pinned = tmp_path / "verifier" / "ledger.pub"
        self.pinned.parent.mkdir()
        shutil.copy(tmp_path / "ledger" / "l.db.note.pub", self.pinned)
        self.state = tmp_path / "verifier" / "state"

    def gate(self, model: Path, *, keys: tuple[str, ...] | None = None) -> Any:
        policy = with_ledger_trust(
            policy_from_keys([self.key.public_key()]),
            keys if keys is not None else (str(self.pinned),),
            self.state,
        )
        return verify_model(model, policy=policy, ledger_url=self.url, require_ledger=True)

    def sql(self, statement: str, *params: Any) -> None:
        with sqlite3.connect(self.db) as db:
            db.execute(statement, params)

    def row(self, index: int) -> dict[str, Any]:
        with sqlite3.connect(self.db) as db:
            body = db.execute("SELECT body FROM ledger_entries WHERE idx = ?", (index,)).fetchone()
        return json.loads(body[0])  # type: ignore[no-any-return]

    def rewrite_body(self, index: int, body: dict[str, Any], *, fix_leaf: bool) -> None:
        """Replace an entry's stored JSON; ``fix_leaf`` also rewrites its level-0 tree node."""
        import rfc8785

        data = rfc8785.dumps(body)
        self.sql("UPDATE ledger_entries SET body = ? WHERE idx = ?", data, index)
        if fix_leaf:
            self.sql("UPDATE ledger_nodes SET hash = ? WHERE id = ?", leaf_hash(data), index)


@pytest.fixture()
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def failures(report: Any, check: str) -> list[str]:
    return [c.detail for c in report.checks if c.name == check and not c.ok]


def test_baseline_v2_deploys_and_v1_is_a_rollback(world: World) -> None:
    assert world.gate(world.v2).ok
    report = world.gate(world.v1)
    assert not report.ok and any("rollback" in f for f in failures(report, "rollback"))


def test_no_trusted_key_is_exit_1_with_the_fix(
    world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MODELGUARD_LEDGER_KEY", raising=False)
    report = world.gate(world.v2, keys=())
    assert not report.ok and "--ledger-key" in failures(report, "ledger")[0]
    pub = world.tmp / "signer.pub"
    from modelguard.keys import public_pem

    pub.write_bytes(public_pem(world.key.public_key()))
    with pytest.raises(SystemExit) as done:
        cli_main.main(["verify", str(world.v2), "--key", str(pub), "--ledger", world.url,
                       "--require-ledger"])  # fmt: skip
    err = capsys.readouterr().err
    assert done.value.code == 1 and "--ledger-key" in err and "MODELGUARD_LEDGER_KEY" in err
    monkeypatch.setenv("MODELGUARD_LEDGER_KEY", world.pinned.read_text().strip())
    with pytest.raises(SystemExit) as done:
        cli_main.main(["verify", str(world.v2), "--key", str(pub), "--ledger", world.url,
                       "--require-ledger", "--ledger-state", str(world.state)])  # fmt: skip
    assert done.value.code == 0, capsys.readouterr().err


def _ledger_files(world: World) -> dict[str, str]:
    """The ledger directory's contents; SQLite's empty -wal/-shm bookkeeping files aside."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((world.tmp / "ledger").iterdir())
        if not (p.name.endswith(("-wal", "-shm")) and p.stat().st_size in (0, 32768))
    }


def test_the_gate_is_read_only(world: World) -> None:
    with open_ledger(world.url) as log:
        checkpoints = log.checkpoints()
    (world.tmp / "ledger" / "l.db.note.key").unlink()  # no key to sign with, none created
    before = _ledger_files(world)
    assert world.gate(world.v2).ok
    assert world.gate(world.v1).ok is False
    assert _ledger_files(world) == before
    with open_ledger(world.url) as log:
        assert log.checkpoints() == checkpoints


@pytest.mark.parametrize("warm", [False, True], ids=["first-run", "with-trust-state"])
def test_editing_query_columns_of_the_newest_row_does_not_hide_it(world: World, warm: bool) -> None:
    if warm:
        world.gate(world.v2)
    newest = world.signed2.ledger_entry["index"]  # type: ignore[index]
    world.sql(
        "UPDATE ledger_entries SET subject_name = 'other', kind = 'evaluate', payload_digest = ?"
        " WHERE idx = ?",
        "sha256:" + "0" * 64,
        newest,
    )
    report = world.gate(world.v1)
    assert not report.ok and any("2" in f for f in failures(report, "rollback"))


@pytest.mark.parametrize("fix_leaf", [False, True])
@pytest.mark.parametrize("warm", [False, True], ids=["first-run", "with-trust-state"])
def test_rewriting_the_newest_rows_body_is_refused(
    world: World, warm: bool, fix_leaf: bool
) -> None:
    if warm:
        world.gate(world.v1)  # state taken while v2 was already ledgered
    newest = world.signed2.ledger_entry["index"]  # type: ignore[index]
    body = world.row(newest)
    body["subject"]["name"] = "renamed"
    world.rewrite_body(newest, body, fix_leaf=fix_leaf)
    report = world.gate(world.v1)
    assert not report.ok


@pytest.mark.parametrize("how", ["kind-column", "kind-in-body", "delete-row"])
@pytest.mark.parametrize("warm", [False, True], ids=["first-run", "with-trust-state"])
def test_hiding_a_revocation_is_refused(world: World, how: str, warm: bool) -> None:
    audit.revoke("sha256:" + world.signed2.subject_digest, reason="backdoor", ledger_url=world.url)
    if warm:
        world.gate(world.v1)
    revoke_index = audit.list_entries(world.url, kind="revoke")[1][-1].index
    if how == "kind-column":
        world.sql("UPDATE ledger_entries SET kind = 'evaluate' WHERE idx = ?", revoke_index)
    elif how == "kind-in-body":
        body = world.row(revoke_index)
        body["kind"] = "evaluate"
        world.rewrite_body(revoke_index, body, fix_leaf=True)
    else:
        world.sql("DELETE FROM ledger_entries WHERE idx = ?", revoke_index)
    report = world.gate(world.v2)
    assert not report.ok


def test_revoking_v2_lets_v1_deploy_again(world: World) -> None:
    audit.revoke("sha256:" + world.signed2.subject_digest, reason="bad", ledger_url=world.url)
    assert world.gate(world.v1).ok
    report = world.gate(world.v2)
    assert not report.ok and any(
        "backdoor" not in f and "bad" in f for f in failures(report, "revocation")
    )


@pytest.mark.parametrize("warm", [False, True], ids=["first-run", "with-trust-state"])
def test_deleting_the_newest_row_is_refused(world: World, warm: bool) -> None:
    if warm:
        world.gate(world.v1)
    newest = world.signed2.ledger_entry["index"]  # type: ignore[index]
    world.sql("DELETE FROM ledger_entries WHERE idx = ?", newest)
    report = world.gate(world.v1)
    assert not report.ok


def _truncate(world: World, keep: int) -> None:
    """Cut the log to its first ``keep`` entries: rows, tree nodes and later checkpoints."""
    world.sql("DELETE FROM ledger_entries WHERE idx >= ?", keep)
    with sqlite3.connect(world.db) as db:
        ids = [r[0] for r in db.execute("SELECT id FROM ledger_nodes")]
        for nid in ids:
            level, index = nid >> 56, nid & ((1 << 56) - 1)
            if (index + 1) << level > keep:
                db.execute("DELETE FROM ledger_nodes WHERE id = ?", (nid,))
        db.execute("DELETE FROM ledger_checkpoints WHERE tree_size > ?", (keep,))


def test_truncating_the_tail_is_refused_once_the_client_saw_it(world: World) -> None:
    assert not world.gate(world.v1).ok  # the client accepts the checkpoint covering v2
    _truncate(world, world.signed2.ledger_entry["index"])  # type: ignore[index]
    with open_ledger(world.url) as log:
        assert log.verify().ok  # the cut log is self-consistent: only the client state knows
    report = world.gate(world.v1)
    assert not report.ok and "truncated" in failures(report, "ledger")[0]


def test_a_forked_log_is_refused(world: World) -> None:
    """Cut and regrow: a same-size log with other content, signed by the real key."""
    world.gate(world.v1)
    keep = world.signed1.ledger_entry["index"] + 1  # type: ignore[index]
    _truncate(world, keep)
    with open_ledger(world.url) as log:
        log.append("evaluate", subject={"name": "x"}, payload_digest="sha256:00", actor="a")
        log.checkpoint(audit.load_note_signer(world.url, create=False))
    report = world.gate(world.v1)
    assert not report.ok and "forked" in " ".join(failures(report, "ledger"))


@pytest.mark.parametrize("old_checkpoints", ["kept", "deleted"])
def test_a_replaced_note_key_is_refused(world: World, old_checkpoints: str) -> None:
    """Rewrite the log without v2 and sign it with a new key put next to the database."""
    world.gate(world.v2)
    keep = world.signed2.ledger_entry["index"]  # type: ignore[index]
    _truncate(world, keep)
    if old_checkpoints == "deleted":
        world.sql("DELETE FROM ledger_checkpoints")
    with open_ledger(world.url) as log:
        mallory = NoteSigner.generate(log.origin)
        log.append("evaluate", subject={"name": "y"}, payload_digest="sha256:11", actor="a")
        log.checkpoint(mallory)
    (world.tmp / "ledger" / "l.db.note.key").write_text(mallory.to_key_string() + "\n")
    (world.tmp / "ledger" / "l.db.note.pub").write_text(mallory.verifier().to_key_string() + "\n")
    assert not world.gate(world.v1).ok  # the pinned key does not sign the forgery
    # Pointing the gate at the replaced key file next to the ledger: the trust state, taken
    # under the real key, still refuses.
    report = world.gate(world.v1, keys=(str(world.tmp / "ledger" / "l.db.note.pub"),))
    assert not report.ok and "trust state" in failures(report, "ledger")[0]


def test_tampered_tree_nodes_fail_closed(world: World) -> None:
    world.sql("UPDATE ledger_nodes SET hash = ? WHERE id = ?", b"\x00" * 32, node_id(1, 0))
    assert not world.gate(world.v2).ok


def test_an_unsigned_tail_entry_is_not_trusted(world: World) -> None:
    v3 = model_dir(world.tmp / "v3", seed=3)
    signed3 = sign_model(v3, world.key, name="m", version="3", record=False)
    with open_ledger(world.url) as log:  # appended, but no checkpoint signed over it
        log.append(
            "sign",
            subject={"name": "m", "version": "3", "root": signed3.manifest.layer_root},
            payload_digest=signed3.payload_digest,
            actor=key_id(world.key.public_key()),
        )
    report = world.gate(v3)
    assert not report.ok and "ledger checkpoint" in failures(report, "ledger")[0]
    assert world.gate(world.v2).ok  # decisions rest on the signed tree only


def test_state_is_updated_only_after_success(world: World) -> None:
    world.gate(world.v2)
    path = ledger_check.state_path(audit.open_audit_ledger(world.url).origin, world.state)
    saved = path.read_bytes()
    audit.record_event("evaluate", subject={"name": "z"}, payload_digest="sha256:22", actor="a",
                       ledger_url=world.url)  # fmt: skip
    last = audit.list_entries(world.url)[0] - 1
    body = world.row(last)
    body["actor"] = "mallory"
    world.rewrite_body(last, body, fix_leaf=True)
    assert not world.gate(world.v2).ok
    assert path.read_bytes() == saved


def test_cosignature_hook_sees_the_verified_note(world: World) -> None:
    seen: list[int] = []

    def quorum(note: str, checkpoint: Any) -> list[str]:
        seen.append(checkpoint.size)
        return ["no witness cosigned it"]

    ledger_check.add_checkpoint_check(quorum)
    try:
        report = world.gate(world.v2)
    finally:
        ledger_check.remove_checkpoint_check(quorum)
    assert seen and not report.ok and "witness" in failures(report, "ledger")[0]


def test_an_escaped_kind_is_still_read(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer may escape letters (``"\\u0073ign"``); the first-run prefilter must not skip it."""
    import ledger.entry

    def escaping(value: Any) -> bytes:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return text.replace('"kind":"sign"', '"kind":"\\u0073ign"').encode()

    v3 = model_dir(world.tmp / "v3", seed=3)
    signed3 = sign_model(v3, world.key, name="m", version="3", record=False)
    with monkeypatch.context() as patch:
        patch.setattr(ledger.entry.rfc8785, "dumps", escaping)
        with open_ledger(world.url) as log:
            entry = log.append(
                "sign",
                subject={"name": "m", "version": "3", "root": signed3.manifest.layer_root},
                payload_digest=signed3.payload_digest,
                actor=key_id(world.key.public_key()),
            )
    assert b"\\u0073ign" in entry.canonical()
    with open_ledger(world.url) as log:
        log.checkpoint(audit.load_note_signer(world.url, create=False))
    report = world.gate(world.v2)
    assert not report.ok and any("3" in f for f in failures(report, "rollback"))


def test_facts_learned_after_the_trust_state_count(world: World) -> None:
    """Entries proven on a later run join what the state knew: a new version, a revocation."""
    assert world.gate(world.v2).ok
    v3 = model_dir(world.tmp / "v3", seed=3)
    signed3 = sign_model(v3, world.key, name="m", version="3", ledger_url=world.url)
    report = world.gate(world.v2)
    assert not report.ok and any("3" in f for f in failures(report, "rollback"))
    audit.revoke("sha256:" + signed3.subject_digest, reason="bad v3", ledger_url=world.url)
    assert world.gate(world.v2).ok  # v3 revoked: v2 is the newest again
    assert not world.gate(world.v1).ok  # v2 still is newer than v1
    report = world.gate(v3)
    assert not report.ok and "bad v3" in failures(report, "revocation")[0]


@settings(max_examples=200)
@given(
    kind=st.sampled_from(["sign", "revoke"]),
    subject=st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=3),
    ensure_ascii=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]),
)
def test_the_first_run_prefilter_never_skips_a_sign_or_revoke_entry(
    kind: str, subject: dict[str, str], ensure_ascii: bool, encoding: str
) -> None:
    """Whatever a writer's JSON looks like, an entry the parser reads as sign/revoke is kept."""
    text = json.dumps({"kind": kind, "subject": subject}, ensure_ascii=ensure_ascii)
    body = text.encode(encoding)
    assert json.loads(body)["kind"] == kind
    assert ledger_check.may_matter(body)
    escaped = text.replace(f'"{kind}"', '"' + "".join(f"\\u{ord(c):04x}" for c in kind) + '"')
    assert ledger_check.may_matter(escaped.encode(encoding))
