"""torch.distributed for ``eval`` and ``harden``: run them under torchrun, gloo on CPU, NCCL on GPU.

    $ torchrun --nproc-per-node 2 -m modelguard eval model_dir --attacks pgd --eps 0.1
    $ torchrun --nproc-per-node 2 -m modelguard harden model_dir --method pgd-at --out child ...
    $ torchrun --nnodes 2 --node-rank 0 --rdzv-endpoint host:29400 -m modelguard eval ...

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) every function here is the
one-process path and nothing is initialised.

``eval``: every rank runs the same evaluation; :func:`craft` gives each rank every
``world``-th batch of examples to attack and gathers the adversarial examples (and query
counts) to every rank, so the numbers that follow are computed on identical arrays
everywhere. Each batch's attack randomness is re-seeded from (attack seed, batch index), so
the result does not depend on which rank attacked which batch: it is identical to one
process for the same seed. Only rank 0 writes reports, certificates and ledger entries.

``harden``: :func:`fit_model` wraps the model in DistributedDataParallel (gradients averaged
across ranks) and :func:`batch_indices` draws each rank's share of every epoch from a
DistributedSampler (seeded, re-shuffled per epoch); the global batch is ``--batch-size``
(each rank takes its share), so one step sees as many examples as one process would.
After training every rank meets at :func:`leave`; ranks other than 0 exit there (status 0,
:class:`SecondaryRank`), and rank 0 alone exports, signs, certifies and records the child.
``eval`` leaves the same way once the evaluation is done: rank 0 writes the reports and the
certificate.

A rank that fails makes the others fail at their next collective operation with a
:class:`DistributedJobError` that says so; torchrun then stops the job and names the rank.
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, TensorDataset

from modelguard.errors import EXIT_BAD_INPUT, ModelGuardError
from modelguard.modelcard import batches
from modelguard.robustness.data import Dataset

TIMEOUT = timedelta(minutes=30)


class DistributedJobError(ModelGuardError):
    """Another rank of a torchrun job failed (its own error is printed by that rank)."""

    exit_code = EXIT_BAD_INPUT


class SecondaryRank(SystemExit):
    """Ends a rank other than 0 (exit status 0) once its share of the work is done."""

    def __init__(self, rank: int) -> None:
        super().__init__(0)
        self.rank = rank


def world_size_from_env() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: str = "cpu") -> None:
    """Join the torchrun job described by the environment (a no-op without one).

    gloo for CPU devices, NCCL for CUDA (each rank on ``cuda:LOCAL_RANK``).
    """
    if world_size_from_env() <= 1 or dist.is_initialized():
        return
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_primary() -> bool:
    return rank() == 0


def local_device(device: str | torch.device) -> torch.device:
    """``cuda`` becomes this rank's ``cuda:LOCAL_RANK`` in a NCCL job; anything else as is."""
    dev = torch.device(device)
    if active() and dev.type == "cuda" and dev.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return dev


def _all_gather(value: Any) -> list[Any]:
    gathered: list[Any] = [None] * world_size()
    try:
        dist.all_gather_object(gathered, value)
    except RuntimeError as error:
        raise DistributedJobError(
            f"rank {rank()} of {world_size()}: another rank of this torchrun job failed or"
            f" left ({error.__class__.__name__}); stopping (that rank's error is above)"
        ) from None
    return gathered


def craft(attack: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
    """``attack`` over every batch of (x, y), batches shared out across ranks; every rank gets
    the whole result. Batch b's randomness is seeded from (attack seed, b) whoever runs it."""
    starts = list(range(0, x.shape[0], batch_size))
    mine = starts[rank() :: world_size()]
    queries_before = attack.queries
    done: dict[int, np.ndarray] = {}
    for start in mine:
        attack.generator.manual_seed(attack.seed * 1_000_003 + start // batch_size)
        xb = torch.from_numpy(x[start : start + batch_size])
        yb = torch.from_numpy(y[start : start + batch_size])
        done[start] = attack(xb, yb).cpu().numpy().astype(np.float32)
    if active():
        shares = _all_gather((done, attack.queries - queries_before))
        done = {start: arr for share, _ in shares for start, arr in share.items()}
        attack.queries = queries_before + sum(q for _, q in shares)
    if not starts:
        return x.astype(np.float32)
    return np.concatenate([done[start] for start in starts], axis=0)


def fit_model(model: nn.Module) -> nn.Module:
    """The module a training step should call: DDP-wrapped in a distributed job.

    Forward calls whose inputs require gradients (an attack crafting adversarial inputs
    inside a training step) go to the bare module, so they neither trigger nor disturb the
    gradient all-reduce; the training loss's forward goes through DDP.
    """
    if not active():
        return model
    return _CraftAwareDDP(model)


class _CraftAwareDDP(DistributedDataParallel):
    def forward(self, *inputs: Any, **kwargs: Any) -> Any:
        if any(isinstance(t, Tensor) and t.requires_grad for t in inputs):
            return self.module(*inputs, **kwargs)
        return super().forward(*inputs, **kwargs)


def steps_per_epoch(count: int, batch_size: int) -> int:
    """Optimizer steps one rank takes per epoch (for learning-rate schedules)."""
    if not active():
        return math.ceil(count / batch_size)
    per_rank = max(1, batch_size // world_size())
    share = math.ceil(count / world_size())  # the sampler pads every rank to this many
    return math.ceil(share / per_rank)


def epoch_batches(
    data: Dataset, batch_size: int, generator: torch.Generator, epoch: int, seed: int
) -> list[tuple[Tensor, Tensor]]:
    """One epoch's mini-batches for this rank.

    One process: the seeded shuffled batches of ``batches``. In a job: this rank's share of a
    DistributedSampler permutation (seeded, re-shuffled per epoch) in batches of
    ``batch_size // world`` examples, so that a step across all ranks sees ``batch_size``.
    """
    if not active():
        return batches(data, batch_size, generator)
    sampler: DistributedSampler[int] = DistributedSampler(
        TensorDataset(torch.arange(len(data))),
        num_replicas=world_size(),
        rank=rank(),
        shuffle=True,
        seed=seed,
    )
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler), dtype=torch.long)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    per_rank = max(1, batch_size // world_size())
    return [(x[idx], y[idx]) for idx in order.split(per_rank)]


def leave() -> None:
    """End the distributed part: all ranks meet, the group is dissolved, ranks > 0 exit (0).

    Rank 0 carries on alone (writes, signs, records) as a one-process run.
    """
    if not active():
        return
    mine = rank()
    _all_gather(mine)
    dist.destroy_process_group()
    if mine != 0:
        raise SecondaryRank(mine)
