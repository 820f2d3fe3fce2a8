"""Sanity checks on an evaluation, after Carlini et al. 2019 ("On Evaluating Adversarial
Robustness", section 5), written into the certificate as pass / warn / skip.

>>> from modelguard.robustness.soundness import Check
>>> Check("pgd_convergence", "pass", "doubling PGD steps changed robust accuracy by 0.0 points").to_dict()["status"]
'pass'

A ``warn`` means the numbers may overstate robustness (typically gradient masking); the
evaluation still completes, and the certificate carries the warning for a policy or a
reader to act on. ``skip`` means the check does not apply (e.g. no black-box attack in the
portfolio, or no gradients in a black-box evaluation) and says why.

Checks (tolerances in accuracy points, 1 point = 0.01):

- ``iterative_ge_single_step``: PGD robust accuracy <= FGSM robust accuracy + 1 point, at
  every evaluated eps;
- ``monotone_in_eps``: robust accuracy of every attack and of the worst case does not rise
  by more than 1 point as eps grows;
- ``large_eps_below_chance``: margin-PGD at a large budget (Linf 0.5: every pixel can reach
  mid-grey; L2 4.0) brings robust accuracy to at most chance (1 / classes) + 1 point;
- ``pgd_convergence``: doubling PGD's steps changes robust accuracy by < 1 point (middle eps);
- ``black_box_not_stronger``: no score-based attack beats the best gradient attack by more
  than 1 point at any eps (else the gradients are broken); in a cascade (profiles), the
  score-based attacks break at most 1 point of examples that every gradient attack missed;
- ``input_gradients``: no NaN input gradient, and at most 1% of correctly classified inputs
  with an exactly-zero cross-entropy gradient (saturated softmax);
- ``ce_vs_margin``: cross-entropy PGD is not weaker than logit-margin PGD by more than
  5 points at any eps (masked softmax, defensive distillation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from modelguard.robustness.attacks import ATTACKS

POINT = 0.01
LARGE_EPS = {"linf": 0.5, "l2": 4.0}
ZERO_GRADIENT_FRACTION = 0.01
CE_MARGIN_GAP = 0.05
ORDER = (
    "iterative_ge_single_step",
    "monotone_in_eps",
    "large_eps_below_chance",
    "pgd_convergence",
    "black_box_not_stronger",
    "input_gradients",
    "ce_vs_margin",
)


@dataclass
class Check:
    name: str
    status: str  # "pass" | "warn" | "skip"
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "values": self.values,
        }


class EvaluationContext(Protocol):
    """What the checks need from the evaluator (:class:`modelguard.robustness.runner.Evaluator`)."""

    config: Any
    data: Any
    clean_correct: np.ndarray

    @property
    def num_classes(self) -> int: ...

    def primary(self) -> Callable[[torch.Tensor], torch.Tensor]: ...

    def robust_accuracy(self, name: str, eps: float, **overrides: Any) -> float: ...


def _table(outcome: dict[str, Any]) -> dict[str, dict[float, float]]:
    table: dict[str, dict[float, float]] = {}
    for row in outcome["attacks"]:
        table.setdefault(row.attack, {})[row.eps] = row.robust_accuracy
    table["worst_case"] = {r["eps"]: r["robust_accuracy"] for r in outcome["worst_case"]}
    return table


def _threat(ctx: EvaluationContext) -> dict[str, Any]:
    """PGD runs in the evaluation's threat model (PGD's own default is Linf)."""
    return {} if ctx.config.norm == "linf" else {"norm": ctx.config.norm}


def _points(value: float) -> float:
    return round(value / POINT, 2)


def check_iterative(ctx: EvaluationContext, eps_list: list[float]) -> Check:
    if ctx.config.norm != "linf":
        return Check(
            "iterative_ge_single_step", "skip", "FGSM is a Linf attack; the threat model is L2"
        )
    values = {}
    bad = []
    for eps in eps_list:
        fgsm, pgd = ctx.robust_accuracy("fgsm", eps), ctx.robust_accuracy("pgd", eps)
        values[str(eps)] = {"fgsm": fgsm, "pgd": pgd}
        if pgd > fgsm + POINT:
            bad.append(f"eps={eps}: PGD {pgd:.3f} > FGSM {fgsm:.3f}")
    if bad:
        return Check(
            "iterative_ge_single_step", "warn",
            "iterative attack weaker than single-step (gradient masking?): " + "; ".join(bad), values,
        )  # fmt: skip
    return Check(
        "iterative_ge_single_step", "pass", "PGD at least as strong as FGSM at every eps", values
    )


def check_monotone(table: dict[str, dict[float, float]]) -> Check:
    bad = []
    for name, row in table.items():
        accs = [row[e] for e in sorted(row)]
        for (e0, a0), (e1, a1) in zip(
            zip(sorted(row), accs, strict=True),
            zip(sorted(row)[1:], accs[1:], strict=True),
            strict=False,
        ):
            if a1 > a0 + POINT:
                bad.append(f"{name}: {a0:.3f} at eps={e0} -> {a1:.3f} at eps={e1}")
    if bad:
        return Check("monotone_in_eps", "warn", "robust accuracy rises with eps: " + "; ".join(bad))
    return Check(
        "monotone_in_eps", "pass", "robust accuracy is non-increasing in eps for every attack"
    )


def check_large_eps(ctx: EvaluationContext) -> Check:
    eps = LARGE_EPS[ctx.config.norm]
    chance = 1.0 / ctx.num_classes
    steps = int(ctx.config.attack_params.get("pgd-margin", {}).get("steps", 20))
    acc = ctx.robust_accuracy("pgd-margin", eps, steps=steps, **_threat(ctx))
    values = {"eps": eps, "norm": ctx.config.norm, "robust_accuracy": acc, "chance": chance}
    if acc > chance + POINT:
        return Check(
            "large_eps_below_chance", "warn",
            f"margin-PGD at {ctx.config.norm} eps={eps} leaves {acc:.3f} > chance {chance:.3f}: "
            "the attack can not even win an unrestricted game (broken gradients?)", values,
        )  # fmt: skip
    return Check(
        "large_eps_below_chance", "pass",
        f"margin-PGD at {ctx.config.norm} eps={eps} reaches {acc:.3f} <= chance {chance:.3f}", values,
    )  # fmt: skip


def check_convergence(ctx: EvaluationContext, eps: float) -> Check:
    steps = int(ctx.config.attack_params.get("pgd", {}).get("steps", 20))
    base = ctx.robust_accuracy("pgd", eps, steps=steps, **_threat(ctx))
    doubled = ctx.robust_accuracy("pgd", eps, steps=2 * steps, **_threat(ctx))
    change = abs(doubled - base)
    values = {
        "eps": eps,
        "steps": steps,
        "robust_accuracy": base,
        "doubled_steps_accuracy": doubled,
    }
    status = "pass" if change < POINT else "warn"
    detail = (
        f"doubling PGD steps ({steps} -> {2 * steps}) at eps={eps} changed robust accuracy by "
        f"{_points(change)} points" + ("" if status == "pass" else " (not converged)")
    )
    return Check("pgd_convergence", status, detail, values)


def check_black_box(
    table: dict[str, dict[float, float]],
    attacks: list[str],
    cascade: dict[float, dict[str, int]] | None = None,
    count: int = 1,
) -> Check:
    """``cascade``: per eps, how many examples each attack broke first (cascade mode)."""
    black = [a for a in attacks if ATTACKS[a].score_based]
    white = [a for a in attacks if not ATTACKS[a].score_based and not ATTACKS[a].minimum_norm]
    if not black or not white:
        return Check(
            "black_box_not_stronger", "skip",
            "needs both a score-based and an eps-bounded gradient attack in the portfolio",
        )  # fmt: skip
    bad, values = [], {}
    if cascade is not None:
        # A cascade's rows are cumulative: the signal is how many examples the score-based
        # attacks broke that every gradient attack before them had missed.
        for eps, first in sorted(cascade.items()):
            extra = sum(first.get(a, 0) for a in black) / count
            values[str(eps)] = {"broken_only_by_black_box": extra}
            if extra > POINT:
                bad.append(f"eps={eps}: black-box attacks alone broke {extra:.3f} more")
        if bad:
            return Check(
                "black_box_not_stronger", "warn",
                "score-based attacks break examples gradient attacks missed (gradient masking): "
                + "; ".join(bad), values,
            )  # fmt: skip
        return Check(
            "black_box_not_stronger", "pass",
            "score-based attacks broke at most 1 point beyond the gradient attacks", values,
        )  # fmt: skip
    for eps in sorted(table[black[0]]):
        best_white = min(table[a][eps] for a in white)
        best_black = min(table[a][eps] for a in black)
        values[str(eps)] = {"white_box": best_white, "black_box": best_black}
        if best_black < best_white - POINT:
            bad.append(f"eps={eps}: black-box {best_black:.3f} < white-box {best_white:.3f}")
    if bad:
        return Check(
            "black_box_not_stronger", "warn",
            "a score-based attack beats every gradient attack (gradient masking): " + "; ".join(bad),
            values,
        )  # fmt: skip
    return Check(
        "black_box_not_stronger", "pass", "gradient attacks at least as strong as black-box", values
    )


def check_gradients(ctx: EvaluationContext) -> Check:
    model = ctx.primary()
    x = torch.from_numpy(ctx.data.x[ctx.clean_correct])
    y = torch.from_numpy(ctx.data.y[ctx.clean_correct])
    if x.shape[0] == 0:
        return Check("input_gradients", "skip", "no correctly classified example")
    device = (
        next((p.device for p in model.parameters()), torch.device("cpu"))
        if isinstance(model, nn.Module)
        else torch.device("cpu")
    )
    zero = nan = 0
    for start in range(0, x.shape[0], ctx.config.batch_size):
        xb = x[start : start + ctx.config.batch_size].to(device).requires_grad_(True)
        yb = y[start : start + ctx.config.batch_size].to(device)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(xb), yb, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [xb])
        flat = grad.flatten(1)
        nan += int((~torch.isfinite(flat)).any(dim=1).sum())
        zero += int((flat == 0).all(dim=1).sum())
    fraction = zero / x.shape[0]
    values = {"examples": int(x.shape[0]), "zero_gradient": zero, "nan_gradient": nan}
    if nan or fraction > ZERO_GRADIENT_FRACTION:
        return Check(
            "input_gradients", "warn",
            f"{zero} of {x.shape[0]} correctly classified inputs have an all-zero and {nan} a NaN "
            "cross-entropy input gradient (saturated softmax: gradient masking)", values,
        )  # fmt: skip
    return Check(
        "input_gradients", "pass", f"input gradients finite and non-zero ({zero} zero)", values
    )


def check_ce_vs_margin(ctx: EvaluationContext, eps_list: list[float]) -> Check:
    bad, values = [], {}
    for eps in eps_list:
        ce = ctx.robust_accuracy("pgd", eps, **_threat(ctx))
        margin = ctx.robust_accuracy("pgd-margin", eps, **_threat(ctx))
        values[str(eps)] = {"pgd_ce": ce, "pgd_margin": margin}
        if ce > margin + CE_MARGIN_GAP:
            bad.append(f"eps={eps}: CE-PGD {ce:.3f} vs margin-PGD {margin:.3f}")
    if bad:
        return Check(
            "ce_vs_margin", "warn",
            "cross-entropy PGD much weaker than margin PGD (masked softmax / defensive "
            "distillation): " + "; ".join(bad), values,
        )  # fmt: skip
    return Check(
        "ce_vs_margin", "pass", "cross-entropy and margin PGD agree within 5 points", values
    )


def run_soundness_checks(ctx: EvaluationContext, outcome: dict[str, Any]) -> list[Check]:
    """Every check; extra attack runs go through ``ctx.robust_accuracy`` (cached)."""
    table = _table(outcome)
    eps_list = list(ctx.config.eps)
    cascade = (
        {r["eps"]: r["broken_by"] for r in outcome["worst_case"]} if ctx.config.cascade else None
    )
    checks = [
        check_monotone(table),
        check_black_box(table, list(ctx.config.attacks), cascade, len(ctx.data.y)),
    ]
    if not isinstance(ctx.primary(), nn.Module):
        reason = "black-box evaluation: no gradients to check"
        for name in (
            "iterative_ge_single_step",
            "large_eps_below_chance",
            "pgd_convergence",
            "input_gradients",
            "ce_vs_margin",
        ):
            checks.append(Check(name, "skip", reason))
        return sorted(checks, key=lambda c: ORDER.index(c.name))
    middle = eps_list[len(eps_list) // 2]
    checks += [
        check_iterative(ctx, eps_list),
        check_large_eps(ctx),
        check_convergence(ctx, middle),
        check_gradients(ctx),
        check_ce_vs_margin(ctx, eps_list),
    ]
    return sorted(checks, key=lambda c: ORDER.index(c.name))
