"""APGD, APGD-T and FAB-T against closed-form optima; profiles; hardening that helps."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from modelguard.errors import BadInputError
from modelguard.keys import generate_key
from modelguard.robustness.attacks import ATTACKS, build_attack
from modelguard.robustness.attacks.apgd import checkpoints, dlr_loss
from modelguard.robustness.attacks.base import margin
from modelguard.robustness.attacks.fab import boundary_projection
from modelguard.robustness.evaluate import EvalConfig, evaluate_model_dir
from modelguard.robustness.hardening import harden_model
from modelguard.signing.sign import sign_model


def binary_linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 2-class linear model on 8x8 inputs away from the box edges, its predictions, the
    margin's input gradient ``v`` and the clean margins (negative: correctly classified)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = 0.3 + 0.4 * torch.rand(40, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
        weight = model[1].weight
        v = weight[1 - y] - weight[y]
        m0 = margin(model(x), y, targeted=False)
    return model, x, y, v, m0


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.05), ("l2", 0.5)])
def test_apgd_reaches_the_closed_form_optimum_on_a_linear_model(norm: str, eps: float) -> None:
    model, x, y, v, _ = binary_linear()
    # The margin is linear: its maximum over the ball (and the box) is attained at
    # x + eps * sign(v) clipped to the box (Linf), or x + eps * v / ||v|| (L2, box slack).
    if norm == "linf":
        best = torch.clamp(eps * v.sign().view_as(x), -x, 1 - x)
    else:
        best = (eps * v / v.norm(dim=1, keepdim=True)).view_as(x)
    with torch.no_grad():
        optimum = margin(model(x + best), y, targeted=False)
        for loss in ("ce",):
            x_adv = build_attack("apgd-ce", model, eps=eps, norm=norm, steps=50, loss=loss)(x, y)
            reached = margin(model(x_adv), y, targeted=False)
    assert torch.allclose(reached, optimum, atol=1e-4)
    delta = (x_adv - x).flatten(1)
    limit = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert bool((limit <= eps + 1e-6).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_finds_the_closed_form_minimum_norm_on_a_linear_model(norm: str) -> None:
    model, x, y, v, m0 = binary_linear()
    # Distance to the hyperplane v.d = -m0: |m0| / ||v||_1 (Linf) or |m0| / ||v||_2 (L2).
    dual = 1.0 if norm == "linf" else 2.0
    closed = m0.abs() / v.norm(p=dual, dim=1)
    x_adv = build_attack("fab-t", model, eps=math.inf, norm=norm, steps=100, n_targets=1)(x, y)
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) != y).all())
    p = math.inf if norm == "linf" else 2.0
    found = (x_adv - x).flatten(1).norm(p=p, dim=1)
    ratio = found / closed
    assert bool((ratio >= 1 - 1e-4).all())  # no adversarial point is closer than the optimum
    assert bool((ratio <= 1.02).all())  # and FAB gets within 2% of it


def test_boundary_projection_is_exact_and_respects_the_box() -> None:
    torch.manual_seed(1)
    x = torch.rand(16, 1, 4, 4)
    w = torch.randn(16, 1, 4, 4)
    # The largest w.d the box allows: every coordinate at its bound in the direction of w.
    saturated = torch.where(w > 0, 1 - x, -x)
    most = (w * saturated).flatten(1).sum(1)
    for norm in ("linf", "l2"):
        d = boundary_projection(x, w, 0.5 * most, norm)
        assert bool(((x + d) >= -1e-7).all() and ((x + d) <= 1 + 1e-7).all())
        assert torch.allclose((w * d).flatten(1).sum(1), 0.5 * most, atol=1e-4)
        # Out of reach: the saturated step, the closest the box allows.
        far = boundary_projection(x, w, 2 * most, norm)
        assert torch.allclose(far, saturated, atol=1e-5)
    # Far from the box edges it is the textbook projection.
    x = torch.full((4, 1, 4, 4), 0.5)
    r = torch.full((4,), 0.01)
    d = boundary_projection(x, w[:4], r, "l2")
    w2 = w[:4].flatten(1)
    expected = (r[:, None] * w2 / (w2 * w2).sum(1, keepdim=True)).view_as(d)
    assert torch.allclose(d, expected, atol=1e-6)


def test_apgd_schedule_and_dlr_invariance() -> None:
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    z = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert torch.allclose(dlr_loss(3.0 * z + 7.0, y), dlr_loss(z, y), atol=1e-5)
    with pytest.raises(BadInputError, match="3 classes"):
        dlr_loss(torch.randn(2, 2), torch.tensor([0, 1]))


def test_attacks_are_registered_seeded_and_batched_consistently() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    x, y = torch.rand(12, 1, 8, 8), torch.randint(0, 10, (12,))
    for name, params in (("apgd-ce", {}), ("apgd-dlr", {}), ("apgd-t", {"n_targets": 2})):
        assert name in ATTACKS
        first = build_attack(name, model, eps=0.1, steps=10, seed=3, **params)(x, y)
        again = build_attack(name, model, eps=0.1, steps=10, seed=3, **params)(x, y)
        assert torch.equal(first, again)
        assert float((first - x).abs().max()) <= 0.1 + 1e-6
    fab = build_attack("fab-t", model, eps=math.inf, steps=10, n_targets=2)
    assert fab.config()["n_targets"] == 2 and ATTACKS["fab-t"].minimum_norm


def test_square_l2_stays_in_the_ball_and_fools_a_linear_model() -> None:
    model, x, y, v, m0 = binary_linear()
    eps = 1.5 * float((m0.abs() / v.norm(dim=1)).max())  # every example is breakable
    attack = build_attack("square-l2", model, eps=eps, n_queries=300, seed=0)
    x_adv = attack(x, y)
    assert bool(((x_adv - x).flatten(1).norm(dim=1) <= eps + 1e-5).all())
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).float().mean()
    assert fooled >= 0.5 and attack.queries > 0


def test_profiles_expand_and_record_every_parameter() -> None:
    config = EvalConfig(attacks=["standard"], eps=[0.1], attack_params={"square": {"p_init": 0.5}})
    resolved = config.resolved()
    assert resolved.profile == "standard" and resolved.cascade
    assert resolved.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert resolved.attack_params["apgd-t"]["n_targets"] == 9
    assert resolved.attack_params["apgd-ce"]["steps"] == 100
    assert resolved.attack_params["square"] == {"n_queries": 5000, "p_init": 0.5}
    again = EvalConfig.from_dict(resolved.to_dict()).resolved()
    assert again.to_dict() == resolved.to_dict()  # recertify re-runs exactly this
    assert (
        EvalConfig(attacks=["rand"], eps=[0.1]).resolved().attack_params["apgd-ce"]["eot_iter"]
        == 20
    )
    l2 = EvalConfig(attacks=["quick"], eps=[0.5], norm="l2").resolved()
    assert l2.attack_params["apgd-ce"]["norm"] == "l2"
    assert l2.attacks == ["apgd-ce", "apgd-t", "fab-t", "square-l2"]
    assert l2.attack_params["square-l2"] == {"n_queries": 500, "p_init": 0.8}
    plain = EvalConfig(attacks=["fgsm", "pgd"], eps=[0.1]).resolved()
    assert plain.profile is None and not plain.cascade


def test_standard_is_never_weaker_than_pgd(digits_model_dir: Path) -> None:
    common = {"eps": [0.1], "limit": 30, "soundness": False}
    pgd = evaluate_model_dir(digits_model_dir, EvalConfig(attacks=["pgd"], **common))
    standard = evaluate_model_dir(digits_model_dir, EvalConfig(attacks=["standard"], **common))
    assert standard.config.profile == "standard"
    assert standard.worst_case_accuracy(0.1) <= pgd.worst_case_accuracy(0.1)
    rows = {r.attack: r for r in standard.attacks}
    # a cascade: each row is the robust accuracy so far, so it never rises
    ordered = [rows[a].robust_accuracy for a in standard.config.attacks]
    assert ordered == sorted(ordered, reverse=True)
    assert ordered[-1] == standard.worst_case_accuracy(0.1)


def test_pgd_at_child_beats_its_parent_by_ten_points(
    digits_model_dir: Path, tmp_path: Path
) -> None:
    parent = tmp_path / "digits"
    shutil.copytree(digits_model_dir, parent)
    key = generate_key()
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    sign_model(parent, key, name="digits", version="1", ledger_url=url)
    config = EvalConfig(
        attacks=["fgsm", "pgd", "pgd-margin"],
        eps=[0.1],
        limit=150,
        soundness=False,
        attack_params={"pgd": {"steps": 10}, "pgd-margin": {"steps": 10}},
    )
    result = harden_model(
        parent,
        method="pgd-at",
        out_dir=tmp_path / "child",
        key=key,
        keys=[key.public_key()],
        options={"eps": 0.1, "epochs": 4, "steps": 5},
        eval_config=config,
        ledger_url=url,
    )
    row = result.comparison["worst_case"][0]
    assert row["eps"] == 0.1
    assert row["child_worst_case"] >= row["parent_worst_case"] + 0.10, row


def test_black_box_check_in_a_cascade_counts_what_only_square_broke() -> None:
    from modelguard.robustness.soundness import check_black_box

    attacks = ["apgd-ce", "apgd-t", "fab-t", "square"]
    table = {a: {0.1: 0.5} for a in attacks}  # cumulative rows: not the signal in a cascade
    masked = check_black_box(table, attacks, {0.1: {"apgd-ce": 40, "square": 5}}, 100)
    assert masked.status == "warn" and "0.050 more" in masked.detail
    honest = check_black_box(table, attacks, {0.1: {"apgd-ce": 40, "fab-t": 9, "square": 1}}, 100)
    assert honest.status == "pass"
