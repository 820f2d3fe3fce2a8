"""Honest robustness evaluation: a portfolio of attacks, per-example worst case, parity, soundness.

>>> from modelguard.robustness.evaluate import EvalConfig, evaluate_model_dir
>>> config = EvalConfig(attacks=["fgsm", "pgd"], eps=[0.05, 0.1], limit=100)
>>> result = evaluate_model_dir("build/demo/digits-v1", config)        # doctest: +SKIP
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
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from modelguard import __version__
from modelguard.errors import BadInputError, DigestMismatchError, FormatError, VerificationError
from modelguard.hashing import digest_file
from modelguard.robustness import distributed
from modelguard.robustness.attacks import ATTACKS, Attack, build_attack
from modelguard.robustness.attacks.base import Classifier, project
from modelguard.robustness.config import (
    EVAL_DEFAULTS,
    EVAL_VERSION,
    EvalConfig,
    proportion,
)
from modelguard.robustness.data import Dataset, load_dataset
from modelguard.robustness.defenses.detector import SqueezeDetector, evaluate_detector
from modelguard.robustness.ibp import certified_mask, margin_lower_bounds
from modelguard.robustness.onnx_model import OnnxClassifier, onnx_session_options
from modelguard.robustness.smoothing import certify_dataset
from modelguard.robustness.stats import Proportion

SAMPLE_COUNT = 8
ProgressHook = Callable[[str, int, int], None]  # (label, done, total)


@dataclass
class AttackResult:
    attack: str
    eps: float
    target: str  # "pytorch" | "onnx": the model the attack queried
    config: dict[str, Any]
    robust_accuracy: float
    success_rate: float
    median_l2: float | None
    median_linf: float | None
    queries: int
    mean_queries: float
    onnx_robust_accuracy: float | None = None
    seconds: float = 0.0
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "eps": self.eps,
            "target": self.target,
            "config": self.config,
            "robust_accuracy": self.robust_accuracy,
            "robust": proportion(self.robust_accuracy, self.n),
            "success_rate": self.success_rate,
            "median_l2": self.median_l2,
            "median_linf": self.median_linf,
            "queries": self.queries,
            "mean_queries": self.mean_queries,
            "onnx_robust_accuracy": self.onnx_robust_accuracy,
        }


@dataclass
class Samples:
    """A few examples for the HTML grid: clean images and the worst-case adversarial per eps."""

    x: np.ndarray
    y: np.ndarray
    clean_pred: np.ndarray
    adversarial: dict[float, tuple[np.ndarray, np.ndarray, list[str]]] = field(
        default_factory=dict
    )  # eps -> (x_adv, pred, attack name or "")


@dataclass
class EvalResult:
    config: EvalConfig
    model: dict[str, Any]
    data: dict[str, Any]
    environment: dict[str, Any]
    clean_accuracy: float
    onnx_clean_accuracy: float | None
    clean_confusion: list[list[int]]
    attacks: list[AttackResult]
    worst_case: list[dict[str, Any]]
    parity: dict[str, Any]
    soundness: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    samples: Samples | None = None
    # Certified numbers by method ("randomized_smoothing", "ibp"); never mixed with results.
    certified: dict[str, Any] | None = None
    detector: dict[str, Any] | None = None  # a detector system's two accountings

    @property
    def n(self) -> int:
        """How many examples every accuracy here was measured on."""
        return int(self.data["count"])

    @property
    def parity_ok(self) -> bool:
        return bool(self.parity.get("ok", True))

    @property
    def soundness_warnings(self) -> list[str]:
        return [c["name"] for c in self.soundness if c["status"] == "warn"]

    def worst_case_accuracy(self, eps: float) -> float:
        for row in self.worst_case:
            if math.isclose(row["eps"], eps, rel_tol=0, abs_tol=1e-12):
                return float(row["robust_accuracy"])
        raise BadInputError(f"eps {eps} was not evaluated (evaluated: {self.config.eps})")

    def robust_table(self) -> dict[str, dict[str, float]]:
        """``{str(eps): {attack: robust accuracy, ..., "worst_case": ...}}``."""
        table: dict[str, dict[str, float]] = {}
        for row in self.attacks:
            table.setdefault(str(row.eps), {})[row.attack] = row.robust_accuracy
        for worst in self.worst_case:
            table.setdefault(str(worst["eps"]), {})["worst_case"] = worst["robust_accuracy"]
        return table

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model.get("name"),
            "manifest_root": self.model.get("manifest_root"),
            "clean_accuracy": self.clean_accuracy,
            "onnx_clean_accuracy": self.onnx_clean_accuracy,
            "worst_case": {str(r["eps"]): r["robust_accuracy"] for r in self.worst_case},
            "worst_case_ci95": {str(r["eps"]): r["robust"]["ci95"] for r in self.worst_case},
            "n": self.n,
            "parity_ok": self.parity_ok,
            "soundness_warnings": self.soundness_warnings,
        }

    def results_dict(self) -> dict[str, Any]:
        """The deterministic results (no timings, no environment): what recertify compares."""
        return {
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "clean": proportion(self.clean_accuracy, self.n),
            "onnx_clean_accuracy": self.onnx_clean_accuracy,
            "onnx_clean": None
            if self.onnx_clean_accuracy is None
            else proportion(self.onnx_clean_accuracy, self.n),
            "clean_confusion": self.clean_confusion,
            "attacks": [a.to_dict() for a in self.attacks],
            "worst_case": self.worst_case,
            "parity": self.parity,
            "soundness": self.soundness,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "modelguard_eval_version": EVAL_VERSION,
            "config": self.config.to_dict(),
            "model": self.model,
            "data": self.data,
            "environment": self.environment,
            "results": self.results_dict(),
            "certified": self.certified,
            "detector": self.detector,
            "timing": self.timing,
            "summary": self.summary(),
        }

    def require_parity(self) -> None:
        """Raise (exit 1) when the deployed ONNX graph does not match the evaluated model."""
        if not self.parity_ok:
            raise VerificationError(
                f"PyTorch/ONNX parity failed on clean inputs: max |logit difference| "
                f"{self.parity['max_abs_diff']:.3g} exceeds atol {self.config.parity_atol} + "
                f"rtol {self.config.parity_rtol} * max|logit|; the certificate would not "
                f"describe the deployed model",
                details=self.parity,
            )


# ---------------------------------------------------------------------------------------
# Loading models and data


def environment() -> dict[str, Any]:
    import onnxruntime

    return {
        "modelguard": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _sha256_file(path: Path) -> str:
    return digest_file(path, "sha256")


def model_identity(path: Path) -> dict[str, Any]:
    """Manifest root (OMS ignore paths, hashes as signing computes them) of a file or directory."""
    from modelguard.manifest import SIGNING_FILE_HASH, SIGNING_LAYER_HASH, build_manifest
    from modelguard.signing.statement import DEFAULT_IGNORE_PATHS

    manifest = build_manifest(
        path,
        hash_algorithm=SIGNING_LAYER_HASH,
        file_hash_algorithm=SIGNING_FILE_HASH,
        ignore_paths=DEFAULT_IGNORE_PATHS,
    )
    return {
        "manifest_root": manifest.layer_root,
        "hash_algorithm": manifest.hash_algorithm,
        "files": {f.path: f.digest for f in manifest.files},
    }


def load_data(
    config: EvalConfig, *, num_classes: int, input_shape: Sequence[int] | None
) -> Dataset:
    data = load_dataset(config.data, seed=0).subset(config.limit)
    if input_shape is not None and list(data.x.shape[1:]) != list(input_shape):
        raise BadInputError(
            f"data set {config.data!r} has examples of shape {list(data.x.shape[1:])}, "
            f"but the model expects {list(input_shape)}"
        )
    if int(data.y.max()) >= num_classes:
        raise BadInputError(
            f"data set {config.data!r} has label {int(data.y.max())}, but the model has only "
            f"{num_classes} classes"
        )
    if config.data_digest is not None and config.data_digest != data.digest:
        raise DigestMismatchError(
            f"data set {config.data!r} no longer matches its recorded digest "
            f"(sha256 {data.digest[:16]}..., recorded {config.data_digest[:16]}...)"
        )
    return data


def _load_surrogate(params: dict[str, Any], fallback: nn.Module | None) -> nn.Module:
    spec = params.get("surrogate")
    if spec is None:
        if fallback is None:
            raise BadInputError(
                "transfer on a bare ONNX model needs a surrogate: attack_params "
                "{'transfer': {'surrogate': 'MODEL_DIR'}} (a model directory)"
            )
        return fallback
    from modelguard.modelcard import load_model_dir

    surrogate, _ = load_model_dir(str(spec))
    return surrogate


# ---------------------------------------------------------------------------------------
# The evaluation proper


def _predict(model: Classifier, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = torch.from_numpy(x[start : start + batch_size]).to(device)
            outs.append(model(xb).detach().float().cpu().numpy())
    return np.concatenate(outs, axis=0)


def confusion(y: np.ndarray, pred: np.ndarray, k: int) -> list[list[int]]:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y, np.clip(pred, 0, k - 1)), 1)
    return matrix.tolist()


class _Parity:
    """PyTorch vs ONNX Runtime logits: the deployed graph must compute the evaluated function.

    The check runs on the clean inputs, with a tolerance relative to each example's logit
    scale: ``|torch - onnx| <= atol + rtol * max_j |onnx_j|`` for every logit. Adversarial
    inputs sit on decision boundaries by construction, where float noise between two correct
    implementations flips predictions; they are compared too, but only recorded (a tie there
    is never a parity failure), and the worst case counts an example as broken when either
    model misclassifies it.
    """

    def __init__(self, atol: float, rtol: float) -> None:
        self.atol, self.rtol = atol, rtol
        self.max_abs_diff = 0.0
        self.max_relative_diff = 0.0
        self.worst_excess = -math.inf
        self.checked = 0
        self.disagreements = 0
        self.adversarial_checked = 0
        self.adversarial_disagreements = 0
        self.adversarial_max_abs_diff = 0.0

    def add_clean(self, torch_logits: np.ndarray, onnx_logits: np.ndarray) -> None:
        diff = np.abs(torch_logits - onnx_logits)
        scale = np.abs(onnx_logits).max(axis=1, keepdims=True) if onnx_logits.size else onnx_logits
        bound = self.atol + self.rtol * scale
        self.max_abs_diff = max(self.max_abs_diff, float(diff.max(initial=0.0)))
        relative = diff / np.maximum(scale, np.finfo(np.float32).tiny)
        self.max_relative_diff = max(self.max_relative_diff, float(relative.max(initial=0.0)))
        self.worst_excess = max(self.worst_excess, float((diff - bound).max(initial=-math.inf)))
        self.checked += int(torch_logits.shape[0])
        self.disagreements += int((torch_logits.argmax(1) != onnx_logits.argmax(1)).sum())

    def add_adversarial(self, torch_logits: np.ndarray, onnx_logits: np.ndarray) -> None:
        diff = np.abs(torch_logits - onnx_logits)
        self.adversarial_max_abs_diff = max(
            self.adversarial_max_abs_diff, float(diff.max(initial=0.0))
        )
        self.adversarial_checked += int(torch_logits.shape[0])
        self.adversarial_disagreements += int(
            (torch_logits.argmax(1) != onnx_logits.argmax(1)).sum()
        )

    def to_dict(self, checked_onnx: bool) -> dict[str, Any]:
        if not checked_onnx:
            return {"ok": True, "checked": False, "reason": "no ONNX model to compare with"}
        return {
            "ok": self.worst_excess <= 0,
            "checked": True,
            "tolerance": "atol + rtol * max|logit| per example, clean inputs",
            "max_abs_diff": self.max_abs_diff,
            "max_relative_diff": self.max_relative_diff,
            "atol": self.atol,
            "rtol": self.rtol,
            "inputs_compared": self.checked,
            "prediction_disagreements": self.disagreements,
            "adversarial_inputs_compared": self.adversarial_checked,
            "adversarial_prediction_disagreements": self.adversarial_disagreements,
            "adversarial_max_abs_diff": self.adversarial_max_abs_diff,
        }


@dataclass
class _Target:
    """The models under evaluation: PyTorch (white-box) and/or ONNX Runtime (deployed)."""

    torch_model: nn.Module | None
    onnx: OnnxClassifier | None
    device: torch.device


class _Evaluator:
    def __init__(
        self,
        target: _Target,
        data: Dataset,
        config: EvalConfig,
        progress: ProgressHook | None,
    ) -> None:
        self.target = target
        self.data = data
        self.config = config
        self.progress = progress
        self.num_classes = len(data.classes)
        self.parity = _Parity(config.parity_atol, config.parity_rtol)
        self.cache: dict[str, float] = {}
        self.timing: dict[str, float] = {}
        self.done = 0
        self.total = (
            len(config.attacks) * len(config.eps)
            + (1 if config.soundness else 0)
            + (1 if config.smoothing is not None else 0)
        )

    def tick(self, label: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(label, self.done, self.total)

    # -- predictions -------------------------------------------------------------------
    def primary(self) -> Classifier:
        model = self.target.torch_model
        if model is not None:
            return model
        assert self.target.onnx is not None
        return self.target.onnx

    def logits_torch(self, x: np.ndarray) -> np.ndarray:
        assert self.target.torch_model is not None
        return _predict(self.target.torch_model, x, self.config.batch_size, self.target.device)

    def logits_onnx(self, x: np.ndarray) -> np.ndarray:
        assert self.target.onnx is not None
        return self.target.onnx.predict(x)

    def predict_both(
        self, x: np.ndarray, *, clean: bool = False
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Predictions of PyTorch and ONNX (each None when absent); feeds the parity check."""
        t = self.logits_torch(x) if self.target.torch_model is not None else None
        o = self.logits_onnx(x) if self.target.onnx is not None else None
        if t is not None and o is not None:
            if clean:
                self.parity.add_clean(t, o)
            else:
                self.parity.add_adversarial(t, o)
        return (
            t.argmax(1) if t is not None else None,
            o.argmax(1) if o is not None else None,
        )

    # -- attacks -----------------------------------------------------------------------
    def build(self, name: str, eps: float, params: Mapping[str, Any]) -> tuple[Attack, str]:
        cls = ATTACKS[name]
        kwargs = dict(params)
        if cls.score_based:
            if self.target.onnx is None:
                raise BadInputError(f"{name} attacks the deployed ONNX model, and there is none")
            model: Classifier = self.target.onnx
            where = "onnx"
            if name == "transfer":
                kwargs["surrogate"] = _load_surrogate(kwargs, self.target.torch_model)
        else:
            if self.target.torch_model is None:
                raise BadInputError(
                    f"{name} needs gradients: a bare ONNX model allows only score-based attacks "
                    f"({', '.join(sorted(n for n, c in ATTACKS.items() if c.score_based))})"
                )
            model, where = self.target.torch_model, "pytorch"
        attack_eps = math.inf if cls.minimum_norm else eps
        return build_attack(name, model, eps=attack_eps, seed=self.config.seed, **kwargs), where

    def craft(self, attack: Attack, only: np.ndarray | None = None) -> np.ndarray:
        """Adversarial examples for every example, or only for the indices ``only`` (the
        others are returned clean). Batches are shared out across torchrun ranks (one
        process: all of them), each seeded from its index, so the result does not depend on
        the number of processes."""
        if only is None:
            return distributed.craft(attack, self.data.x, self.data.y, self.config.batch_size)
        out = self.data.x.copy()
        out[only] = distributed.craft(
            attack, self.data.x[only], self.data.y[only], self.config.batch_size
        )
        return out.astype(np.float32)

    def robust_accuracy(self, name: str, eps: float, **overrides: Any) -> float:
        """Robust accuracy of one PyTorch-side attack (cached): used by the soundness checks."""
        params = {
            **EVAL_DEFAULTS.get(name, {}),
            **self.config.attack_params.get(name, {}),
            **overrides,
        }
        key = self.cache_key(name, eps, params)
        if key not in self.cache:
            attack, _ = self.build(name, eps, params)
            x_adv = self.within_threat(self.craft(attack), eps)
            pred = self.logits_torch(x_adv).argmax(1)
            self.cache[key] = float(np.mean(self.clean_correct & (pred == self.data.y)))
        return self.cache[key]

    @staticmethod
    def cache_key(name: str, eps: float, params: Mapping[str, Any]) -> str:
        return json.dumps([name, eps, dict(params)], sort_keys=True, default=str)

    def within_threat(self, x_adv: np.ndarray, eps: float) -> np.ndarray:
        """Project into the threat model's eps ball (a no-op for eps-bounded attacks)."""
        projected = project(
            torch.from_numpy(x_adv), torch.from_numpy(self.data.x), eps, self.config.norm
        )
        return projected.numpy().astype(np.float32)

    def run(self) -> dict[str, Any]:
        data, config = self.data, self.config
        y = data.y
        k = self.num_classes
        t0 = time.perf_counter()
        torch_pred, onnx_pred = self.predict_both(data.x, clean=True)
        primary_pred = torch_pred if torch_pred is not None else onnx_pred
        assert primary_pred is not None
        self.clean_correct = primary_pred == y
        self.timing["clean"] = time.perf_counter() - t0
        broken = {eps: ~self.clean_correct for eps in config.eps}
        onnx_clean_ok = onnx_pred == y if onnx_pred is not None else None
        if onnx_clean_ok is not None:
            broken = {eps: b | ~onnx_clean_ok for eps, b in broken.items()}
        worst_pred = {eps: primary_pred.copy() for eps in config.eps}
        broken_by: dict[float, dict[str, int]] = {eps: {} for eps in config.eps}
        n_show = min(SAMPLE_COUNT, len(y))
        samples = Samples(
            x=data.x[:n_show].copy(), y=y[:n_show].copy(), clean_pred=primary_pred[:n_show].copy()
        )
        sample_adv = {eps: data.x[:n_show].copy() for eps in config.eps}
        sample_pred = {eps: primary_pred[:n_show].copy() for eps in config.eps}
        sample_by = {eps: [""] * n_show for eps in config.eps}
        rows: list[AttackResult] = []
        for name in config.attacks:
            params = config.attack_params[name]
            unbounded: np.ndarray | None = None
            for eps in config.eps:
                started = time.perf_counter()
                attack, where = self.build(name, eps, params)
                attacked = np.ones(len(y), dtype=bool)
                if config.cascade:  # only the examples no earlier attack broke
                    attacked = (
                        np.logical_or.reduce([~broken[e] for e in config.eps])
                        if ATTACKS[name].minimum_norm
                        else ~broken[eps]
                    )
                only = None if not config.cascade else np.nonzero(attacked)[0]
                if ATTACKS[name].minimum_norm:
                    if unbounded is None:
                        unbounded = self.craft(attack, only)
                    x_raw = unbounded
                else:
                    x_raw = self.craft(attack, only)
                x_adv = self.within_threat(x_raw, eps)
                t_pred, o_pred = self.predict_both(x_adv)
                target_pred = o_pred if where == "onnx" else t_pred
                assert target_pred is not None
                fooled = self.clean_correct & attacked & (target_pred != y)
                robust = self.clean_correct & (target_pred == y)
                newly = fooled & ~broken[eps]
                worst_pred[eps][newly] = target_pred[newly]
                for i in np.nonzero(newly[:n_show])[0]:
                    sample_adv[eps][i] = x_adv[i]
                    sample_pred[eps][i] = target_pred[i]
                    sample_by[eps][i] = name
                broken[eps] |= fooled
                onnx_acc = None
                if o_pred is not None and where == "pytorch":
                    onnx_fooled = self.clean_correct & attacked & (o_pred != y)
                    onnx_new = onnx_fooled & ~broken[eps]
                    worst_pred[eps][onnx_new] = o_pred[onnx_new]
                    broken[eps] |= onnx_fooled
                    onnx_acc = float(np.mean(self.clean_correct & attacked & (o_pred == y)))
                broken_by[eps][name] = int(fooled.sum())
                if config.cascade:
                    # In a cascade an attack sees only the survivors: its row reports the
                    # cascade's robust accuracy so far (this attack and every earlier one).
                    robust = ~broken[eps]
                    if onnx_acc is not None:
                        onnx_acc = float(robust.mean())
                elif where == "pytorch":
                    self.cache[self.cache_key(name, eps, params)] = float(robust.mean())
                delta = (x_adv - data.x).reshape(len(y), -1)
                l2 = np.linalg.norm(delta, axis=1)[fooled]
                linf = np.abs(delta).max(axis=1)[fooled]
                correct_count = int((self.clean_correct & attacked).sum())
                queries = int(attack.queries)
                rows.append(
                    AttackResult(
                        attack=name,
                        eps=eps,
                        target=where,
                        config=_threat_config(attack.config(), eps, config.norm),
                        robust_accuracy=float(robust.mean()),
                        success_rate=float(fooled.sum() / correct_count) if correct_count else 0.0,
                        median_l2=float(np.median(l2)) if l2.size else None,
                        median_linf=float(np.median(linf)) if linf.size else None,
                        queries=queries,
                        mean_queries=queries / len(y),
                        onnx_robust_accuracy=onnx_acc,
                        seconds=time.perf_counter() - started,
                        n=len(y),
                    )
                )
                self.timing[f"{name}@{eps}"] = rows[-1].seconds
                self.tick(f"{name} eps={eps}")
        worst = []
        for eps in config.eps:
            worst.append(
                {
                    "eps": eps,
                    "robust_accuracy": float(np.mean(~broken[eps])),
                    "robust": Proportion.of(correct=int((~broken[eps]).sum()), n=len(y)).to_dict(),
                    "broken_by": broken_by[eps],
                    "confusion": confusion(y, worst_pred[eps], k),
                }
            )
            samples.adversarial[eps] = (sample_adv[eps], sample_pred[eps], sample_by[eps])
        return {
            "clean_accuracy": float(np.mean(self.clean_correct)),
            "onnx_clean_accuracy": float(np.mean(onnx_clean_ok))
            if onnx_clean_ok is not None
            else None,
            "clean_confusion": confusion(y, primary_pred, k),
            "attacks": rows,
            "worst_case": worst,
            "samples": samples,
        }


