"""Label-flip poisoning audit: find training examples whose labels are likely wrong.

>>> from modelguard.audits.poisoning import PoisoningConfig, audit_poisoning
>>> from modelguard.audits.training import Recipe
>>> result = audit_poisoning("digits:train", Recipe("digits_mlp"),
...                          PoisoningConfig(simulate_flip=0.1, seed=0))   # doctest: +SKIP
>>> result.simulation["precision"], result.simulation["recall"]            # doctest: +SKIP
(0.93, 0.9)

Confident learning (Northcutt, Jiang and Chuang, JAIR 2021) on out-of-sample predicted
probabilities: the audited architecture is trained on K-1 folds and predicts the held-out
fold, so no example is judged by a model that saw its label; cleanlab's
``find_label_issues`` (``prune_by_noise_rate``) then estimates the joint distribution of
given and true labels and flags the examples most likely to sit off its diagonal.

``simulate_flip`` first flips a known random fraction of the labels (each to a uniformly
chosen other class, seeded) and reports precision and recall of the flagged set against
the flips; ``retrain`` compares test accuracy of the architecture trained on the poisoned,
the cleaned (flagged examples removed) and, when the flips are known, the clean labels
(``retrain_epochs`` may train those longer than the cross-validation models: a model that
fits its training labels longer memorises more of the flips, which is what the comparison
is meant to show; the cross-validation models should stop before that).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from modelguard.audits.report import AuditRun, finish_audit
from modelguard.audits.training import Recipe, dataset_info, load_audited_model, probabilities
from modelguard.errors import BadInputError
from modelguard.keys import PrivateKey
from modelguard.robustness.data import Dataset, load_dataset

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning")


@dataclass(frozen=True)
class PoisoningConfig:
    """Everything that determines the audit's numbers (recorded in the attestation)."""

    folds: int = 5
    seed: int = 0
    simulate_flip: float | None = None
    retrain: bool = False
    test: str | None = None  # data set spec for --retrain accuracies
    retrain_epochs: int | None = None  # epochs of the retrained models (default: the recipe's)
    filter_by: str = "prune_by_noise_rate"
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise BadInputError(f"--folds must be >= 2, got {self.folds}")
        if self.simulate_flip is not None and not 0 < self.simulate_flip < 1:
            raise BadInputError(f"--simulate-flip must be in (0, 1), got {self.simulate_flip}")
        if self.filter_by not in FILTERS:
            raise BadInputError(f"--filter-by must be one of {', '.join(FILTERS)}")
        if self.retrain and self.test is None:
            raise BadInputError("--retrain needs --test DATA to measure accuracy on")
        if self.retrain_epochs is not None and self.retrain_epochs < 1:
            raise BadInputError(f"--retrain-epochs must be >= 1, got {self.retrain_epochs}")
        if self.limit is not None and self.limit <= 0:
            raise BadInputError(f"--limit must be positive, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PoisoningResult:
    config: PoisoningConfig
    recipe: Recipe
    data: dict[str, Any]
    audited_data: dict[str, Any]  # the labels audited (after the simulated flips, if any)
    flagged: list[int]  # indices into the data set, most suspicious first
    suggested: list[int]  # the class the cross-validated models predict for each flagged one
    given: list[int]  # the label each flagged example carries
    cv_accuracy: float  # out-of-fold accuracy against the audited labels
    per_class: dict[str, int]
    simulation: dict[str, Any] | None = None
    retrain: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)

    @property
    def issue_rate(self) -> float:
        return len(self.flagged) / int(self.data["count"])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "examples": int(self.data["count"]),
            "flagged": len(self.flagged),
            "issue_rate": self.issue_rate,
            "cv_accuracy": self.cv_accuracy,
        }
        if self.simulation is not None:
            out["precision"] = self.simulation["precision"]
            out["recall"] = self.simulation["recall"]
        if self.retrain is not None:
            out["retrain"] = {k: v["accuracy"] for k, v in self.retrain["accuracy"].items()}
        return out

    def results_dict(self) -> dict[str, Any]:
        return {
            "flagged": self.flagged,
            "given_labels": self.given,
            "suggested_labels": self.suggested,
            "per_class": self.per_class,
            "cv_accuracy": self.cv_accuracy,
            "simulation": self.simulation,
            "retrain": self.retrain,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit": "poisoning",
            "config": self.config.to_dict(),
            "recipe": self.recipe.to_dict(),
            "data": self.data,
            "audited_data": self.audited_data,
            "results": self.results_dict(),
            "summary": self.summary(),
            "timing": self.timing,
        }


