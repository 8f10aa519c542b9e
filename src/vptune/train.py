"""The training loop: backbone + data + method -> a task directory.

    TASK_DIR/
      config.yaml     every resolved setting (what `--resume` continues with)
      metrics.jsonl   one line per epoch
      best/ last/     task checkpoints (prompt.safetensors + task.json), best on val and latest
      state.pt        training state (trainable tensors, optimizer, scheduler, epoch), every epoch
      summary.json    final figures, test accuracy of the best-on-val checkpoint

The recipe is the original VPT's (SGD, momentum 0.9, warm-up then cosine, lr scaled by batch / 256),
with the schedule stepped per iteration and separate learning rates for the tuned tensors and the head.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from .backbones import DEFAULT_BACKBONE, create_backbone
from .checkpoint import WEIGHTS_FILE, atomic_write, atomic_write_text, task_tensors
from .config import PromptConfig
from .data import RANDOM_RECIPES, collate, load_data
from .evaluate import evaluate_logits, predict_logits
from .methods import FROZEN_BACKBONE, build_model, check_method, optimizer_groups
from .model import PromptedViT, count_parameters


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, or the task directory is in the way)."""


@dataclass
class TrainConfig:
    """Every knob of a training run; `vptune train --help` documents each flag."""

    data: str = "digits"
    output: str = "runs/task"
    method: str = "vpt-deep"
    backbone: str = DEFAULT_BACKBONE
    weights: str | None = None
    img_size: int | None = None
    # prompts (VPT methods)
    num_tokens: int = 10
    prompt_layers: Any = None
    prompt_location: str = "prepend"
    prompt_dropout: float = 0.0
    prompt_project: int | None = None
    lora_rank: int = 8
    # data
    protocol: str = "vtab1k"
    recipe: str = "vtab"
    final: bool = False
    skip_bad: bool = False
    subset: int | None = None
    num_workers: int = 0
    cache_frozen: str = "auto"
    grad_checkpointing: bool = False
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    optimizer: str | None = None
    lr: float | None = None
    head_lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    scale_lr: bool = True
    seed: int = 0
    device: str = "cpu"

    def resolved(self) -> "TrainConfig":
        """Fill the method-dependent defaults and validate; the result is what config.yaml records."""
        check_method(self.method)
        sgd = self.method in FROZEN_BACKBONE  # the original's SGD recipe; AdamW where backbone weights move
        cfg = dataclasses.replace(
            self,
            optimizer=self.optimizer or ("sgd" if sgd else "adamw"),
            lr=self.lr if self.lr is not None else (DEFAULT_PROMPT_LR if sgd else ADAMW_LR),
            head_lr=self.head_lr if self.head_lr is not None else _default_head_lr(self.method),
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "head_lr"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.optimizer not in (None, "sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if self.cache_frozen not in CACHE_FROZEN:
            raise ValueError(f"cache_frozen must be one of {CACHE_FROZEN}, got {self.cache_frozen!r}")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ValueError("warmup_epochs and weight_decay must be >= 0")
        self.prompt_config()  # raises ValueError naming the bad prompt field

    def prompt_config(self) -> PromptConfig:
        return PromptConfig(num_tokens=self.num_tokens, layers=self.prompt_layers, location=self.prompt_location,
                            dropout=self.prompt_dropout, project=self.prompt_project)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> "TrainConfig":
        data = {key.replace("-", "_"): value for key, value in data.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{origin}: unknown setting(s) {unknown}; known settings: {', '.join(sorted(known))}")
        return cls(**data)


# Chosen by benchmarks/lr_sweep.py on animal-mnist with the default backbone (README, "Choosing the defaults").
# Base rates, scaled by batch / 256 as in the original: at batch 32 the prompts get 0.0625, the head 0.0025.
# The head needs a small SGD rate because the backbone's [CLS] has a norm near 48; a linear probe on fixed
# features tolerates a larger one (and needs it to converge in a few epochs), a head whose features move
# with the prompts does not (prompt lr 0.5 with head lr 0.08 diverged).
DEFAULT_PROMPT_LR = 0.5
DEFAULT_HEAD_LR = 0.02
LINEAR_PROBE_HEAD_LR = 0.08
ADAMW_LR = 1e-3
# "auto": compute the frozen blocks before the first prompt once per image when that is exact and fits in
# memory (see `_plan_stem_cache`); "off": run them in every step.
CACHE_FROZEN = ("auto", "off")
STEM_CACHE_SHARE_OF_RAM = 0.25


def _default_head_lr(method: str) -> float:
    if method == "linear":
        return LINEAR_PROBE_HEAD_LR
    return DEFAULT_HEAD_LR if method in FROZEN_BACKBONE else ADAMW_LR


# ------------------------------------------------------------------------------------------- the run
def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> dict:
    """Run (or with `resume`, continue) one training run; returns the summary written to summary.json."""
    out = Path(cfg.output)
    cfg = _prepare_output(out, cfg, resume=resume, overwrite=overwrite)
    log = (lambda *a: None) if quiet else print
    torch.manual_seed(cfg.seed)

    backbone = create_backbone(cfg.backbone, img_size=cfg.img_size, weights=cfg.weights)
    model, splits = _model_and_data(cfg, backbone)
    device = torch.device(cfg.device)
    model.to(device)
    train_set = _subset(splits.trainval if cfg.final else splits.train, cfg)
    val_set = None if cfg.final else _subset(splits.val, cfg)
    forward = model
    if cfg.method == "linear":  # frozen backbone, no prompt: compute the features once, train the head on them
        log("computing frozen features once for the linear probe...")
        train_set, val_set = (_precompute(model.forward_features, s, cfg, quiet) for s in (train_set, val_set))
        forward = model.head
    elif _plan_stem_cache(cfg, model, train_set, val_set, log):
        train_set, val_set = (_precompute(model.stem, s, cfg, quiet) for s in (train_set, val_set))
        forward = model.forward_from_stem

    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    optimizer = _optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * cfg.epochs, round(steps_per_epoch * cfg.warmup_epochs)))
    start_epoch, best = _restore_state(out, model, optimizer, scheduler) if resume else (0, None)

    counts = count_parameters(model)
    log(f"{cfg.method} on {cfg.data} ({len(train_set)} train images), {counts.trainable:,} trainable parameters "
        f"({counts.percent_of_backbone:.3f}% of the backbone)")
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        row = _train_epoch(forward, model, train_set, optimizer, scheduler, cfg, epoch, quiet, out)
        if val_set is not None:
            row.update({f"val_{k}": v for k, v in _evaluate(forward, model, val_set, cfg).items()})
        improved = best is None or val_set is None or row["val_top1"] > best["val_top1"]
        if improved:
            best = {"epoch": epoch + 1, "val_top1": row.get("val_top1")}
        _save_epoch(out, model, optimizer, scheduler, cfg, epoch, best, row, improved)
        log(_epoch_line(row))
    train_seconds = time.perf_counter() - started

    summary = _summarise(out, cfg, backbone, splits, counts, best, train_seconds, quiet)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _model_and_data(cfg: TrainConfig, backbone: torch.nn.Module):
    from timm.data import resolve_model_data_config

    data_cfg = resolve_model_data_config(backbone)
    splits = load_data(cfg.data, img_size=data_cfg["input_size"][-1], mean=tuple(data_cfg["mean"]),
                       std=tuple(data_cfg["std"]), protocol=cfg.protocol, recipe=cfg.recipe, seed=cfg.seed,
                       skip_bad=cfg.skip_bad)
    torch.manual_seed(cfg.seed)  # prompt and head init do not depend on how much randomness data loading used
    model = build_model(cfg.method, backbone, cfg.prompt_config(), len(splits.class_names),
                        class_names=splits.class_names, lora={"rank": cfg.lora_rank, "alpha": cfg.lora_rank})
    model.grad_checkpointing = cfg.grad_checkpointing
    return model, splits


def _subset(dataset: Dataset | None, cfg: TrainConfig) -> Dataset | None:
    """At most `cfg.subset` images of a split, drawn by the seed (for quick checks like `demo --smoke`)."""
    if dataset is None or cfg.subset is None or len(dataset) <= cfg.subset:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))
    return Subset(dataset, order[:cfg.subset].tolist())


