"""Factories that rebuild defended models from a model card (trusted by :mod:`modelguard.zoo`).

>>> from modelguard import zoo
>>> model = zoo.build("modelguard.robustness.defenses.wrappers:squeezed",
...                   {"base": {"factory": "modelguard.zoo:digits_cnn", "kwargs": {}}, "bits": 3})
>>> type(model).__name__
'Preprocessed'

Model cards of defended models name one of these factories; their kwargs hold the wrapped
model's own ``{"factory", "kwargs"}`` spec, which is resolved with the same trust rule (only
``modelguard.zoo`` and :func:`modelguard.zoo.model_factory` functions), so a card can never
make us import code the user did not name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from modelguard import zoo
from modelguard.errors import BadInputError
from modelguard.robustness.defenses.detector import SqueezeDetector
from modelguard.robustness.defenses.ensemble import LogitEnsemble
from modelguard.robustness.defenses.preprocessing import Preprocessed, squeezers

MAX_MEMBERS = 64


def spec(factory: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {"factory": zoo.factory_name(factory), "kwargs": dict(kwargs)}


def build_spec(value: object) -> nn.Module:
    if (
        not isinstance(value, Mapping)
        or not isinstance(value.get("factory"), str)
        or not isinstance(value.get("kwargs", {}), Mapping)
    ):
        raise BadInputError("a wrapped model must be given as {'factory': str, 'kwargs': {...}}")
    return zoo.build(value["factory"], value.get("kwargs", {}))


@zoo.model_factory
def squeezed(
    base: Mapping[str, Any], bits: int | None = None, median: int | None = None
) -> nn.Module:
    """``base`` behind bit-depth reduction and/or median smoothing (BPDA gradients)."""
    return Preprocessed(nn.Sequential(*squeezers(bits, median)), build_spec(base))


@zoo.model_factory
def squeeze_detector(
    base: Mapping[str, Any], threshold: float, bits: int | None = None, median: int | None = None
) -> nn.Module:
    """``base`` plus a feature-squeezing detector: one extra "reject" output."""
    return SqueezeDetector(build_spec(base), threshold=float(threshold), bits=bits, median=median)


@zoo.model_factory
def ensemble(members: Sequence[Mapping[str, Any]]) -> nn.Module:
    """Members averaged in logit space."""
    if not isinstance(members, Sequence) or not 2 <= len(members) <= MAX_MEMBERS:
        raise BadInputError(f"an ensemble needs between 2 and {MAX_MEMBERS} member specs")
    return LogitEnsemble([build_spec(member) for member in members])
