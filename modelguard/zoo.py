"""Small built-in architectures (inputs in [0, 1]; normalisation lives inside the model).

>>> import torch
>>> from modelguard.zoo import digits_cnn
>>> digits_cnn()(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])

Model cards name a factory as ``"package.module:function"``. Only factories in this module
and functions inside the ``modelguard`` package marked with :func:`model_factory` (defended
wrappers such as ``modelguard.robustness.defenses.wrappers:squeezed``) are trusted by default:
importing an arbitrary module named by a file is code execution, so any other factory must be
trusted explicitly by the caller (e.g. ``--arch`` on the CLI, which calls
:func:`trust_factory`). A trusted module is imported from the current directory first, then
from the installed packages.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from modelguard.errors import BadInputError, UnsafeModelError

FactoryT = TypeVar("FactoryT", bound=Callable[..., nn.Module])
_FACTORY_MARK = "__modelguard_factory__"

DIGITS_MEAN = 0.3  # mean pixel of sklearn digits scaled to [0, 1]
DIGITS_STD = 0.4


class Normalize(nn.Module):
    """``(x - mean) / std`` as the model's first layer, so attacks work in input space."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def digits_cnn(num_classes: int = 10, width: int = 32) -> nn.Module:
    """The demo CNN for 1x8x8 digits: two 3x3 conv layers, max-pool, two dense layers."""
    return nn.Sequential(
        Normalize(DIGITS_MEAN, DIGITS_STD),
        nn.Conv2d(1, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


def digits_cnn_large(num_classes: int = 10) -> nn.Module:
    """A wider, deeper CNN for benchmarks (about 1.2M parameters)."""
    return nn.Sequential(
        Normalize(DIGITS_MEAN, DIGITS_STD),
        nn.Conv2d(1, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 4 * 4, 512),
        nn.ReLU(),
        nn.Linear(512, num_classes),
    )


def digits_mlp(num_classes: int = 10, hidden: int = 128) -> nn.Module:
    return nn.Sequential(
        Normalize(DIGITS_MEAN, DIGITS_STD),
        nn.Flatten(),
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def linear_classifier(in_features: int = 64, num_classes: int = 10) -> nn.Module:
    """A purely linear model: attacks on it have closed-form optima (used in tests)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, num_classes))


FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "digits_cnn": digits_cnn,
    "digits_cnn_large": digits_cnn_large,
    "digits_mlp": digits_mlp,
    "linear_classifier": linear_classifier,
}


_TRUSTED_BY_USER: set[str] = set()


def trust_factory(factory: str) -> None:
    """The user named ``factory`` (``--arch``): model cards naming it may now load it."""
    _TRUSTED_BY_USER.add(factory_name(factory))


def _import_user_module(factory: str, module_name: str) -> Any:
    """Import a module the user trusted, looking in the current directory first."""
    cwd = os.getcwd()
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        raise BadInputError(
            f"cannot import architecture factory {factory!r}: {error}. modelguard looks for "
            f"{module_name} in the current directory ({cwd}) first, then in the installed "
            "packages: run it where the module lives, pip install your package, or add its "
            "directory to PYTHONPATH"
        ) from error
    finally:
        if sys.path and sys.path[0] == cwd:
            del sys.path[0]


def factory_name(name: str) -> str:
    """``"digits_cnn"`` -> ``"modelguard.zoo:digits_cnn"``."""
    return name if ":" in name else f"{__name__}:{name}"


def model_factory(fn: FactoryT) -> FactoryT:
    """Mark a function inside the ``modelguard`` package as a factory model cards may name."""
    setattr(fn, _FACTORY_MARK, True)
    return fn


def _marked_factory(module_name: str, attr: str) -> Callable[..., nn.Module] | None:
    """A :func:`model_factory` function of a ``modelguard.*`` module, else None."""
    if not module_name.startswith("modelguard.") or not all(
        part.isidentifier() for part in module_name.split(".")
    ):
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    fn = getattr(module, attr, None)
    return fn if callable(fn) and getattr(fn, _FACTORY_MARK, False) is True else None


def resolve_factory(factory: str, *, trusted: bool = False) -> Callable[..., nn.Module]:
    """Import ``"pkg.mod:fn"``; outside this module only when ``trusted`` (the user named it)
    or when it is a :func:`model_factory` inside the ``modelguard`` package."""
    module_name, sep, attr = factory.partition(":")
    if not sep or not module_name or not attr:
        raise BadInputError(
            f"architecture factory {factory!r} must look like 'package.module:function'"
        )
    if module_name == __name__:
        if attr not in FACTORIES:
            raise BadInputError(
                f"unknown built-in architecture {attr!r} (known: {', '.join(FACTORIES)})"
            )
        return FACTORIES[attr]
    marked = _marked_factory(module_name, attr)
    if marked is not None:
        return marked
    if not trusted and factory not in _TRUSTED_BY_USER:
        raise UnsafeModelError(
            f"architecture factory {factory!r} is outside modelguard.zoo; importing it runs its code, "
            "so name it explicitly (--arch) to trust it"
        )
    fn = getattr(_import_user_module(factory, module_name), attr, None)
    if fn is None:
        raise BadInputError(f"architecture factory {factory!r}: {module_name} has no {attr!r}")
    if not callable(fn):
        raise BadInputError(f"architecture factory {factory!r} is not callable")
    return fn


def build(
    factory: str, kwargs: Mapping[str, Any] | None = None, *, trusted: bool = False
) -> nn.Module:
    model = resolve_factory(factory, trusted=trusted)(**dict(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise BadInputError(f"architecture factory {factory!r} did not return a torch.nn.Module")
    return model