def _threat_config(config: dict[str, Any], eps: float, norm: str) -> dict[str, Any]:
    """An attack's config plus the threat model its result was projected into."""
    return {**config, "threat_eps": eps, "threat_norm": norm}


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
    evaluator = _Evaluator(_Target(torch_model, onnx, dev), data, config, progress)
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
    recorded = config
    if recorded.data_digest is None:
        recorded = EvalConfig.from_dict({**config.to_dict(), "data_digest": data.digest})
        recorded = recorded.resolved()
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return distributed.local_device(device)  # cuda:LOCAL_RANK in a NCCL job
    except RuntimeError as error:
        raise BadInputError(f"unknown device {device!r}") from error


def evaluate_model_dir(
    model_dir: str | os.PathLike[str],
    config: EvalConfig,
    *,
    progress: ProgressHook | None = None,
    device: str = "cpu",
    trusted_factory: str | None = None,
    verified: Any = None,
) -> EvalResult:
    """White-box evaluation of a model directory (``modelguard.json``), with ONNX parity.

    ``verified``: the model as verified (``modelguard.signing.report.VerifiedModel``): card,
    weights and ONNX graph come from its buffers and its manifest is the identity; nothing is
    read by path again.
    """
    from modelguard.modelcard import load_model_dir

    directory = Path(model_dir)
    config = config.resolved()
    files = verified.files if verified is not None else None
    model, card = load_model_dir(directory, trusted_factory=trusted_factory, files=files)
    data = load_data(config, num_classes=len(card.classes), input_shape=card.input_shape)
    onnx: OnnxClassifier | None
    if files is not None:
        from modelguard.runtime import session_from_files

        identity = {
            "manifest_root": verified.manifest.layer_root,
            "hash_algorithm": verified.manifest.hash_algorithm,
            "files": {f.path: f.digest for f in verified.manifest.files},
        }
        onnx = (
            OnnxClassifier(session_from_files(files, card.onnx, options=onnx_session_options()))
            if card.onnx in files.members
            else None
        )
    else:
        onnx_path = directory / card.onnx
        onnx = OnnxClassifier(onnx_path) if onnx_path.is_file() else None
        identity = model_identity(directory)
    info = {
        "kind": "model-dir",
        "path": str(directory),
        "name": card.name,
        "version": card.version,
        "factory": trusted_factory or card.factory,
        "kwargs": card.kwargs,
        "weights": card.weights,
        "weights_sha256": identity["files"].get(card.weights),
        "onnx": card.onnx if onnx is not None else None,
        "onnx_sha256": identity["files"].get(card.onnx) if onnx is not None else None,
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return run_evaluation(
        torch_model=model,
        onnx=onnx,
        data=data,
        config=config,
        model_info=info,
        device=resolve_device(device),
        progress=progress,
    )


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
    from safetensors.torch import load_file

    from modelguard import zoo

    config = config.resolved()
    weights_path = Path(weights)
    if not weights_path.is_file():
        raise BadInputError("weights file not found", path=str(weights_path))
    model = zoo.build(
        zoo.factory_name(factory) if ":" not in factory else factory, kwargs, trusted=True
    )
    try:
        state = load_file(str(weights_path))
    except Exception as error:
        raise FormatError(
            f"unreadable safetensors weights ({error})", path=str(weights_path)
        ) from error
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise FormatError(
            f"weights do not fit architecture {factory}: {str(error).splitlines()[0]}",
            path=str(weights_path),
        ) from error
    model.eval()
    num_classes = _num_outputs(model, load_dataset(config.data).x[:1])
    data = load_data(config, num_classes=num_classes, input_shape=None)
    onnx = OnnxClassifier(onnx_path) if onnx_path is not None else None
    identity = model_identity(weights_path)
    info = {
        "kind": "arch+weights",
        "path": str(weights_path),
        "name": weights_path.stem,
        "version": None,
        "factory": factory,
        "kwargs": dict(kwargs or {}),
        "weights": weights_path.name,
        "weights_sha256": identity["files"].get(weights_path.name),
        "onnx": str(onnx_path) if onnx_path is not None else None,
        "onnx_sha256": _sha256_file(Path(onnx_path)) if onnx_path is not None else None,
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return run_evaluation(
        torch_model=model,
        onnx=onnx,
        data=data,
        config=config,
        model_info=info,
        device=resolve_device(device),
        progress=progress,
    )


def _num_outputs(model: nn.Module, x: np.ndarray) -> int:
    try:
        with torch.no_grad():
            out = model(torch.from_numpy(x))
    except RuntimeError as error:
        raise BadInputError(
            f"the model does not accept the data's examples of shape {list(x.shape[1:])} "
            f"({str(error).splitlines()[0]})"
        ) from error
    return int(out.shape[-1])


def evaluate_onnx(
    onnx_path: str | os.PathLike[str],
    config: EvalConfig,
    *,
    progress: ProgressHook | None = None,
) -> EvalResult:
    """Black-box evaluation of any ONNX file through ONNX Runtime: score-based attacks only."""
    config = config.resolved()
    path = Path(onnx_path)
    onnx = OnnxClassifier(path)
    sample = load_dataset(config.data).subset(1)
    onnx.check_input_shape(sample.x.shape[1:], source=f"data set {config.data!r}")
    num_classes = int(onnx.predict(sample.x).shape[1])
    data = load_data(config, num_classes=num_classes, input_shape=None)
    identity = model_identity(path)
    info = {
        "kind": "onnx",
        "path": str(path),
        "name": path.stem,
        "version": None,
        "onnx": path.name,
        "onnx_sha256": identity["files"].get(path.name),
        "manifest_root": identity["manifest_root"],
        "hash_algorithm": identity["hash_algorithm"],
    }
    return run_evaluation(
        torch_model=None, onnx=onnx, data=data, config=config, model_info=info, progress=progress
    )


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
