"""The evaluation's run loop: every attack at every eps, one :class:`EpsTally` per eps.

>>> from modelguard.robustness.runner import EpsTally
>>> import numpy as np
>>> tally = EpsTally.start(0.1, np.array([False, False]), np.array([3, 4]), np.zeros((2, 1)), 1)
>>> tally.add("pgd", np.array([True, False]), np.array([5, 4]), np.ones((2, 1)))
>>> tally.row(np.array([3, 4]), 10)["robust_accuracy"], tally.shown_by
(0.5, ['pgd'])

:class:`Evaluator` builds each attack against the model it targets (gradient attacks: the
PyTorch model; score-based: the ONNX Runtime session), crafts (shared across torchrun
ranks), projects into the threat model's ball, scores on both models (:class:`Parity`
records their agreement) and adds the result to that eps's :class:`EpsTally`. What belongs
here: the loop and its per-attack, per-eps bookkeeping; loading is
:mod:`modelguard.robustness.loaders`, assembling the result (soundness, certified sections)
:mod:`modelguard.robustness.evaluate`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness import distributed
from modelguard.robustness.attacks import ATTACKS, Attack, build_attack
from modelguard.robustness.attacks.base import Classifier, project
from modelguard.robustness.config import EVAL_DEFAULTS, EvalConfig
from modelguard.robustness.data import Dataset
from modelguard.robustness.loaders import load_surrogate
from modelguard.robustness.onnx_model import OnnxClassifier
from modelguard.robustness.progress import ProgressHook
from modelguard.robustness.results import AttackResult, Samples
from modelguard.robustness.stats import Proportion

SAMPLE_COUNT = 8


def predict_logits(
    model: Classifier, x: np.ndarray, batch_size: int, device: torch.device
) -> np.ndarray:
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


class Parity:
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
class Target:
    """The models under evaluation: PyTorch (white-box) and/or ONNX Runtime (deployed)."""

    torch_model: nn.Module | None
    onnx: OnnxClassifier | None
    device: torch.device


@dataclass
class EpsTally:
    """One eps's worst case over the portfolio so far: which examples are broken (by any
    attack, on either model), the prediction that broke each, and the examples shown."""

    eps: float
    broken: np.ndarray  # per example: wrong clean, or fooled by some attack so far
    worst_pred: np.ndarray  # the prediction that first broke it (clean prediction otherwise)
    shown_x: np.ndarray  # the first SAMPLE_COUNT examples, adversarial where broken
    shown_pred: np.ndarray
    shown_by: list[str]  # the attack that broke each shown example, "" if none
    broken_by: dict[str, int] = field(default_factory=dict)  # attack -> examples it fooled

    @classmethod
    def start(
        cls, eps: float, broken: np.ndarray, pred: np.ndarray, x: np.ndarray, n_show: int
    ) -> EpsTally:
        return cls(
            eps, broken.copy(), pred.copy(), x[:n_show].copy(), pred[:n_show].copy(), [""] * n_show
        )

    def add(self, name: str, fooled: np.ndarray, pred: np.ndarray, x_adv: np.ndarray) -> None:
        """The examples attack ``name`` fooled; ``pred`` is what the attacked model said."""
        newly = fooled & ~self.broken
        self.worst_pred[newly] = pred[newly]
        for i in np.nonzero(newly[: len(self.shown_by)])[0]:
            self.shown_x[i] = x_adv[i]
            self.shown_pred[i] = pred[i]
            self.shown_by[i] = name
        self.broken |= fooled
        self.broken_by[name] = int(fooled.sum())

    def add_replay(self, fooled: np.ndarray, pred: np.ndarray) -> None:
        """The examples the ONNX graph got wrong when a PyTorch-crafted attack was replayed."""
        newly = fooled & ~self.broken
        self.worst_pred[newly] = pred[newly]
        self.broken |= fooled

    def row(self, y: np.ndarray, k: int) -> dict[str, Any]:
        """The worst-case row of the result (``worst_case[i]``)."""
        return {
            "eps": self.eps,
            "robust_accuracy": float(np.mean(~self.broken)),
            "robust": Proportion.of(correct=int((~self.broken).sum()), n=len(y)).to_dict(),
            "broken_by": self.broken_by,
            "confusion": confusion(y, self.worst_pred, k),
        }


class Evaluator:
    def __init__(
        self,
        target: Target,
        data: Dataset,
        config: EvalConfig,
        progress: ProgressHook | None,
    ) -> None:
        self.target = target
        self.data = data
        self.config = config
        self.progress = progress
        self.num_classes = len(data.classes)
        self.parity = Parity(config.parity_atol, config.parity_rtol)
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
        return predict_logits(
            self.target.torch_model, x, self.config.batch_size, self.target.device
        )

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
                kwargs["surrogate"] = load_surrogate(kwargs, self.target.torch_model)
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
        clean_broken = ~self.clean_correct
        onnx_clean_ok = onnx_pred == y if onnx_pred is not None else None
        if onnx_clean_ok is not None:
            clean_broken = clean_broken | ~onnx_clean_ok
        n_show = min(SAMPLE_COUNT, len(y))
        tallies = {
            eps: EpsTally.start(eps, clean_broken, primary_pred, data.x, n_show)
            for eps in config.eps
        }
        rows: list[AttackResult] = []
        for name in config.attacks:
            params = config.attack_params[name]
            unbounded: np.ndarray | None = None
            for eps in config.eps:
                started = time.perf_counter()
                tally = tallies[eps]
                attack, where = self.build(name, eps, params)
                attacked = np.ones(len(y), dtype=bool)
                if config.cascade:  # only the examples no earlier attack broke
                    attacked = (
                        np.logical_or.reduce([~t.broken for t in tallies.values()])
                        if ATTACKS[name].minimum_norm
                        else ~tally.broken
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
                tally.add(name, fooled, target_pred, x_adv)
                onnx_acc = None
                if o_pred is not None and where == "pytorch":
                    tally.add_replay(self.clean_correct & attacked & (o_pred != y), o_pred)
                    onnx_acc = float(np.mean(self.clean_correct & attacked & (o_pred == y)))
                if config.cascade:
                    # In a cascade an attack sees only the survivors: its row reports the
                    # cascade's robust accuracy so far (this attack and every earlier one).
                    robust = ~tally.broken
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
                        config=threat_config(attack.config(), eps, config.norm),
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
        samples = Samples(
            x=data.x[:n_show].copy(), y=y[:n_show].copy(), clean_pred=primary_pred[:n_show].copy()
        )
        for eps, tally in tallies.items():
            samples.adversarial[eps] = (tally.shown_x, tally.shown_pred, tally.shown_by)
        return {
            "clean_accuracy": float(np.mean(self.clean_correct)),
            "onnx_clean_accuracy": float(np.mean(onnx_clean_ok))
            if onnx_clean_ok is not None
            else None,
            "clean_confusion": confusion(y, primary_pred, k),
            "attacks": rows,
            "worst_case": [tally.row(y, k) for tally in tallies.values()],
            "samples": samples,
        }


def threat_config(config: dict[str, Any], eps: float, norm: str) -> dict[str, Any]:
    """An attack's config plus the threat model its result was projected into."""
    return {**config, "threat_eps": eps, "threat_norm": norm}
