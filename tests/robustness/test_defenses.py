"""Defenses: BPDA squeezers and ensembles inside ONNX, the detector, options, factory trust."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard import zoo
from modelguard.errors import BadInputError, UnsafeModelError
from modelguard.modelcard import ModelCard, export_model_dir, load_model_dir
from modelguard.robustness.data import digits_split
from modelguard.robustness.defenses import apply_defense
from modelguard.robustness.defenses.augmentation import Augmentation
from modelguard.robustness.defenses.detector import SqueezeDetector, evaluate_detector
from modelguard.robustness.defenses.preprocessing import BitDepthReduction, MedianSmoothing

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def parent() -> tuple[torch.nn.Module, ModelCard]:
    model, card = load_model_dir_fixture()
    return model, card


def load_model_dir_fixture() -> tuple[torch.nn.Module, ModelCard]:
    torch.manual_seed(0)
    model = zoo.build("modelguard.zoo:digits_cnn", {"width": 8})
    card = ModelCard("modelguard.zoo:digits_cnn", {"width": 8}, [1, 8, 8], CLASSES)
    return model.eval(), card


def onnx_logits(directory: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(
        str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"input": x})[0]


def export_and_reload(defended, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    out = tmp_path / defended.method
    export_model_dir(
        defended.model,
        out,
        factory=defended.factory,
        kwargs=defended.kwargs,
        input_shape=[1, 8, 8],
        classes=defended.classes,
    )
    rebuilt, _ = load_model_dir(out)  # the card's factory is trusted without --arch
    return rebuilt, out


@pytest.mark.parametrize("options", [{"bits": 3}, {"bits": 2, "median": 3}, {"median": 3}])
def test_squeeze_onnx_graph_matches_torch(parent, tmp_path: Path, options: dict) -> None:
    model, card = parent
    train, test = digits_split()
    defended = apply_defense("squeeze", model, card, train, options)
    rebuilt, out = export_and_reload(defended, tmp_path)
    x = test.x[:64]
    with torch.no_grad():
        expected = rebuilt(torch.from_numpy(x)).numpy()
        raw = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(onnx_logits(out, x), expected, atol=1e-4, rtol=1e-4)
    assert not np.allclose(expected, raw, atol=1e-4)  # the squeezer really is in the graph


def test_median_is_a_true_median_and_bits_quantise() -> None:
    x = torch.rand(3, 1, 8, 8)
    smoothed = MedianSmoothing(3).squeeze(x)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    assert torch.isclose(smoothed[1, 0, 4, 5], padded[1, 0, 4:7, 5:8].flatten().median())
    levels = BitDepthReduction(2).squeeze(x) * 3
    assert torch.allclose(levels, levels.round())


def test_bpda_passes_the_identity_gradient() -> None:
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    squeeze = torch.nn.Sequential(BitDepthReduction(1), MedianSmoothing(3))
    out = squeeze(x)
    assert torch.equal(out.detach(), squeeze(x.detach()))  # the forward value is the real f(x)
    (grad,) = torch.autograd.grad((out * 3.0).sum(), x)
    assert torch.allclose(grad, torch.full_like(grad, 3.0))  # not zero: no masked gradient


def test_ensemble_onnx_equals_averaged_logits(parent, tmp_path: Path) -> None:
    model, card = parent
    train, test = digits_split()
    defended = apply_defense(
        "ensemble", model, card, train.subset(200), {"members": 2, "epochs": 1}
    )
    rebuilt, out = export_and_reload(defended, tmp_path)
    x = torch.from_numpy(test.x[:32])
    with torch.no_grad():
        members = [m(x) for m in rebuilt.members]
        averaged = torch.stack(members).mean(0).numpy()
        assert len(members) == 3 and not torch.allclose(members[0], members[1])
        assert torch.allclose(members[0], model(x))  # the parent is member 0, unchanged
    np.testing.assert_allclose(onnx_logits(out, x.numpy()), averaged, atol=1e-5, rtol=1e-5)


def test_detector_rejects_at_the_threshold_and_reports_adaptive_robustness(
    parent, tmp_path
) -> None:
    model, card = parent
    train, test = digits_split()
    defended = apply_defense("detector", model, card, train, {"bits": 2, "fpr": 0.1})
    detector = defended.model
    assert isinstance(detector, SqueezeDetector) and defended.classes[-1] == "reject"
    x = torch.from_numpy(train.x)
    with torch.no_grad():
        scores = detector.score(x)
        rejected = detector(x).argmax(1) == 10
    assert torch.equal(rejected, scores > detector.threshold)
    assert 0.05 <= float(rejected.float().mean()) <= 0.1  # the stated clean false-positive rate
    rebuilt, out = export_and_reload(defended, tmp_path)
    with torch.no_grad():
        expected = rebuilt(torch.from_numpy(test.x[:32])).numpy()
    np.testing.assert_allclose(onnx_logits(out, test.x[:32]), expected, atol=1e-3, rtol=1e-4)
    report = evaluate_detector(detector, test.subset(40), eps=[0.1], steps=5)
    row = report["per_eps"]["0.1"]
    assert 0.0 <= row["roc_auc"] <= 1.0
    assert row["robust_accuracy_worst_case"] <= min(row["robust_accuracy_per_lambda"].values())


def test_methods_refuse_options_they_do_not_take(parent) -> None:
    model, card = parent
    train, _ = digits_split()
    with pytest.raises(BadInputError, match="--temperature"):
        apply_defense("pgd-at", model, card, train, {"temperature": 50})
    with pytest.raises(BadInputError, match="unknown defense"):
        apply_defense("magic", model, card, train, {})
    with pytest.raises(BadInputError, match="eps"):
        apply_defense("pgd-at", model, card, train, {"eps": -1})


def test_distillation_deploys_the_student_at_t1(parent) -> None:
    model, card = parent
    train, test = digits_split()
    defended = apply_defense(
        "distill", model, card, train.subset(300), {"temperature": 50, "epochs": 2}
    )
    assert (
        defended.factory == card.factory and defended.hyperparameters["deployed_temperature"] == 1.0
    )
    phases = {r["phase"] for r in defended.history}
    assert phases == {"teacher", "student"}
    with torch.no_grad():
        logits = defended.model(torch.from_numpy(test.x[:64]))
    assert logits.shape == (64, 10) and torch.isfinite(logits).all()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_augmentation_stays_in_range_and_is_seeded(seed: int) -> None:
    x = torch.rand(5, 1, 8, 8)
    aug = Augmentation(noise_std=0.2, max_shift=1.5, scale=0.2)
    a = aug(x, torch.Generator().manual_seed(seed))
    b = aug(x, torch.Generator().manual_seed(seed))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1


def test_only_marked_modelguard_factories_are_trusted() -> None:
    spec = {"base": {"factory": "modelguard.zoo:digits_mlp", "kwargs": {}}, "bits": 3}
    assert zoo.build("modelguard.robustness.defenses.wrappers:squeezed", spec) is not None
    for factory in (
        "modelguard.robustness.defenses.wrappers:spec",  # a modelguard function, not a factory
        "modelguard.cli.main:main",
        "os:system",
    ):
        with pytest.raises(UnsafeModelError):
            zoo.build(factory, {})
    nested = {"base": {"factory": "os:getcwd", "kwargs": {}}, "bits": 3}
    with pytest.raises(UnsafeModelError):  # a card can not smuggle a factory in through kwargs
        zoo.build("modelguard.robustness.defenses.wrappers:squeezed", nested)


def test_fast_at_guard_rolls_back_to_the_pre_collapse_weights() -> None:
    from modelguard.robustness.defenses.adversarial import (
        AdversarialSettings,
        fast_at,
        guard_accuracy,
    )
    from modelguard.robustness.defenses.training import TrainSettings

    train, _ = digits_split()
    train = train.subset(500)
    torch.manual_seed(0)
    robust = fast_at(
        zoo.build("modelguard.zoo:digits_cnn", {"width": 8}),
        train,
        AdversarialSettings(eps=0.1, guard_size=64),
        TrainSettings(epochs=4),
    ).model
    before = {k: v.clone() for k, v in robust.state_dict().items()}
    # Known to collapse: single-step training with a step of 3 * eps and a huge learning rate,
    # for many epochs. PGD accuracy on the guard batch falls to chance within the first epoch.
    run = fast_at(
        robust,
        train,
        AdversarialSettings(eps=0.1, alpha=0.3, guard_size=64),
        TrainSettings(epochs=10, lr=0.05),
    )
    guard = run.guard
    assert guard["collapsed"] and guard["collapse_epoch"] == 0 and len(run.history) == 1
    assert guard["collapse_accuracy"] < guard["initial_accuracy"] - 0.2
    assert guard["restored_epoch"] == -1
    after = run.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the pre-collapse weights
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:64].numpy()
    x, y = torch.from_numpy(train.x[order]), torch.from_numpy(train.y[order])
    assert guard_accuracy(run.model, x, y, 0.1, 5) == guard["restored_accuracy"]
