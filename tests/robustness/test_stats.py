"""Stated uncertainty: Clopper-Pearson intervals and the gate's use of their lower bound."""

from __future__ import annotations

import math
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from modelguard.errors import BadInputError
from modelguard.keys import generate_key
from modelguard.policy import parse_policy
from modelguard.robustness.certificate import Certificate, check_requirement
from modelguard.robustness.stats import Proportion, clopper_pearson, one_sided_lower


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=5000), st.data())
def test_interval_contains_the_point_estimate(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    lower, upper = clopper_pearson(k, n)
    assert 0.0 <= lower <= k / n <= upper <= 1.0
    assert lower < upper


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=400), st.integers(min_value=2, max_value=10))
def test_interval_shrinks_with_n(n: int, factor: int) -> None:
    # Same observed fraction, more examples: a strictly narrower interval.
    k = n // 2
    small = clopper_pearson(k, n)
    large = clopper_pearson(k * factor, n * factor)
    assert large[1] - large[0] < small[1] - small[0]


def test_closed_forms_at_the_edges() -> None:
    # k = 0: upper = 1 - (alpha/2)^(1/n); k = n: lower = (alpha/2)^(1/n).
    for n in (1, 10, 540):
        assert clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
        assert clopper_pearson(n, n)[0] == pytest.approx(0.025 ** (1 / n), rel=1e-9)
        assert one_sided_lower(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-9)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(BadInputError):
        clopper_pearson(5, 4)


def test_coverage_is_at_least_nominal() -> None:
    # Exact coverage for p = 0.6, n = 50: sum of binomial probabilities of covering k's.
    n, p = 50, 0.6
    coverage = sum(
        math.comb(n, k) * p**k * (1 - p) ** (n - k)
        for k in range(n + 1)
        if clopper_pearson(k, n)[0] <= p <= clopper_pearson(k, n)[1]
    )
    assert coverage >= 0.95


def certificate(correct: int, n: int) -> Certificate:
    summary: dict[str, Any] = {
        "norm": "linf",
        "worst_case": [
            {"eps": 0.1, "robust_accuracy": correct / n, "n": n, "correct": correct},
        ],
        "parity_ok": True,
        "soundness_warnings": [],
    }
    predicate = {"summary": summary, "data": {"count": n}}
    return Certificate({"predicate": predicate}, (), None, None)


def test_gate_uses_the_lower_bound_by_default() -> None:
    cert = certificate(correct=82, n=100)  # 0.82, 95% CI about [0.73, 0.89]
    lower = Proportion.of(correct=82, n=100).lower
    assert 0.72 < lower < 0.74
    reasons = check_requirement(cert, min_robust_accuracy=0.80, epsilon=0.1)
    assert reasons and "lower bound" in reasons[0] and "n=100" in reasons[0]
    assert check_requirement(cert, min_robust_accuracy=0.80, epsilon=0.1, estimate="point") == []
    assert check_requirement(cert, min_robust_accuracy=lower - 1e-9, epsilon=0.1) == []
    # The same fraction measured on 10x the examples clears the bar.
    big = certificate(correct=8200, n=10000)
    assert check_requirement(big, min_robust_accuracy=0.80, epsilon=0.1) == []


def test_policy_chooses_the_estimate() -> None:
    pem = (
        generate_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signer = {"name": "a", "public_key_pem": pem.decode()}
    base = {"min_robust_accuracy": 0.8, "epsilon": 0.1}
    policy = parse_policy({"signers": [signer], "certificate": base}, source="p")
    assert policy.certificate is not None and policy.certificate.estimate == "lower_bound"
    policy = parse_policy(
        {"signers": [signer], "certificate": {**base, "estimate": "point"}}, source="p"
    )
    assert policy.certificate is not None and policy.certificate.estimate == "point"
    with pytest.raises(BadInputError, match="estimate"):
        parse_policy({"signers": [signer], "certificate": {**base, "estimate": "mean"}}, source="p")
