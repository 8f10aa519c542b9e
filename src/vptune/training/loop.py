"""The training loop: backbone + data + method -> a run directory (see `vptune.rundir` for its layout).

The recipe is the original VPT's (SGD, momentum 0.9, warm-up then cosine, lr scaled by batch / 256), with the
schedule stepped per iteration and separate learning rates for the tuned tensors and the head; methods that
move backbone weights use AdamW (each method says which, `vptune.methods`).

Everything random is a function of the seed and the epoch (an augmented image's of the seed, the epoch and its
index, whichever loader process makes it), so a run resumed with `--resume` ends exactly where an uninterrupted one
does. `--precision` puts the forward under autocast (fp16 with a gradient scaler, whose state is saved too) and
`--compile` compiles it (`vptune.devices`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from tqdm.auto import tqdm

from .._io import atomic_write
from ..backbones import create_backbone
from ..data import DataSplits, TaskData, collate, read_data
from ..data.splits import fixed_sample
from ..devices import DTYPES, autocast, maybe_compile, resolve_device, resolve_precision, resolve_workers
from ..errors import ConfigError, TrainingError, VptuneError, brief
from ..inference.evaluate import evaluate_logits
from ..methods import build_model, optimizer_groups
from ..model import ParameterCount, PromptedModel, count_parameters
from ..rundir import MARKER, RunDir
from ..tasks import WEIGHTS_FILE, read_task_json, read_task_tensors, save_task, task_tensors
from .config import AUTO, RESOLVED_FIELDS, TrainConfig, apply_resume_changes
from .distributed import (SINGLE, EpochItems, GlobalBatchSampler, World, all_sum, broadcast, check_batch,
                          gather_rows, init_world, leave, shard)
from .linear_probe import WEIGHT_DECAYS, choose_probe, fit_logistic_regression, standardisation
from .logs import TensorBoardLog
from .stem_cache import precompute, stem_cache_plan

log = logging.getLogger("vptune")

DIVERGED = 2.0  # an epoch's mean training loss above this many times ln(classes) stops the run


@dataclass
class Fit:
    """What one epoch needs: the model, the function that maps a training input to logits (the model itself, or
    its head / post-stem part when inputs are cached), the optimizer and its schedule."""

    cfg: TrainConfig
    model: PromptedModel
    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    run: RunDir
    quiet: bool = False
    world: World = SINGLE
    logs: TensorBoardLog = dataclasses.field(default_factory=lambda: TensorBoardLog(None))
    scaler: torch.amp.GradScaler | None = None  # fp16: scales the loss so small gradients survive 16 bits
    _loader: DataLoader | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.device)

    def autocast(self):
        return autocast(self.cfg.device, self.cfg.precision)

    @property
    def inference(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """`forward` without DDP's wrapper: evaluation needs no gradient sync, and ranks may run unequal batches."""
        return self.forward.module.fn if isinstance(self.forward, DistributedDataParallel) else self.forward

    def train_batches(self, dataset: Dataset, epoch: int) -> tuple[DataLoader, list[float]]:
        """This rank's share of each global batch of the epoch (`distributed.py`), and each step's loss weight.
        One loader for the whole run, so its worker processes (if any) live across epochs."""
        if self._loader is None:
            items = dataset if isinstance(dataset, EpochItems) else EpochItems(dataset, self.cfg.seed)  # cached stems
            sampler = GlobalBatchSampler(len(dataset), self.cfg.batch_size, self.cfg.seed, self.world)
            self._loader = make_loader(items, self.cfg, batch_sampler=sampler, persistent=True)
        self._loader.batch_sampler.set_epoch(epoch)
        return self._loader, self._loader.batch_sampler.weights()


