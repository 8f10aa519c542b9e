"""A run's files after each epoch (last/, best/, metrics.jsonl, state.pt), and reading the state back to resume."""
from __future__ import annotations

from pathlib import Path

import torch

from .._io import atomic_write
from ..errors import TrainingError, brief
from ..tasks import save_task, task_tensors
from .distributed import broadcast
from .steps import Fit


def save_epoch(fit: Fit, epoch: int, best: dict, row: dict, improved: bool) -> None:
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


def read_state(path: Path) -> dict:
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


def restore(fit: Fit) -> tuple[int, dict | None]:
    state = read_state(fit.run.state) if fit.world.main else None
    state = broadcast(state, fit.world)  # rank 0's: the other ranks need no copy of the run directory
    fit.model.load_state_dict(state["tensors"], strict=False)
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.scheduler.load_state_dict(state["scheduler"])
    if fit.scaler is not None and "scaler" in state:
        fit.scaler.load_state_dict(state["scaler"])
    return state["epoch"], state["best"]


SHOWN = {"top1": "top-1", "miou": "mIoU", "pixel_accuracy": "pixel accuracy"}  # a row's metrics, as the log names them


def epoch_line(row: dict) -> str:
    train = "".join(f", train {name} {row['train_' + key]:.4f}" for key, name in SHOWN.items() if f"train_{key}" in row)
    val = "".join(f", val {name} {row['val_' + key]:.4f}" for key, name in SHOWN.items() if f"val_{key}" in row)
    return f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}{train}{val}, {row['img_per_s']:.1f} img/s"