def _optimizer(model: PromptedViT, cfg: TrainConfig) -> torch.optim.Optimizer:
    scale = cfg.batch_size / 256 if cfg.scale_lr else 1.0
    groups = optimizer_groups(model, cfg.lr * scale, cfg.head_lr * scale, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups)
    return torch.optim.SGD(groups, lr=cfg.lr * scale, momentum=cfg.momentum)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """lr factor per iteration: linear warm-up from 1/warmup (never a wasted step at 0), then cosine to 0."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _train_epoch(forward, model, dataset, optimizer, scheduler, cfg, epoch, quiet, out) -> dict:
    model.train()
    torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout and augmentation: a function of (seed, epoch), so
    loader = _loader(dataset, cfg, shuffle=True, epoch=epoch)  # a resumed run replays exactly
    device = torch.device(cfg.device)
    total_loss, correct, seen, started = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=quiet, leave=False)
    for step, (inputs, labels) in enumerate(bar):
        inputs, labels = inputs.to(device), labels.to(device)
        logits = forward(inputs)
        loss = F.cross_entropy(logits, labels)
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good "
                                f"checkpoint is in {out / 'last'} (if any epoch finished). Lower the learning rates "
                                f"(--lr {cfg.lr}, --head-lr {cfg.head_lr}) and train again")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(labels)
        correct += (logits.argmax(1) == labels).sum().item()
        seen += len(labels)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}",
                        img_s=f"{seen / (time.perf_counter() - started):.1f}")
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "train_loss": total_loss / seen, "train_top1": correct / seen,
            "lr": optimizer.param_groups[0]["lr"], "img_per_s": seen / seconds, "seconds": seconds}


def _loader(dataset: Dataset, cfg: TrainConfig, shuffle: bool, epoch: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=shuffle, generator=generator,
                      num_workers=cfg.num_workers, collate_fn=collate)


def _evaluate(forward, model, dataset, cfg) -> dict:
    model.eval()
    logits, labels = predict_logits(forward, _loader(dataset, cfg, shuffle=False), torch.device(cfg.device))
    metrics = evaluate_logits(logits, labels)
    return {"loss": F.cross_entropy(logits, labels).item(), "top1": metrics["top1"]}


def _plan_stem_cache(cfg: TrainConfig, model: PromptedViT, train_set: Dataset, val_set: Dataset | None,
                     log: Callable[..., None]) -> bool:
    """Whether to compute the blocks before the first prompt (`model.stem`) once per image rather than every
    step: exact only when they are frozen and the images are the same every epoch; worth it when they exist."""
    blocks = model.stem_depth
    if cfg.cache_frozen == "off" or cfg.method not in FROZEN_BACKBONE or blocks == 0:
        return False
    if cfg.recipe in RANDOM_RECIPES:
        log(f"not caching the {blocks} frozen blocks before the first prompt: recipe {cfg.recipe!r} augments "
            f"at random, so their output changes every epoch")
        return False
    images = len(train_set) + (len(val_set) if val_set is not None else 0)
    tokens = model.num_prefix_tokens + model.backbone.patch_embed.num_patches
    need, budget = images * tokens * model.embed_dim * 4, STEM_CACHE_SHARE_OF_RAM * _ram_bytes()
    if need > budget:
        log(f"not caching the {blocks} frozen blocks before the first prompt: {images} images would need "
            f"{need / 2**30:.1f} GiB, over {STEM_CACHE_SHARE_OF_RAM:.0%} of this machine's memory")
        return False
    log(f"computing the {blocks} frozen blocks before the first prompt once per image ({need / 2**20:.0f} MiB); "
        f"training runs the other {len(model.backbone.blocks) - blocks} (turn off with --cache-frozen off)")
    return True


def _ram_bytes() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: assume a modest machine
        return 16 * 2**30


@torch.no_grad()
def _precompute(fn: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset | None, cfg: TrainConfig,
                quiet: bool) -> TensorDataset | None:
    """(fn(image), label) for every item, in the dataset's order, kept on the CPU."""
    if dataset is None:
        return None
    outputs, labels = predict_logits(fn, _loader(dataset, cfg, shuffle=False), torch.device(cfg.device),
                                     desc="precompute", quiet=quiet)
    return TensorDataset(outputs, labels)


