"""Image transforms: uint8 tensor (C x H x W, C = 1 or 3) -> normalised float32 tensor (3 x size x size).

Both data sources feed the same pipeline: built-in arrays as tensors straight from numpy (no PIL round trip),
users' files via PIL -> tensor. Size, mean and std always come from the caller (the backbone's timm data config),
so nothing here assumes ImageNet statistics.

Recipes, as in the VPT paper:
- "vtab": resize to size x size, no augmentation (train and test alike).
- "fgvc": train: resize the shorter side to size * 256/224, random crop size, horizontal flip;
          test:  resize the shorter side to size * 256/224, center crop size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torchvision.transforms import v2

from .errors import DataError

RECIPES = ("vtab", "fgvc")
RANDOM_RECIPES = ("fgvc",)  # recipes whose training transform is random (a fresh crop and flip each epoch)

Transform = Callable[[torch.Tensor], torch.Tensor]


class ToRGB:
    """Repeat a single gray channel three times (a view, no copy); 3-channel input passes through."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.expand(3, -1, -1) if image.shape[0] == 1 else image

    def __repr__(self) -> str:
        return "ToRGB()"


def build_transform(img_size: int, mean: Sequence[float], std: Sequence[float], *,
                    recipe: str = "vtab", train: bool = False) -> Transform:
    """The transform for one split: `train=True` enables the recipe's augmentation (only "fgvc" has any)."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise DataError(f"img_size must be a positive int, got {img_size!r}")
    if recipe not in RECIPES:
        raise DataError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise DataError(f"mean and std need three values each (std > 0), got mean={mean}, std={std}")
    if recipe == "vtab":
        geometry = [v2.Resize((img_size, img_size), antialias=True)]
    else:
        resize = v2.Resize(int(img_size * 256 / 224), antialias=True)  # shorter side, aspect kept
        crop = [v2.RandomCrop(img_size), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(img_size)]
        geometry = [resize, *crop]
    # Gray sources stay one channel through geometry and dtype conversion (a third of the work); the channel
    # is repeated as a view just before normalising, which writes the one 3-channel tensor of the pipeline.
    return v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True), ToRGB(),
                       v2.Normalize(mean=list(map(float, mean)), std=list(map(float, std)))])
