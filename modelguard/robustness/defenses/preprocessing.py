"""Input-preprocessing defenses that live inside the model (and so inside its ONNX graph).

>>> import torch
>>> from modelguard.robustness.defenses.preprocessing import BitDepthReduction, MedianSmoothing
>>> squeeze = torch.nn.Sequential(BitDepthReduction(bits=1), MedianSmoothing(size=3))
>>> squeeze(torch.full((1, 1, 8, 8), 0.7)).unique().tolist()
[1.0]

Both are non-differentiable (rounding) or piecewise-constant-gradient (median) maps, which
is how preprocessing defenses come to look robust only because gradients are broken. We
evaluate them with BPDA (Athalye et al. 2018): when gradients are being taken the forward
value is still ``f(x)`` but the backward pass is the identity, ``x + (f(x) - x).detach()``,
so white-box attacks see through them. Inference and ONNX export run the real ``f(x)``:
rounding is exported as ONNX ``Round``, the median as ``Pad`` + shifted ``Slice`` +
``TopK``-based sort.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelguard.errors import BadInputError


def straight_through(x: torch.Tensor, squeezed: torch.Tensor) -> torch.Tensor:
    """BPDA: the value of ``squeezed`` with the gradient of the identity."""
    if torch.onnx.is_in_onnx_export() or not (torch.is_grad_enabled() and x.requires_grad):
        return squeezed
    return x + (squeezed - x).detach()


class BitDepthReduction(nn.Module):
    """Feature squeezing by colour depth (Xu et al. 2018): ``round(x * (2^b - 1)) / (2^b - 1)``."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        if not 1 <= bits <= 16:
            raise BadInputError(f"bit depth must be in [1, 16], got {bits}")
        self.bits = int(bits)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        levels = float(2**self.bits - 1)
        return torch.round(x * levels) / levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return straight_through(x, self.squeeze(x))

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class MedianSmoothing(nn.Module):
    """Median filter over ``size x size`` windows per channel, reflect-padded (odd sizes)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        if size < 3 or size % 2 == 0:
            raise BadInputError(f"median window must be an odd size >= 3, got {size}")
        self.size = int(size)

    def squeeze(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.size // 2
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        height, width = x.shape[-2], x.shape[-1]
        windows = torch.stack(
            [
                padded[..., i : i + height, j : j + width]
                for i in range(self.size)
                for j in range(self.size)
            ],
            dim=-1,
        )
        # torch.median has no ONNX export; a sort (exported as TopK) does.
        return torch.sort(windows, dim=-1).values[..., self.size * self.size // 2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return straight_through(x, self.squeeze(x))

    def extra_repr(self) -> str:
        return f"size={self.size}"


def squeezers(bits: int | None, median: int | None) -> list[nn.Module]:
    """The configured squeezers, in application order (bit depth, then median)."""
    chosen: list[nn.Module] = []
    if bits is not None:
        chosen.append(BitDepthReduction(bits))
    if median is not None:
        chosen.append(MedianSmoothing(median))
    if not chosen:
        raise BadInputError("a preprocessing defense needs --bits and/or --median")
    return chosen


class Preprocessed(nn.Module):
    """``model(preprocess(x))``: the preprocessing is part of the deployed graph."""

    def __init__(self, preprocess: nn.Module, base: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(self.preprocess(x))
