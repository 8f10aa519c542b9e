"""`RunDir`: the layout of a training run directory, in one place.

    RUN/
      config.yaml     every resolved setting (what `--resume` continues with)
      metrics.jsonl   one line per finished epoch
      best/ last/     task checkpoints (prompt.safetensors + task.json): best on val, and the latest
      state.pt        training state (trainable tensors, optimizer, scheduler, epoch), every epoch
      summary.json    final figures: test accuracy of the best-on-val checkpoint (of the refit, with refit on)
      selection/      with refit on (the default; not with final, the default on few images): the run that chose
                      the epoch on val, a run folder of its own;
                      RUN itself then holds the final model, trained on train + val to that epoch
      unpruned/       E2VPT with pruning: the first run, every prompt trained (a run folder of its own), and
      pruning.json    what was kept of its prompts; RUN (and its selection/) then train the kept ones again
      eval/           what `vptune eval` writes (metrics JSON, confusion matrix PNG)
      tensorboard/    TensorBoard event files (loss, lr, val accuracy, img/s), when tensorboard is installed
      .lock           while a run writes here: its pid and host
      .vptune-run     the marker that makes this a vptune run (its layout's version): --overwrite replaces only
                      folders that have it (or, from before the marker, a vptune task checkpoint in best/ or last/)

Training writes it; eval, predict, info and the demo read it. A task checkpoint directory on its own (e.g.
written by `save_task`) is accepted wherever a run is, see `RunDir.find_task`.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from ._io import atomic_write_text
from .errors import CheckpointError, ConfigError, TrainingError, WriteError
from .tasks import CONFIG_FILE

LOCK = ".lock"
MARKER = ".vptune-run"
RUN_FORMAT = {"format": "vptune-run", "version": 1}


class RunDir:
    """Paths and small readers / writers of one training run directory."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).absolute()  # "." from inside the run still names the run's folder
        self.config = self.path / "config.yaml"
        self.metrics = self.path / "metrics.jsonl"
        self.state = self.path / "state.pt"
        self.summary = self.path / "summary.json"
        self.best = self.path / "best"
        self.last = self.path / "last"
        self.eval = self.path / "eval"
        self.tensorboard = self.path / "tensorboard"
        self.selection = self.path / "selection"
        self.unpruned = self.path / "unpruned"
        self.pruning = self.path / "pruning.json"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def is_run(self) -> bool:
        """True when the directory holds a vptune training run: its marker, or (runs from before the marker) a
        vptune task checkpoint in best/ or last/. A folder that merely has a config.yaml is not one."""
        if (self.path / MARKER).is_file():
            return True
        return any(_is_task_checkpoint(folder / CONFIG_FILE) for folder in (self.best, self.last))

    def mark(self) -> None:
        """Write the run marker (done when a run starts, before anything else of the run)."""
        atomic_write_text(self.path / MARKER, json.dumps(RUN_FORMAT) + "\n")

    @property
    def started(self) -> bool:
        """Whether training got anywhere here: an epoch finished, or a first stage (a refit's selection run, a
        pruning's unpruned run) began; such a run resumes rather than starting again."""
        return self.state.is_file() or self.selection.is_dir() or self.unpruned.is_dir()

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(p.name != LOCK for p in self.path.iterdir())

    # ------------------------------------------------------------------------------------------- lock
    @contextmanager
    def lock(self, flag: str = "--output") -> Iterator[None]:
        """Hold RUN/.lock (the holder's pid and host) while a run writes here: a second run refuses instead of
        writing into the same files; the lock of a process that is gone is taken over. `flag` names the folder's
        option in the error for a folder that cannot be written."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{flag} {self.path} is a file; give a folder (a new one, or an earlier run's)")
        created = not self.path.exists()
        lock = self.path / LOCK
        mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:  # also the up-front check that the output folder can be written at all
                self.path.mkdir(parents=True, exist_ok=True)
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_lock(lock)
                if _stale(lock, holder):
                    lock.unlink(missing_ok=True)
                    continue
                who = (f"pid {holder['pid']} on {holder['host']}" if holder.get("pid") and holder.get("host")
                       else "its lock is being written right now")
                raise TrainingError(f"{self.path} is in use by another vptune run ({who}); wait for it to finish, "
                                    f"or delete {lock} if that process is gone") from None
            except OSError as err:
                raise WriteError(f"cannot write to the output folder {self.path}: {err.strerror or err}; choose "
                                 f"another {flag}, or make it writable") from err
            with os.fdopen(fd, "w") as f:
                f.write(mine)
            break
        try:
            yield
        finally:
            if lock.is_file() and lock.read_text() == mine:
                lock.unlink()
            if created and not any(self.path.iterdir()):  # nothing was written: leave no empty folder behind
                self.path.rmdir()

    def clear_interrupted_writes(self) -> list[Path]:
        """Delete the temp files of writes a killed run left unfinished (`_io.atomic_write` names them
        .NAME.*.tmp beside NAME); they were never renamed into place, so nothing read them."""
        leftovers = [p for folder in (self.path, self.best, self.last) if folder.is_dir()
                     for p in folder.glob(".*.tmp") if p.is_file()]
        for path in leftovers:
            path.unlink()
        return leftovers

    # ------------------------------------------------------------------------------------------- replacing
    def move_aside(self) -> Path:
        """Move this run's files (not the lock) into a hidden sibling folder, to be deleted once a new run has
        started cleanly or put back if it has not (`put_back`; after a kill, `restore_replaced`)."""
        aside = self.path.parent / f"{ASIDE_PREFIX.format(name=self.path.name)}{os.getpid()}"
        aside.mkdir()
        for child in self.path.iterdir():
            if child.name != LOCK:
                child.rename(aside / child.name)
        return aside

    def restore_replaced(self) -> Path | None:
        """Put back a run that an `--overwrite` moved aside when its process was killed before the new run
        started (the new run never got past its config, so nothing of it is lost). Returns where it was."""
        pattern = ASIDE_PREFIX.format(name=self.path.name) + "*"
        for aside in sorted(self.path.parent.glob(pattern)) if self.path.parent.is_dir() else []:
            pid = aside.name.rsplit("-", 1)[-1]
            if aside.is_dir() and not (pid.isdigit() and _alive(int(pid))):
                foreign = sorted(p.name for p in self.path.iterdir() if p.name not in STARTING_FILES) \
                    if self.path.is_dir() else []
                if foreign:
                    raise TrainingError(f"{self.path} was being replaced (--overwrite) when its process was killed; "
                                        f"the previous run is in {aside}, and {self.path} now holds {foreign[:3]}: "
                                        f"move what you want to keep out of {self.path}, then run again")
                self.path.mkdir(parents=True, exist_ok=True)
                self.put_back(aside)
                return aside
        return None

    def put_back(self, aside: Path) -> None:
        for child in self.path.iterdir():
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        for child in aside.iterdir():
            child.rename(self.path / child.name)
        aside.rmdir()

    # ------------------------------------------------------------------------------------------- files
    def read_config(self) -> dict[str, Any]:
        """config.yaml's settings; a damaged file is one error naming it (their values are checked by
        TrainConfig)."""
        try:
            settings = yaml.safe_load(self.config.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
            raise CheckpointError(f"{self.config} is not readable YAML ({' '.join(str(err).split())}); fix the "
                                  f"file, or start the run again with --overwrite") from err
        if not isinstance(settings, dict):
            raise CheckpointError(f"{self.config} holds a {type(settings).__name__}, not the run's settings; fix "
                                  f"the file, or start the run again with --overwrite")
        return settings

    def write_config(self, settings: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(settings, sort_keys=False))

    def read_metrics(self) -> list[dict]:
        if not self.metrics.is_file():
            return []
        try:
            rows = [json.loads(line) for line in self.metrics.read_text().splitlines() if line]
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{self.metrics} is damaged (not JSON lines: {err}); remove its broken lines, or "
                                  f"start the run again with --overwrite") from err
        if not all(isinstance(row, dict) for row in rows):
            raise CheckpointError(f"{self.metrics} is damaged (a line is not an epoch's record); remove it, or start "
                                  f"the run again with --overwrite")
        return rows

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
        if path.is_file():  # e.g. task.json or an image named first
            raise CheckpointError(f"{path} is a file; give the task's folder (the one holding {CONFIG_FILE}) or "
                                  f"the training run's --output folder")
        raise CheckpointError(f"{path} is neither a task checkpoint (with {CONFIG_FILE}) nor a training run "
                              f"(with best/{CONFIG_FILE}); train one with `vptune train --output {path}`")

    @staticmethod
    def eval_dir_for(task: Path) -> Path:
        """Where evaluation results of a task go: the run's eval/ for best/ or last/, else task/eval/."""
        task = Path(task)
        return task.parent / "eval" if task.name in ("best", "last") else task / "eval"


ASIDE_PREFIX = ".{name}.replaced-"  # + the pid of the process that moved it
UNWRITTEN_LOCK_SECONDS = 5.0
STARTING_FILES = {LOCK, MARKER, "config.yaml"}  # what a new run has written before the run it replaces is deleted


def _is_task_checkpoint(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == "vptune-task"
    except (OSError, ValueError, AttributeError):
        return False


def _read_lock(lock: Path) -> dict:
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _stale(lock: Path, holder: dict) -> bool:
    """A lock of this machine whose process is gone, or one left empty or damaged (its writer was killed between
    creating and writing it) for longer than the instant that writing takes."""
    if isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str):
        return holder["host"] == socket.gethostname() and not _alive(holder["pid"])
    try:
        return time.time() - lock.stat().st_mtime > UNWRITTEN_LOCK_SECONDS
    except OSError:
        return True  # gone meanwhile


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