def train(cfg: TrainConfig, *, resume: bool = False, overwrite: bool = False, quiet: bool = False,
          on_epoch: Callable[[dict], None] | None = None, test: bool = True, changes: dict | None = None) -> dict:
    """Run (or with `resume`, continue) one training run; returns the summary written to summary.json.

    quiet: hide the progress bars (log lines go through the "vptune" logger).
    on_epoch: called with each epoch's metrics row once the epoch is saved; it may raise to stop the run
        (a sweep's pruner does).
    test: evaluate the best checkpoint on the test split at the end (a sweep's trials do not look at test).
    changes: with `resume`, settings to change from the run's config.yaml: only `RESUME_MAY_CHANGE` (e.g. more
        epochs); any other that differs is refused.
    """
    if cfg.lr == AUTO:
        raise ConfigError("lr 'auto' is a search before training: run vptune.experiments.train_with_lr_search(cfg) "
                          "(what `vptune train --lr auto` does), or give a number")
    if not resume:
        cfg = cfg.resolved()  # bad settings are refused before anything is created or locked
    # the device this run asks for: a resume's --device, else the one its config.yaml recorded
    wanted = (changes or {}).get("device") or _recorded_device(RunDir(cfg.output)) if resume else cfg.device
    world, device = init_world(resolve_device(wanted or cfg.device))  # under torchrun: this rank's (distributed.py)
    if not resume:
        check_batch(cfg.batch_size, world)
    if not world.main:  # rank 0 logs and writes for everyone
        quiet = True
        log.setLevel(logging.WARNING)
    run = RunDir(cfg.output)
    try:
        if resume and not run.path.exists():
            raise TrainingError(f"cannot resume {run.path}: no such folder; give the --output of an earlier run, "
                                f"or train a new one with --output {run.path}")
        with run.lock(flag="--resume" if resume else "--output") if world.main else nullcontext():
            return _train(run, cfg, resume, overwrite, quiet, on_epoch, test, world, device, changes or {})
    finally:
        leave(world)


def _recorded_device(run: RunDir) -> str | None:
    try:
        return run.read_config().get("device") if run.config.is_file() else None
    except VptuneError:
        return None  # _start names what is wrong with the file


def _train(run: RunDir, cfg: TrainConfig, resume: bool, overwrite: bool, quiet: bool,
           on_epoch: Callable[[dict], None] | None, test: bool, world: World = SINGLE,
           device: str | None = None, changes: dict | None = None) -> dict:
    cfg, replaced = _start(run, cfg, resume=resume, overwrite=overwrite, changes=changes) if world.main \
        else (None, None)
    cfg = broadcast(cfg, world)
    check_batch(cfg.batch_size, world)
    cfg = dataclasses.replace(cfg, device=device or cfg.device)  # this rank's device; config.yaml keeps the given one
    method = cfg.tuning_method()
    torch.manual_seed(cfg.seed)
    try:  # a run being replaced stays until the new one has its backbone, data and model
        data = read_data(cfg.data, protocol=cfg.protocol, seed=cfg.seed, skip_bad=cfg.skip_bad,
                         max_pixels=cfg.max_pixels)  # bad data is refused before a backbone is fetched
        backbone = create_backbone(cfg.backbone, img_size=cfg.img_size, weights=cfg.weights)
        splits = _datasets(data, backbone, cfg.recipe)
        torch.manual_seed(cfg.seed)  # prompt and head init do not depend on how much randomness data loading used
        model = build_model(method, backbone, cfg.prompt_config(), len(splits.class_names),
                            class_names=splits.class_names, head_norm=cfg.head_norm)
    except BaseException:
        if replaced is not None:
            run.put_back(replaced)
        elif not resume and world.main:  # a new run that could not start leaves nothing behind (its files are ours)
            run.config.unlink(missing_ok=True)
            (run.path / MARKER).unlink(missing_ok=True)
        raise
    if replaced is not None:
        shutil.rmtree(replaced)
    model.grad_checkpointing = cfg.grad_checkpointing
    model.to(cfg.device)
    if cfg.half_backbone:  # after build_model took the backbone's fingerprint from its own weights
        model.backbone.to(DTYPES[cfg.precision])
    counts = count_parameters(model)
    log.info(f"{cfg.method} on {cfg.data} ({len(_subset(splits.train, cfg))} train images), {counts.trainable:,} "
             f"trainable parameters ({counts.percent_of_backbone:.3f}% of the backbone), on {cfg.device} in "
             f"{cfg.precision}")

    if method.head_only:
        best, train_seconds = train_linear_probe(model, splits, cfg, run, quiet, world)
    else:
        best, train_seconds = train_epochs(model, splits, cfg, run, quiet, resume, on_epoch, world)

    summary = _summarise(cfg, run, model, splits, counts, best, train_seconds, quiet, test, world)
    if world.main:
        run.write_summary(summary)
    return broadcast(summary, world)  # every rank returns rank 0's


