"""Shared fixtures. Hypothesis: no deadlines (the machine is shared), modest example counts."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "modelguard",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("ci", parent=settings.get_profile("modelguard"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "modelguard")


@pytest.fixture(autouse=True)
def _private_ledger_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The ledger gate's trust state goes to a per-test directory, never ~/.config."""
    saved = os.environ.get("MODELGUARD_LEDGER_STATE")
    os.environ["MODELGUARD_LEDGER_STATE"] = str(tmp_path_factory.mktemp("ledger-state"))
    yield
    if saved is None:
        os.environ.pop("MODELGUARD_LEDGER_STATE", None)
    else:
        os.environ["MODELGUARD_LEDGER_STATE"] = saved
