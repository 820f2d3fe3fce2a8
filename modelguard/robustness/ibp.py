"""Interval bound propagation (Gowal et al. 2018): certified Linf robustness of small nets.

>>> import torch
>>> from modelguard.zoo import digits_mlp
>>> from modelguard.robustness.ibp import certified_mask
>>> certified_mask(digits_mlp(), torch.rand(3, 1, 8, 8), torch.tensor([0, 1, 2]), eps=0.0).shape
torch.Size([3])

Propagates the box ``[max(x - eps, 0), min(x + eps, 1)]`` through the network layer by layer
as (centre, radius): an affine layer maps the centre and multiplies the radius by ``|W|``; a
monotone layer (ReLU, max/average pooling) maps both ends. The last linear layer is folded into
the margins (``(W_y - W_j) h + b_y - b_j`` bounded over the box of its input ``h``), which is
tighter than bounding the logits separately. An example is **certified** at eps when every
margin's lower bound is > 0: no input in the ball changes its class, whatever the attack.
Sound (bounds are never too tight, up to float rounding) but loose for networks not trained
for it, so certified accuracy is a lower bound on robust accuracy that may be far below it.

Supported layers: ``Sequential``, ``Linear``, ``Conv2d``, ``ReLU``, ``Flatten``,
``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``BatchNorm1d/2d`` (eval mode),
``Identity``, ``Dropout`` (eval) and :class:`modelguard.zoo.Normalize`; anything else is
refused (:class:`BadInputError`), never silently approximated.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelguard.errors import BadInputError
from modelguard.zoo import Normalize

MONOTONE = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Identity)


def _layers(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return [layer for child in model for layer in _layers(child)]
    return [model]


def _affine(layer: nn.Module, centre: Tensor, radius: Tensor) -> tuple[Tensor, Tensor]:
    if isinstance(layer, nn.Linear):
        return layer(centre), F.linear(radius, layer.weight.abs())
    if isinstance(layer, nn.Conv2d):
        spread = F.conv2d(
            radius, layer.weight.abs(), None, layer.stride, layer.padding, layer.dilation,
            layer.groups,
        )  # fmt: skip
        return layer(centre), spread
    if isinstance(layer, Normalize):
        return layer(centre), radius / layer.std.abs()
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        assert layer.running_var is not None
        scale = torch.rsqrt(layer.running_var + layer.eps)
        if layer.weight is not None:
            scale = scale * layer.weight
        shape = (1, -1, *([1] * (centre.dim() - 2)))
        return layer(centre), radius * scale.abs().view(shape)
    raise BadInputError(f"interval bound propagation does not support {type(layer).__name__}")


def margin_lower_bounds(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Lower bounds of ``z_y - z_j`` over the Linf ball (``+inf`` at ``j = y``), shape (N, K)."""
    layers = _layers(model)
    if not layers or not isinstance(layers[-1], nn.Linear):
        raise BadInputError("interval bound propagation needs a network ending in nn.Linear")
    lower = torch.clamp(x - eps, 0.0, 1.0)
    upper = torch.clamp(x + eps, 0.0, 1.0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for layer in layers[:-1]:
                if isinstance(layer, nn.Dropout):
                    continue
                if isinstance(layer, MONOTONE):
                    lower, upper = layer(lower), layer(upper)
                    continue
                centre, radius = _affine(layer, (upper + lower) / 2, (upper - lower) / 2)
                lower, upper = centre - radius, centre + radius
            last = layers[-1]
            assert isinstance(last, nn.Linear)
            weight = last.weight
            bias = last.bias if last.bias is not None else torch.zeros(weight.shape[0])
            diff_w = weight[y][:, None, :] - weight[None, :, :]  # (N, K, H): W_y - W_j
            diff_b = bias[y][:, None] - bias[None, :]
            centre, radius = (upper + lower) / 2, (upper - lower) / 2
            bound = (
                torch.einsum("nkh,nh->nk", diff_w, centre)
                - torch.einsum("nkh,nh->nk", diff_w.abs(), radius)
                + diff_b
            )
    finally:
        model.train(was_training)
    return bound.scatter(1, y[:, None], float("inf"))


def certified_mask(model: nn.Module, x: Tensor, y: Tensor, *, eps: float) -> Tensor:
    """Per example: provably classified as ``y`` everywhere in the Linf ball of radius eps."""
    return (margin_lower_bounds(model, x, y, eps) > 0).all(dim=1)
