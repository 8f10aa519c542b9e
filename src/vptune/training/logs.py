"""Experiment logs for TensorBoard: RUN/tensorboard/, written by rank 0 when the `tensorboard` package is there.

    tensorboard --logdir runs/        (then open http://localhost:6006)

Per step: the training loss and learning rate; per epoch: every number of the epoch's metrics row (train loss
and top-1, val loss and top-1, img/s). A resumed run purges the events after its last finished epoch, so the
curves show each step once.
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("vptune")


class TensorBoardLog:
    """Writes scalars to `folder`, or does nothing when `folder` is None or tensorboard is not installed."""

    def __init__(self, folder: Path | None, purge_step: int | None = None) -> None:
        self.writer = None
        if folder is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.info("no TensorBoard logs: the tensorboard package is not installed (pip install 'vptune[tensorboard]')")
            return
        self.writer = SummaryWriter(str(folder), purge_step=purge_step)

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.writer is not None:
            self.writer.add_scalar("train/loss_step", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                split, _, name = key.partition("_")
                tag = f"{split}/{name}" if split in ("train", "val") else f"epoch/{key}"
                self.writer.add_scalar(tag, value, row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
