"""The shared attack interface: ``Attack(model, eps=..., seed=...)(x, y) -> x_adv``.

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks import ATTACKS
>>> attack = ATTACKS["fgsm"](linear_classifier(), eps=0.1)
>>> x_adv = attack(torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
>>> bool((x_adv >= 0).all() and (x_adv <= 1).all())
True

Conventions shared by every attack (after torchattacks: one attack, one file, one interface):

- inputs live in [0, 1]; normalisation is inside the model; outputs are clipped to [0, 1];
- ``y`` are the true labels (untargeted) or the target labels (``targeted=True``);
- work happens on the model's device, ``x_adv`` comes back on ``x``'s device;
- the model is put in eval mode while attacking and restored afterwards;
- randomness comes from a ``torch.Generator`` seeded with ``seed`` when the attack is built,
  so the same attack object fed the same batches gives the same results;
- ``config()`` returns every hyperparameter, enough to rebuild the attack exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from modelguard.errors import BadInputError

Classifier = Callable[[Tensor], Tensor]


def model_device(model: object) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for score-only models)."""
    if isinstance(model, nn.Module):
        for tensor in model.parameters():
            return tensor.device
        for buffer in model.buffers():
            return buffer.device
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else torch.device("cpu")


@contextmanager
def eval_mode(model: object) -> Iterator[None]:
    """Run ``model`` in eval mode (dropout/batch-norm frozen), restoring its mode afterwards."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def margin(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Per-example attack margin; > 0 means the attack succeeded.

    Untargeted: ``max_{j != y} z_j - z_y``. Targeted: ``z_t - max_{j != t} z_j``.
    """
    own = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.clone()
    others.scatter_(1, y[:, None], float("-inf"))
    best_other = others.amax(dim=1)
    return own - best_other if targeted else best_other - own


