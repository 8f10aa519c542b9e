"""Where training starts: prompts at prototypes of the task's own tokens, the head at the converged linear probe."""
from __future__ import annotations

import logging
from typing import Callable

import torch
from torch.utils.data import Dataset

from ..model import PromptedModel
from .batches import precompute_rows
from .config import TrainConfig
from .distributed import SINGLE, World
from .linear_probe import choose_probe, choose_probe_cv, standardisation

log = logging.getLogger("vptune")


PATCH_INIT_IMAGES = 64  # images whose block inputs the "patches" prompt init draws from: plenty of tokens, one batch


def init_prompts_from_patches(model: PromptedModel, train_set: Dataset, cfg: TrainConfig) -> None:
    """Prompt init "patches": tokens drawn from the block inputs of up to 64 training images picked by the seed."""
    generator = torch.Generator().manual_seed(cfg.seed)
    picked = torch.randperm(len(train_set), generator=generator)[:PATCH_INIT_IMAGES].tolist()
    images = torch.stack([train_set[i][0] for i in picked])
    model.eval()
    model.init_prompts_from_patches(images, generator)


def init_head(model: PromptedModel, features: Callable[[torch.Tensor], torch.Tensor], train_set: Dataset,
              val_set: Dataset | None, cfg: TrainConfig, quiet: bool, world: World = SINGLE) -> None:
    """Set the head's standardisation from the initial model's features on the training set and, with
    head_init "probe", the head itself to the converged linear probe on them (L2 chosen on val, or by
    cross-validation on the training set when there is no val: a final or refit run). "calibrated-probe" chooses
    the L2 for held-out log-loss rather than top-1: on few images the top-1 choice is often the weakest L2, a head
    so sure of the training images that their loss is near 0 and the prompts get no gradient from them."""
    model.eval()
    train_x, train_y = precompute_rows(features, train_set, cfg, quiet, world).tensors
    if cfg.head_init not in ("probe", "calibrated-probe"):
        mean, std = standardisation(train_x)
        model.head_norm.set_(mean.float(), std.float())
        return
    choose_for = "loss" if cfg.head_init == "calibrated-probe" else "top1"
    if val_set is None:
        fit, _ = choose_probe_cv(train_x, train_y, model.num_classes, seed=cfg.seed, choose_for=choose_for)
    else:
        fit, _ = choose_probe((train_x, train_y), precompute_rows(features, val_set, cfg, quiet, world).tensors,
                              model.num_classes, choose_for=choose_for)
    fit.load_into(model)
    log.info(f"head initialised at the linear probe on the initial features (L2 {fit.weight_decay:g} chosen for "
             f"held-out {choose_for}, train top-1 {fit.train_top1:.4f}, train loss {fit.train_loss:.4f})")
