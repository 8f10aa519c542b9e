"""The data side of training: datasets at the backbone's input size, loaders that keep the device fed, subsets,
and one pass of a function over a split (features, cached stems, logits), shared out between ranks under torchrun."""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..data import DataSplits, TaskData, collate, read_data
from ..data.segmentation import SegmentationData
from ..data.segmentation_dataset import read_segmentation_task, segmentation_splits
from ..data.splits import fixed_sample
from ..devices import autocast, resolve_workers
from .config import TrainConfig
from .distributed import SINGLE, World, gather_rows, shard
from .stem_cache import precompute


def read_task_data(cfg: TrainConfig) -> TaskData | SegmentationData:
    """The run's data read and checked (every file decoded once), before a backbone is fetched: images with labels,
    or with masks when the run's task is segmentation."""
    if cfg.task == "segmentation":
        return read_segmentation_task(cfg.data, seed=cfg.seed, max_pixels=cfg.max_pixels, skip_bad=cfg.skip_bad)
    return read_data(cfg.data, protocol=cfg.protocol, seed=cfg.seed, skip_bad=cfg.skip_bad, max_pixels=cfg.max_pixels)


def datasets_for(data: TaskData | SegmentationData, backbone: torch.nn.Module, cfg: TrainConfig) -> DataSplits:
    """The task's datasets at the backbone's input size and normalisation."""
    from timm.data import resolve_model_data_config

    data_cfg = resolve_model_data_config(backbone)
    size, mean, std = data_cfg["input_size"][-1], tuple(data_cfg["mean"]), tuple(data_cfg["std"])
    if isinstance(data, SegmentationData):
        return segmentation_splits(data, img_size=size, mean=mean, std=std, seed=cfg.seed, source=cfg.data,
                                   max_pixels=cfg.max_pixels)
    return data.datasets(img_size=size, mean=mean, std=std, recipe=cfg.recipe)


def precompute_rows(fn: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset | None, cfg: TrainConfig,
                quiet: bool, world: World = SINGLE) -> TensorDataset | None:
    """(fn(image), label) for every item in order; under torchrun each rank computes its rows and all are gathered."""
    if dataset is None:
        return None
    rows = shard(len(dataset), world)
    local = Subset(dataset, rows or [0]) if world.distributed else dataset  # [0]: a rank with no row computes one
    with autocast(cfg.device, cfg.precision):
        batches = make_loader(local, cfg, batch_size=cfg.batch_size)
        outputs, labels = precompute(fn, batches, device=torch.device(cfg.device), quiet=quiet).tensors
    if world.distributed:
        outputs, labels = outputs[:len(rows)], labels[:len(rows)]
    return TensorDataset(gather_rows(outputs, len(dataset), world), gather_rows(labels, len(dataset), world))


def make_loader(dataset: Dataset, cfg: TrainConfig, persistent: bool = False, **batching) -> DataLoader:
    """A DataLoader that keeps `cfg.device` fed: `num_workers` processes (auto: `devices.resolve_workers`) decoding
    and resizing off the main process, pinned memory for a GPU's non-blocking copies, one-thread collate."""
    workers = resolve_workers(cfg.num_workers, cfg.device, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return DataLoader(dataset, num_workers=workers, collate_fn=collate, pin_memory=torch.device(cfg.device).type == "cuda",
                      persistent_workers=persistent and workers > 0, **batching)


def test_set_of(dataset: Dataset, cfg: TrainConfig) -> Dataset:
    """The test images scored: all, or `cfg.test_subset` of them fixed across seeds, then `cfg.subset`."""
    if cfg.test_subset is not None and len(dataset) > cfg.test_subset:
        # stratified by label; a segmentation split (no one label an image): the first N of a fixed order
        labels = getattr(dataset, "labels", np.zeros(len(dataset), dtype=np.int64))
        dataset = Subset(dataset, fixed_sample(labels, cfg.test_subset).tolist())
    return subset_of(dataset, cfg)


def subset_of(dataset: Dataset | None, cfg: TrainConfig) -> Dataset | None:
    """At most `cfg.subset` images of a split, drawn by the seed (for quick checks like `demo --smoke`)."""
    if dataset is None or cfg.subset is None or len(dataset) <= cfg.subset:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))
    return Subset(dataset, order[:cfg.subset].tolist())