def train_epochs(model: PromptedModel, splits: DataSplits, cfg: TrainConfig, run: RunDir, quiet: bool,
                 resume: bool, on_epoch: Callable[[dict], None] | None = None,
                 world: World = SINGLE) -> tuple[dict | None, float]:
    """The epoch loop (from the last finished epoch when resuming); returns the best epoch and the seconds spent."""
    method = cfg.tuning_method()
    train_set = EpochItems(_subset(splits.trainval if cfg.final else splits.train, cfg), cfg.seed)
    val_set = None if cfg.final else _subset(splits.val, cfg)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    with autocast(cfg.device, cfg.precision):  # forward passes of the initial model (a half backbone needs it)
        if not resume and model.prompts is not None and model.prompt_config.init == "patches":
            _init_prompts_from_patches(model, train_set, cfg)
        if not resume and model.prompts is not None and model.prompt_config.init == "cls":
            model.eval()
            model.init_prompts_from_classes(make_loader(train_set, cfg, batch_size=cfg.batch_size))
    if stem_cache_plan(model, frozen_backbone=method.frozen_backbone, recipe=cfg.recipe, cache_stem=cfg.cache_stem,
                       num_images=len(train_set) + len(val_set or ())):
        train_set, val_set = (_precompute(model.stem, s, cfg, quiet, world) for s in (train_set, val_set))
        forward = model.forward_from_stem
    if not resume and (cfg.head_norm or cfg.head_init == "probe"):
        features = model.features_from_stem if forward == model.forward_from_stem else model.forward_features
        _init_head(model, features, train_set, val_set or train_set, cfg, quiet, world)  # final: no val to choose on

    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    optimizer = make_optimizer(model, cfg, len(train_set))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * cfg.epochs, round(steps_per_epoch * cfg.warmup_epochs)))
    forward = maybe_compile(forward, cfg.compile)
    if world.distributed:  # gradients all-reduced by torch's DDP; the wrapper runs whichever forward we chose
        forward = DistributedDataParallel(_Forward(model, forward))
    scaler = torch.amp.GradScaler(_device_type(cfg)) if cfg.precision == "fp16" else None
    fit = Fit(cfg, model, forward, optimizer, scheduler, run, quiet, world, scaler=scaler)
    start_epoch, best = _restore(fit) if resume else (0, None)
    if cfg.tensorboard and world.main:
        fit.logs = TensorBoardLog(run.tensorboard, purge_step=start_epoch * steps_per_epoch if resume else None)

    try:
        for epoch in range(start_epoch, cfg.epochs):
            row = train_epoch(fit, train_set, epoch)
            if val_set is not None:
                row.update({f"val_{k}": v for k, v in validate(fit, val_set).items()})
            improved = best is None or val_set is None or row["val_top1"] > best["val_top1"]
            if improved:
                best = {"epoch": epoch + 1, "val_top1": row.get("val_top1")}
            if world.main:
                _save_epoch(fit, epoch, best, row, improved)
                fit.logs.epoch(row)
            log.info(_epoch_line(row))
            if on_epoch is not None:
                on_epoch(row)
    finally:
        fit.logs.close()
    return best, sum(row["seconds"] for row in run.read_metrics()) if world.main else 0.0  # every epoch's


