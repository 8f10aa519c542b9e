"""`RunDir`: the layout of a training run directory, in one place.

    RUN/
      config.yaml     every resolved setting (what `--resume` continues with)
      metrics.jsonl   one line per finished epoch
      best/ last/     task checkpoints (prompt.safetensors + task.json): best on val, and the latest
      state.pt        training state (trainable tensors, optimizer, scheduler, epoch), every epoch
      summary.json    final figures: test accuracy of the best-on-val checkpoint
      eval/           what `vptune eval` writes (metrics JSON, confusion matrix PNG)

Training writes it; eval, predict, info and the demo read it. A task checkpoint directory on its own (e.g.
written by `save_task`) is accepted wherever a run is, see `RunDir.find_task`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from ._io import atomic_write_text
from .errors import CheckpointError
from .tasks import CONFIG_FILE


class RunDir:
    """Paths and small readers / writers of one training run directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.state = self.path / "state.pt"
        self.summary = self.path / "summary.json"
        self.best = self.path / "best"
        self.last = self.path / "last"
        self.eval = self.path / "eval"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def is_run(self) -> bool:
        """True when the directory holds a vptune training run (its config or metrics)."""
        return self.config.is_file() or self.metrics.is_file()

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    # ------------------------------------------------------------------------------------------- files
    def read_config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config.read_text()) or {}

    def write_config(self, settings: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(settings, sort_keys=False))

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line]

    def write_metrics(self, rows: list[dict]) -> None:
        atomic_write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in rows))

    def read_summary(self) -> dict[str, Any]:
        return json.loads(self.summary.read_text())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2) + "\n")

    # ------------------------------------------------------------------------------------------- tasks
    @staticmethod
    def find_task(path: str | os.PathLike) -> Path:
        """A task checkpoint directory: `path` itself, or the best (else last) checkpoint of a run directory."""
        path = Path(path)
        for candidate in (path, path / "best", path / "last"):
            if (candidate / CONFIG_FILE).is_file():
                return candidate
        raise CheckpointError(f"{path} is neither a task checkpoint (with {CONFIG_FILE}) nor a training run "
                              f"(with best/{CONFIG_FILE}); train one with `vptune train --output {path}`")

    @staticmethod
    def eval_dir_for(task: Path) -> Path:
        """Where evaluation results of a task go: the run's eval/ for best/ or last/, else task/eval/."""
        task = Path(task)
        return task.parent / "eval" if task.name in ("best", "last") else task / "eval"
