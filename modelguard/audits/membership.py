"""Membership-inference audit: can an attacker tell the model's training examples from others?

>>> from modelguard.audits.membership import MembershipConfig, audit_membership
>>> result = audit_membership(model, recipe, members, nonmembers,
...                           MembershipConfig(reference_models=4))   # doctest: +SKIP
>>> result.summary()["auc"]                                           # doctest: +SKIP
0.71

Two attacks, both scored by ROC AUC and by TPR at 1% and 0.1% FPR (the low-FPR regime
Carlini et al. 2022 argue is what matters):

- **loss threshold** (Yeom et al. 2018): members have lower loss; score = -cross-entropy.
- **reference models** (offline LiRA, Carlini et al. 2022, in the spirit of RMIA): ``k``
  models of the same architecture and recipe are trained on random halves of a reference
  population that contains none of the audited examples; an example's score is how far the
  target's logit-scaled confidence ``log p_y - log(1 - p_y)`` sits above the reference
  models' mean for that same example, in units of the reference spread (global variance,
  as LiRA recommends for few reference models). It calibrates away how hard each example is.

The reference population is ``reference`` when given; otherwise the non-members are split
(seeded) into a half that trains the reference models and a half that is audited. Members
are never shown to a reference model. The split is recorded in the result.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelguard.audits.report import AuditRun, finish_audit
from modelguard.audits.training import Recipe, dataset_info, load_audited_model, logits
from modelguard.errors import BadInputError
from modelguard.keys import PrivateKey
from modelguard.robustness.data import Dataset

LogitsFn = Callable[[np.ndarray], np.ndarray]
FPR_POINTS = (0.01, 0.001)


@dataclass(frozen=True)
class MembershipConfig:
    reference_models: int = 4  # k; 0 runs the loss attack only
    reference_fraction: float = 0.5  # share of the reference population each one trains on
    seed: int = 0
    limit: int | None = None  # audit the first N members and N non-members only

    def __post_init__(self) -> None:
        if self.reference_models < 0:
            raise BadInputError(f"--reference-models must be >= 0, got {self.reference_models}")
        if not 0 < self.reference_fraction <= 1:
            raise BadInputError("--reference-fraction must be in (0, 1]")
        if self.limit is not None and self.limit <= 0:
            raise BadInputError(f"--limit must be positive, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def roc_metrics(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, Any]:
    """ROC AUC and the best TPR at FPR <= 1% and 0.1% (higher score = "member")."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.concatenate([np.ones(len(member_scores)), np.zeros(len(nonmember_scores))])
    scores = np.concatenate([member_scores, nonmember_scores])
    fpr, tpr, _ = roc_curve(truth, scores)
    out: dict[str, Any] = {"auc": float(roc_auc_score(truth, scores))}
    for point in FPR_POINTS:
        out[f"tpr_at_{point:g}_fpr"] = float(tpr[fpr <= point].max(initial=0.0))
    # with N non-members the smallest non-zero FPR is 1/N: below it "TPR at x% FPR" means
    # "at zero false positives"
    out["fpr_resolution"] = 1.0 / len(nonmember_scores)
    return out


def cross_entropy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return np.asarray(log_norm - z[np.arange(len(y)), y])