class _Forward(torch.nn.Module):
    """`fn` (the model, or its part after the cached stem) as a module, for DistributedDataParallel to wrap."""

    def __init__(self, model: PromptedModel, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model, self.fn = model, fn

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.fn(inputs)


def train_linear_probe(model: PromptedModel, splits: DataSplits, cfg: TrainConfig, run: RunDir,
                       quiet: bool, world: World = SINGLE) -> tuple[dict, float]:
    """Logistic regression on the frozen [CLS] features, its L2 strength chosen on val (`linear_probe.py`).
    One metrics row per strength tried; with `final`, the chosen strength is refitted on train + val."""
    log.info("computing the frozen features once for the linear probe...")
    features = {name: _precompute(model.forward_features, _subset(getattr(splits, name), cfg), cfg, quiet, world)
                for name in ("train", "val")}
    (train_x, train_y), (val_x, val_y) = (features[name].tensors for name in ("train", "val"))
    started = time.perf_counter()
    fit, rows = choose_probe((train_x, train_y), (val_x, val_y), model.head.out_features)
    rows = [{"epoch": index + 1, **row} for index, row in enumerate(rows)]
    chosen = rows[WEIGHT_DECAYS.index(fit.weight_decay)]
    best = {"epoch": chosen["epoch"], "val_top1": chosen["val_top1"], "weight_decay": fit.weight_decay}
    if cfg.final:
        fit = fit_logistic_regression(torch.cat([train_x, val_x]), torch.cat([train_y, val_y]),
                                      model.head.out_features, fit.weight_decay)
        rows.append({"epoch": len(rows) + 1, "weight_decay": fit.weight_decay, "train_loss": fit.train_loss,
                     "train_top1": fit.train_top1, "iterations": fit.iterations, "seconds": fit.seconds,
                     "final": True})
    fit.load_into(model)
    log.info(f"linear probe: L2 strength {fit.weight_decay:g} chosen on val (top-1 {best['val_top1']:.4f})")
    training = {"data": cfg.data, "protocol": cfg.protocol, "recipe": cfg.recipe, "seed": cfg.seed,
                "weight_decay": fit.weight_decay}
    if world.main:
        save_task(model, run.best, training=training)
        save_task(model, run.last, training=training)
        run.write_metrics(rows)
    return best, time.perf_counter() - started


# ------------------------------------------------------------------------------------------- the steps
def train_epoch(fit: Fit, dataset: Dataset, epoch: int) -> dict:
    """One pass over the training set; returns the epoch's metrics row."""
    cfg, model, optimizer = fit.cfg, fit.model, fit.optimizer
    model.train()
    torch.manual_seed(cfg.seed * 1000 + epoch + 7919 * fit.world.rank)  # dropout and augmentation: a function of
    loader, weights = fit.train_batches(dataset, epoch)  # (seed, epoch), so a resumed run replays exactly
    total_loss, correct, seen, started = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=fit.quiet, leave=False)
    skipped = 0
    for step, (inputs, labels) in enumerate(bar):
        inputs, labels = (t.to(fit.device, non_blocking=True) for t in (inputs, labels))
        with fit.autocast():
            logits = fit.forward(inputs)
        losses = F.cross_entropy(logits.float(), labels, reduction="none")
        # this rank's share of the global batch's mean (DDP averages the ranks' gradients; see distributed.py)
        loss = losses.sum() * weights[step]
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; the last good "
                                f"checkpoint is in {fit.run.last} (if any epoch finished). Lower the learning rates "
                                f"(--lr {cfg.lr}, --head-lr {cfg.head_lr}) and train again"
                                + (" (or use --precision bf16 or fp32: fp16 overflows at 65504)"
                                   if cfg.precision == "fp16" else ""))
        optimizer.zero_grad(set_to_none=True)
        skipped += not optimizer_step(fit, loss)
        fit.logs.step(epoch * len(loader) + step, losses.mean().item(), optimizer.param_groups[0]["lr"])
        with warnings.catch_warnings():  # fp16: a step the scaler skipped still moves the schedule, on purpose
            warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step\\(\\)` before", UserWarning)
            fit.scheduler.step()
        if weights[step]:  # not a stand-in row
            total_loss += losses.sum().item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        bar.set_postfix(loss=f"{losses.mean().item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}",
                        img_s=f"{seen / (time.perf_counter() - started):.1f}")
    seconds = time.perf_counter() - started
    total_loss, correct, seen = all_sum([total_loss, correct, seen], fit.world)
    _check_not_diverged(fit, total_loss / seen, epoch)
    row = {"epoch": epoch + 1, "train_loss": total_loss / seen, "train_top1": correct / seen,
           "lr": optimizer.param_groups[0]["lr"], "img_per_s": seen / seconds, "seconds": seconds}
    if fit.scaler is not None:
        row["skipped_steps"] = skipped
    return row


def optimizer_step(fit: Fit, loss: torch.Tensor) -> bool:
    """Backward and update; False when fp16's scaler skipped the update (a gradient overflowed 16 bits: the scale
    is lowered and the next step tries again, which is no sign of divergence)."""
    if fit.scaler is None:
        loss.backward()
        _clip(fit)
        fit.optimizer.step()
        return True
    scale = fit.scaler.get_scale()
    fit.scaler.scale(loss).backward()
    fit.scaler.unscale_(fit.optimizer)  # clip (and the optimizer) see the true gradients
    _clip(fit)
    fit.scaler.step(fit.optimizer)
    fit.scaler.update()
    return fit.scaler.get_scale() >= scale


def _clip(fit: Fit) -> None:
    if fit.cfg.clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(fit.model.trainable_parameters(), fit.cfg.clip_grad)


def _device_type(cfg: TrainConfig) -> str:
    return torch.device(cfg.device).type


def _check_not_diverged(fit: Fit, loss: float, epoch: int) -> None:
    """Stop (before the epoch is saved, so last/ keeps the last good one) when the epoch's training loss is over
    DIVERGED x that of guessing uniformly, ln(classes): the run has blown up, and more epochs rarely bring it back."""
    chance = math.log(fit.model.head.out_features)
    if loss > DIVERGED * chance:
        raise TrainingError(f"training diverged: the loss was {loss:.3g} in epoch {epoch + 1}, over {DIVERGED:g} times "
                            f"that of a uniform guess ({chance:.3g}); the last good checkpoint is in {fit.run.last} (if "
                            f"any epoch finished). Lower the learning rates (--lr {fit.cfg.lr:g}, --head-lr "
                            f"{fit.cfg.head_lr:g}) or let vptune choose (--lr auto), and train again")


def validate(fit: Fit, dataset: Dataset) -> dict:
    fit.model.eval()
    logits, labels = _precompute(fit.inference, dataset, fit.cfg, True, fit.world).tensors
    return {"loss": F.cross_entropy(logits, labels).item(), "top1": evaluate_logits(logits, labels)["top1"]}


PATCH_INIT_IMAGES = 64  # images whose block inputs the "patches" prompt init draws from: plenty of tokens, one batch


def _init_prompts_from_patches(model: PromptedModel, train_set: Dataset, cfg: TrainConfig) -> None:
    """Prompt init "patches": tokens drawn from the block inputs of up to 64 training images picked by the seed."""
    generator = torch.Generator().manual_seed(cfg.seed)
    picked = torch.randperm(len(train_set), generator=generator)[:PATCH_INIT_IMAGES].tolist()
    images = torch.stack([train_set[i][0] for i in picked])
    model.eval()
    model.init_prompts_from_patches(images, generator)


def _init_head(model: PromptedModel, features: Callable[[torch.Tensor], torch.Tensor], train_set: Dataset,
               val_set: Dataset, cfg: TrainConfig, quiet: bool, world: World = SINGLE) -> None:
    """Set the head's standardisation from the initial model's features on the training set and, with
    head_init "probe", the head itself to the converged linear probe on them (L2 chosen on val)."""
    model.eval()
    train_x, train_y = _precompute(features, train_set, cfg, quiet, world).tensors
    if cfg.head_init != "probe":
        mean, std = standardisation(train_x)
        model.head_norm.set_(mean.float(), std.float())
        return
    fit, _ = choose_probe((train_x, train_y), _precompute(features, val_set, cfg, quiet, world).tensors,
                          model.head.out_features)
    fit.load_into(model)
    log.info(f"head initialised at the linear probe on the initial features (L2 {fit.weight_decay:g}, "
             f"train top-1 {fit.train_top1:.4f})")


def make_optimizer(model: PromptedModel, cfg: TrainConfig, num_train: int | None = None) -> torch.optim.Optimizer:
    """The method's optimizer, lrs scaled by the batch actually used / 256 (a batch size over the training set's
    size gives batches of the whole set, and must not scale the lr as if they were larger)."""
    batch = min(cfg.batch_size, num_train) if num_train else cfg.batch_size
    scale = batch / 256 if cfg.scale_lr else 1.0
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


# ------------------------------------------------------------------------------------------- set-up
def _read_run_config(run: RunDir, changes: dict) -> TrainConfig:
    """config.yaml with a resume's changes, validated as the command line's settings are (an edited file is one
    error naming it)."""
    settings = run.read_config()
    settings.setdefault("precision", "fp32")  # written before --precision existed: it ran in fp32
    cfg = TrainConfig.from_dict(settings, str(run.config))
    if changes:
        cfg = apply_resume_changes(cfg, changes, len(run.read_metrics()))
    cfg = dataclasses.replace(cfg, device=resolve_device(cfg.device))  # a resume's --device auto
    try:
        cfg.precision = resolve_precision(cfg.precision, cfg.device)  # e.g. bf16 resumed on a GPU without it
        cfg.validate()
        unresolved = [name for name in RESOLVED_FIELDS if getattr(cfg, name) is None]
        if unresolved:  # vptune train writes every setting it resolved
            raise ConfigError(f"it lacks {', '.join(unresolved)}, so it was not written by vptune train")
    except ConfigError as err:
        raise ConfigError(f"{run.config}: {err}; fix the file, or start the run again with --overwrite") from err
    return cfg


def _start(run: RunDir, cfg: TrainConfig, *, resume: bool, overwrite: bool,
           changes: dict | None = None) -> tuple[TrainConfig, Path | None]:
    """The settings to run with: config.yaml's when resuming; else `cfg` resolved and validated, written to a
    fresh run directory. With `overwrite`, an old vptune run there is moved aside (returned, for the caller to
    delete once the new run has started, or to put back); a folder that is not a vptune run is never touched."""
    restored = run.restore_replaced()
    if restored is not None:
        log.warning(f"vptune: {run.path} was being replaced (--overwrite) when its process was killed; the previous "
                    f"run was put back from {restored}")
    if resume:
        cfg = _read_run_config(run, changes or {}) if run.config.is_file() else None
        if cfg is None or not (run.state.is_file() or cfg.tuning_method().head_only):  # a probe is refitted whole
            raise TrainingError(f"cannot resume {run.path}: it has no {run.config.name} and {run.state.name} (no epoch "
                                f"finished yet?); start it again with --overwrite")
        if changes:
            run.write_config(cfg.to_dict())  # a later resume continues with the new number of epochs
        run.clear_interrupted_writes()
        return cfg, None
    cfg = cfg.resolved()
    check_new_run(run, overwrite)
    replaced = run.move_aside() if not run.is_empty() else None
    run.mark()
    run.write_config(cfg.to_dict())
    return cfg, replaced


def check_new_run(run: RunDir, overwrite: bool) -> None:
    """Refuse a new run's folder that holds something (without `overwrite`) or that is not a vptune run (with it),
    before anything is written there; callers with long work before the run (--lr auto) ask first."""
    if run.is_empty():
        return
    if not overwrite:
        raise TrainingError(f"{run.path} already exists and is not empty; pass --overwrite to replace it, "
                            f"--resume to continue it, or choose another --output")
    if not run.is_run():
        raise TrainingError(f"{run.path} is not a vptune run directory (it has no {MARKER} marker), so "
                            f"--overwrite will not delete what is in it; choose another --output")


def _datasets(data: TaskData, backbone: torch.nn.Module, recipe: str) -> DataSplits:
    """The task's datasets at the backbone's input size and normalisation."""
    from timm.data import resolve_model_data_config

    data_cfg = resolve_model_data_config(backbone)
    return data.datasets(img_size=data_cfg["input_size"][-1], mean=tuple(data_cfg["mean"]),
                         std=tuple(data_cfg["std"]), recipe=recipe)


def _precompute(fn: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset | None, cfg: TrainConfig,
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
    return DataLoader(dataset, num_workers=workers, collate_fn=collate, pin_memory=_device_type(cfg) == "cuda",
                      persistent_workers=persistent and workers > 0, **batching)


def _test_set(dataset: Dataset, cfg: TrainConfig) -> Dataset:
    """The test images scored: all, or `cfg.test_subset` of them fixed across seeds, then `cfg.subset`."""
    if cfg.test_subset is not None and len(dataset) > cfg.test_subset:
        dataset = Subset(dataset, fixed_sample(dataset.labels, cfg.test_subset).tolist())
    return _subset(dataset, cfg)


def _subset(dataset: Dataset | None, cfg: TrainConfig) -> Dataset | None:
    """At most `cfg.subset` images of a split, drawn by the seed (for quick checks like `demo --smoke`)."""
    if dataset is None or cfg.subset is None or len(dataset) <= cfg.subset:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))
    return Subset(dataset, order[:cfg.subset].tolist())


# ------------------------------------------------------------------------------------------- files
def _save_epoch(fit: Fit, epoch: int, best: dict, row: dict, improved: bool) -> None:
    cfg, run = fit.cfg, fit.run
    training = {"data": cfg.data, "protocol": cfg.protocol, "recipe": cfg.recipe, "seed": cfg.seed,
                "epoch": epoch + 1, "metrics": row}
    save_task(fit.model, run.last, training=training)
    if improved:
        save_task(fit.model, run.best, training=training)
    state = {"epoch": epoch + 1, "best": best, "tensors": task_tensors(fit.model),
             "optimizer": fit.optimizer.state_dict(), "scheduler": fit.scheduler.state_dict()}
    if fit.scaler is not None:
        state["scaler"] = fit.scaler.state_dict()
    # metrics first: killed between the two writes, the run resumes from the previous state and redoes this
    # epoch, rewriting its row the same way; the other order would lose the row for good
    run.write_metrics(run.read_metrics()[:epoch] + [row])
    atomic_write(run.state, lambda tmp: torch.save(state, tmp))


def _read_state(path: Path) -> dict:
    """state.pt as `_save_epoch` writes it, loaded without unpickling code; anything else is a clear error."""
    try:
        state = torch.load(path, weights_only=True)
    except Exception as err:  # truncated, corrupt, or a pickle that asks for code (refused by weights_only)
        raise TrainingError(f"cannot resume from {path}: it is not a readable vptune training state "
                            f"({brief(err)}); start the run again with --overwrite, or train into another "
                            f"--output") from err
    missing = {"epoch", "best", "tensors", "optimizer", "scheduler"} - (state.keys() if isinstance(state, dict) else set())
    if missing:
        raise TrainingError(f"cannot resume from {path}: it lacks {sorted(missing)}, so it is not a vptune training "
                            f"state; start the run again with --overwrite, or train into another --output")
    return state


def _restore(fit: Fit) -> tuple[int, dict | None]:
    state = _read_state(fit.run.state) if fit.world.main else None
    state = broadcast(state, fit.world)  # rank 0's: the other ranks need no copy of the run directory
    fit.model.load_state_dict(state["tensors"], strict=False)
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.scheduler.load_state_dict(state["scheduler"])
    if fit.scaler is not None and "scaler" in state:
        fit.scaler.load_state_dict(state["scaler"])
    return state["epoch"], state["best"]


def _epoch_line(row: dict) -> str:
    val = f", val top-1 {row['val_top1']:.4f}" if "val_top1" in row else ""
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, train top-1 {row['train_top1']:.4f}"
            f"{val}, {row['img_per_s']:.1f} img/s")


def _summarise(cfg: TrainConfig, run: RunDir, model: PromptedModel, splits: DataSplits, counts: ParameterCount,
               best: dict | None, train_seconds: float, quiet: bool, test: bool, world: World = SINGLE) -> dict:
    metrics = {}
    if test and splits.test is not None:
        # the best epoch's tensors, as saved (rank 0 reads them; every rank evaluates its share of the test set)
        best_tensors = read_task_tensors(run.best, read_task_json(run.best)) if world.main else None
        model.load_state_dict(broadcast(best_tensors, world), strict=False)
        model.eval()
        logits, labels = _precompute(model, _test_set(splits.test, cfg), cfg, quiet, world).tensors
        metrics = evaluate_logits(logits, labels)
    if not world.main:
        return {}  # rank 0's (it reads the run's files) is broadcast
    return {
        "method": cfg.method, "data": splits.describe(), "backbone": cfg.backbone, "epochs": cfg.epochs,
        "best_epoch": best["epoch"] if best else None, "best_val_top1": best["val_top1"] if best else None,
        "probe_weight_decay": best.get("weight_decay") if best else None,
        "test_top1": metrics.get("top1"), "test_top5": metrics.get("top5"), "test_images": metrics.get("num_images"),
        "device": cfg.device, "precision": cfg.precision, "trainable_parameters": counts.trainable, "backbone_parameters": counts.backbone,
        "trainable_percent": counts.percent_of_backbone,
        "checkpoint_bytes": os.path.getsize(run.best / WEIGHTS_FILE),
        "train_seconds": train_seconds,
    }
