"""The checks behind a policy's ``[certificate]`` and ``[audit.*]`` tables, for callers that
compose verification (CLI ``verify``/``run``, the demo, hardening).

>>> from modelguard.gates import STANDARD_CHECKS
>>> STANDARD_CHECKS.certificate is not None and STANDARD_CHECKS.audit is not None
True

Signing, policy and the runtime never import robustness or audits; they take a
:class:`~modelguard.policy.PolicyChecks` from their caller. The checks here import their
module on first call, so a verification whose policy has no ``[certificate]`` table never
imports torch (the slim gate path).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from modelguard.policy import PolicyChecks


def _on_first_call(module: str, name: str) -> Callable[..., list[str]]:
    """``module.name``, imported when first called (not when the checks are built)."""

    def check(*args: Any, **kwargs: Any) -> list[str]:
        result: list[str] = getattr(import_module(module), name)(*args, **kwargs)
        return result

    check.__qualname__ = check.__name__ = name
    check.__doc__ = f":func:`{module}.{name}`, imported on first call."
    return check


STANDARD_CHECKS = PolicyChecks(
    certificate=_on_first_call("modelguard.robustness.gate", "certificate_gate"),
    audit=_on_first_call("modelguard.audits.gate", "audit_gate"),
)
