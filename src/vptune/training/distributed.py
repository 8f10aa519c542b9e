"""Training on several processes with torch's own DistributedDataParallel, launched by torchrun.

    torchrun --nproc-per-node 2 -m vptune train ...        (one machine; add --nnodes/--rdzv-* for several)

The rule that keeps results independent of the number of processes W: `--batch-size` is the GLOBAL batch. Every
epoch has one permutation of the training set (drawn from the seed and the epoch, as a single process draws it),
cut into global batches of batch_size; rank r takes rows r, r + W, ... of each global batch. Each rank's loss is
its sum of per-image losses times W / (images in the global batch), so DDP's gradient average is exactly the
global batch's mean gradient, whatever the split (the last global batch may not divide by W; a rank left with
no image that step runs one image at weight 0, so every rank takes part in every all-reduce).
Evaluation and the cached features work the same way: each rank computes rows rank::W and the rows are gathered
back in order, so no image is dropped or counted twice. Only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # init_world created the process group, so `leave` destroys it

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run directory and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def init_world(device: str) -> tuple[World, str]:
    """Join the process group torchrun describes in the environment (gloo on CPU, nccl on CUDA); returns the world
    and this rank's device. Without torchrun (WORLD_SIZE unset or 1): a single process, `device` unchanged."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE, device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise ConfigError("--device cuda was given but this machine has no CUDA device; use --device cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    owns_group = not dist.is_initialized()  # a caller's own group (a script already under DDP) is left alone
    if owns_group:
        dist.init_process_group("nccl" if cuda else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank, owns_group), device


def leave(world: World) -> None:
    """Tear down the process group init_world created: its communication threads must stop before the
    interpreter exits (otherwise a rank can abort with "terminate called without an active exception")."""
    if world.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, world: World) -> None:
    if batch_size % world.size:
        raise ConfigError(f"--batch-size {batch_size} is the global batch and must divide by the {world.size} "
                          f"processes; use a multiple of {world.size} (e.g. {world.size * max(1, batch_size // world.size)})")


class GlobalBatchSampler(Sampler[list[tuple[int, int]]]):
    """This rank's rows of each global batch of one epoch's permutation (see the module docstring), as
    (epoch, index) pairs for `EpochItems`. `set_epoch` before each epoch; one sampler serves the whole run, so a
    loader's worker processes can live across epochs (the main process iterates the sampler).

    `weights()` gives, per step, the factor W / (images in the global batch), or 0 for a stand-in row."""

    def __init__(self, num_items: int, batch_size: int, seed: int, world: World) -> None:
        self.num_items, self.batch_size, self.seed, self.world = num_items, batch_size, seed, world
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        generator = torch.Generator().manual_seed(seed64(self.seed * 100_003 + epoch))
        order = torch.randperm(self.num_items, generator=generator).tolist()
        self.epoch = epoch
        self.batches = [order[i:i + self.batch_size] for i in range(0, self.num_items, self.batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self.batches:
            mine = batch[self.world.rank::self.world.size] or batch[:1]  # [:1]: a stand-in row, weighted 0
            yield [(self.epoch, i) for i in mine]

    def weights(self) -> list[float]:
        return [self.world.size / len(b) if b[self.world.rank::self.world.size] else 0.0 for b in self.batches]


class EpochItems(Dataset):
    """`dataset[index]` for an (epoch, index) pair, or a plain index (the passes before training: prompt and head
    init), its random augmentation drawn from (seed, epoch, index) alone: the same crop and flip in any loader
    process, with any number of them or of ranks, and after a resume."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]):
        epoch, index = item if isinstance(item, tuple) else (-1, item)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream (dropout) is left as it was
            torch.manual_seed(seed64((self.seed * 1_000_003 + epoch + 1) * 10_000_019 + index))
            return self.dataset[index]


def seed64(value: int) -> int:
    """A seed derived from --seed, wrapped into torch's 64-bit range (unchanged below it) instead of overflowing."""
    return value % 2**64


def shard(num_items: int, world: World) -> list[int]:
    """The item indices this rank evaluates or precomputes: rank, rank + W, ..."""
    return list(range(world.rank, num_items, world.size))


def gather_rows(local: torch.Tensor, num_items: int, world: World) -> torch.Tensor:
    """Rows computed by every rank for `shard(num_items)` -> all rows in item order, on every rank."""
    if not world.distributed:
        return local
    parts: list[torch.Tensor | None] = [None] * world.size
    dist.all_gather_object(parts, local.cpu())
    out = torch.empty((num_items, *local.shape[1:]), dtype=local.dtype)
    for rank, part in enumerate(parts):
        out[rank::world.size] = part
    return out


def all_sum(values: list[float], world: World) -> list[float]:
    """Element-wise sum over ranks (epoch totals: loss, correct, images)."""
    if not world.distributed:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def broadcast(obj, world: World):
    """Rank 0's `obj` on every rank (settings, resume state)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
