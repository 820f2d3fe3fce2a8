"""A user-defined CNN for 8x8 grey digits: your own architecture, in your own module.

modelguard never imports this module by itself: model cards name it (``examples.cnn.mynet:build``)
and you trust it explicitly with ``--arch`` on ``card``, ``eval``, ``harden`` and
``recertify``. Normalization lives inside the model, so the inputs (and attack budgets,
eps) are in pixel units, [0, 1].
"""

from __future__ import annotations

import torch
from torch import nn

MEAN = 0.3  # of the training pixels in [0, 1]; recorded in the card with --mean/--std
STD = 0.4


class MyNet(nn.Module):
    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN))
        self.register_buffer("std", torch.tensor(STD))
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.head(self.features(x).flatten(1))


def build(width: int = 16, num_classes: int = 10) -> nn.Module:
    """The factory a model card names: keyword arguments come from --arch-kwargs."""
    return MyNet(width=width, num_classes=num_classes)
