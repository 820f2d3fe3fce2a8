"""Shared fixtures. Hypothesis: no deadlines (the machine is shared), modest example counts."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "modelguard",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("modelguard"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "modelguard")
