"""What determines an evaluation's numbers, importable without torch.

    >>> from modelguard.robustness.config import EvalConfig
    >>> EvalConfig.from_dict({"attacks": ["pgd"], "eps": [0.1]}).eps
    [0.1]

The certificate records an :class:`EvalConfig` (and, for certified robustness, a
:class:`SmoothingConfig`); the policy gate reads certificates on the slim install (no torch),
so parsing and recording them lives here. :meth:`EvalConfig.resolved` checks attack names
against the registry, which loads torch: only an evaluation calls it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from modelguard.errors import BadInputError, FormatError
from modelguard.robustness.profiles import PROFILES, profile_attack
from modelguard.robustness.stats import Proportion

EVAL_VERSION = 1
DEFAULT_ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "pgd-margin", "cw", "deepfool", "square")
# The same portfolio for the L2 threat model (FGSM is Linf only; Square has an L2 version).
DEFAULT_ATTACKS_L2: tuple[str, ...] = ("pgd", "pgd-margin", "cw", "deepfool", "square-l2")
DEFAULT_EPS: tuple[float, ...] = (0.05, 0.1, 0.2)
# The evaluation's own defaults per attack (chosen for 8x8 digits on a 2-core CPU); every
# value ends up in the resolved config, so a certificate states exactly what ran.
EVAL_DEFAULTS: dict[str, dict[str, Any]] = {
    "fgsm": {},
    "pgd": {"steps": 20, "restarts": 1, "random_start": True, "early_stop": True},
    "pgd-margin": {"steps": 20, "restarts": 1, "random_start": True, "early_stop": True},
    "pgd-l2": {"steps": 20, "restarts": 1, "random_start": True, "early_stop": True},
    "bim": {},
    "mifgsm": {"steps": 10, "decay": 1.0},
    "deepfool": {"steps": 50, "overshoot": 0.02},
    "cw": {"binary_search_steps": 4, "steps": 30, "lr": 0.1, "initial_const": 1.0},
    "square": {"n_queries": 300, "p_init": 0.3},
    "square-l2": {"n_queries": 300, "p_init": 0.8},
    "transfer": {"base": "pgd-margin", "base_params": {"steps": 20}},
    # The papers' budgets (Croce & Hein 2020), as in the "standard" profile.
    "apgd-ce": {"steps": 100, "restarts": 1, "loss": "ce", "rho": 0.75, "eot_iter": 1},
    "apgd-dlr": {"steps": 100, "restarts": 1, "loss": "dlr", "rho": 0.75, "eot_iter": 1},
    "apgd-t": {"steps": 100, "restarts": 1, "n_targets": 9, "rho": 0.75, "eot_iter": 1},
    "fab-t": {"steps": 100, "n_targets": 9, "eta": 1.05, "beta": 0.9, "alpha_max": 0.1},
}
NORMS = ("linf", "l2")

GATE_METRIC = "worst-case robust accuracy; a detector's rejection counts as an error"


def _jsonable_eps(value: float) -> float:
    return float(value)


def proportion(accuracy: float, n: int) -> dict[str, Any]:
    """``accuracy`` (a mean over ``n`` examples, so ``accuracy * n`` is a count) with its
    sample size and 95% Clopper-Pearson interval (:mod:`modelguard.robustness.stats`)."""
    return Proportion.of(correct=round(accuracy * n), n=n).to_dict()


@dataclass
class SmoothingConfig:
    """Everything that determines the certified numbers (recorded in the certificate)."""

    sigma: float = 0.25
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    limit: int | None = None  # certify only the first N evaluation examples (it is costly)
    batch_size: int = 1000

    def validated(self) -> SmoothingConfig:
        if not self.sigma > 0:
            raise BadInputError(f"smoothing sigma must be > 0, got {self.sigma}")
        if self.n0 < 1 or self.n < 1:
            raise BadInputError("smoothing n0 and n must be >= 1")
        if not 0 < self.alpha < 1:
            raise BadInputError(f"smoothing alpha must lie in (0, 1), got {self.alpha}")
        if not self.radii or any(not r >= 0 for r in self.radii):
            raise BadInputError("smoothing radii must be numbers >= 0")
        if self.limit is not None and self.limit <= 0:
            raise BadInputError("smoothing limit must be positive")
        return SmoothingConfig(
            float(self.sigma),
            int(self.n0),
            int(self.n),
            float(self.alpha),
            sorted({float(r) for r in self.radii}),
            self.limit,
            int(self.batch_size),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "randomized-smoothing",
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "radii": list(self.radii),
            "limit": self.limit,
            "batch_size": self.batch_size,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SmoothingConfig:
        limit = data.get("limit")
        return cls(
            sigma=float(data["sigma"]),
            n0=int(data["n0"]),
            n=int(data["n"]),
            alpha=float(data["alpha"]),
            radii=[float(r) for r in data["radii"]],
            limit=None if limit is None else int(limit),
            batch_size=int(data.get("batch_size", 1000)),
        ).validated()


@dataclass
class EvalConfig:
    """Everything that determines an evaluation's numbers (recorded in the certificate)."""

    attacks: list[str] = field(default_factory=lambda: list(DEFAULT_ATTACKS))
    eps: list[float] = field(default_factory=lambda: list(DEFAULT_EPS))
    seed: int = 0
    data: str = "digits"
    limit: int | None = None
    norm: str = "linf"
    attack_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 512
    parity_atol: float = 1e-4
    parity_rtol: float = 1e-4
    recertify_tolerance: float = 0.01
    soundness: bool = True
    data_digest: str | None = None
    version: int = EVAL_VERSION
    profile: str | None = None  # the named profile the portfolio came from (profiles.py)
    cascade: bool = False  # each attack runs only on the examples no earlier one broke
    smoothing: SmoothingConfig | None = None  # certified L2 robustness (smoothing.py)
    ibp: bool = False  # certified Linf robustness by interval bound propagation (ibp.py)

    def resolved(self) -> EvalConfig:
        """Validated copy with every attack's parameters filled in from ``EVAL_DEFAULTS``.

        A portfolio that is one profile name (``standard``, ``quick``, ``rand``) expands to
        the profile's attacks and parameters, run as a cascade.
        """
        from modelguard.robustness.attacks import ATTACKS  # torch: only when evaluating

        if len(self.attacks) == 1 and self.attacks[0] in PROFILES:
            profile = PROFILES[self.attacks[0]]
            params: dict[str, dict[str, Any]] = {}
            attacks = [profile_attack(name, self.norm) for name in profile.attacks]
            for name, used in zip(profile.attacks, attacks, strict=True):
                params[used] = dict(profile.params.get(name, {}))
            for name, values in self.attack_params.items():
                params.setdefault(name, {}).update(values)
            return replace(
                self, attacks=attacks, attack_params=params, profile=profile.name, cascade=True
            ).resolved()
        if not self.attacks:
            raise BadInputError("no attack given")
        for name in self.attacks:
            if name not in ATTACKS:
                raise BadInputError(
                    f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))})"
                )
        if len(set(self.attacks)) != len(self.attacks):
            raise BadInputError("an attack is listed twice")
        if not self.eps:
            raise BadInputError("no eps given")
        for value in self.eps:
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise BadInputError(f"eps must be finite numbers >= 0, got {value}")
        if self.norm not in NORMS:
            raise BadInputError(f"unknown norm {self.norm!r} (expected 'linf' or 'l2')")
        if self.ibp and self.norm != "linf":
            raise BadInputError("interval bound propagation certifies the linf threat model only")
        if self.limit is not None and self.limit <= 0:
            raise BadInputError(f"limit must be positive, got {self.limit}")
        if self.batch_size <= 0:
            raise BadInputError("batch size must be positive")
        if min(self.parity_atol, self.parity_rtol, self.recertify_tolerance) < 0:
            raise BadInputError("tolerances must be >= 0")
        unknown = set(self.attack_params) - set(self.attacks)
        if unknown:
            raise BadInputError(
                f"parameters given for attacks not in the portfolio: {sorted(unknown)}"
            )
        params = {  # each attack runs in the threat model's norm, or is refused (exit 2)
            name: ATTACKS[name].threat_params(
                {**EVAL_DEFAULTS.get(name, {}), **dict(self.attack_params.get(name, {}))},
                self.norm,
            )
            for name in self.attacks
        }
        for name, values in params.items():
            reserved = {"eps", "targeted", "seed"} & set(values)
            if reserved:
                raise BadInputError(f"{name}: {sorted(reserved)} are set by the evaluation")
        return EvalConfig(
            attacks=list(self.attacks),
            eps=sorted({float(v) for v in self.eps}),
            seed=int(self.seed),
            data=self.data,
            limit=self.limit,
            norm=self.norm,
            attack_params=params,
            batch_size=int(self.batch_size),
            parity_atol=float(self.parity_atol),
            parity_rtol=float(self.parity_rtol),
            recertify_tolerance=float(self.recertify_tolerance),
            soundness=bool(self.soundness),
            data_digest=self.data_digest,
            version=self.version,
            profile=self.profile,
            cascade=bool(self.cascade),
            smoothing=None if self.smoothing is None else self.smoothing.validated(),
            ibp=bool(self.ibp),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "attacks": list(self.attacks),
            "eps": [_jsonable_eps(v) for v in self.eps],
            "norm": self.norm,
            "seed": self.seed,
            "data": self.data,
            "data_digest": self.data_digest,
            "limit": self.limit,
            "attack_params": json.loads(json.dumps(self.attack_params)),
            "batch_size": self.batch_size,
            "parity_atol": self.parity_atol,
            "parity_rtol": self.parity_rtol,
            "recertify_tolerance": self.recertify_tolerance,
            "soundness": self.soundness,
            "profile": self.profile,
            "cascade": self.cascade,
            "smoothing": None if self.smoothing is None else self.smoothing.to_dict(),
            "ibp": self.ibp,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> EvalConfig:
        try:
            if int(data.get("version", EVAL_VERSION)) != EVAL_VERSION:
                raise FormatError(f"unsupported evaluation config version {data['version']}")
            limit = data.get("limit")
            return cls(
                attacks=[str(a) for a in data["attacks"]],
                eps=[float(e) for e in data["eps"]],
                seed=int(data.get("seed", 0)),
                data=str(data.get("data", "digits")),
                limit=int(limit) if limit is not None else None,
                norm=str(data.get("norm", "linf")),
                attack_params={str(k): dict(v) for k, v in data.get("attack_params", {}).items()},
                batch_size=int(data.get("batch_size", 512)),
                parity_atol=float(data.get("parity_atol", 1e-4)),
                parity_rtol=float(data.get("parity_rtol", 1e-4)),
                recertify_tolerance=float(data.get("recertify_tolerance", 0.01)),
                soundness=bool(data.get("soundness", True)),
                data_digest=data.get("data_digest"),
                profile=None if data.get("profile") is None else str(data["profile"]),
                cascade=bool(data.get("cascade", False)),
                smoothing=None
                if data.get("smoothing") is None
                else SmoothingConfig.from_dict(dict(data["smoothing"])),
                ibp=bool(data.get("ibp", False)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise FormatError(
                f"malformed evaluation config ({type(error).__name__}: {error})", path=source
            ) from error
