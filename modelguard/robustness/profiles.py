"""Attack profiles: named, fully parameterized portfolios run as a cascade.

>>> from modelguard.robustness.profiles import PROFILES
>>> PROFILES["standard"].attacks
('apgd-ce', 'apgd-t', 'fab-t', 'square')

``modelguard eval --attacks standard`` runs AutoAttack's "standard" composition (Croce & Hein,
ICML 2020): APGD-CE, APGD-T (targeted DLR, 9 targets), FAB-T (9 targets) and Square (5,000
queries, p_init = 0.8), each with the paper's budget, **as a cascade**: at each eps, every
attack runs only on the examples that no earlier attack has broken, and an example counts as
robust only if all of them failed (the per-example worst case). ``quick`` is the same
composition with small budgets, for CI. ``rand`` is AutoAttack's version for randomized
defenses: APGD-CE and APGD-DLR with the gradient averaged over 20 forward passes
(expectation over transformation, Athalye et al. 2018).

A profile fills in every attack's parameters (a user's ``--param`` overrides one), and the
certificate records the profile's name, ``cascade: true`` and every resolved parameter. The
plain attack names (``fgsm,pgd,...``) keep working and run every attack on every example.
Square attacks the deployed ONNX graph (score-based); the rest attack the PyTorch model. With
``--norm l2`` the APGD and FAB attacks run in L2 and Square is replaced by ``square-l2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    attacks: tuple[str, ...]
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    description: str = ""


# The L2 threat model swaps in each attack's L2 counterpart where it is a separate attack.
L2_COUNTERPARTS = {"square": "square-l2"}


def profile_attack(name: str, norm: str) -> str:
    """The attack a profile runs for ``name`` in the threat model ``norm``."""
    return L2_COUNTERPARTS.get(name, name) if norm == "l2" else name


PROFILES: dict[str, Profile] = {
    "standard": Profile(
        "standard",
        ("apgd-ce", "apgd-t", "fab-t", "square"),
        {
            "apgd-ce": {"steps": 100, "restarts": 1, "loss": "ce", "rho": 0.75, "eot_iter": 1},
            "apgd-t": {"steps": 100, "restarts": 1, "n_targets": 9, "rho": 0.75, "eot_iter": 1},
            "fab-t": {"steps": 100, "n_targets": 9, "eta": 1.05, "beta": 0.9, "alpha_max": 0.1},
            "square": {"n_queries": 5000, "p_init": 0.8},
        },
        "AutoAttack standard (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square-5000",
    ),
    "quick": Profile(
        "quick",
        ("apgd-ce", "apgd-t", "fab-t", "square"),
        {
            "apgd-ce": {"steps": 25, "restarts": 1, "loss": "ce", "rho": 0.75, "eot_iter": 1},
            "apgd-t": {"steps": 25, "restarts": 1, "n_targets": 3, "rho": 0.75, "eot_iter": 1},
            "fab-t": {"steps": 25, "n_targets": 3, "eta": 1.05, "beta": 0.9, "alpha_max": 0.1},
            "square": {"n_queries": 500, "p_init": 0.8},
        },
        "AutoAttack's composition with small budgets, for CI",
    ),
    "rand": Profile(
        "rand",
        ("apgd-ce", "apgd-dlr"),
        {
            "apgd-ce": {"steps": 100, "restarts": 1, "loss": "ce", "rho": 0.75, "eot_iter": 20},
            "apgd-dlr": {"steps": 100, "restarts": 1, "loss": "dlr", "rho": 0.75, "eot_iter": 20},
        },
        "AutoAttack rand: APGD-CE and APGD-DLR with EOT over 20 passes, for randomized defenses",
    ),
}
