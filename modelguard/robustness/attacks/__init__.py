"""Adversarial attacks, one file each, behind one interface (:class:`Attack`).

>>> from modelguard.robustness.attacks import ATTACKS, build_attack
>>> sorted(ATTACKS)[:4]
['advgan', 'advgan-bb', 'apgd-ce', 'apgd-dlr']

A new attack is a new file plus one line in ``ATTACKS``.
"""

from __future__ import annotations

from typing import Any

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.advgan import AdvGAN, AdvGANBlackBox
from modelguard.robustness.attacks.apgd import APGD, APGDDLR
from modelguard.robustness.attacks.apgdt import APGDT
from modelguard.robustness.attacks.base import Attack, Classifier
from modelguard.robustness.attacks.cw import CarliniWagnerL2
from modelguard.robustness.attacks.deepfool import DeepFool
from modelguard.robustness.attacks.fab import FABT
from modelguard.robustness.attacks.fgsm import FGSM
from modelguard.robustness.attacks.mifgsm import MIFGSM
from modelguard.robustness.attacks.pgd import BIM, PGD, PGDL2, PGDMargin
from modelguard.robustness.attacks.square import SquareAttack
from modelguard.robustness.attacks.transfer import TransferAttack

ATTACKS: dict[str, type[Attack]] = {
    FGSM.name: FGSM,
    PGD.name: PGD,
    PGDL2.name: PGDL2,
    PGDMargin.name: PGDMargin,
    BIM.name: BIM,
    MIFGSM.name: MIFGSM,
    DeepFool.name: DeepFool,
    CarliniWagnerL2.name: CarliniWagnerL2,
    SquareAttack.name: SquareAttack,
    TransferAttack.name: TransferAttack,
    APGD.name: APGD,
    APGDDLR.name: APGDDLR,
    APGDT.name: APGDT,
    FABT.name: FABT,
    AdvGAN.name: AdvGAN,
    AdvGANBlackBox.name: AdvGANBlackBox,
}


def build_attack(name: str, model: Classifier, **params: Any) -> Attack:
    """``ATTACKS[name](model, **params)`` with a one-line error for unknown names/params."""
    if name not in ATTACKS:
        raise BadInputError(f"unknown attack {name!r} (known: {', '.join(sorted(ATTACKS))})")
    try:
        return ATTACKS[name](model, **params)
    except TypeError as error:
        raise BadInputError(f"{name}: bad attack parameters ({error})") from error


__all__ = ["ATTACKS", "Attack", "build_attack"]
