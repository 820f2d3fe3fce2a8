"""AdvGAN: a generator network that maps an input to its adversarial perturbation (Xiao et al.,
"Generating Adversarial Examples with Adversarial Networks", IJCAI 2018).

>>> import torch
>>> from modelguard.zoo import linear_classifier
>>> from modelguard.robustness.attacks.advgan import AdvGAN
>>> attack = AdvGAN(linear_classifier(), eps=0.1, epochs=1, train_limit=64)
>>> x_adv = attack(torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
>>> bool(((x_adv - x_adv.clamp(0, 1)).abs().max() == 0))
True

Training (once, on the first call, on ``train_data``; then every input costs one generator
forward pass) minimises the paper's objective over the generator G and a discriminator D:

    L = L_adv + alpha * L_GAN + beta * L_hinge

- ``L_adv``: a loss on the target's logits: the paper's Carlini-Wagner loss
  ``max(z_y - max_{j!=y} z_j, -kappa)`` (``loss="cw"``) or minus the cross-entropy
  (``loss="ce"``, the default: it keeps pushing examples already fooled, and trained
  stronger generators on 8x8 digits in our runs, docs/audits.md);
- ``L_GAN``: the discriminator's loss on ``x + G(x)`` (it learns to tell them from clean
  inputs, the generator to fool it: perturbations that look like the data);
- ``L_hinge = max(0, ||G(x)||_2 - c)`` with ``c = hinge_fraction * eps * sqrt(d)``;

and the perturbation is ``eps * tanh(.)``, i.e. inside the Linf ball by construction, then
clipped to [0, 1]. Our defaults alpha = beta = 0.1 weigh the adversarial term ten times the
GAN term, as the authors' reference code does; with alpha = beta = 1 training collapsed on
8x8 digits after ~10 epochs in our runs. The generator is an MLP by default (``generator=
"conv"`` gives the paper's convolutional shape for images). The generator, the discriminator and the training
order are seeded, and the trained generator's weights are hashed (``generator_sha256`` in
``config()``), so a certificate names the exact generator that produced its numbers.

:class:`AdvGANBlackBox` is the paper's black-box variant: the target is only queried for its
output scores (an ONNX Runtime session), a surrogate is distilled from those outputs on the
training data, and the generator trains against the surrogate while the surrogate keeps
being distilled on the target's answers to the generator's new examples (the paper's
dynamic distillation). The target's training-time queries are counted in
``training_queries``; at attack time AdvGAN needs no query at all.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modelguard.errors import BadInputError
from modelguard.robustness.attacks.base import Attack, Classifier, margin

GENERATORS = ("mlp", "conv")
LOSSES = ("ce", "cw")


def _generator(shape: tuple[int, ...], width: int, kind: str) -> nn.Module:
    """``conv``: a fully convolutional net (the paper's shape, for images); ``mlp``: two hidden
    layers over the flattened input, which sees the whole input at once (better on 8x8 digits)."""
    if kind == "conv" and len(shape) == 3:
        channels = shape[0]
        return nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, channels, 3, padding=1),
        )
    features = math.prod(shape)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 8 * width),
        nn.ReLU(),
        nn.Linear(8 * width, 8 * width),
        nn.ReLU(),
        nn.Linear(8 * width, features),
        nn.Unflatten(1, shape),
    )


def _discriminator(shape: tuple[int, ...], width: int) -> nn.Module:
    if len(shape) == 3:
        return nn.Sequential(
            nn.Conv2d(shape[0], width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, 1),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(shape), 4 * width),
        nn.LeakyReLU(0.2),
        nn.Linear(4 * width, 1),
    )


def _surrogate(shape: tuple[int, ...], classes: int, width: int) -> nn.Module:
    if len(shape) == 3:
        return nn.Sequential(
            nn.Conv2d(shape[0], width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * width, 128),
            nn.ReLU(),
            nn.Linear(128, classes),
        )
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(shape), 128),
        nn.ReLU(),
        nn.Linear(128, classes),
    )


def weights_sha256(module: nn.Module) -> str:
    """sha256 over (name, dtype, shape, little-endian bytes) of every tensor, sorted by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}\0{data.dtype}\0{list(data.shape)}\0".encode())
        digest.update(data.numpy().astype(data.numpy().dtype.newbyteorder("<")).tobytes())
    return digest.hexdigest()


