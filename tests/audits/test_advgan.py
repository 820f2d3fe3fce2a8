"""AdvGAN: a trained generator beats random noise of the same norm, respects eps, is seeded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelguard.modelcard import export_model_dir, load_model_dir, seed_everything, train_classifier
from modelguard.robustness.attacks import ATTACKS, build_attack
from modelguard.robustness.attacks.advgan import AdvGAN, weights_sha256
from modelguard.robustness.config import EvalConfig
from modelguard.robustness.data import digits_split
from modelguard.robustness.evaluate import evaluate_model_dir
from modelguard.robustness.onnx_model import OnnxClassifier
from modelguard.zoo import digits_cnn

from .conftest import CLASSES

EPS = 0.2
BUDGET = {"epochs": 6, "train_limit": 600}


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, _ = digits_split()
    seed_everything(0)
    model = train_classifier(digits_cnn(width=16), train, epochs=6, seed=0)
    directory = tmp_path_factory.mktemp("cnn") / "digits-cnn"
    export_model_dir(
        model,
        directory,
        factory="digits_cnn",
        kwargs={"width": 16},
        input_shape=(1, 8, 8),
        classes=CLASSES,
        name="digits-cnn",
        version="1",
    )
    return directory


def _success(
    model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor
) -> float:
    with torch.no_grad():
        clean = model(x).argmax(1) == y
        fooled = clean & (model(x_adv).argmax(1) != y)
    return float(fooled.sum()) / float(clean.sum())


@pytest.fixture(scope="module")
def trained(cnn_dir: Path) -> dict[str, object]:
    model, _ = load_model_dir(cnn_dir)
    _, test = digits_split()
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    attack = build_attack("advgan", model, eps=EPS, seed=0, **BUDGET)
    return {"model": model, "x": x, "y": y, "attack": attack, "x_adv": attack(x, y)}


def test_advgan_beats_random_noise_of_the_same_norm_and_respects_eps(
    trained: dict[str, object],
) -> None:
    model, x, y, x_adv = (trained[k] for k in ("model", "x", "y", "x_adv"))
    assert isinstance(model, torch.nn.Module)
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    assert isinstance(x_adv, torch.Tensor)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    sign = torch.sign(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5)
    noise = torch.clamp(x + EPS * sign, 0, 1)  # random corners of the Linf ball: the same norm
    advgan, random = _success(model, x, x_adv, y), _success(model, x, noise, y)
    assert advgan >= 0.3, advgan
    assert advgan >= 5 * random, (advgan, random)


def test_the_generator_is_seeded_and_hashed_into_the_config(trained: dict[str, object]) -> None:
    attack = trained["attack"]
    assert isinstance(attack, AdvGAN) and attack.generator_net is not None
    config = attack.config()
    assert config["generator_sha256"] == weights_sha256(attack.generator_net)
    assert config["epochs"] == BUDGET["epochs"] and config["seed"] == 0
    again = build_attack("advgan", trained["model"], eps=EPS, seed=0, **BUDGET)  # type: ignore[arg-type]
    x, y = trained["x"], trained["y"]
    assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)
    assert torch.equal(again(x[:50], y[:50]), trained["x_adv"][:50])  # type: ignore[index]
    assert again.config()["generator_sha256"] == config["generator_sha256"]
    other = build_attack("advgan", trained["model"], eps=EPS, seed=1, epochs=1, train_limit=64)  # type: ignore[arg-type]
    other(x[:2], y[:2])
    assert other.config()["generator_sha256"] != config["generator_sha256"]


def test_black_box_advgan_uses_only_the_onnx_models_scores(cnn_dir: Path) -> None:
    model, _ = load_model_dir(cnn_dir)
    _, test = digits_split()
    x, y = torch.from_numpy(test.x), torch.from_numpy(test.y)
    onnx = OnnxClassifier(cnn_dir / "model.onnx")
    attack = build_attack(
        "advgan-bb", onnx, eps=EPS, seed=0, epochs=4, distill_epochs=4, train_limit=600
    )
    assert ATTACKS["advgan-bb"].score_based
    x_adv = attack(x, y)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    config = attack.config()
    assert config["training_queries"] == 600 * (1 + 4)  # distillation set + one query per step
    assert attack.queries == 0  # once trained, crafting asks the target nothing
    sign = torch.sign(torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5)
    random = _success(model, x, torch.clamp(x + EPS * sign, 0, 1), y)
    assert _success(model, x, x_adv, y) >= 3 * random


def test_advgan_counts_in_the_per_example_worst_case(cnn_dir: Path) -> None:
    config = EvalConfig(
        attacks=["fgsm", "advgan"],
        eps=[EPS],
        limit=80,
        soundness=False,
        attack_params={"advgan": {"epochs": 2, "train_limit": 300}},
    )
    result = evaluate_model_dir(cnn_dir, config)
    rows = {row.attack: row for row in result.attacks}
    assert rows["advgan"].config["generator_sha256"]
    assert rows["advgan"].success_rate > 0
    worst = result.worst_case_accuracy(EPS)
    assert worst <= min(r.robust_accuracy for r in rows.values())
    assert result.worst_case[0]["broken_by"]["advgan"] > 0
