"""The training data loader alone: images/s, set up as training sets it up, to put beside the model's speed."""
from __future__ import annotations

import statistics
import sys
import time

import torch

from ..data import collate, load_data
from .settings import BenchSettings
from .timing import Results


def loader_throughput(source: str, img_size: int, batch: int, repeats: int, workers: int, pin: bool) -> dict:
    """Images/s of the training data loader alone (decode or cached arrays, transform, vptune's collate), set up
    as training sets it up (`workers` processes kept across passes, pinned memory for a GPU): the median over
    `repeats` passes of the train split, after one untimed pass (which also starts the workers)."""
    from torch.utils.data import DataLoader

    splits = load_data(source, img_size=img_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    loader = DataLoader(splits.train, batch_size=batch, shuffle=True, collate_fn=collate, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0)
    speeds = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        images = sum(len(labels) for _, labels in loader)
        if r:
            speeds.append(images / (time.perf_counter() - start))
    return {"data": source, "img_size": img_size, "batch": batch, "images": len(splits.train),
            "num_workers": workers, "pin_memory": pin, "img_per_s": statistics.median(speeds), "models": []}


def time_loader(args: BenchSettings, results: Results, alias: str, img_size: int) -> None:
    """The data loader alone at this model's image size (once per size: models of one size share it)."""
    same_size = [x for x in results.loaders if x["img_size"] == img_size]
    if not same_size:
        print(f"  data loader alone: {args.loader} at {img_size} px, {args.num_workers} workers", file=sys.stderr,
              flush=True)
        pin = torch.device(args.device).type == "cuda"  # as training loads for a GPU
        same_size = [loader_throughput(args.loader, img_size, args.train_batch, 3, args.num_workers, pin)]
        results.loaders += same_size
    same_size[0]["models"].append(alias)