class AdvGAN(Attack):
    name: ClassVar[str] = "advgan"
    norm = "linf"
    supports_targeted: ClassVar[bool] = False  # the paper trains one generator per target class

    def __init__(
        self,
        model: Classifier,
        *,
        eps: float = 0.1,
        targeted: bool = False,
        seed: int = 0,
        train_data: str = "digits:train",
        train_limit: int | None = None,
        epochs: int = 15,
        batch_size: int = 64,
        lr: float = 1e-3,
        alpha: float = 0.1,
        beta: float = 0.1,
        hinge_fraction: float = 0.5,
        kappa: float = 0.0,
        width: int = 32,
        generator: str = "mlp",
        loss: str = "ce",
    ) -> None:
        super().__init__(model, eps=eps, targeted=targeted, seed=seed)
        if generator not in GENERATORS or loss not in LOSSES:
            raise BadInputError(
                f"{self.name}: generator must be one of {GENERATORS}, loss one of {LOSSES}"
            )
        if epochs < 1 or batch_size < 1 or width < 1:
            raise BadInputError(f"{self.name}: epochs, batch_size and width must be >= 1")
        if not lr > 0 or min(alpha, beta, hinge_fraction, kappa) < 0:
            raise BadInputError(f"{self.name}: lr must be > 0; alpha, beta, kappa >= 0")
        if train_limit is not None and train_limit < 1:
            raise BadInputError(f"{self.name}: train_limit must be >= 1")
        self.train_data = str(train_data)
        self.train_limit = train_limit
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.lr = float(lr)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.hinge_fraction = float(hinge_fraction)
        self.kappa = float(kappa)
        self.width = int(width)
        self.generator_kind = generator
        self.loss = loss
        self.generator_net: nn.Module | None = None
        self.train_seconds = 0.0  # wall clock of training, kept out of config() (not reproducible)
        self.training_queries = 0

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "train_data": self.train_data,
            "train_limit": self.train_limit,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "alpha": self.alpha,
            "beta": self.beta,
            "hinge_fraction": self.hinge_fraction,
            "kappa": self.kappa,
            "width": self.width,
            "generator": self.generator_kind,
            "loss": self.loss,
            "generator_sha256": weights_sha256(self.generator_net)
            if self.generator_net is not None
            else None,
        }

    # -- the model the generator trains against --------------------------------------------
    def trained_against(self) -> Classifier:
        """White-box: the target itself."""
        return self.model

    def before_training(self, x: Tensor) -> None:
        """Hook for the black-box variant (distil its surrogate first)."""

    def after_generator_step(self, x: Tensor, x_adv: Tensor) -> None:
        """Hook for the black-box variant (dynamic distillation)."""

    # -- training ------------------------------------------------------------------------
    def _training_inputs(self, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        from modelguard.robustness.data import load_dataset

        data = load_dataset(self.train_data).subset(self.train_limit)
        if tuple(data.x.shape[1:]) != shape:
            raise BadInputError(
                f"{self.name}: training data {self.train_data!r} has examples of shape "
                f"{list(data.x.shape[1:])}, the attacked inputs {list(shape)} "
                f"(set attack_params {{'{self.name}': {{'train_data': ...}}}})"
            )
        return (
            torch.from_numpy(data.x).to(self.device),
            torch.from_numpy(data.y).to(self.device),
        )

    def perturbation(self, x: Tensor) -> Tensor:
        assert self.generator_net is not None
        return self.eps * torch.tanh(self.generator_net(x))

    def train(self, shape: tuple[int, ...]) -> None:
        started = time.perf_counter()
        x_train, y_train = self._training_inputs(shape)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            generator = _generator(shape, self.width, self.generator_kind).to(self.device)
            discriminator = _discriminator(shape, self.width).to(self.device)
            order_rng = torch.Generator().manual_seed(self.seed)
            self.generator_net = generator
            self.before_training(x_train)
            target = self.trained_against()
            opt_g = torch.optim.Adam(generator.parameters(), lr=self.lr)
            opt_d = torch.optim.Adam(discriminator.parameters(), lr=self.lr)
            bound = self.hinge_fraction * self.eps * math.sqrt(math.prod(shape))
            g_params = list(generator.parameters())
            with torch.enable_grad():
                for _ in range(self.epochs):
                    generator.train()
                    discriminator.train()
                    order = torch.randperm(len(x_train), generator=order_rng).to(self.device)
                    for idx in order.split(self.batch_size):
                        x, y = x_train[idx], y_train[idx]
                        delta = self.perturbation(x)
                        x_adv = torch.clamp(x + delta, 0.0, 1.0)
                        # discriminator: clean -> 1, generated -> 0
                        real = discriminator(x)
                        fake = discriminator(x_adv.detach())
                        d_loss = F.binary_cross_entropy_with_logits(
                            real, torch.ones_like(real)
                        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
                        opt_d.zero_grad()
                        d_loss.backward()
                        opt_d.step()
                        # generator: fool the target (C&W loss), the discriminator, stay small
                        fooled = discriminator(x_adv)
                        gan = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
                        adv = self.adversarial_loss(target(x_adv), y)
                        hinge = F.relu((x_adv - x).flatten(1).norm(dim=1) - bound).mean()
                        g_loss = adv + self.alpha * gan + self.beta * hinge
                        # autograd.grad, not backward: the target's .grad fields stay untouched
                        grads = torch.autograd.grad(g_loss, g_params)
                        opt_g.zero_grad()
                        for param, grad in zip(g_params, grads, strict=True):
                            param.grad = grad
                        opt_g.step()
                        self.after_generator_step(x, x_adv.detach())
            generator.eval()
        self.train_seconds = time.perf_counter() - started

    def adversarial_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The paper's C&W loss (``cw``), or minus the cross-entropy (``ce``, our default)."""
        if self.loss == "cw":
            return torch.clamp(-margin(logits, y, False), min=-self.kappa).mean()
        return -F.cross_entropy(logits, y)

    def perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.generator_net is None:
            self.train(tuple(x.shape[1:]))
        with torch.no_grad():
            return torch.clamp(x + self.perturbation(x), 0.0, 1.0)


class AdvGANBlackBox(AdvGAN):
    """AdvGAN against scores only: a distilled surrogate stands in for the target's gradients."""

    name: ClassVar[str] = "advgan-bb"
    score_based: ClassVar[bool] = True

    def __init__(
        self,
        model: Classifier,
        *,
        distill_epochs: int = 10,
        surrogate_width: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        if distill_epochs < 1 or surrogate_width < 1:
            raise BadInputError(f"{self.name}: distill_epochs and surrogate_width must be >= 1")
        self.distill_epochs = int(distill_epochs)
        self.surrogate_width = int(surrogate_width)
        self.surrogate: nn.Module | None = None
        self.opt_s: torch.optim.Optimizer | None = None

    def hyperparameters(self) -> dict[str, Any]:
        return {
            **super().hyperparameters(),
            "distill_epochs": self.distill_epochs,
            "surrogate_width": self.surrogate_width,
            "training_queries": self.training_queries,
        }

    def _query(self, x: Tensor) -> Tensor:
        """The target's probabilities (scores only; counted)."""
        self.training_queries += int(x.shape[0])
        with torch.no_grad():
            return F.softmax(self.model(x).float().to(self.device), dim=1)

    def _distil_step(self, x: Tensor, teacher: Tensor) -> None:
        assert self.surrogate is not None and self.opt_s is not None
        self.surrogate.train()
        loss = F.kl_div(F.log_softmax(self.surrogate(x), dim=1), teacher, reduction="batchmean")
        self.opt_s.zero_grad()
        loss.backward()
        self.opt_s.step()
        self.surrogate.eval()

    def before_training(self, x: Tensor) -> None:
        teacher = torch.cat([self._query(chunk) for chunk in x.split(1024)])
        self.surrogate = _surrogate(tuple(x.shape[1:]), teacher.shape[1], self.surrogate_width)
        self.surrogate = self.surrogate.to(self.device)
        self.opt_s = torch.optim.Adam(self.surrogate.parameters(), lr=1e-3)
        order_rng = torch.Generator().manual_seed(self.seed + 1)
        with torch.enable_grad():
            for _ in range(self.distill_epochs):
                for idx in torch.randperm(len(x), generator=order_rng).split(self.batch_size):
                    self._distil_step(x[idx], teacher[idx])

    def trained_against(self) -> Classifier:
        assert self.surrogate is not None
        return self.surrogate

    def after_generator_step(self, x: Tensor, x_adv: Tensor) -> None:
        with torch.enable_grad():
            self._distil_step(x_adv, self._query(x_adv))