def succeeded(logits: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """Boolean per example: misclassified (untargeted) or classified as the target."""
    predicted = logits.argmax(dim=1)
    return predicted == y if targeted else predicted != y


def linf_project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Nearest point of the Linf ball around ``x`` intersected with [0, 1]."""
    return torch.clamp(torch.clamp(x_adv, x - eps, x + eps), 0.0, 1.0)


def flat_norm(t: Tensor, p: float) -> Tensor:
    """Per-example ``p``-norm over every non-batch axis, shape ``(N,)``."""
    return t.flatten(1).norm(p=p, dim=1)


def l2_project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Scale the perturbation into the L2 ball, then clip to [0, 1] (stays inside the ball)."""
    delta = x_adv - x
    if math.isfinite(eps):
        norms = flat_norm(delta, 2).clamp_min(1e-12)
        factor = torch.clamp(eps / norms, max=1.0).view(-1, *([1] * (x.dim() - 1)))
        delta = delta * factor
    return torch.clamp(x + delta, 0.0, 1.0)


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return linf_project(x_adv, x, eps)
    if norm == "l2":
        return l2_project(x_adv, x, eps)
    raise BadInputError(f"unknown norm {norm!r} (expected 'linf' or 'l2')")


class Attack:
    """Base class. Subclasses set ``name`` (and ``norm``) and implement :meth:`perturb`.

    ``minimum_norm`` attacks (DeepFool, Carlini-Wagner) search for the smallest adversarial
    perturbation; they accept ``eps=math.inf`` (unbounded) and otherwise project their result
    into the ``eps`` ball of their norm. ``score_based`` attacks use only output scores (no
    gradients) and count their model queries in ``queries``.
    """

    name: ClassVar[str]
    norm: str = "linf"  # an instance may override it (PGD takes ``norm=``)
    minimum_norm: ClassVar[bool] = False
    score_based: ClassVar[bool] = False
    supports_targeted: ClassVar[bool] = True
    # The threat models (``--norm``) the evaluation may run this attack under; empty: its own
    # ``norm`` only. ``takes_norm``: it runs in the threat model's norm (``norm=``, e.g. PGD,
    # APGD, FAB); a minimum-norm attack listed for both is projected into either ball.
    threat_norms: ClassVar[tuple[str, ...]] = ()
    takes_norm: ClassVar[bool] = False

    @classmethod
    def threat_params(cls, params: dict[str, Any], norm: str) -> dict[str, Any]:
        """``params`` for running under the threat model ``norm``, or a one-line refusal
        (never another norm in silence): ``norm`` filled in for attacks that take it."""
        from modelguard.robustness.attacks import ATTACKS

        if norm not in (cls.threat_norms or (cls.norm,)):
            others = sorted(n for n, c in ATTACKS.items() if norm in (c.threat_norms or (c.norm,)))
            raise BadInputError(
                f"{cls.name} runs in {'/'.join(cls.threat_norms or (cls.norm,))} only: it cannot "
                f"run under --norm {norm} (attacks for {norm}: {', '.join(others)})"
            )
        given = params.get("norm", norm)
        if given != norm:
            raise BadInputError(
                f"{cls.name}: norm={given!r} contradicts the threat model --norm {norm}"
            )
        return {**params, "norm": norm} if cls.takes_norm else dict(params)

    def __init__(
        self, model: Classifier, *, eps: float, targeted: bool = False, seed: int = 0
    ) -> None:
        eps = float(eps)
        if math.isnan(eps) or eps < 0 or (math.isinf(eps) and not self.minimum_norm):
            raise BadInputError(
                f"{self.name}: eps must be a finite number >= 0, got {eps}"
                if not self.minimum_norm
                else f"{self.name}: eps must be >= 0 (inf for unbounded), got {eps}"
            )
        if targeted and not self.supports_targeted:
            raise BadInputError(f"{self.name} has no targeted mode")
        self.model = model
        self.eps = eps
        self.targeted = bool(targeted)
        self.seed = int(seed)
        self.device = model_device(model)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed)
        self.queries = 0  # model forward passes per example, summed over examples

    def hyperparameters(self) -> dict[str, Any]:
        """Attack-specific hyperparameters (override); ``config`` adds the common ones."""
        return {}

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "norm": self.norm,
            "eps": self.eps if math.isfinite(self.eps) else "inf",
            "targeted": self.targeted,
            "seed": self.seed,
            **self.hyperparameters(),
        }

    def logits(self, x: Tensor) -> Tensor:
        self.queries += int(x.shape[0])
        return self.model(x)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def check_inputs(self, x: Tensor, y: Tensor) -> None:
        if not torch.is_floating_point(x) or x.dim() < 2:
            raise BadInputError(
                f"{self.name}: inputs must be a float tensor with a batch axis, got {tuple(x.shape)}"
            )
        if y.dim() != 1 or y.shape[0] != x.shape[0] or torch.is_floating_point(y):
            raise BadInputError(
                f"{self.name}: labels must be integers of shape ({x.shape[0]},), got {tuple(y.shape)}"
            )
        if x.numel() and (not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1):
            raise BadInputError(f"{self.name}: inputs must lie in [0, 1]")

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        self.check_inputs(x, y)
        if x.shape[0] == 0:
            return x.clone()
        source = x.device
        xd = x.detach().to(self.device, torch.float32)
        yd = y.detach().to(self.device, torch.long)
        with eval_mode(self.model):
            x_adv = self.perturb(xd, yd)
        if not self.minimum_norm or math.isfinite(self.eps):
            x_adv = project(x_adv, xd, self.eps, self.norm)
        return x_adv.detach().to(source)


def input_gradient(
    model: Classifier, x: Tensor, loss_fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor]:
    """``(d loss / d x, logits)`` without touching parameter ``.grad`` fields."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        loss = loss_fn(logits)
        (grad,) = torch.autograd.grad(loss, [x])
    return grad.detach(), logits.detach()


LOSSES = ("ce", "margin")


def attack_objective(logits: Tensor, y: Tensor, *, loss: str, targeted: bool) -> Tensor:
    """Scalar the attacker ascends, summed over the batch (so steps do not scale with N).

    ``ce``: cross-entropy of the true label (untargeted) or minus that of the target.
    ``margin``: the Carlini-Wagner logit margin (:func:`margin`), immune to softmax saturation.
    """
    if loss == "ce":
        ce = nn.functional.cross_entropy(logits, y, reduction="sum")
        return -ce if targeted else ce
    if loss == "margin":
        return margin(logits, y, targeted).sum()
    raise BadInputError(f"unknown attack loss {loss!r} (expected one of {', '.join(LOSSES)})")
