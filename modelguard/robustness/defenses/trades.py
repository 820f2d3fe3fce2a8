"""TRADES (Zhang et al., ICML 2019): trade natural accuracy against robustness explicitly.

>>> from modelguard.zoo import digits_cnn
>>> from modelguard.robustness.data import load_dataset
>>> from modelguard.robustness.defenses.trades import TradesSettings, trades
>>> from modelguard.robustness.defenses.training import TrainSettings
>>> run = trades(digits_cnn(), load_dataset("digits:train").subset(64),
...              TradesSettings(eps=0.1, steps=2), TrainSettings(epochs=1))

Loss ``CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x'))`` where ``x'`` maximises the
KL term inside the Linf ball, found by PGD from ``x + 0.001 * N(0, 1)`` (paper, MNIST:
eps 0.3, 40 steps of 0.01, beta in {1, 6}; default here beta = 6, step ``eps / 4``). The
inner maximisation is TRADES's own objective (KL to the clean prediction, no labels), so it
lives here rather than among the evaluation's attacks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from modelguard.errors import BadInputError
from modelguard.robustness.data import Dataset
from modelguard.robustness.defenses.adversarial import TrainingRun
from modelguard.robustness.defenses.training import TrainSettings, fit
from modelguard.robustness.progress import ProgressHook


@dataclass(frozen=True)
class TradesSettings:
    eps: float = 0.1
    steps: int = 7
    alpha: float | None = None  # None: eps / 4
    beta: float = 6.0

    def __post_init__(self) -> None:
        if not 0 < self.eps <= 1 or self.steps < 1 or not self.beta >= 0:
            raise BadInputError("TRADES needs 0 < eps <= 1, steps >= 1 and beta >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _kl(clean_log_probs: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """KL(p_clean || p_adv) summed over the batch."""
    return F.kl_div(
        F.log_softmax(adv_logits, dim=1), clean_log_probs, reduction="sum", log_target=True
    )


def trades(
    model: nn.Module,
    train: Dataset,
    cfg: TradesSettings,
    settings: TrainSettings,
    progress: ProgressHook | None = None,
) -> TrainingRun:
    generator = torch.Generator().manual_seed(settings.seed)
    alpha = cfg.alpha if cfg.alpha is not None else cfg.eps / 4

    def step(m: nn.Module, x: torch.Tensor, y: torch.Tensor, _epoch: int) -> torch.Tensor:
        m.eval()
        with torch.no_grad():
            clean_log_probs = F.log_softmax(m(x), dim=1)
        x_adv = (x + 0.001 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
        for _ in range(cfg.steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(_kl(clean_log_probs, m(x_adv)), x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0, 1)
        m.train()
        logits = m(x)
        robust = _kl(F.log_softmax(logits, dim=1), m(x_adv.detach())) / len(y)
        return F.cross_entropy(logits, y) + cfg.beta * robust

    return TrainingRun(model, fit(model, train, settings, step, progress=progress))
