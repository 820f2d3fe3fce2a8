"""Attacks against closed-form optima on linear models, and their contracts (bounds, seeds, errors)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks import ATTACKS, build_attack
from modelguard.robustness.attacks.base import margin
from modelguard.robustness.onnx_model import OnnxClassifier


def linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer).eval()


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000), eps=st.floats(0.01, 0.2))
def test_fgsm_is_the_closed_form_linf_optimum_on_a_binary_linear_model(
    seed: int, eps: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    # small weights keep both softmax probabilities well above float32 rounding
    weight = 0.1 * torch.randn(2, 64, generator=gen)
    model = linear(weight, torch.zeros(2))
    x = 0.3 + 0.4 * torch.rand(5, 1, 8, 8, generator=gen)  # away from the box edges: no clipping
    y = torch.randint(0, 2, (5,), generator=gen)
    x_adv = ATTACKS["fgsm"](model, eps=eps)(x, y)
    other = 1 - y
    # CE gradient = p_other * (w_other - w_y): its sign is that of w_other - w_y
    direction = torch.sign(weight[other] - weight[y]).view(5, 1, 8, 8)
    torch.testing.assert_close(x_adv, x + eps * direction, rtol=0, atol=1e-6)
    # ... which is the Linf-optimal perturbation: the margin grows by exactly eps * ||w_o - w_y||_1
    with torch.no_grad():
        gain = margin(model(x_adv), y, False) - margin(model(x), y, False)
    expected = eps * (weight[other] - weight[y]).abs().sum(dim=1)
    torch.testing.assert_close(gain, expected, rtol=1e-4, atol=1e-4)


@settings(max_examples=25)
@given(seed=st.integers(0, 10_000))
def test_deepfool_reaches_the_exact_minimal_l2_distance_on_a_binary_linear_model(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    weight = 0.5 * torch.randn(2, 64, generator=gen)
    # boundary through the grey image 0.5: every step stays well inside the [0, 1] box
    bias = torch.stack([torch.zeros(()), -0.5 * (weight[1] - weight[0]).sum()])
    model = linear(weight, bias)
    x = 0.4 + 0.2 * torch.rand(4, 1, 8, 8, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
        f = (model(x)[:, 1] - model(x)[:, 0]).abs()
    w = (weight[1] - weight[0]).norm()
    x_adv = ATTACKS["deepfool"](model, eps=math.inf, overshoot=0.0)(x, y)
    distance = (x_adv - x).flatten(1).norm(dim=1)
    minimal = f / w
    assert (x_adv > 0).all() and (x_adv < 1).all()  # the box never clipped the step
    # DeepFool steps (|f| + 1e-4) / ||w||^2 * w: minimal distance plus 1e-4 / ||w||
    torch.testing.assert_close(distance, minimal + 1e-4 / w, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert (model(x_adv).argmax(dim=1) != y).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_stays_in_the_ball_and_box_and_restarts_never_weaken_it(norm: str) -> None:
    torch.manual_seed(0)
    model = linear(torch.randn(10, 64), torch.zeros(10))
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    eps = 0.05 if norm == "linf" else 0.5
    one = ATTACKS["pgd"](model, eps=eps, norm=norm, steps=5, restarts=1, seed=3)(x, y)
    two = ATTACKS["pgd"](model, eps=eps, norm=norm, steps=5, restarts=2, seed=3)(x, y)
    for x_adv in (one, two):
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(dim=1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps + 1e-5).all()
    with torch.no_grad():
        assert (margin(model(two), y, False) >= margin(model(one), y, False) - 1e-5).all()


def test_attacks_are_seeded_and_deterministic() -> None:
    torch.manual_seed(1)
    model = linear(torch.randn(10, 64), torch.zeros(10))
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for name, params in [
        ("pgd", {"steps": 3}),
        ("square", {"n_queries": 20}),
        ("cw", {"steps": 5}),
    ]:
        eps = math.inf if ATTACKS[name].minimum_norm else 0.1
        a = build_attack(name, model, eps=eps, seed=7, **params)(x, y)
        b = build_attack(name, model, eps=eps, seed=7, **params)(x, y)
        assert torch.equal(a, b), name


def test_targeted_pgd_and_cw_reach_the_target() -> None:
    torch.manual_seed(2)
    model = linear(torch.randn(10, 64), torch.zeros(10))
    x = torch.rand(8, 1, 8, 8)
    target = torch.full((8,), 3)
    x_pgd = build_attack("pgd", model, eps=0.5, steps=20, targeted=True, loss="margin")(x, target)
    x_cw = build_attack("cw", model, eps=math.inf, targeted=True, steps=50)(x, target)
    with torch.no_grad():
        assert (model(x_pgd).argmax(1) == 3).all()
        assert (model(x_cw).argmax(1) == 3).all()


def test_square_attack_uses_only_onnx_scores_and_counts_queries(digits_model_dir) -> None:
    from modelguard.robustness.data import load_dataset

    data = load_dataset("digits").subset(40)
    onnx = OnnxClassifier(digits_model_dir / "model.onnx")
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    attack = build_attack("square", onnx, eps=0.2, n_queries=100, seed=0)
    x_adv = attack(x, y)
    assert (x_adv - x).abs().max() <= 0.2 + 1e-6
    clean = (onnx(x).argmax(1) == y).float().mean()
    robust = (onnx(x_adv).argmax(1) == y).float().mean()
    assert robust < clean
    assert attack.queries == int(attack.example_queries.sum())
    assert 40 <= attack.queries <= 40 * 100
    assert int(attack.example_queries.max()) <= 100


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: build_attack("nope", m, eps=0.1), "unknown attack"),
        (lambda m: build_attack("pgd", m, eps=-0.1), "eps must be"),
        (lambda m: build_attack("pgd", m, eps=0.1, steps=0), "steps"),
        (lambda m: build_attack("pgd", m, eps=0.1, bogus=1), "bad attack parameters"),
        (lambda m: build_attack("deepfool", m, eps=1.0, targeted=True), "no targeted mode"),
        (
            lambda m: build_attack("fgsm", m, eps=0.1)(
                torch.full((2, 1, 8, 8), 2.0), torch.tensor([0, 1])
            ),
            "[0, 1]",
        ),
        (
            lambda m: build_attack("fgsm", m, eps=0.1)(torch.rand(2, 1, 8, 8), torch.tensor([0])),
            "labels",
        ),
    ],
)
def test_bad_attack_input_is_a_one_line_bad_input_error(call, message: str) -> None:
    model = linear(torch.randn(10, 64), torch.zeros(10))
    with pytest.raises(
        BadInputError, match=message.replace("[", r"\[").replace("]", r"\]")
    ) as info:
        call(model)
    assert "\n" not in str(info.value)


def test_every_registered_attack_reports_its_hyperparameters() -> None:
    model = linear(torch.randn(10, 64), torch.zeros(10))
    for name, cls in ATTACKS.items():
        params = {"surrogate": model} if name == "transfer" else {}
        attack = cls(model, eps=math.inf if cls.minimum_norm else 0.1, **params)
        config = attack.config()
        assert config["name"] == name and "seed" in config and "eps" in config
        if name == "transfer":
            assert config["base_config"]["name"] == "pgd-margin"
            continue
        # AdvGAN reports what its training produced (generator hash, queries): outputs
        outputs = ("generator_sha256", "training_queries")
        kwargs = {k: v for k, v in config.items() if k not in ("name", "norm", *outputs)}
        if name.startswith(("pgd", "apgd", "fab")) or name == "bim":
            kwargs["norm"] = config["norm"]
        assert cls(model, **kwargs).config() == config  # config() is enough to rebuild it
