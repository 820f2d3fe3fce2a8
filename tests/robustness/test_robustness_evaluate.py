"""Evaluation on a small trained digits CNN: ordering of attacks, worst case, determinism,
soundness flags on a masked softmax, parity, certificates, and the CLI's error contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from modelguard.cli import main as cli_main
from modelguard.errors import BadInputError, DigestMismatchError, SignatureError, VerificationError
from modelguard.keys import generate_key
from modelguard.modelcard import export_onnx, load_model_dir
from modelguard.robustness.certificate import (
    PREDICATE_TYPE,
    certify,
    check_requirement,
    check_rerun,
    evaluate_and_certify,
    load_certificate,
)
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.data import load_dataset
from modelguard.robustness.evaluate import evaluate_model_dir, run_evaluation

FAST = {
    "pgd": {"steps": 10},
    "pgd-margin": {"steps": 10},
    "cw": {"steps": 10, "binary_search_steps": 2},
    "square": {"n_queries": 60},
}


def config(attacks: list[str], **kwargs) -> EvalConfig:
    params = {a: FAST[a] for a in attacks if a in FAST}
    base = {"eps": [0.05, 0.1, 0.2], "limit": 80, "soundness": False}
    return EvalConfig(attacks=attacks, attack_params=params, **{**base, **kwargs})


@pytest.fixture(scope="module")
def result(digits_model_dir: Path):
    return evaluate_model_dir(
        digits_model_dir, config(["fgsm", "pgd", "cw", "square"], soundness=True)
    )


def test_pgd_below_fgsm_below_clean_and_worst_case_below_every_attack(result) -> None:
    table = result.robust_table()
    assert result.clean_accuracy > 0.8
    for eps in result.config.eps:
        row = table[str(eps)]
        assert row["pgd"] <= row["fgsm"] <= result.clean_accuracy
        assert all(row["worst_case"] <= row[a] for a in result.config.attacks)
    accs = [table[str(e)]["worst_case"] for e in result.config.eps]
    assert accs == sorted(accs, reverse=True)


def test_parity_replays_adversarial_examples_on_onnx(result) -> None:
    assert result.parity["ok"] and result.parity["checked"]
    assert result.parity["inputs_compared"] == 80  # the clean inputs decide parity
    # every PyTorch attack and eps replayed on the deployed ONNX graph
    assert result.parity["adversarial_inputs_compared"] >= 80 * 3 * 3
    pgd = next(r for r in result.attacks if r.attack == "pgd" and r.eps == 0.1)
    assert pgd.onnx_robust_accuracy is not None
    square = next(r for r in result.attacks if r.attack == "square")
    assert square.target == "onnx" and square.queries > 0


def test_soundness_checks_pass_on_an_honest_model(result) -> None:
    statuses = {c["name"]: c["status"] for c in result.soundness}
    assert set(statuses) == {
        "iterative_ge_single_step",
        "monotone_in_eps",
        "large_eps_below_chance",
        "pgd_convergence",
        "black_box_not_stronger",
        "input_gradients",
        "ce_vs_margin",
    }
    assert statuses["input_gradients"] == "pass"
    assert statuses["ce_vs_margin"] == "pass"
    assert statuses["large_eps_below_chance"] == "pass"


def test_same_seed_gives_the_same_numbers(digits_model_dir: Path) -> None:
    cfg = config(["fgsm", "pgd", "square"], limit=40, eps=[0.1])
    a = evaluate_model_dir(digits_model_dir, cfg).results_dict()
    b = evaluate_model_dir(digits_model_dir, cfg).results_dict()
    assert a == b


class Distilled(nn.Module):
    """A model deployed at T=1 after training at a high temperature: logits scaled by T."""

    def __init__(self, inner: nn.Module, temperature: float) -> None:
        super().__init__()
        self.inner, self.temperature = inner, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.temperature


def test_masked_softmax_is_flagged(digits_model_dir: Path) -> None:
    model, _ = load_model_dir(digits_model_dir)
    data = load_dataset("digits").subset(80)
    masked = run_evaluation(
        torch_model=Distilled(model, 1e4),
        onnx=None,
        data=data,
        config=config(["fgsm", "pgd", "pgd-margin"], soundness=True),
        model_info={"name": "masked", "manifest_root": "00" * 32},
    )
    warnings = masked.soundness_warnings
    assert "input_gradients" in warnings
    assert "ce_vs_margin" in warnings
    # the worst case still sees through it: the margin attack is in the portfolio
    assert masked.worst_case_accuracy(0.2) <= masked.robust_table()["0.2"]["pgd-margin"]
    assert masked.worst_case_accuracy(0.2) < masked.robust_table()["0.2"]["pgd"]


def test_certificate_is_signed_bound_to_the_model_and_ledgered(result, tmp_path: Path) -> None:
    key = generate_key()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    issued = certify(result, key, tmp_path / "out", ledger_url=url)
    assert issued.ledger_entry.kind == "evaluate"
    assert issued.ledger_entry.subject["root"] == result.model["manifest_root"]
    assert issued.ledger_entry.payload_digest == issued.payload_digest
    cert = load_certificate(issued.path, [key.public_key()])
    assert cert.statement["predicateType"] == PREDICATE_TYPE
    assert cert.manifest_root == result.model["manifest_root"]
    assert cert.onnx_sha256 == result.model["onnx_sha256"]
    assert cert.config.data_digest == result.data["digest"]
    assert cert.worst_case_accuracy(0.1) == result.worst_case_accuracy(0.1)
    assert check_rerun(cert, result) == []
    assert check_requirement(cert, min_robust_accuracy=1.01, epsilon=0.1)
    assert check_requirement(cert, min_robust_accuracy=0.0, epsilon=0.1) == []
    with pytest.raises(SignatureError):
        load_certificate(issued.path, [generate_key().public_key()])


def test_recertify_rerun_matches_and_detects_changed_weights(
    digits_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    key = generate_key()
    cfg = config(["fgsm"], limit=40, eps=[0.1])
    issued = certify(evaluate_model_dir(digits_model_dir, cfg), key, tmp_path, record=False)
    cert = load_certificate(issued.path, [key.public_key()])
    assert check_rerun(cert, evaluate_model_dir(digits_model_dir, cert.config)) == []
    copy = tmp_path / "changed"
    shutil.copytree(digits_model_dir, copy)
    from safetensors.torch import load_file, save_file

    state = load_file(copy / "model.safetensors")
    first = next(iter(state))
    state[first] = state[first] + 0.01
    save_file(state, copy / "model.safetensors")
    with pytest.raises(DigestMismatchError):
        check_rerun(cert, evaluate_model_dir(copy, cert.config))


def test_parity_tolerance_is_relative_to_the_logit_scale_and_ties_never_fail() -> None:
    from modelguard.robustness.runner import Parity

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 10)).astype(np.float32)
    big = Parity(atol=1e-4, rtol=1e-4)
    big.add_clean(logits * 5000, logits * 5000 + 0.3)  # 0.3 on a scale of ~10^4: float noise
    assert big.to_dict(True)["ok"]
    small = Parity(atol=1e-4, rtol=1e-4)
    small.add_clean(logits, logits + 0.3)  # 0.3 on a scale of ~2: a different function
    assert not small.to_dict(True)["ok"]
    tie = Parity(atol=1e-4, rtol=1e-4)
    tie.add_clean(logits, logits)
    swapped = logits.copy()
    swapped[:, [0, 1]] = swapped[:, [1, 0]]  # every adversarial prediction disagrees
    tie.add_adversarial(logits, swapped)
    document = tie.to_dict(True)
    assert document["ok"] and document["adversarial_prediction_disagreements"] > 0


def test_onnx_that_differs_from_the_weights_fails_parity(
    digits_model_dir: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "swapped"
    shutil.copytree(digits_model_dir, copy)
    model, _ = load_model_dir(copy)
    with torch.no_grad():
        model[-1].bias.add_(0.5)
    export_onnx(model, copy / "model.onnx", (1, 8, 8))
    with pytest.raises(VerificationError, match="parity"):
        evaluate_and_certify(copy, config(["fgsm"], limit=20), tmp_path / "out", key=generate_key())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["results"]["parity"]["ok"] is False
    assert not (tmp_path / "out" / "certificate.sig").exists()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        cli_main.main(list(args))
    out = capsys.readouterr()
    return int(info.value.code), out.out, out.err


def test_cli_runs_a_profile_with_certified_sections_and_intervals(
    digits_model_dir: Path, tmp_path: Path, capsys
) -> None:
    code, stdout, _ = run_cli(
        capsys, "eval", str(digits_model_dir), "--attacks", "quick", "--eps", "0.01",
        "--limit", "8", "--param", "square.n_queries=20", "--no-soundness", "--ibp",
        "--smoothing-sigma", "0.25", "--smoothing-n", "50", "--out", str(tmp_path / "e"),
        "--no-ledger", "--json",
    )  # fmt: skip
    assert code == 0
    document = json.loads(stdout)
    assert set(document["certified"]) == {"ibp", "randomized_smoothing"}
    worst = document["worst_case"][0]
    assert worst["n"] == 8 and worst["ci95"][0] <= worst["value"] <= worst["ci95"][1]
    report = json.loads((tmp_path / "e" / "report.json").read_text())
    assert report["config"]["profile"] == "quick" and report["config"]["cascade"]
    assert report["config"]["attack_params"]["square"]["n_queries"] == 20
    html = (tmp_path / "e" / "report.html").read_text()
    assert "95% CI" in html and "interval bound propagation" in html


def test_cli_writes_reports_and_a_certificate(
    digits_model_dir: Path, tmp_path: Path, capsys
) -> None:
    keys = tmp_path / "keys"
    code, _, _ = run_cli(capsys, "keygen", "--out", str(keys), "--no-passphrase", "--json")
    assert code == 0
    out = tmp_path / "eval"
    code, stdout, _ = run_cli(
        capsys, "eval", str(digits_model_dir), "--attacks", "fgsm,pgd", "--eps", "0.1",
        "--limit", "30", "--param", "pgd.steps=5", "--no-soundness", "--out", str(out),
        "--key", str(keys / "modelguard.priv"), "--ledger", f"sqlite:///{tmp_path / 'l.db'}", "--json",
    )  # fmt: skip
    assert code == 0
    document = json.loads(stdout)
    assert document["ok"] and document["certificate"]["ledger_index"] == 0
    assert (
        document["robust_accuracy"]["0.1"]["worst_case"]
        <= document["robust_accuracy"]["0.1"]["fgsm"]
    )
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "worst case" in html.lower()
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["attack_params"]["pgd"]["steps"] == 5
    assert report["environment"]["torch"] == torch.__version__


def _npz(path: Path, x: np.ndarray, y: np.ndarray) -> str:
    np.savez(path, x=x, y=y)
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("eps", "eps must be"),
        ("attack", "unknown attack"),
        ("shape", "shape"),
        ("range", "[0, 1]"),
        ("labels", "classes"),
        ("onnx", "expects shape"),
        ("blackbox-gradient", "score-based"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(
    case: str, message: str, digits_model_dir: Path, tmp_path: Path, capsys
) -> None:
    good_x = load_dataset("digits").subset(10).x
    y = np.arange(10) % 10
    model = str(digits_model_dir)
    args = ["--attacks", "fgsm", "--eps", "0.1", "--no-ledger", "--out", str(tmp_path / "o")]
    if case == "eps":
        args[3] = "0.1,-0.1"
    elif case == "attack":
        args[1] = "fgsm,nope"
    elif case == "shape":
        args += ["--data", _npz(tmp_path / "d.npz", np.zeros((10, 1, 9, 9), np.float32), y)]
    elif case == "range":
        args += ["--data", _npz(tmp_path / "d.npz", good_x * 2 + 0.5, y)]
    elif case == "labels":
        args += ["--data", _npz(tmp_path / "d.npz", good_x, y + 5)]
    elif case == "onnx":
        model = str(digits_model_dir / "model.onnx")
        args = ["--attacks", "square", *args[2:]]
        args += ["--data", _npz(tmp_path / "d.npz", np.zeros((10, 1, 4, 4), np.float32), y)]
    elif case == "blackbox-gradient":
        model = str(digits_model_dir / "model.onnx")
    code, _, err = run_cli(capsys, "eval", model, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err


def test_bad_config_values_raise_bad_input() -> None:
    with pytest.raises(BadInputError, match="limit"):
        EvalConfig(limit=0).resolved()
    with pytest.raises(BadInputError, match="not in the portfolio"):
        EvalConfig(attacks=["fgsm"], attack_params={"pgd": {"steps": 3}}).resolved()
    with pytest.raises(BadInputError, match="set by the evaluation"):
        EvalConfig(attacks=["pgd"], attack_params={"pgd": {"eps": 3}}).resolved()


def test_cli_arch_and_weights_with_its_onnx(digits_model_dir: Path, tmp_path: Path, capsys) -> None:
    code, stdout, err = run_cli(
        capsys, "eval", str(digits_model_dir / "model.onnx"), "--arch", "modelguard.zoo:digits_cnn",
        "--arch-kwargs", '{"width": 16}', "--weights", str(digits_model_dir / "model.safetensors"),
        "--attacks", "fgsm", "--eps", "0.1", "--limit", "20", "--no-soundness", "--no-ledger",
        "--out", str(tmp_path / "o"), "--json",
    )  # fmt: skip
    assert code == 0, err
    document = json.loads(stdout)
    assert document["parity"]["checked"] and document["parity"]["ok"]
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["model"]["kind"] == "arch+weights"
    assert report["model"]["factory"] == "modelguard.zoo:digits_cnn"