def scaled_confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``log p_y - log(1 - p_y)`` computed stably as ``z_y - logsumexp_{j != y} z_j``."""
    own = logits[np.arange(len(y)), y]
    others = logits.copy()
    others[np.arange(len(y)), y] = -np.inf
    top = others.max(axis=1, keepdims=True)
    rest = np.log(np.exp(others - top).sum(axis=1)) + top[:, 0]
    return np.asarray(own - rest)


@dataclass
class MembershipResult:
    config: MembershipConfig
    recipe: Recipe | None
    data: dict[str, dict[str, Any]]  # role -> dataset info
    split: dict[str, Any]
    attacks: dict[str, dict[str, Any]]
    target_loss: dict[str, float]
    timing: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        best = max(self.attacks, key=lambda name: self.attacks[name]["auc"])
        return {
            "auc": self.attacks[best]["auc"],
            "strongest_attack": best,
            **{f"{name}_auc": row["auc"] for name, row in self.attacks.items()},
            "tpr_at_0.01_fpr": max(r["tpr_at_0.01_fpr"] for r in self.attacks.values()),
            "tpr_at_0.001_fpr": max(r["tpr_at_0.001_fpr"] for r in self.attacks.values()),
            "members": self.split["members"],
            "nonmembers": self.split["nonmembers_audited"],
        }

    def results_dict(self) -> dict[str, Any]:
        return {"split": self.split, "attacks": self.attacks, "target_loss": self.target_loss}

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit": "membership",
            "config": self.config.to_dict(),
            "recipe": self.recipe.to_dict() if self.recipe else None,
            "data": self.data,
            "results": self.results_dict(),
            "summary": self.summary(),
            "timing": self.timing,
        }


def audit_membership(
    target: LogitsFn,
    recipe: Recipe | None,
    members: Dataset,
    nonmembers: Dataset,
    config: MembershipConfig,
    *,
    reference: Dataset | None = None,
    specs: dict[str, str] | None = None,
) -> MembershipResult:
    """Attack ``target`` (inputs in [0, 1] -> logits) on ``members`` vs ``nonmembers``.

    ``recipe`` trains the reference models (required when ``config.reference_models > 0``);
    ``specs`` are the data set specs the user gave (recorded with the digests).
    """
    specs = specs or {}
    members = members.subset(config.limit)
    nonmembers = nonmembers.subset(config.limit)
    if members.x.shape[1:] != nonmembers.x.shape[1:]:
        raise BadInputError("members and non-members have examples of different shapes")
    k = config.reference_models
    if k and recipe is None:
        raise BadInputError("the reference-model attack needs the architecture (--arch)")
    data = {
        "members": dataset_info(members, specs.get("members", members.name)),
        "nonmembers": dataset_info(nonmembers, specs.get("nonmembers", nonmembers.name)),
    }
    audited = nonmembers
    population: Dataset | None = reference
    split: dict[str, Any] = {"members": len(members), "seed": config.seed}
    if k and reference is None:
        order = np.random.default_rng(config.seed).permutation(len(nonmembers))
        half = len(order) // 2
        if half < 2:
            raise BadInputError("too few non-members to split off a reference population")
        ref_idx, audit_idx = np.sort(order[:half]), np.sort(order[half:])
        population = Dataset(
            nonmembers.x[ref_idx], nonmembers.y[ref_idx], nonmembers.classes, "reference"
        )
        audited = Dataset(
            nonmembers.x[audit_idx], nonmembers.y[audit_idx], nonmembers.classes, "audited"
        )
        split["reference_from"] = "nonmembers"
        split["nonmember_reference_indices"] = [int(i) for i in ref_idx]
    elif reference is not None:
        data["reference"] = dataset_info(reference, specs.get("reference", reference.name))
        split["reference_from"] = "reference"
    split["nonmembers_audited"] = len(audited)
    split["reference_population"] = len(population) if population is not None else 0

    timing: dict[str, float] = {}
    x = np.concatenate([members.x, audited.x])
    y = np.concatenate([members.y, audited.y])
    n_in = len(members)
    started = time.perf_counter()
    z_target = np.asarray(target(x), dtype=np.float64)
    if z_target.shape != (len(y), z_target.shape[1]) or int(y.max()) >= z_target.shape[1]:
        raise BadInputError(
            f"the model's outputs {list(z_target.shape)} do not fit the data's labels"
        )
    loss = cross_entropy(z_target, y)
    attacks = {"loss": roc_metrics(-loss[:n_in], -loss[n_in:])}
    timing["loss_attack"] = time.perf_counter() - started
    if k:
        assert recipe is not None and population is not None
        started = time.perf_counter()
        rng = np.random.default_rng(config.seed + 1)
        size = max(1, math.ceil(config.reference_fraction * len(population)))
        phis = []
        for i in range(k):
            pick = np.sort(rng.choice(len(population), size=size, replace=False))
            part = Dataset(
                population.x[pick], population.y[pick], population.classes, f"reference{i}"
            )
            model = recipe.train(part, seed=config.seed + 1 + i)
            phis.append(scaled_confidence(logits(model, x), y))
        stack = np.stack(phis)
        mean = stack.mean(axis=0)
        spread = math.sqrt(float(stack.var(axis=0).mean())) if k > 1 else 1.0
        score = (scaled_confidence(z_target, y) - mean) / max(spread, 1e-6)
        attacks["reference"] = {
            **roc_metrics(score[:n_in], score[n_in:]),
            "models": k,
            "train_size": size,
            "global_std": spread,
        }
        timing["reference_attack"] = time.perf_counter() - started
    return MembershipResult(
        config=config,
        recipe=recipe,
        data=data,
        split=split,
        attacks=attacks,
        target_loss={
            "members_mean": float(loss[:n_in].mean()),
            "nonmembers_mean": float(loss[n_in:].mean()),
        },
        timing=timing,
    )


def run_membership_audit(
    model_path: str | os.PathLike[str],
    members_spec: str,
    nonmembers_spec: str,
    config: MembershipConfig,
    out_dir: str | os.PathLike[str],
    *,
    reference_spec: str | None = None,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    epochs: int = 30,
    lr: float = 2e-3,
    batch_size: int = 64,
    key: PrivateKey | None = None,
    ledger_url: str | None = None,
    record: bool = True,
) -> AuditRun:
    """``modelguard audit membership`` as one call: attack, write the reports, sign and record.

    ``model_path``: a model directory (the PyTorch model answers; its card names the
    architecture the reference models use) or an ``.onnx`` file (ONNX Runtime answers;
    the reference models then need ``arch``). ``epochs``/``lr``/``batch_size`` are the
    reference models' recipe: match the audited model's training for a calibrated attack.
    """
    from modelguard.robustness.data import load_dataset

    path = Path(model_path)
    target: LogitsFn
    if path.is_dir():
        audited = load_audited_model(
            path, arch=arch, arch_kwargs=arch_kwargs, epochs=epochs, lr=lr, batch_size=batch_size
        )
        recipe: Recipe | None = audited.recipe
        info = audited.info
        torch_model = audited.model

        def target(x: np.ndarray) -> np.ndarray:
            return logits(torch_model, x)

    elif path.is_file() and path.suffix == ".onnx":
        from modelguard.robustness.loaders import model_identity
        from modelguard.robustness.onnx_model import OnnxClassifier

        session = OnnxClassifier(path)
        target = session.predict
        recipe = (
            Recipe(
                arch,
                dict(arch_kwargs or {}),
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                trusted=True,
            )
            if arch
            else None
        )
        identity = model_identity(path)
        info = {
            "name": path.stem,
            "path": str(path),
            "manifest_root": identity["manifest_root"],
            "hash_algorithm": identity["hash_algorithm"],
        }
    else:
        raise BadInputError("expected a model directory or an .onnx file", path=str(path))
    specs = {"members": members_spec, "nonmembers": nonmembers_spec}
    reference = None
    if reference_spec is not None:
        specs["reference"] = reference_spec
        reference = load_dataset(reference_spec)
    result = audit_membership(
        target,
        recipe,
        load_dataset(members_spec),
        load_dataset(nonmembers_spec),
        config,
        reference=reference,
        specs=specs,
    )
    rows = [
        [name, row["auc"], row["tpr_at_0.01_fpr"], row["tpr_at_0.001_fpr"]]
        for name, row in result.attacks.items()
    ]
    return finish_audit(
        "membership",
        result.to_dict(),
        model=info,
        datasets=result.data,
        tables=[("attacks", ["attack", "ROC AUC", "TPR at 1% FPR", "TPR at 0.1% FPR"], rows)],
        out_dir=out_dir,
        key=key,
        ledger_url=ledger_url,
        record=record,
    )