def flip_labels(
    y: np.ndarray, rate: float, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, sorted flipped indices): ``round(rate * N)`` labels moved to another class."""
    rng = np.random.default_rng(seed)
    count = round(rate * len(y))
    flipped = np.sort(rng.choice(len(y), size=count, replace=False))
    noisy = y.copy()
    shift = rng.integers(1, num_classes, size=count)  # never 0: the label really changes
    noisy[flipped] = (y[flipped] + shift) % num_classes
    return noisy, flipped


def cross_val_probabilities(data: Dataset, recipe: Recipe, *, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold predicted probabilities, shape (N, classes), stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(data.y, minlength=len(data.classes))
    if counts[counts > 0].min() < folds:
        raise BadInputError(
            f"{data.name}: every class needs at least {folds} examples for {folds}-fold "
            f"cross-validation (smallest class has {int(counts[counts > 0].min())})"
        )
    out = np.zeros((len(data), len(data.classes)), dtype=np.float64)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (train_idx, held_idx) in enumerate(splitter.split(data.x, data.y)):
        part = Dataset(
            data.x[train_idx], data.y[train_idx], data.classes, f"{data.name}/fold{fold}"
        )
        model = recipe.train(part, seed=seed + fold)
        probs = probabilities(model, data.x[held_idx])
        if probs.shape[1] != len(data.classes):
            raise BadInputError(
                f"the architecture has {probs.shape[1]} outputs, the data {len(data.classes)} classes"
            )
        out[held_idx] = probs
    return out


def find_label_issues(labels: np.ndarray, probs: np.ndarray, filter_by: str) -> np.ndarray:
    """Indices of likely label errors, most suspicious (lowest self-confidence) first."""
    from cleanlab.filter import find_label_issues as cleanlab_find

    ranked = cleanlab_find(
        labels=labels,
        pred_probs=probs,
        filter_by=filter_by,
        return_indices_ranked_by="self_confidence",
    )
    return np.asarray(ranked, dtype=np.int64)


def _accuracy(recipe: Recipe, train: Dataset, test: Dataset, seed: int) -> float:
    model = recipe.train(train, seed=seed)
    return float(np.mean(probabilities(model, test.x).argmax(1) == test.y))


def audit_poisoning(data_spec: str, recipe: Recipe, config: PoisoningConfig) -> PoisoningResult:
    """Run the audit on the data set ``data_spec`` with the architecture ``recipe``."""
    timing: dict[str, float] = {}
    original = load_dataset(data_spec).subset(config.limit)
    y_clean = original.y
    flipped: np.ndarray | None = None
    audited = original
    if config.simulate_flip is not None:
        noisy, flipped = flip_labels(
            y_clean, config.simulate_flip, len(original.classes), config.seed
        )
        audited = Dataset(original.x, noisy, original.classes, f"{original.name}+flips")
    started = time.perf_counter()
    probs = cross_val_probabilities(audited, recipe, folds=config.folds, seed=config.seed)
    timing["cross_validation"] = time.perf_counter() - started
    flagged = find_label_issues(audited.y, probs, config.filter_by)
    predicted = probs.argmax(1)
    per_class = np.bincount(audited.y[flagged], minlength=len(audited.classes))
    result = PoisoningResult(
        config=config,
        recipe=recipe,
        data=dataset_info(original, data_spec),
        audited_data=dataset_info(audited, data_spec),
        flagged=[int(i) for i in flagged],
        suggested=[int(predicted[i]) for i in flagged],
        given=[int(audited.y[i]) for i in flagged],
        cv_accuracy=float(np.mean(predicted == audited.y)),
        per_class={audited.classes[k]: int(v) for k, v in enumerate(per_class)},
        timing=timing,
    )
    if flipped is not None:
        hits = len(np.intersect1d(flagged, flipped))
        result.simulation = {
            "rate": config.simulate_flip,
            "seed": config.seed,
            "flipped": len(flipped),
            "flagged": len(flagged),
            "true_positives": hits,
            "precision": hits / len(flagged) if len(flagged) else 0.0,
            "recall": hits / len(flipped) if len(flipped) else 1.0,
        }
    if config.retrain:
        assert config.test is not None
        started = time.perf_counter()
        test = load_dataset(config.test)
        retrainer = replace(recipe, epochs=config.retrain_epochs or recipe.epochs)
        keep = np.setdiff1d(np.arange(len(audited)), flagged)
        cleaned = Dataset(
            audited.x[keep], audited.y[keep], audited.classes, f"{audited.name}-cleaned"
        )
        sets = {"poisoned" if flipped is not None else "given": audited, "cleaned": cleaned}
        if flipped is not None:
            sets["clean"] = original
        result.retrain = {
            "test": dataset_info(test, config.test),
            "accuracy": {
                name: {
                    "examples": len(part),
                    "accuracy": _accuracy(retrainer, part, test, config.seed),
                }
                for name, part in sets.items()
            },
        }
        timing["retrain"] = time.perf_counter() - started
    return result


def run_poisoning_audit(
    data_spec: str,
    config: PoisoningConfig,
    out_dir: str | os.PathLike[str],
    *,
    model_dir: str | os.PathLike[str] | None = None,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    epochs: int = 30,
    lr: float = 2e-3,
    batch_size: int = 64,
    key: PrivateKey | None = None,
    ledger_url: str | None = None,
    record: bool = True,
) -> AuditRun:
    """``modelguard audit poisoning`` as one call: audit, write the reports, sign and record.

    The architecture comes from ``model_dir``'s card (the attestation is then bound to that
    model's manifest root too) or from ``arch`` (trusted: the caller named it).
    """
    model_info = None
    if model_dir is not None:
        audited = load_audited_model(
            model_dir,
            arch=arch,
            arch_kwargs=arch_kwargs,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
        )
        recipe, model_info = audited.recipe, audited.info
    elif arch is not None:
        recipe = Recipe(
            arch, dict(arch_kwargs or {}), epochs=epochs, lr=lr, batch_size=batch_size, trusted=True
        )
    else:
        raise BadInputError("give --model MODEL_DIR or --arch FACTORY")
    result = audit_poisoning(data_spec, recipe, config)
    datasets = {"data": result.data}
    if result.retrain is not None:
        datasets["test"] = result.retrain["test"]
    rows = list(zip(result.flagged, result.given, result.suggested, strict=True))
    return finish_audit(
        "poisoning",
        result.to_dict(),
        model=model_info,
        datasets=datasets,
        tables=[
            ("flagged examples (most suspicious first)", ["index", "label", "predicted"], rows)
        ],
        out_dir=out_dir,
        key=key,
        ledger_url=ledger_url,
        record=record,
    )
