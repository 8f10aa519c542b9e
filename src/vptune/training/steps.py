"""One epoch of training, step by step: the `Fit` an epoch needs, the optimizer and its schedule, the divergence
check, and validation."""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..devices import autocast
from ..errors import TrainingError
from ..methods import Method, method_of, optimizer_groups
from ..model import PromptedModel
from ..rundir import RunDir
from .batches import make_loader
from .config import TrainConfig
from .cross_fit import Snapshot, batch_heads, held_out_loss, snapshot
from .distributed import SINGLE, EpochItems, GlobalBatchSampler, World, all_sum
from .linear_probe import ProbeFit
from .logs import TensorBoardLog
from .objective import Classification, objective_of


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
    # --cross-fit: a training input's [CLS] features (the model's, or its part after the cached stem), and the
    # snapshot of the training set's features the next epoch's heads are fitted on (`cross_fit.py`)
    features: Callable[[torch.Tensor], torch.Tensor] | None = None
    snapshot: "Snapshot | None" = None
    _loader: DataLoader | None = None

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.device)

    @property
    def method(self) -> Method:
        return method_of(self.model)

    @property
    def objective(self) -> Classification:
        return objective_of(self.model)

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


def train_epoch(fit: Fit, dataset: Dataset, epoch: int) -> dict:
    """One pass over the training set; returns the epoch's metrics row."""
    cfg, model, optimizer, objective = fit.cfg, fit.model, fit.optimizer, fit.objective
    epoch_started = time.perf_counter()  # the epoch's seconds include --cross-fit's probe fits and features
    loader, weights = fit.train_batches(dataset, epoch)
    heads, start_loss = _cross_fitted_heads(fit, dataset, loader) if cfg.cross_fit else (None, None)
    model.train()
    # dropout and augmentation: a function of (seed, epoch), so a resumed run replays exactly
    torch.manual_seed(cfg.seed * 1000 + epoch + 7919 * fit.world.rank)
    total_loss, correct, counted, seen, started = 0.0, 0, 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=fit.quiet, leave=False)
    skipped = 0
    for step, (inputs, labels) in enumerate(bar):
        inputs, labels = (t.to(fit.device, non_blocking=True) for t in (inputs, labels))
        if heads is not None:  # this batch's head: the probe on the other images (cross_fit.py)
            heads[step].load_into(model)
        with fit.autocast():
            logits = fit.forward(inputs)
        losses = objective.item_losses(logits.float(), labels, cfg.label_smoothing)  # one an image
        # this rank's share of the global batch's mean (DDP averages the ranks' gradients; see distributed.py)
        loss = losses.sum() * weights[step]
        extra = fit.method.training_loss(model, labels)  # a method's own loss beside it (DA-VPT's), a batch mean
        if extra is not None:
            loss = loss + extra * len(labels) * weights[step]
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
            right, scored = objective.hits(logits, labels)
            correct, counted, seen = correct + right, counted + scored, seen + len(labels)
        bar.set_postfix(loss=f"{losses.mean().item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}",
                        img_s=f"{seen / (time.perf_counter() - started):.1f}")
    if heads is not None:  # the head validated and saved: the probe on every image, as the epoch ends
        fit.snapshot = snapshot(fit, dataset)
        fit.snapshot.probe.load_into(model)
    seconds = time.perf_counter() - epoch_started
    total_loss, correct, counted, seen = all_sum([total_loss, correct, counted, seen], fit.world)
    _check_not_diverged(fit, total_loss / seen, epoch, start_loss)
    row = {"epoch": epoch + 1, "train_loss": total_loss / seen,
           f"train_{objective.train_metric}": correct / max(counted, 1),
           "lr": optimizer.param_groups[0]["lr"], "img_per_s": seen / seconds, "seconds": seconds}
    if fit.scaler is not None:
        row["skipped_steps"] = skipped
    return row


def _cross_fitted_heads(fit: Fit, dataset: Dataset, loader: DataLoader) -> tuple[list[ProbeFit], float]:
    """Each step's head for --cross-fit, from the features as the epoch begins (the last epoch's end snapshot,
    or a fresh one at the first epoch and after a resume), and the held-out loss they start the epoch at."""
    state = fit.snapshot or snapshot(fit, dataset)
    batches = loader.batch_sampler.batches
    heads = batch_heads(state, batches, fit.model.num_classes)
    return heads, held_out_loss(state, batches, heads)


def optimizer_step(fit: Fit, loss: torch.Tensor) -> bool:
    """Backward and update; False when fp16's scaler skipped the update (a gradient overflowed 16 bits: the scale
    is lowered and the next step tries again, which is no sign of divergence)."""
    if fit.scaler is None:
        loss.backward()
        _prepare_update(fit)
        fit.optimizer.step()
        return True
    scale = fit.scaler.get_scale()
    fit.scaler.scale(loss).backward()
    fit.scaler.unscale_(fit.optimizer)  # clip (and the optimizer) see the true gradients
    _prepare_update(fit)
    fit.scaler.step(fit.optimizer)
    fit.scaler.update()
    return fit.scaler.get_scale() >= scale


def _prepare_update(fit: Fit) -> None:
    """Between backward and the optimizer step: drop the gradients of what is not learned, clip the rest."""
    if fit.cfg.cross_fit:  # the head is set each step, not learned (cross_fit.py): no update, and no part in the clip
        for parameter in fit.model.head.parameters():
            parameter.grad = None
    if fit.cfg.clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(fit.model.trainable_parameters(), fit.cfg.clip_grad)


def _check_not_diverged(fit: Fit, loss: float, epoch: int, start_loss: float | None = None) -> None:
    """Stop (before the epoch is saved, so last/ keeps the last good one) when the epoch's training loss is over
    DIVERGED x that of guessing uniformly, ln(classes): the run has blown up, and more epochs rarely bring it back.
    A cross-fitted epoch's loss is a held-out one and may start above ln(classes) (`cross_fit.held_out_loss`):
    its bar is DIVERGED x the larger of the two."""
    chance = math.log(fit.model.num_classes)
    reference, what = chance, "that of a uniform guess"
    if start_loss is not None and start_loss > chance:
        reference, what = start_loss, "the held-out loss the epoch started at"
    if loss > DIVERGED * reference:
        raise TrainingError(f"training diverged: the loss was {loss:.3g} in epoch {epoch + 1}, over {DIVERGED:g} times "
                            f"{what} ({reference:.3g}); the last good checkpoint is in {fit.run.last} (if "
                            f"any epoch finished). Lower the learning rates (--lr {fit.cfg.lr:g}, --head-lr "
                            f"{fit.cfg.head_lr:g}) or let vptune choose (--lr auto), and train again")


def validate(fit: Fit, dataset: Dataset) -> dict:
    """The val split's loss and score (`Fit.objective`), the model in eval mode."""
    fit.model.eval()
    return fit.objective.validate(fit, dataset)


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
