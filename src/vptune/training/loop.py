"""The training loop: backbone + data + method -> a run directory (see `vptune.rundir` for its layout).

This file is the flow, top to bottom; its parts are beside it: `start.py` (a run's folder), `batches.py` (data and
one pass over a split), `warm_start.py` (prompts and head started from data), `steps.py` (one epoch),
`checkpoint.py` (the files after each epoch), `objective.py` (what a task's training minimises and scores: a
classifier's top-1, or a segmenter's per-pixel loss and mIoU; the loop is the same for both).

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
import json
import logging
import math
import shutil
import time
import os
from contextlib import nullcontext
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from ..backbones import create_backbone
from ..data import DataSplits
from ..devices import DTYPES, autocast, maybe_compile, resolve_device
from ..errors import ConfigError, TrainingError, VptuneError
from ..methods import build_model
from ..model import ParameterCount, PromptedModel, PruningPlan, auto_num_tokens, count_parameters, plan_pruning, \
    prompt_importance, prune_prompts
from ..rundir import MARKER, RunDir
from .._io import atomic_write_text
from ..tasks import WEIGHTS_FILE, load_task, read_task_json, read_task_tensors, save_task
from .batches import datasets_for, make_loader, precompute_rows, read_task_data, subset_of, test_set_of
from .checkpoint import epoch_line, restore, save_epoch
from .config import AUTO, TrainConfig
from .distributed import SINGLE, EpochItems, World, broadcast, check_batch, init_world, leave
from .linear_probe import WEIGHT_DECAYS, choose_probe, choose_probe_cv, fit_logistic_regression
from .logs import TensorBoardLog
from .objective import objective_of
from .start import check_new_run, start_run
from .stem_cache import stem_cache_plan
from .steps import Fit, make_optimizer, train_epoch, validate, warmup_cosine
from .warm_start import init_head, init_prompts_from_patches

log = logging.getLogger("vptune")

__all__ = ["train", "train_epochs", "train_linear_probe", "check_new_run", "warmup_cosine"]


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
           device: str | None = None, changes: dict | None = None, plan: PruningPlan | None = None) -> dict:
    cfg, replaced = start_run(run, cfg, resume=resume, overwrite=overwrite, changes=changes) if world.main \
        else (None, None)
    cfg = broadcast(cfg, world)
    check_batch(cfg.batch_size, world)
    cfg = dataclasses.replace(cfg, device=device or cfg.device)  # this rank's device; config.yaml keeps the given one
    method = cfg.tuning_method()
    torch.manual_seed(cfg.seed)
    try:  # a run being replaced stays until the new one has its backbone, data and model
        if world.distributed and cfg.task == "segmentation":
            raise ConfigError("segmentation under torchrun is not in vptune yet; train it in one process (plain "
                              "`vptune train`)")
        data = read_task_data(cfg)  # bad data is refused before a backbone is fetched
        backbone = create_backbone(cfg.backbone, img_size=cfg.img_size, weights=cfg.weights)
        splits = datasets_for(data, backbone, cfg)
        torch.manual_seed(cfg.seed)  # prompt and head init do not depend on how much randomness data loading used
        cfg = with_num_tokens(cfg, backbone, len(splits.class_names))
        model = build_model(method, backbone, cfg.prompt_config(), len(splits.class_names),
                            class_names=splits.class_names, head_norm=cfg.head_norm,
                            segmentation_head=cfg.seg_head)
        num_train = len(subset_of(splits.train, cfg))  # the images a selection (or single) run trains on
        cfg = with_final(with_cross_fit(cfg, num_train, model.embed_dim))
    except BaseException:
        if replaced is not None:
            run.put_back(replaced)
        elif not resume and world.main:  # a new run that could not start leaves nothing behind (its files are ours)
            run.config.unlink(missing_ok=True)
            (run.path / MARKER).unlink(missing_ok=True)
        raise
    if replaced is not None:
        shutil.rmtree(replaced)
    cfg = _with_min_steps(cfg, num_train)
    model.grad_checkpointing = cfg.grad_checkpointing
    model.to(cfg.device)
    if cfg.half_backbone:  # after build_model took the backbone's fingerprint from its own weights
        model.backbone.to(DTYPES[cfg.precision])
    counts = count_parameters(model)
    log.info(f"{cfg.method} on {cfg.data} ({num_train} train images), {counts.trainable:,} "
             f"trainable parameters ({counts.percent_of_backbone:.3f}% of the backbone), on {cfg.device} in "
             f"{cfg.precision}")

    unpruned = None
    if method.prunes and plan is None:  # E2VPT's pruning: a first run with every prompt, in RUN/unpruned
        plan, unpruned = _prune_stage(run, cfg, model, splits, quiet, world)
    if cfg.fits_probe():
        best, train_seconds = train_linear_probe(model, splits, cfg, run, quiet, world)
    elif refits(cfg):
        selection = _select(run, cfg, quiet, on_epoch, test, world, plan)  # stage 1, in RUN/selection
        refit = dataclasses.replace(cfg, final=True)  # stage 2: the same schedule on train + val, to the chosen epoch
        best, train_seconds = train_epochs(model, splits, refit, run, quiet, resume and run.state.is_file(),
                                           world=world, stop_after=selection["best_epoch"], plan=plan)
        score = f"val_{objective_of(model).score}"
        best.update({score: selection[f"best_{score}"]}, selection=_selection_line(selection, score))
        train_seconds += selection["train_seconds"]
    else:
        best, train_seconds = train_epochs(model, splits, cfg, run, quiet, resume and run.state.is_file(), on_epoch,
                                           world, plan=plan)  # no state yet: killed in a pruning's first run
    if unpruned is not None:
        train_seconds += unpruned["train_seconds"]
        best["pruning"] = _pruning_line(unpruned, plan)
    counts = count_parameters(model) if plan is not None else counts  # the pruned prompts' own count

    summary = _summarise(cfg, run, model, splits, counts, best, train_seconds, quiet, test, world)
    if world.main:
        run.write_summary(summary)
    return broadcast(summary, world)  # every rank returns rank 0's


def _with_min_steps(cfg: TrainConfig, num_train: int) -> TrainConfig:
    """`min_steps` as epochs, from the training split's size (so a refit on train + val keeps the selection run's
    schedule): max(epochs, ceil(min_steps / steps per epoch))."""
    if cfg.min_steps is None:
        return cfg
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / math.ceil(num_train / cfg.batch_size)))
    if epochs != cfg.epochs:
        log.info(f"{num_train} training images at batch {cfg.batch_size}: {epochs} epochs for at least "
                 f"{cfg.min_steps} steps (--min-steps)")
    return dataclasses.replace(cfg, epochs=epochs, min_steps=None)


def with_cross_fit(cfg: TrainConfig, num_train: int, feature_width: int) -> TrainConfig:
    """cross_fit's default, from the training split (so a refit on train + val keeps the selection run's choice):
    on when there are at most 2 x feature_width training images. A linear classifier on d features can fit most
    labellings of up to 2d points (Cover, 1965): there the probe the head starts at fits the training set, its loss
    is near 0, and the prompts learn little from it unless the loss is a held-out one (docs/recipe.md). A batch's
    head is fitted on the images outside it, so an epoch needs two batches or more."""
    one_batch = num_train <= cfg.batch_size
    if cfg.cross_fit and one_batch:
        # one image is one batch whatever the batch size: then the only fix is to leave cross-fit out
        smaller = f"lower --batch-size (to {num_train // 2} or less), or " if num_train > 1 else ""
        raise ConfigError(f"cross_fit fits each batch's head on the training images outside it, but the "
                          f"{num_train} training images make one batch of --batch-size {cfg.batch_size}; "
                          f"{smaller}leave out --cross-fit")
    if cfg.cross_fit is not None:
        return cfg
    fits_all = num_train <= 2 * feature_width
    reason = f"{num_train} training images {'<=' if fits_all else '>'} 2 x {feature_width} features"
    if fits_all and one_batch:
        log.info(f"cross-fit: off (one batch of {cfg.batch_size}: no images outside it to fit its head on), though "
                 f"{reason}")
        fits_all = False
    else:
        log.info(f"cross-fit: {'on' if fits_all else 'off'} ({reason}; --cross-fit or --no-cross-fit to choose)")
    return dataclasses.replace(cfg, cross_fit=fits_all)


def with_num_tokens(cfg: TrainConfig, backbone: torch.nn.Module, num_classes: int) -> TrainConfig:
    """num_tokens auto, from the backbone at the run's input size (`model.auto_num_tokens`: 10 prompts per 64
    image tokens an attention sees, within 1% of the backbone's parameters); with `--prompt-init cls`, one prompt
    a class. A method that trains no prompt gets 0, silently."""
    if cfg.num_tokens != AUTO:
        return cfg
    if not cfg.trains_prompts():
        return dataclasses.replace(cfg, num_tokens=0)
    if cfg.prompt_init == "cls":
        num_tokens, reason = num_classes, "one a class, as --prompt-init cls starts them"
    else:
        num_tokens = auto_num_tokens(backbone, cfg.prompt_config(num_tokens=1))  # 1: any length, for the blocks
        reason = "10 per 64 image tokens an attention sees, capped at 1% of the backbone's parameters"
    log.info(f"prompt length: p = {num_tokens} (--num-tokens auto: {reason})")
    cfg = dataclasses.replace(cfg, num_tokens=num_tokens)
    cfg.validate()  # what the length decides (how many tokens a pruning keeps)
    return cfg


def with_final(cfg: TrainConfig) -> TrainConfig:
    """final's default: on where cross-fit is, unless the run is selection only (--no-refit). Cross-fit's few images
    leave a val of a few dozen (3 a class on docs/recipe.md's hold-out tasks), whose curve is flat to within an image
    or two: the epoch chosen on it is close to chance, and choosing costs a whole training. So the whole schedule
    trains on train + val, as the paper's final runs do; on docs/recipe.md's tasks this was level with choosing
    the epoch (+1.2 points over 13 paired runs, within noise) in a median 0.7 of the time."""
    if cfg.final is not None:
        return cfg
    final = bool(cfg.cross_fit) and cfg.refit
    if final:
        log.info("final: the whole schedule on train + val, no epoch chosen on val (the default under cross-fit; "
                 "--no-final to choose one first)")
    return dataclasses.replace(cfg, final=final)


def refits(cfg: TrainConfig) -> bool:
    """Whether training is two stages: choose on val (RUN/selection), then train on train + val (RUN itself)."""
    return cfg.refit and not cfg.final and not cfg.fits_probe()


def _select(run: RunDir, cfg: TrainConfig, quiet: bool, on_epoch: Callable[[dict], None] | None, test: bool,
            world: World, plan: PruningPlan | None = None) -> dict:
    """Stage 1 of a refit: the selection run in RUN/selection, trained, resumed, or read back when it finished."""
    selection = RunDir(run.selection)
    if selection.summary.is_file():
        return broadcast(selection.read_summary() if world.main else None, world)
    log.info(f"stage 1 of 2: choosing the epoch on val ({selection.path})")
    settings = dataclasses.replace(cfg, output=str(selection.path), refit=False)
    # an epoch finished: continue it; else (killed before its first epoch) start it again: the folder is ours
    resume = selection.state.is_file() and selection.config.is_file()
    with selection.lock(flag="--output") if world.main else nullcontext():
        summary = _train(selection, settings, resume, True, quiet, on_epoch, test, world, cfg.device, plan=plan)
    log.info(f"stage 2 of 2: training on train + val to the chosen epoch {summary['best_epoch']}")
    return summary


def _prune_stage(run: RunDir, cfg: TrainConfig, model: PromptedModel, splits: DataSplits, quiet: bool,
                 world: World) -> tuple[PruningPlan, dict]:
    """E2VPT's pruning: train every prompt in RUN/unpruned (the selection protocol: no refit, no test), score its
    prompts on the training images and choose what to keep (RUN/pruning.json, written once: a resume reads it)."""
    stage = RunDir(run.unpruned)
    method = cfg.tuning_method()
    settings = dataclasses.replace(cfg, output=str(stage.path), refit=False, prune_tokens=0.0, prune_segments=0.0)
    if not stage.summary.is_file():
        log.info(f"pruning, first: training every prompt ({stage.path})")
        resume = stage.state.is_file() and stage.config.is_file()
        with stage.lock(flag="--output") if world.main else nullcontext():
            _train(stage, settings, resume, True, quiet, None, False, world, cfg.device)
    summary = broadcast(stage.read_summary() if world.main else None, world)
    if world.main and not run.pruning.is_file():
        trained = load_task(stage.best, model.backbone)
        trained.to(cfg.device)
        batches = make_loader(subset_of(splits.train, cfg), cfg, batch_size=cfg.batch_size)
        with autocast(cfg.device, cfg.precision):
            scores = prompt_importance(trained, ((x.to(cfg.device), y.to(cfg.device)) for x, y in batches),
                                       objective_of(model).batch_loss)
        plan = plan_pruning(*scores, method.prune_tokens, method.prune_segments)
        atomic_write_text(run.pruning, json.dumps(plan.to_dict()) + "\n")
    plan = PruningPlan.from_dict(broadcast(json.loads(run.pruning.read_text()) if world.main else None, world))
    log.info(f"pruning: {plan.length} of {cfg.num_tokens} prompt tokens kept a block"
             + (f", {_zeros(plan)} segments held at zero" if plan.segment_mask else "")
             + "; the kept prompts rewound to their initial values and trained again")
    return plan, summary


def _zeros(plan: PruningPlan) -> int:
    return sum(row.count(0) for mask in plan.segment_mask for row in mask)


def _pruning_line(unpruned: dict, plan: PruningPlan) -> dict:
    """What RUN/summary.json keeps of a pruning."""
    return {"run": "unpruned", "tokens_kept": plan.length, "segments_pruned": _zeros(plan) if plan.segment_mask else 0,
            "unpruned_trainable_parameters": unpruned["trainable_parameters"],
            "unpruned_checkpoint_bytes": unpruned["checkpoint_bytes"],
            **{f"unpruned_{key}": value for key, value in unpruned.items() if key.startswith("best_val_")}}


def _selection_line(summary: dict, score: str) -> dict:
    """What RUN/summary.json keeps of the selection run (`score`: val_top1, or val_miou for segmentation)."""
    test = score.replace("val_", "test_")
    return {"run": "selection", "best_epoch": summary["best_epoch"], f"best_{score}": summary[f"best_{score}"],
            test: summary.get(test), "train_images": summary.get("train_images")}


def train_epochs(model: PromptedModel, splits: DataSplits, cfg: TrainConfig, run: RunDir, quiet: bool,
                 resume: bool, on_epoch: Callable[[dict], None] | None = None,
                 world: World = SINGLE, stop_after: int | None = None,
                 plan: PruningPlan | None = None) -> tuple[dict | None, float]:
    """The epoch loop (from the last finished epoch when resuming); returns the best epoch and the seconds spent.
    `stop_after`: end after that many epochs of the `cfg.epochs` schedule (a refit to the epoch chosen on val).
    `plan`: prune the prompts first (E2VPT), keeping the kept ones at their initial values (the rewinding)."""
    method, objective = cfg.tuning_method(), objective_of(model)
    train_set = EpochItems(subset_of(splits.trainval if cfg.final else splits.train, cfg), cfg.seed)
    val_set = None if cfg.final else subset_of(splits.val, cfg)
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    with autocast(cfg.device, cfg.precision):  # forward passes of the initial model (a half backbone needs it)
        if not resume and model.prompts is not None and model.prompt_config.init == "patches":
            init_prompts_from_patches(model, train_set, cfg)
        if not resume and model.prompts is not None and model.prompt_config.init == "cls":
            model.eval()
            model.init_prompts_from_classes(make_loader(train_set, cfg, batch_size=cfg.batch_size))
    if plan is not None:  # after the full init, so the kept prompts start where the unpruned run's did
        prune_prompts(model, plan)
    cacheable = objective.caches_stem and stem_cache_plan(
        model, frozen_backbone=method.frozen_backbone, recipe=cfg.recipe, cache_stem=cfg.cache_stem,
        num_images=len(train_set) + len(val_set or ()))
    if cacheable:
        train_set, val_set = (precompute_rows(model.stem, s, cfg, quiet, world) for s in (train_set, val_set))
        forward = model.forward_from_stem
    features = model.features_from_stem if cacheable else model.forward_features
    # (--cross-fit sets the head from the training features before every step: nothing to start here)
    if not resume and not cfg.cross_fit and (cfg.head_norm or cfg.head_init != "random"):
        init_head(model, features, train_set, val_set, cfg, quiet, world)  # final: the L2 by cross-validation

    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    optimizer = make_optimizer(model, cfg, len(train_set))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(steps_per_epoch * cfg.epochs, round(steps_per_epoch * cfg.warmup_epochs)))
    forward = maybe_compile(forward, cfg.compile)
    if world.distributed:  # gradients all-reduced by torch's DDP; the wrapper runs whichever forward we chose
        forward = DistributedDataParallel(_Forward(model, forward))
    scaler = torch.amp.GradScaler(torch.device(cfg.device).type) if cfg.precision == "fp16" else None
    fit = Fit(cfg, model, forward, optimizer, scheduler, run, quiet, world, scaler=scaler, features=features)
    start_epoch, best = restore(fit) if resume else (0, None)
    if cfg.tensorboard and world.main:
        fit.logs = TensorBoardLog(run.tensorboard, purge_step=start_epoch * steps_per_epoch if resume else None)

    try:
        for epoch in range(start_epoch, stop_after or cfg.epochs):
            row = train_epoch(fit, train_set, epoch)
            if val_set is not None:
                row.update({f"val_{k}": v for k, v in validate(fit, val_set).items()})
            score = f"val_{objective.score}"
            improved = best is None or val_set is None or row[score] > best[score]
            if improved:
                best = {"epoch": epoch + 1, score: row.get(score), "train_images": len(train_set)}
            if world.main:
                save_epoch(fit, epoch, best, row, improved)
                fit.logs.epoch(row)
            log.info(epoch_line(row))
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
    """Logistic regression on the frozen features (`linear_probe.py`). With `refit` (the default), its L2 strength
    by 5-fold cross-validation over train + val, then fitted on all of them; else chosen on val and fitted on train
    (with `final`, refitted on train + val). One metrics row per strength tried."""
    log.info("computing the frozen features once for the linear probe...")
    features = {name: precompute_rows(model.forward_features, subset_of(getattr(splits, name), cfg), cfg, quiet, world)
                for name in ("train", "val")}
    (train_x, train_y), (val_x, val_y) = (features[name].tensors for name in ("train", "val"))
    all_x, all_y = torch.cat([train_x, val_x]), torch.cat([train_y, val_y])
    started = time.perf_counter()
    if cfg.refit:
        fit, rows = choose_probe_cv(all_x, all_y, model.num_classes, seed=cfg.seed)
        chosen_on, score = f"{rows[0]['folds']}-fold cross-validation over train + val", "cv_top1"
    else:
        fit, rows = choose_probe((train_x, train_y), (val_x, val_y), model.num_classes)
        chosen_on, score = "val", "val_top1"
    rows = [{"epoch": index + 1, **row} for index, row in enumerate(rows)]
    chosen = rows[WEIGHT_DECAYS.index(fit.weight_decay)]
    if cfg.final and not cfg.refit:
        fit = fit_logistic_regression(all_x, all_y, model.num_classes, fit.weight_decay)
        rows.append({"epoch": len(rows) + 1, "weight_decay": fit.weight_decay, "train_loss": fit.train_loss,
                     "train_top1": fit.train_top1, "iterations": fit.iterations, "seconds": fit.seconds,
                     "final": True})
    fit.load_into(model)
    seen = len(all_y) if cfg.refit or cfg.final else len(train_y)
    best = {"epoch": chosen["epoch"], "val_top1": chosen[score], "weight_decay": fit.weight_decay,
            "train_images": seen}
    log.info(f"linear probe: L2 strength {fit.weight_decay:g} chosen by {chosen_on} (top-1 {chosen[score]:.4f}), "
             f"fitted on {seen} images")
    training = {"data": cfg.data, "protocol": cfg.protocol, "recipe": cfg.recipe, "seed": cfg.seed,
                "weight_decay": fit.weight_decay}
    if world.main:
        save_task(model, run.best, training=training)
        save_task(model, run.last, training=training)
        run.write_metrics(rows)
    return best, time.perf_counter() - started


def _summarise(cfg: TrainConfig, run: RunDir, model: PromptedModel, splits: DataSplits, counts: ParameterCount,
               best: dict | None, train_seconds: float, quiet: bool, test: bool, world: World = SINGLE) -> dict:
    objective = objective_of(model)
    metrics = {}
    if test and splits.test is not None:
        # the best epoch's tensors, as saved (rank 0 reads them; every rank evaluates its share of the test set)
        best_tensors = read_task_tensors(run.best, read_task_json(run.best)) if world.main else None
        model.load_state_dict(broadcast(best_tensors, world), strict=False)
        model.eval()
        metrics = objective.test(model, test_set_of(splits.test, cfg), cfg, quiet, world)
    if not world.main:
        return {}  # rank 0's (it reads the run's files) is broadcast
    score = f"val_{objective.score}"
    return {
        "method": cfg.method, "task": objective.task, "data": splits.describe(), "backbone": cfg.backbone,
        "epochs": cfg.epochs, "best_epoch": best["epoch"] if best else None,
        f"best_{score}": best[score] if best else None,
        "probe_weight_decay": best.get("weight_decay") if best else None,
        "refit": cfg.refit and not cfg.final, "final": bool(cfg.final), "cross_fit": bool(cfg.cross_fit),
        "train_images": best.get("train_images") if best else None,
        **{key: best[key] for key in ("selection", "pruning") if best and key in best},
        **(metrics or dict.fromkeys(objective.test_keys)),
        "device": cfg.device, "precision": cfg.precision, "trainable_parameters": counts.trainable, "backbone_parameters": counts.backbone,
        "trainable_percent": counts.percent_of_backbone,
        "checkpoint_bytes": os.path.getsize(run.best / WEIGHTS_FILE),
        "train_seconds": train_seconds,
    }
