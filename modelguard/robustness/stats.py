"""Stated uncertainty: exact (Clopper-Pearson) binomial confidence intervals for accuracies.

>>> from modelguard.robustness.stats import Proportion
>>> p = Proportion.of(correct=315, n=540)
>>> round(p.value, 4), [round(b, 4) for b in p.ci95]
(0.5833, [0.5405, 0.6253])

An accuracy measured on ``n`` examples is a binomial proportion; the Clopper-Pearson interval
(Clopper & Pearson, Biometrika 1934) inverts the two one-sided binomial tests, so it has at
least its nominal coverage for every true accuracy (it is conservative, never anti-conservative):
``[Beta(a/2; k, n-k+1), Beta(1-a/2; k+1, n-k)]`` with the conventions lower = 0 at k = 0 and
upper = 1 at k = n. Every accuracy that modelguard reports carries ``n``, the count and this
interval; the policy gate compares its threshold with the lower bound by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelguard.errors import BadInputError

CONFIDENCE = 0.95


def clopper_pearson(correct: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided exact binomial interval for ``correct`` successes out of ``n`` trials."""
    from scipy.stats import beta

    if n < 0 or not 0 <= correct <= n:
        raise BadInputError(f"need 0 <= correct <= n, got correct={correct}, n={n}")
    if not 0 < confidence < 1:
        raise BadInputError(f"confidence must lie in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lower = 0.0 if correct == 0 else float(beta.ppf(alpha / 2, correct, n - correct + 1))
    upper = 1.0 if correct == n else float(beta.ppf(1 - alpha / 2, correct + 1, n - correct))
    return lower, upper


def one_sided_lower(correct: int, n: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound (randomized smoothing's ``p_A``)."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= correct <= n:
        raise BadInputError(f"need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    return 0.0 if correct == 0 else float(beta.ppf(alpha, correct, n - correct + 1))


@dataclass(frozen=True)
class Proportion:
    """An accuracy with its sample size and 95% Clopper-Pearson interval."""

    correct: int
    n: int
    ci95: tuple[float, float]

    @classmethod
    def of(cls, *, correct: int, n: int) -> Proportion:
        return cls(int(correct), int(n), clopper_pearson(int(correct), int(n)))

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def lower(self) -> float:
        return self.ci95[0]

    def to_dict(self) -> dict[str, Any]:
        """The fields every reported accuracy carries (``value`` is the point estimate)."""
        return {
            "value": self.value,
            "correct": self.correct,
            "n": self.n,
            "ci95": [self.ci95[0], self.ci95[1]],
            "interval": "clopper-pearson",
        }
