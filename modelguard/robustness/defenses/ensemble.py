"""Ensembles averaged in logit space, exported as one ONNX graph.

>>> import torch
>>> from modelguard.zoo import digits_cnn
>>> from modelguard.robustness.defenses.ensemble import LogitEnsemble
>>> LogitEnsemble([digits_cnn(), digits_cnn()])(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])

Averaging logits (not probabilities) keeps the ensemble differentiable end to end, so the
attacks of the evaluation see one ordinary model: no gradient masking from a softmax vote.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from modelguard.errors import BadInputError


class LogitEnsemble(nn.Module):
    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise BadInputError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members], dim=0).mean(dim=0)
