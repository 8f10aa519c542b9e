"""Starting a run: a new run's folder checked and marked, or a resumed run's config.yaml read back and checked."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from ..devices import resolve_device, resolve_precision
from ..errors import ConfigError, TrainingError
from ..rundir import MARKER, RunDir
from .config import RESOLVED_FIELDS, TrainConfig, apply_resume_changes

log = logging.getLogger("vptune")


def read_run_config(run: RunDir, changes: dict) -> TrainConfig:
    """config.yaml with a resume's changes, validated as the command line's settings are (an edited file is one
    error naming it)."""
    settings = run.read_config()
    settings.setdefault("precision", "fp32")  # written before --precision existed: it ran in fp32
    settings.setdefault("refit", False)  # written before --refit existed: its test came from the best val epoch
    settings.setdefault("cross_fit", False)  # written before --cross-fit existed: its head was learned
    cfg = TrainConfig.from_dict(settings, str(run.config))
    if changes:
        cfg = apply_resume_changes(cfg, changes, len(run.read_metrics()), selected=run.selection.is_dir())
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


def start_run(run: RunDir, cfg: TrainConfig, *, resume: bool, overwrite: bool,
           changes: dict | None = None) -> tuple[TrainConfig, Path | None]:
    """The settings to run with: config.yaml's when resuming; else `cfg` resolved and validated, written to a
    fresh run directory. With `overwrite`, an old vptune run there is moved aside (returned, for the caller to
    delete once the new run has started, or to put back); a folder that is not a vptune run is never touched."""
    restored = run.restore_replaced()
    if restored is not None:
        log.warning(f"vptune: {run.path} was being replaced (--overwrite) when its process was killed; the previous "
                    f"run was put back from {restored}")
    if resume:
        cfg = read_run_config(run, changes or {}) if run.config.is_file() else None
        if cfg is None or not (run.started or cfg.tuning_method().head_only):  # a probe is refitted whole
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
