"""The stem: the frozen blocks before the first prompt, computed once per image instead of every step.

With the backbone frozen and no random augmentation, `model.stem(image)` is a fixed function of the image, so
training can keep its output and run only the rest (`model.forward_from_stem`): for a "last K" prompt depth most of
the forward pass is skipped. The linear probe is the extreme case: its whole backbone is the stem, its features
(`model.forward_features`) are computed once and only the head trains.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch
from torch.utils.data import DataLoader, TensorDataset

from ..data import RANDOM_RECIPES
from ..inference.evaluate import predict_logits
from ..model import PromptedModel

log = logging.getLogger("vptune")

STEM_CACHE_SHARE_OF_RAM = 0.25  # never hold more than this share of the machine's memory in cached stems


def stem_cache_plan(model: PromptedModel, *, frozen_backbone: bool, recipe: str, cache_stem: str,
                    num_images: int) -> bool:
    """Whether to compute the stem once per image: exact only when its blocks are frozen and the images are the
    same every epoch; worth it when there is a stem; possible when it fits in memory. Logs why when it says no."""
    blocks = model.stem_depth
    if cache_stem == "off" or not frozen_backbone or blocks == 0:
        return False
    if recipe in RANDOM_RECIPES:
        log.info(f"not caching the stem ({blocks} frozen blocks before the first prompt): recipe {recipe!r} "
                 f"augments at random, so its output changes every epoch")
        return False
    tokens = model.adapter.num_prefix_tokens + model.adapter.num_patches
    need, budget = num_images * tokens * model.embed_dim * 4, STEM_CACHE_SHARE_OF_RAM * _ram_bytes()
    if need > budget:
        log.info(f"not caching the stem ({blocks} frozen blocks before the first prompt): {num_images} images "
                 f"would need {need / 2**30:.1f} GiB, over {STEM_CACHE_SHARE_OF_RAM:.0%} of this machine's memory")
        return False
    log.info(f"computing the stem ({blocks} frozen blocks before the first prompt) once per image "
             f"({need / 2**20:.0f} MiB); training runs the other {model.adapter.depth - blocks} "
             f"(turn off with --cache-stem off)")
    return True


@torch.no_grad()
def precompute(fn: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader | None, *, device: torch.device,
               quiet: bool = True) -> TensorDataset | None:
    """(fn(image), label) for every item of an unshuffled loader, in order, kept on the CPU in float32."""
    if loader is None:
        return None
    outputs, labels = predict_logits(fn, loader, device, desc="precompute", quiet=quiet)
    return TensorDataset(outputs, labels)


def _ram_bytes() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: assume a modest machine
        return 16 * 2**30
