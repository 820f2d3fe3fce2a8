"""Training-data augmentation: Gaussian noise, random shifts and random scaling.

>>> import torch
>>> from modelguard.robustness.defenses.augmentation import Augmentation
>>> out = Augmentation(noise_std=0.1, max_shift=1, scale=0.1)(torch.rand(4, 1, 8, 8),
...                                                            torch.Generator().manual_seed(0))
>>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
(torch.Size([4, 1, 8, 8]), True, True)

Augmentation improves robustness to random corruptions, not to worst-case perturbations;
the certificate of an augmented model says so in its numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from modelguard.errors import BadInputError


@dataclass(frozen=True)
class Augmentation:
    noise_std: float = 0.1  # Gaussian noise sigma, in input units ([0, 1])
    max_shift: float = 1.0  # uniform random translation, pixels in each direction
    scale: float = 0.1  # zoom factor drawn from [1 - scale, 1 + scale]

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.max_shift < 0 or not 0 <= self.scale < 1:
            raise BadInputError(
                "augmentation needs noise_std >= 0, max_shift >= 0 and 0 <= scale < 1"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, height, width = x.shape

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(n, generator=generator)

        zoom = uniform(1 - self.scale, 1 + self.scale)
        shift_x = uniform(-self.max_shift, self.max_shift) * 2 / width
        shift_y = uniform(-self.max_shift, self.max_shift) * 2 / height
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = 1 / zoom
        theta[:, 1, 1] = 1 / zoom
        theta[:, 0, 2] = shift_x
        theta[:, 1, 2] = shift_y
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        noise = torch.randn(moved.shape, generator=generator) * self.noise_std
        return (moved + noise).clamp(0.0, 1.0)