# ------------------------------------------------------------------------------------ files and state
def _prepare_output(out: Path, cfg: TrainConfig, *, resume: bool, overwrite: bool) -> TrainConfig:
    if resume:
        if not (out / "config.yaml").is_file() or not (out / "state.pt").is_file():
            raise TrainingError(f"cannot resume {out}: it has no config.yaml and state.pt (no epoch finished yet?); "
                                f"start it again with --overwrite")
        return TrainConfig.from_dict(yaml.safe_load((out / "config.yaml").read_text()), str(out / "config.yaml"))
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TrainingError(f"{out} already exists and is not empty; pass --overwrite to replace it, "
                                f"--resume to continue it, or choose another --output")
        shutil.rmtree(out)
    cfg = cfg.resolved()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    return cfg


def _save_epoch(out, model, optimizer, scheduler, cfg, epoch, best, row, improved) -> None:
    extra = {"method": cfg.method, "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_rank},
             "training": {"data": cfg.data, "protocol": cfg.protocol, "recipe": cfg.recipe, "seed": cfg.seed,
                          "epoch": epoch + 1, "metrics": row}}
    model.save_task(out / "last", **extra)
    if improved:
        model.save_task(out / "best", **extra)
    state = {"epoch": epoch + 1, "best": best, "tensors": task_tensors(model),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    atomic_write(out / "state.pt", lambda tmp: torch.save(state, tmp))
    lines = _read_metrics(out)[:epoch] + [row]
    atomic_write_text(out / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in lines))


