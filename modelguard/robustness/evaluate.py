"""Honest robustness evaluation: a portfolio of attacks, per-example worst case, parity, soundness.

>>> from modelguard.robustness.config import EvalConfig
>>> from modelguard.robustness.evaluate import evaluate_model_dir
>>> config = EvalConfig(attacks=["fgsm", "pgd"], eps=[0.05, 0.1], limit=100)
>>> result = evaluate_model_dir("build/demo/model", config)        # doctest: +SKIP
>>> result.worst_case_accuracy(0.1)                                     # doctest: +SKIP
0.62

What is measured (docs/certificate.md gives the exact definitions):

- clean accuracy of the PyTorch model and of the deployed ONNX graph;
- per attack and eps: robust accuracy (clean-correct and still correct under attack),
  attack success rate (fooled / clean-correct), median L2 and Linf of successful
  perturbations, queries;
- per eps, the worst case over the whole portfolio: an example counts as robust only if it
  is classified correctly clean and after every attack, by the model that attack targeted
  and by the ONNX graph when the PyTorch-crafted example is replayed on it;
- parity: PyTorch and ONNX Runtime logits on the clean inputs must agree within
  ``parity_atol + parity_rtol * max|logit|`` (per example), else the evaluation fails (exit 1);
  on adversarial inputs, which sit on decision boundaries, disagreements are only recorded,
  and an example counts as broken when either model misclassifies it;
- the Carlini et al. 2019 soundness checks (:mod:`modelguard.robustness.soundness`).

Gradient attacks run on the PyTorch model; score-based attacks (Square, transfer) run on the
ONNX Runtime session, i.e. the artifact that is deployed. Minimum-norm attacks (DeepFool,
C&W) run once, unbounded, and their result is projected into each eps ball of the threat
model and re-checked. Everything is deterministic for a given config (seeded attacks, fixed
data order), so a certificate can be re-run exactly.

Where things are: this module orchestrates (load, run, check, assemble the
:class:`~modelguard.robustness.results.EvalResult`); models and data are loaded by
:mod:`~modelguard.robustness.loaders`, the attack loop is :mod:`~modelguard.robustness.runner`,
the config is :mod:`~modelguard.robustness.config`, the result types
:mod:`~modelguard.robustness.results`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks import ATTACKS, build_attack
from modelguard.robustness.attacks.base import Classifier
from modelguard.robustness.config import EvalConfig, proportion
from modelguard.robustness.data import Dataset, load_dataset
from modelguard.robustness.defenses.detector import SqueezeDetector, evaluate_detector
from modelguard.robustness.ibp import certified_mask, margin_lower_bounds
from modelguard.robustness.loaders import (
    LoadedModel,
    environment,
    load_arch,
    load_data,
    load_model_directory,
    load_onnx,
    num_outputs,
    resolve_device,
)
from modelguard.robustness.onnx_model import OnnxClassifier
from modelguard.robustness.progress import ProgressHook
from modelguard.robustness.results import EvalResult
from modelguard.robustness.runner import Evaluator, Target
from modelguard.robustness.smoothing import certify_dataset
from modelguard.robustness.stats import Proportion


def detector_accounting(
    detector: SqueezeDetector,
    data: Dataset,
    config: EvalConfig,
    worst_case: list[dict[str, Any]],
) -> dict[str, Any]:
    """Both numbers for a detector-plus-classifier system, per eps, each with n and 95% CI.

    ``robust_accuracy_rejection_is_error``: the portfolio's worst case, where the "reject"
    output counts as a wrong answer (what the certificate's summary and the policy gate use);
    ``correct_or_rejected_adaptive``: the fraction of examples the system answers correctly
    or rejects under an adaptive, detector-aware PGD (:func:`evaluate_detector`).
    """
    report = evaluate_detector(detector, data, eps=config.eps, seed=config.seed)
    n = len(data)
    return {
        "gate_uses": "robust_accuracy_rejection_is_error",
        "robust_accuracy_rejection_is_error": {str(w["eps"]): w["robust"] for w in worst_case},
        "correct_or_rejected_adaptive": {
            eps: proportion(row["robust_accuracy_worst_case"], n)
            for eps, row in report["per_eps"].items()
        },
        "detector_report": report,
    }


def ibp_section(model: nn.Module, data: Dataset, config: EvalConfig) -> dict[str, Any]:
    """Certified accuracy by interval bound propagation at each evaluated eps (Linf)."""
    device = next(iter(model.parameters())).device
    rows = []
    for eps in config.eps:
        hits = 0
        for start in range(0, len(data), config.batch_size):
            x = torch.from_numpy(data.x[start : start + config.batch_size]).to(device)
            y = torch.from_numpy(data.y[start : start + config.batch_size]).to(device)
            hits += int(certified_mask(model, x, y, eps=eps).sum())
        rows.append(
            {
                "eps": eps,
                "certified_accuracy": hits / len(data),
                "certified": Proportion.of(correct=hits, n=len(data)).to_dict(),
            }
        )
    return {
        "method": "interval-bound-propagation",
        "describes": "the PyTorch model (the deployed ONNX graph computes the same function "
        "within the parity tolerance); no input in the Linf ball changes its class",
        "norm": "linf",
        "n": len(data),
        "certified_accuracy": rows,
    }


def run_evaluation(
    *,
    torch_model: nn.Module | None,
    onnx: OnnxClassifier | None,
    data: Dataset,
    config: EvalConfig,
    model_info: Mapping[str, Any],
    device: str | torch.device = "cpu",
    progress: ProgressHook | None = None,
) -> EvalResult:
    """Evaluate already-loaded models on ``data`` (the evaluate_* functions load them)."""
    from modelguard.robustness.soundness import run_soundness_checks

    config = config.resolved()
    if torch_model is None and onnx is None:
        raise BadInputError("nothing to evaluate: no PyTorch and no ONNX model")
    dev = torch.device(device)
    if torch_model is not None:
        torch_model = torch_model.to(dev).eval()
    if onnx is not None:
        onnx.check_input_shape(data.x.shape[1:], source=f"data set {config.data!r}")
    if config.ibp:  # fail fast on a network interval bounds do not cover, before any work
        if torch_model is None:
            raise BadInputError("interval bound propagation needs the PyTorch model")
        margin_lower_bounds(
            torch_model,
            torch.from_numpy(data.x[:1]).to(dev),
            torch.from_numpy(data.y[:1]).to(dev),
            0.0,
        )
    for name in config.attacks:  # fail fast on a bad portfolio or parameters, before any work
        cls = ATTACKS[name]
        if not cls.score_based and torch_model is None:
            raise BadInputError(
                f"{name} needs gradients: a bare ONNX model allows only score-based attacks "
                f"({', '.join(sorted(n for n, c in ATTACKS.items() if c.score_based))})"
            )
        if cls.score_based and onnx is None:
            raise BadInputError(f"{name} attacks the deployed ONNX model, and there is none")
        if name != "transfer":
            probe_model: Classifier = torch_model if torch_model is not None else nn.Identity()
            eps = math.inf if cls.minimum_norm else config.eps[0]
            build_attack(name, probe_model, eps=eps, **config.attack_params[name])
    torch.manual_seed(config.seed)
    evaluator = Evaluator(Target(torch_model, onnx, dev), data, config, progress)
    outcome = evaluator.run()
    checks: list[dict[str, Any]] = []
    if config.soundness:
        started = time.perf_counter()
        checks = [c.to_dict() for c in run_soundness_checks(evaluator, outcome)]
        evaluator.timing["soundness"] = time.perf_counter() - started
        evaluator.tick("soundness checks")
    detector = None
    if isinstance(torch_model, SqueezeDetector):
        started = time.perf_counter()
        detector = detector_accounting(torch_model, data, config, outcome["worst_case"])
        evaluator.timing["detector"] = time.perf_counter() - started
    certified: dict[str, Any] = {}
    if config.ibp:
        assert torch_model is not None
        started = time.perf_counter()
        certified["ibp"] = ibp_section(torch_model, data, config)
        evaluator.timing["ibp"] = time.perf_counter() - started
    if config.smoothing is not None:
        started = time.perf_counter()
        base: Classifier = onnx if onnx is not None else evaluator.primary()
        certified["randomized_smoothing"] = certify_dataset(
            base,
            data.x,
            data.y,
            config.smoothing,
            num_classes=len(data.classes),
            seed=config.seed,
            model_name="deployed ONNX" if onnx is not None else "PyTorch",
        )
        evaluator.timing["smoothing"] = time.perf_counter() - started
        evaluator.tick("randomized smoothing")
    recorded = (
        config if config.data_digest is not None else replace(config, data_digest=data.digest)
    )
    return EvalResult(
        config=recorded,
        model=dict(model_info),
        data={
            "spec": config.data,
            "name": data.name,
            "digest": data.digest,
            "count": len(data),
            "classes": list(data.classes),
            "input_shape": list(data.x.shape[1:]),
        },
        environment={**environment(), "device": str(dev)},
        clean_accuracy=outcome["clean_accuracy"],
        onnx_clean_accuracy=outcome["onnx_clean_accuracy"],
        clean_confusion=outcome["clean_confusion"],
        attacks=outcome["attacks"],
        worst_case=outcome["worst_case"],
        parity=evaluator.parity.to_dict(onnx is not None and torch_model is not None),
        soundness=checks,
        timing=evaluator.timing,
        samples=outcome["samples"],
        certified=certified or None,
        detector=detector,
    )


def _run(
    loaded: LoadedModel,
    config: EvalConfig,
    *,
    num_classes: int,
    device: str,
    progress: ProgressHook | None,
) -> EvalResult:
    data = load_data(config, num_classes=num_classes, input_shape=loaded.input_shape)
    return run_evaluation(
        torch_model=loaded.torch_model,
        onnx=loaded.onnx,
        data=data,
        config=config,
        model_info=loaded.info,
        device=resolve_device(device),
        progress=progress,
    )


def evaluate_model_dir(
    model_dir: str | os.PathLike[str],
    config: EvalConfig,
    *,
    progress: ProgressHook | None = None,
    device: str = "cpu",
    trusted_factory: str | None = None,
    verified: Any = None,
) -> EvalResult:
    """White-box evaluation of a model directory (``modelguard.json``), with ONNX parity;
    ``verified``: evaluate the verified buffers (:func:`~.loaders.load_model_directory`)."""
    config = config.resolved()
    loaded = load_model_directory(model_dir, trusted_factory=trusted_factory, verified=verified)
    assert loaded.num_classes is not None
    return _run(loaded, config, num_classes=loaded.num_classes, device=device, progress=progress)


def evaluate_arch(
    factory: str,
    weights: str | os.PathLike[str],
    config: EvalConfig,
    *,
    kwargs: Mapping[str, Any] | None = None,
    onnx_path: str | os.PathLike[str] | None = None,
    progress: ProgressHook | None = None,
    device: str = "cpu",
) -> EvalResult:
    """White-box evaluation of ``--arch pkg.mod:fn --weights W.safetensors`` (the user trusts fn)."""
    config = config.resolved()
    loaded = load_arch(factory, weights, kwargs=kwargs, onnx_path=onnx_path)
    assert loaded.torch_model is not None
    classes = num_outputs(loaded.torch_model, load_dataset(config.data).x[:1])
    return _run(loaded, config, num_classes=classes, device=device, progress=progress)


def evaluate_onnx(
    onnx_path: str | os.PathLike[str],
    config: EvalConfig,
    *,
    progress: ProgressHook | None = None,
) -> EvalResult:
    """Black-box evaluation of any ONNX file through ONNX Runtime: score-based attacks only."""
    config = config.resolved()
    loaded = load_onnx(onnx_path)
    assert loaded.onnx is not None
    sample = load_dataset(config.data).subset(1)
    loaded.onnx.check_input_shape(sample.x.shape[1:], source=f"data set {config.data!r}")
    classes = int(loaded.onnx.predict(sample.x).shape[1])
    return _run(loaded, config, num_classes=classes, device="cpu", progress=progress)


def evaluate(
    target: str | os.PathLike[str],
    config: EvalConfig,
    *,
    arch: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    progress: ProgressHook | None = None,
    device: str = "cpu",
) -> EvalResult:
    """Dispatch: a model directory, an ONNX file (black-box), or ``arch`` + ``weights``."""
    path = Path(target) if target else None
    if arch is not None or weights is not None:
        if arch is None or weights is None:
            raise BadInputError("--arch and --weights go together")
        onnx_path = path if path is not None and path.suffix == ".onnx" else None
        return evaluate_arch(
            arch,
            weights,
            config,
            kwargs=arch_kwargs,
            onnx_path=onnx_path,
            progress=progress,
            device=device,
        )
    if path is None or not path.exists():
        raise BadInputError("no such model directory or ONNX file", path=str(target))
    if path.is_dir():
        return evaluate_model_dir(path, config, progress=progress, device=device)
    if path.suffix == ".onnx":
        return evaluate_onnx(path, config, progress=progress)
    raise BadInputError(
        "expected a model directory (with modelguard.json), an .onnx file, or --arch/--weights",
        path=str(path),
    )
