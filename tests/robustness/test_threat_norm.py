"""``--norm`` reaches every attack: each runs in the threat model's norm or is refused (exit 2)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from modelguard.cli.main import main
from modelguard.robustness.config import DEFAULT_ATTACKS, DEFAULT_ATTACKS_L2, EvalConfig
from modelguard.robustness.evaluate import evaluate_model_dir


def test_under_l2_pgd_is_an_l2_attack(digits_model_dir: Path) -> None:
    eps = 1.0
    config = EvalConfig(
        attacks=["pgd", "pgd-margin", "pgd-l2"], eps=[eps], norm="l2", limit=60, soundness=False
    )
    result = evaluate_model_dir(digits_model_dir, config)
    rows = {row.attack: row for row in result.attacks}
    dims = math.prod(result.data["input_shape"])
    for row in rows.values():
        assert row.config["norm"] == "l2", row.attack  # what ran, as the certificate records it
        assert row.median_l2 is not None and row.median_linf is not None
        assert row.median_l2 <= eps + 1e-5  # inside the L2 ball
        # An L2 attack concentrates its budget: far above the eps/sqrt(d) of a spread-out one.
        assert row.median_linf > 2 * eps / math.sqrt(dims), row.attack
    # pgd under --norm l2 is the very attack pgd-l2 is (same defaults, same seed). Before the
    # threat norm reached it, pgd ran in Linf and was projected into the L2 ball: a far weaker
    # attack (95% robust here, against a few percent for the L2 attack).
    assert rows["pgd"].robust_accuracy == rows["pgd-l2"].robust_accuracy
    assert rows["pgd"].median_l2 == pytest.approx(rows["pgd-l2"].median_l2)
    assert rows["pgd-l2"].robust_accuracy < 0.5


def test_the_threat_norm_reaches_every_attack_that_takes_one() -> None:
    l2 = EvalConfig(
        attacks=["pgd", "pgd-margin", "apgd-ce", "fab-t", "transfer", "cw"], eps=[0.5], norm="l2"
    ).resolved()
    for name in ("pgd", "pgd-margin", "apgd-ce", "fab-t"):
        assert l2.attack_params[name]["norm"] == "l2", name
    assert l2.attack_params["transfer"]["base_params"]["norm"] == "l2"
    assert "norm" not in l2.attack_params["cw"]  # minimum-norm: projected into the L2 ball
    linf = EvalConfig(attacks=["pgd", "transfer"], eps=[0.1]).resolved()
    assert linf.attack_params["pgd"]["norm"] == "linf"
    assert linf.attack_params["transfer"]["base_params"]["norm"] == "linf"
    # Each default portfolio runs under its own threat model.
    EvalConfig(attacks=list(DEFAULT_ATTACKS), norm="linf").resolved()
    EvalConfig(attacks=list(DEFAULT_ATTACKS_L2), norm="l2").resolved()


@pytest.mark.parametrize(
    ("norm", "attacks", "params", "message"),
    [
        ("l2", "fgsm", [], "fgsm runs in linf only: it cannot run under --norm l2"),
        ("l2", "pgd,square", [], "square runs in linf only: it cannot run under --norm l2"),
        ("linf", "pgd-l2", [], "pgd-l2 runs in l2 only: it cannot run under --norm linf"),
        ("l2", "bim", [], "bim runs in linf only"),
        ("l2", "pgd", ["--param", "pgd.norm=linf"], "contradicts the threat model --norm l2"),
        (
            "l2",
            "transfer",
            ["--param", 'transfer.base="fgsm"'],
            "fgsm runs in linf only: it cannot run under --norm l2",
        ),
    ],
)
def test_an_attack_that_cannot_run_in_the_threat_norm_is_refused(
    digits_model_dir: Path,
    capsys: pytest.CaptureFixture[str],
    norm: str,
    attacks: str,
    params: list[str],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "eval",
                str(digits_model_dir),
                "--norm",
                norm,
                "--attacks",
                attacks,
                "--limit",
                "5",
                "--no-ledger",
                *params,
            ]
        )
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