def _restore_state(out: Path, model, optimizer, scheduler) -> tuple[int, dict | None]:
    state = torch.load(out / "state.pt", weights_only=True)  # plain tensors and containers, never pickled code
    model.load_state_dict(state["tensors"], strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], state["best"]


def _read_metrics(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.is_file() else []


def _epoch_line(row: dict) -> str:
    val = f", val top-1 {row['val_top1']:.4f}" if "val_top1" in row else ""
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, train top-1 {row['train_top1']:.4f}"
            f"{val}, {row['img_per_s']:.1f} img/s")


def _summarise(out, cfg, backbone, splits, counts, best, train_seconds, quiet) -> dict:
    from .checkpoint import load_task
    from .evaluate import evaluate_dataset

    test = {}
    if splits.test is not None:
        if cfg.method not in FROZEN_BACKBONE:  # the method changed the backbone in place: load onto a fresh one
            backbone = create_backbone(cfg.backbone, img_size=cfg.img_size, weights=cfg.weights)
        model = load_task(out / "best", backbone=backbone).to(cfg.device)
        test = evaluate_dataset(model, _subset(splits.test, cfg), batch_size=cfg.batch_size, device=cfg.device,
                                quiet=quiet)
    return {
        "method": cfg.method, "data": splits.describe(), "backbone": cfg.backbone, "epochs": cfg.epochs,
        "best_epoch": best["epoch"] if best else None, "best_val_top1": best["val_top1"] if best else None,
        "test_top1": test.get("top1"), "test_top5": test.get("top5"),
        "trainable_parameters": counts.trainable, "backbone_parameters": counts.backbone,
        "trainable_percent": counts.percent_of_backbone,
        "checkpoint_bytes": os.path.getsize(out / "best" / WEIGHTS_FILE),
        "train_seconds": train_seconds,
    }


__all__ = ["TrainConfig", "train", "TrainingError", "warmup_cosine"]
