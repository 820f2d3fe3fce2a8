"""What an evaluation found: :class:`EvalResult` (what reports and certificates read), one
:class:`AttackResult` per attack and eps, and the :class:`Samples` the HTML grid shows.

>>> from modelguard.robustness.results import AttackResult
>>> row = AttackResult("pgd", 0.1, "pytorch", {}, 0.5, 0.4, 0.3, 0.1, 100, 1.0, n=10)
>>> row.to_dict()["robust"]["n"]
10

What belongs here: the result types and how they serialize (``to_dict``, ``summary``,
``results_dict``, what recertify compares); no torch, no computation of the numbers (that is
:mod:`modelguard.robustness.runner` and :mod:`modelguard.robustness.evaluate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelguard.errors import BadInputError, VerificationError
from modelguard.robustness.config import EVAL_VERSION, EvalConfig, proportion


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
