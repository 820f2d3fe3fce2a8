"""harden / recertify / the policy certificate gate, end to end on a tiny digits CNN."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from modelguard.audit import lineage, list_entries
from modelguard.cli.main import cli
from modelguard.errors import DigestMismatchError, SignatureError, VerificationError
from modelguard.gates import STANDARD_CHECKS
from modelguard.keys import generate_key, write_keypair
from modelguard.policy import load_policy
from modelguard.robustness.certificate import build_certificate, write_signed_certificate
from modelguard.robustness.data import load_dataset
from modelguard.robustness.evaluate import EvalConfig, evaluate_model_dir
from modelguard.robustness.gate import certificate_path_for
from modelguard.robustness.hardening import harden_model, recertify
from modelguard.signing.sign import sign_model
from modelguard.signing.verify import verify_model


def small_config(data: str = "digits") -> EvalConfig:
    return EvalConfig(
        attacks=["fgsm", "pgd"],
        eps=[0.1],
        limit=40,
        data=data,
        soundness=False,
        attack_params={"pgd": {"steps": 5}},
    )


@pytest.fixture
def world(tmp_path: Path, digits_model_dir: Path) -> dict:
    parent = tmp_path / "digits"
    shutil.copytree(digits_model_dir, parent)
    key = generate_key()
    priv, pub = write_keypair(tmp_path, "mg", key, None)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    parent_root = sign_model(
        parent, key, name="digits", version="1", ledger_url=url
    ).manifest.layer_root
    return {
        "tmp": tmp_path,
        "parent": parent,
        "key": key,
        "priv": priv,
        "pub": pub,
        "url": url,
        "root": parent_root,
    }


def harden(world: dict, out: str = "child", **kwargs) -> object:
    """Squeezing by default (no training: fast); the lineage test trains PGD-AT."""
    args = {
        "method": "squeeze",
        "options": {"bits": 3},
        "eval_config": small_config(),
        **kwargs,
    }
    return harden_model(
        world["parent"],
        out_dir=world["tmp"] / out,
        key=world["key"],
        keys=[world["key"].public_key()],
        ledger_url=world["url"],
        **args,
    )


def test_refuses_a_parent_that_fails_verification(world: dict) -> None:
    weights = world["parent"] / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError):
        harden(world)
    assert not (world["tmp"] / "child").exists()  # refused before anything was trained
    stranger = generate_key()
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "harden",
            str(world["parent"]),
            "--method",
            "squeeze",
            "--key",
            str(world["priv"]),
            "--out",
            str(world["tmp"] / "c2"),
            "--ledger",
            world["url"],
            "--json",
        ],
        standalone_mode=False,
    )
    assert isinstance(result.exception, VerificationError)
    with pytest.raises(SignatureError):
        harden_model(
            world["parent"],
            method="squeeze",
            out_dir=world["tmp"] / "c3",
            key=stranger,
            keys=[stranger.public_key()],
            ledger_url=world["url"],
        )
    assert [e.kind for e in list_entries(ledger_url=world["url"])[1]] == ["sign"]


def test_harden_links_child_to_parent_and_lineage_walks_it(world: dict) -> None:
    small = load_dataset("digits:train").subset(300)
    train_npz = world["tmp"] / "train.npz"
    np.savez(train_npz, x=small.x, y=small.y)
    options = {"eps": 0.1, "epochs": 1, "steps": 2}
    result = harden(world, method="pgd-at", options=options, data=str(train_npz))
    assert result.parent_root == world["root"] and result.child_root != world["root"]
    entries = list_entries(ledger_url=world["url"])[1]
    assert [e.kind for e in entries] == ["sign", "sign", "evaluate", "harden"]
    entry = entries[-1]
    assert entry.subject["parent"] == world["root"] and entry.subject["root"] == result.child_root
    assert entry.details["method"] == "pgd-at" and entry.details["hyperparameters"]["eps"] == 0.1
    assert entry.details["train_data_digest"] == "sha256:" + load_dataset(str(train_npz)).digest
    assert entry.payload_digest == result.certificate_digest == entry.details["certificate_digest"]
    [tree] = lineage("digits", world["url"])
    assert tree.root == world["root"]
    assert [child.root for child in tree.children] == [result.child_root]
    assert verify_model(world["tmp"] / "child", keys=[world["key"].public_key()]).ok
    rows = result.comparison["worst_case"]
    assert rows[0]["eps"] == 0.1 and rows[0]["parent_worst_case"] is not None


def test_recertify_passes_untouched_and_fails_on_a_changed_weight(world: dict) -> None:
    harden(world)
    child = world["tmp"] / "child"
    runner = CliRunner()
    args = ["recertify", str(child), "--trust-key", str(world["pub"]), "--ledger", world["url"]]
    ok = runner.invoke(cli, [*args, "--json"], standalone_mode=False)
    assert ok.exception is None, ok.output
    assert json.loads(ok.output)["ok"] is True
    weights = child / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x40
    weights.write_bytes(bytes(data))
    bad = runner.invoke(cli, args, standalone_mode=False)
    assert isinstance(bad.exception, VerificationError) and bad.exception.exit_code == 1
    # Even re-signed, the changed model is not the certified one.
    (child / "model.sig").unlink()
    sign_model(child, world["key"], ledger_url=world["url"])
    with pytest.raises(DigestMismatchError, match="manifest root"):
        recertify(child, keys=[world["key"].public_key()], ledger_url=world["url"])
    kinds = [e.kind for e in list_entries(ledger_url=world["url"])[1]]
    assert kinds.count("recertify") == 3


def test_recertify_fails_when_the_data_set_changes(world: dict) -> None:
    test = load_dataset("digits").subset(60)
    npz = world["tmp"] / "eval.npz"
    np.savez(npz, x=test.x, y=test.y)
    harden(world, eval_config=small_config(str(npz)))
    keys = [world["key"].public_key()]
    assert recertify(world["tmp"] / "child", keys=keys, ledger_url=world["url"]).ok
    y = test.y.copy()
    y[0] = (y[0] + 1) % 10
    np.savez(npz, x=test.x, y=y)
    with pytest.raises(DigestMismatchError, match="data set"):
        recertify(world["tmp"] / "child", keys=keys, ledger_url=world["url"])


def test_recertify_reports_drift_beyond_the_stated_tolerance(world: dict) -> None:
    harden(world)
    child = world["tmp"] / "child"
    result = evaluate_model_dir(child, small_config())
    statement = build_certificate(result)
    statement["predicate"]["results"]["clean_accuracy"] -= 0.05  # a certificate that overclaims
    write_signed_certificate(statement, world["key"], certificate_path_for(child))
    with pytest.raises(VerificationError, match="drifted: clean accuracy"):
        recertify(child, keys=[world["key"].public_key()], ledger_url=world["url"])


def test_policy_certificate_gate(world: dict) -> None:
    result = harden(world)
    child = world["tmp"] / "child"
    worst = result.comparison["worst_case"][0]["child_worst_case"]

    lower = json.loads((certificate_path_for(child).parent / "report.json").read_text())["results"][
        "worst_case"
    ][0]["robust"]["ci95"][0]
    assert lower < worst  # 40 examples: a wide interval

    def policy(minimum: float, estimate: str = "lower_bound") -> object:
        path = world["tmp"] / f"policy-{minimum}-{estimate}.toml"
        path.write_text(
            f'[[signers]]\nname = "mg"\npublic_key = "{world["pub"]}"\n'
            f"[certificate]\nmin_robust_accuracy = {minimum}\nepsilon = 0.1\n"
            f'estimate = "{estimate}"\n'
        )
        return load_policy(path)

    # By default the gate compares the threshold with the 95% lower bound, not the point.
    assert verify_model(child, policy=policy(lower), checks=STANDARD_CHECKS).ok
    refused = verify_model(child, policy=policy(worst), checks=STANDARD_CHECKS)
    assert not refused.ok and "lower bound is below the required" in "\n".join(refused.failures)
    assert verify_model(child, policy=policy(worst, "point"), checks=STANDARD_CHECKS).ok
    refused = verify_model(
        child, policy=policy(min(worst + 0.05, 1.0), "point"), checks=STANDARD_CHECKS
    )
    assert not refused.ok and "below the required" in "\n".join(refused.failures)
    no_cert = verify_model(world["parent"], policy=policy(0.0), checks=STANDARD_CHECKS)
    assert not no_cert.ok and "no robustness certificate" in "\n".join(no_cert.failures)


def test_a_harden_whose_evaluation_fails_leaves_no_signed_child(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modelguard.robustness.hardening as hardening

    real = hardening.evaluate_model_dir

    def broken_parity(model_dir: Path, config: EvalConfig) -> object:
        result = real(model_dir, config)
        result.parity = {**result.parity, "ok": False}  # as if ONNX disagreed on clean inputs
        return result

    monkeypatch.setattr(hardening, "evaluate_model_dir", broken_parity)
    with pytest.raises(VerificationError, match="not signed and was removed.*parity"):
        harden(world)
    child = world["tmp"] / "child"
    assert not child.exists()
    assert not certificate_path_for(child).exists()
    kinds = [(e.kind, e.subject.get("name")) for e in list_entries(world["url"])[1]]
    assert kinds == [("sign", "digits")]  # only the parent's signature: no child was signed


@pytest.mark.parametrize("threads", [1, 2])
def test_harden_distill_passes_five_runs_in_a_row(
    world: dict, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run that failed before: a distilled student's huge logits and boundary examples."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    train = load_dataset("digits:train").subset(300)  # a small training split: a fast test
    np.savez(world["tmp"] / "train.npz", x=train.x, y=train.y)
    try:
        config = EvalConfig(
            attacks=["fgsm", "pgd-margin"],
            eps=[0.1, 0.3],
            limit=40,
            soundness=False,
            attack_params={"pgd-margin": {"steps": 10}},
        )
        for run in range(5):
            result = harden(
                world,
                out=f"distilled-{threads}-{run}",
                method="distill",
                data=str(world["tmp"] / "train.npz"),
                options={"temperature": 50, "epochs": 2},
                eval_config=config,
            )
            assert result.evaluation["parity_ok"]
    finally:
        torch.set_num_threads(before)


def test_detector_certificate_reports_both_accountings_and_names_the_gated_one(
    world: dict,
) -> None:
    from modelguard.robustness.certificate import load_certificate

    harden(world, out="detected", method="detector", options={"bits": 3, "fpr": 0.1})
    child = world["tmp"] / "detected"
    cert = load_certificate(certificate_path_for(child), [world["key"].public_key()])
    section = cert.predicate["detector"]
    assert section["gate_uses"] == "robust_accuracy_rejection_is_error"
    gated = section["robust_accuracy_rejection_is_error"]["0.1"]
    system = section["correct_or_rejected_adaptive"]["0.1"]
    assert gated["n"] == system["n"] == 40 and len(system["ci95"]) == 2
    # the gate's number is the summary's worst case (rejections counted as errors)
    assert cert.robust_accuracy_at_least(0.1) == gated["value"]
    assert "rejection counts as an error" in cert.predicate["summary"]["gate_metric"]
    harden(world, out="plain")
    plain = load_certificate(
        certificate_path_for(world["tmp"] / "plain"), [world["key"].public_key()]
    )
    assert plain.predicate["detector"] is None
