"""A segmentation task as torch datasets: each image/mask pair decoded on access and through the joint transform;
`read_segmentation_task` (a built-in name or a user's path, read and checked) and `segmentation_splits` (the four
splits at the backbone's size), the segmentation side of `load.py`'s `read_data` and `TaskData.datasets`."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .._io import short_sha
from .builtin_segmentation import DEFECTS, NAME as PASTED_ANIMALS, builtin_segmentation_folder
from .datasets import MAX_PIXELS, DataSplits, decode_image, one_thread
from .joint_transforms import JointTransform
from .segmentation import Pair, SegmentationData, check_segmentation, is_segmentation_data, read_mask, \
    read_segmentation_data

SEGMENTATION_BUILTINS = (PASTED_ANIMALS, DEFECTS)


class SegmentationDataset(Dataset):
    """Items (image (3, S, S) float, normalised; mask int64: (S, S) in training, the full (H, W) otherwise)."""

    def __init__(self, pairs: list[Pair], transform: JointTransform, shift: bool = False,
                 max_pixels: int = MAX_PIXELS, root: Path | None = None) -> None:
        self.pairs, self.transform, self.shift, self.max_pixels, self.root = pairs, transform, shift, max_pixels, root

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[i]
        with one_thread():
            image = decode_image(pair.image, str(pair.image), self.max_pixels)
            mask = torch.from_numpy(read_mask(pair.mask, self.shift))
            return self.transform(image, mask)  # randomness: torch's global stream, seeded per item by the loader

    def fingerprint(self) -> str:
        """Of the pairs' paths (relative to the data's root, so a moved folder keeps it)."""
        lines = "".join(f"{_relative(p.image, self.root)}\t{_relative(p.mask, self.root)}\n" for p in self.pairs)
        return short_sha(lines.encode("utf-8", "surrogateescape"))


def _relative(path: Path, root: Path | None) -> str:
    return path.relative_to(root).as_posix() if root is not None and path.is_relative_to(root) else path.as_posix()


def is_segmentation_source(source: str | os.PathLike) -> bool:
    """A built-in segmentation task's name, or a path whose layout is segmentation data (images with masks)."""
    return str(source) in SEGMENTATION_BUILTINS or is_segmentation_data(source)


def read_segmentation_task(source: str | os.PathLike, seed: int = 0, max_pixels: int = MAX_PIXELS,
                           skip_bad: bool = False) -> SegmentationData:
    """A built-in segmentation task (written to the cache on first use) or a user's folder / CSV, every pair
    decoded and checked once (`check_segmentation`; `skip_bad`: bad pairs left out) before anything else happens."""
    folder = builtin_segmentation_folder(str(source)) if str(source) in SEGMENTATION_BUILTINS else source
    return check_segmentation(read_segmentation_data(folder, seed), max_pixels, skip_bad)


def segmentation_splits(data: SegmentationData, *, img_size: int, mean: tuple[float, float, float],
                        std: tuple[float, float, float], seed: int = 0, source: str | None = None,
                        max_pixels: int = MAX_PIXELS) -> DataSplits:
    """train / val / trainval / test as `SegmentationDataset`s: training splits through the joint random scale, crop
    and flip; val and test resized for the model with their masks at full resolution (every pixel is scored)."""
    transforms = {train: JointTransform(img_size, mean, std, train=train) for train in (True, False)}
    pairs = {**data.splits, "trainval": data.splits["train"] + data.splits["val"]}

    def make(split: str) -> SegmentationDataset:
        return SegmentationDataset(pairs[split], transforms[split in ("train", "trainval")], data.shift, max_pixels,
                                   data.root)

    info = {"source": source or str(data.root), "format": f"segmentation ({data.layout})", "protocol": "given",
            "task": "segmentation", "split_rule": data.split_rule, "seed": seed, "img_size": img_size,
            "mean": [float(m) for m in mean], "std": [float(s) for s in std],
            **({"notes": data.notes} if data.notes else {})}
    return DataSplits(make("train"), make("val"), make("trainval"), make("test"), list(data.class_names), info)
