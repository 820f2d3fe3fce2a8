"""Audit attestations: signed, bound to the model root and data digests, in the ledger, gated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelguard.audit import list_entries
from modelguard.audits.attestation import load_attestation
from modelguard.audits.membership import MembershipConfig, run_membership_audit
from modelguard.audits.poisoning import PoisoningConfig, run_poisoning_audit
from modelguard.audits.report import AuditRun
from modelguard.cli.main import cli
from modelguard.errors import DigestMismatchError, FormatError, SignatureError
from modelguard.gates import STANDARD_CHECKS
from modelguard.keys import PrivateKey, generate_key, public_pem
from modelguard.policy import parse_policy
from modelguard.robustness.data import load_dataset
from modelguard.robustness.evaluate import model_identity
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model


@pytest.fixture(scope="module")
def audited(
    mlp_dir: Path, key: PrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, object]:
    """A copy of the model, audited both ways with small budgets, signed, in a fresh ledger."""
    root = tmp_path_factory.mktemp("audited")
    model = root / "digits-mlp"
    shutil.copytree(mlp_dir, model)
    ledger = f"sqlite:///{root / 'ledger.db'}"
    poisoning = run_poisoning_audit(
        "digits:train",
        PoisoningConfig(folds=3, limit=300, simulate_flip=0.1, seed=0),
        root / "digits-mlp.audits",
        model_dir=model,
        epochs=10,
        key=key,
        ledger_url=ledger,
    )
    membership = run_membership_audit(
        model,
        "digits:train",
        "digits",
        MembershipConfig(reference_models=2, limit=200),
        root / "digits-mlp.audits",
        epochs=5,
        key=key,
        ledger_url=ledger,
    )
    return {"model": model, "ledger": ledger, "poisoning": poisoning, "membership": membership}


def _run(audited: dict[str, object], name: str) -> AuditRun:
    run = audited[name]
    assert isinstance(run, AuditRun)
    return run


@pytest.mark.parametrize("name", ["poisoning", "membership"])
def test_attestation_verifies_and_is_bound_to_model_and_data(
    audited: dict[str, object], key: PrivateKey, name: str
) -> None:
    run = _run(audited, name)
    assert run.attestation is not None
    attestation = load_attestation(run.attestation.path, [key.public_key()], audit=name)
    root = model_identity(Path(str(audited["model"])))["manifest_root"]
    assert attestation.manifest_root == root
    digests = {s["name"].split(":", 1)[0]: s["digest"] for s in attestation.statement["subject"]}
    if name == "poisoning":
        assert digests["data"] == {
            "modelguard-dataset-sha256": load_dataset("digits:train").subset(300).digest
        }
        assert attestation.predicate["results"]["flagged"] == run.document["results"]["flagged"]
    else:
        assert digests["members"]["modelguard-dataset-sha256"] == (
            load_dataset("digits:train").subset(200).digest
        )
        nonmembers = load_dataset("digits").subset(200)
        assert digests["nonmembers"]["modelguard-dataset-sha256"] == nonmembers.digest
    attestation.check_binding(manifest_root=root, datasets=attestation.dataset_digests)
    with pytest.raises(DigestMismatchError):
        attestation.check_binding(manifest_root="0" * 64)
    with pytest.raises(DigestMismatchError):
        attestation.check_binding(datasets={next(iter(attestation.dataset_digests)): "1" * 64})


@pytest.mark.parametrize("name", ["poisoning", "membership"])
def test_attestation_lands_in_the_ledger(audited: dict[str, object], name: str) -> None:
    run = _run(audited, name)
    assert run.attestation is not None
    _, entries = list_entries(str(audited["ledger"]), kind="audit")
    mine = [e for e in entries if e.details["audit"] == name]
    assert len(mine) == 1
    entry = mine[0]
    assert entry.payload_digest == run.attestation.payload_digest
    assert entry.subject["root"] == run.attestation.statement["predicate"]["model"]["manifest_root"]
    assert entry.details["summary"] == run.document["summary"]


def test_wrong_key_tampering_and_wrong_type_are_refused(
    audited: dict[str, object], key: PrivateKey, tmp_path: Path
) -> None:
    run = _run(audited, "membership")
    assert run.attestation is not None
    path = run.attestation.path
    with pytest.raises(SignatureError):
        load_attestation(path, [generate_key().public_key()])
    with pytest.raises(FormatError):
        load_attestation(path, [key.public_key()], audit="poisoning")
    bundle = json.loads(path.read_bytes())
    envelope = bundle["dsseEnvelope"]
    import base64

    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["summary"]["auc"] = 0.5
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    forged = tmp_path / "forged.sig"
    forged.write_text(json.dumps(bundle))
    with pytest.raises(SignatureError):
        load_attestation(forged, [key.public_key()])


def _policy(key: PrivateKey, tmp_path: Path, audit_tables: str) -> Path:
    (tmp_path / "signer.pub").write_bytes(public_pem(key.public_key()))
    path = tmp_path / "policy.toml"
    path.write_text(f'[[signers]]\nname = "auditor"\npublic_key = "signer.pub"\n{audit_tables}')
    return path


def test_policy_gate_reads_the_attestations(
    audited: dict[str, object], key: PrivateKey, tmp_path: Path
) -> None:
    model = Path(str(audited["model"]))
    sign_model(model, key=key, ledger_url=str(audited["ledger"]))
    issue_rate = _run(audited, "poisoning").document["summary"]["issue_rate"]
    auc = _run(audited, "membership").document["summary"]["auc"]
    runner = CliRunner()

    def verify(tables: str) -> tuple[int, str]:
        result = runner.invoke(
            cli, ["verify", str(model), "--policy", str(_policy(key, tmp_path, tables)), "--json"]
        )
        return result.exit_code, result.output

    loose = f"[audit.poisoning]\nmax_issue_rate = {issue_rate + 0.01}\n[audit.membership]\nmax_auc = {auc + 0.01}\n"
    code, output = verify(loose)
    assert code == 0, output
    code, output = verify(f"[audit.membership]\nmax_auc = {max(auc - 0.01, 0)}\n")
    assert code == 1 and "exceeds the policy's max_auc" in output
    code, output = verify(f"[audit.poisoning]\nmax_issue_rate = {max(issue_rate - 0.01, 0)}\n")
    assert code == 1 and "max_issue_rate" in output


def test_policy_gate_refuses_a_model_changed_after_the_audit(
    audited: dict[str, object], key: PrivateKey, tmp_path: Path
) -> None:
    copy = tmp_path / "digits-mlp"
    shutil.copytree(Path(str(audited["model"])), copy)
    shutil.copytree(
        Path(str(audited["model"])).with_name("digits-mlp.audits"), tmp_path / "digits-mlp.audits"
    )
    card = copy / "modelguard.json"
    card.write_text(card.read_text().replace('"version": "1"', '"version": "2"'))
    sign_model(copy, key=key, ledger_url=f"sqlite:///{tmp_path / 'l.db'}")
    policy = parse_policy(
        {
            "signers": [{"name": "a", "public_key_pem": public_pem(key.public_key()).decode()}],
            "audit": {"membership": {"max_auc": 1.0}},
        },
        source="inline",
    )
    report = verify_model(copy, policy=policy, checks=STANDARD_CHECKS)
    assert not report.ok
    assert any("bound to model root" in f for f in report.failures)
    untrusted = parse_policy(
        {
            "signers": [
                {"name": "b", "public_key_pem": public_pem(generate_key().public_key()).decode()}
            ],
            "audit": {"poisoning": {"max_issue_rate": 1.0}},
        },
        source="inline",
    )
    assert not verify_model(
        Path(str(audited["model"])), policy=untrusted, checks=STANDARD_CHECKS
    ).ok


def test_missing_attestation_fails_only_when_required(
    mlp_dir: Path, key: PrivateKey, tmp_path: Path
) -> None:
    model = tmp_path / "m"
    shutil.copytree(mlp_dir, model)
    sign_model(model, key=key, ledger_url=f"sqlite:///{tmp_path / 'l.db'}")
    signer = {"name": "a", "public_key_pem": public_pem(key.public_key()).decode()}
    required = parse_policy(
        {"signers": [signer], "audit": {"membership": {"max_auc": 0.6}}}, source="p"
    )
    assert not verify_model(model, policy=required, checks=STANDARD_CHECKS).ok
    optional = parse_policy(
        {"signers": [signer], "audit": {"membership": {"max_auc": 0.6, "required": False}}},
        source="p",
    )
    assert verify_model(model, policy=optional, checks=STANDARD_CHECKS).ok


@pytest.mark.parametrize(
    "table",
    [{"poisoning": {"max_auc": 0.5}}, {"membership": {"max_auc": 2}}, {"privacy": {}}, []],
)
def test_bad_audit_tables_are_refused(key: PrivateKey, table: object) -> None:
    from modelguard.errors import BadInputError

    signer = {"name": "a", "public_key_pem": public_pem(key.public_key()).decode()}
    with pytest.raises(BadInputError):
        parse_policy({"signers": [signer], "audit": table}, source="p")
