"""Running a study: the folder and its lock, the Optuna study (sampler, pruner, storage), trials as training runs
reported to the pruner, local worker processes, dead trials retried, then the retrain of the best setting."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import multiprocessing
import os
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from ..._io import atomic_write_text
from ...errors import ConfigError, TrainingError, VptuneError, WriteError
from ...rundir import RunDir
from ...training import train
from ...training.objective import SCORE_NAMES, score_of
from .config import SweepConfig, grid_values, is_range
from .report import epochs_run, write_outputs
from .storage import JOURNAL, hide_password, storage_of

log = logging.getLogger("vptune")


MARKER = "sweep.json"  # what makes a folder a sweep folder


def run_sweep(config: SweepConfig) -> dict:
    """Search, then retrain the best setting with each seed on train + val; writes the sweep directory's files
    (trials.csv, results.md, results.json, plots) and returns the results."""
    import optuna

    config.validate()
    out = Path(config.output)
    _check_sweep_folder(out)
    with RunDir(out).lock():  # a second sweep on this folder refuses (several machines share one RDB study instead)
        if config.storage:  # a database that cannot be opened is refused before the sweep writes anything (the
            _study(config)  # lock then removes the folder it made); a sqlite file inside the folder can be made
        if not (out / MARKER).is_file():
            atomic_write_text(out / MARKER, json.dumps({"format": "vptune-sweep", "version": 1}) + "\n")
        return _search_and_retrain(config, out)


def _check_sweep_folder(out: Path) -> None:
    """A sweep writes only into a new or empty folder, or one an earlier sweep made (its marker, or from before the
    marker its Optuna journal)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"sweep --output {out} is a file; give a folder")
    if out.is_dir() and any(p.name != ".lock" for p in out.iterdir()) \
            and not ((out / MARKER).is_file() or (out / JOURNAL).is_file()):
        raise ConfigError(f"sweep --output {out} is not empty and is not a sweep folder (no {MARKER}); choose a new "
                          f"or empty folder, or the --output of an earlier sweep to continue it")


def _search_and_retrain(config: SweepConfig, out: Path) -> dict:
    import optuna

    study = _study(config)
    _retry_dead_trials(study)
    if config.workers == 1:
        _optimize(config)
    else:
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_worker, args=(config,)) for _ in range(config.workers)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if any(w.exitcode != 0 for w in workers):
            raise TrainingError(f"{sum(w.exitcode != 0 for w in workers)} sweep worker(s) failed, each with the "
                                f"error above; fix it and run the same command again (finished trials are kept)")
    study = _study(config)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise ConfigError(f"sweep {out}: no trial completed (all pruned or failed); widen the search space")
    best = max(complete, key=lambda t: (t.value, -t.number))
    metric = score_of(config.base)
    results = {"best_params": best.params, "metric": metric, f"best_val_{metric}": best.value,
               "best_trial": best.number,
               "trial_epochs": sum(epochs_run(t) for t in study.trials),
               "trials": {state: sum(t.state.name == state for t in study.trials)
                          for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
               "retrained": _retrain(config, best.params)}
    write_outputs(out, study, results)
    return results


def _study(config: SweepConfig):
    import optuna

    sampler = (optuna.samplers.GridSampler({k: grid_values(v) for k, v in config.space.items()}, seed=0)
               if config.sampler == "grid" else optuna.samplers.TPESampler(seed=0))
    epochs = config.base.epochs
    pruner = {"hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
              "halving": optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
              "none": optuna.pruners.NopPruner()}[config.pruner]
    try:
        return optuna.create_study(study_name=config.study, storage=storage_of(config), sampler=sampler,
                                   pruner=pruner, direction="maximize", load_if_exists=True)
    except OSError as err:  # the journal file: a read-only folder or file, a full disk
        raise WriteError(f"cannot write the sweep's study journal in {config.output}: {err.strerror or err}; make "
                         f"it writable, or choose another --output") from err
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(err, SQLAlchemyError):
            raise
        reason = " ".join(str(getattr(err, "orig", None) or err).split())
        raise ConfigError(f"--storage {hide_password(config.storage)}: cannot open the study there ({reason}); check "
                          f"that the database is up, reachable and writable") from err


def _retry_dead_trials(study) -> None:
    """Trials left RUNNING by a process of this machine that is gone (killed, crashed) are marked failed and
    queued again with the same values, so rerunning the sweep retries them. Trials of live processes, and of
    other machines sharing an RDB study, are left alone."""
    import optuna

    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker", {})
        if owner.get("host") == host and not _alive(owner.get("pid", -1)):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            # a waiting copy with the same values and system attributes (the grid sampler's grid id), as Optuna's
            # own RetryFailedTrialCallback makes for RDB heartbeats
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING, params=trial.params, distributions=trial.distributions,
                user_attrs={"retry_of": trial.number}, system_attrs=trial.system_attrs))
            log.info(f"sweep: trial {trial.number} was interrupted; it will run again")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _optimize(config: SweepConfig) -> None:
    """One worker: take trials from the shared study until the sampler's grid or the trial budget is done."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config.workers))
    study = _study(config)
    callbacks = []
    if config.trials:
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        callbacks.append(optuna.study.MaxTrialsCallback(config.trials, states=states))
    stopped_by: list[VptuneError] = []

    def objective(trial) -> float:
        try:
            return _objective(trial, config)
        except VptuneError as err:  # the user's mistake (a file, a setting): every trial would fail alike
            stopped_by.append(err)
            trial.study.stop()
            return math.nan  # the trial is marked failed with one log line, not Optuna's traceback of it

    study.optimize(objective, callbacks=callbacks, catch=())
    if stopped_by:
        raise stopped_by[0]


def _worker(config: SweepConfig) -> None:
    """A process of `--workers N`: its error is one line, as the command's own are."""
    try:
        _optimize(config)
    except VptuneError as err:
        print(f"vptune: error: sweep worker {os.getpid()}: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


def _objective(trial, config: SweepConfig) -> float:
    import optuna

    trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    values = {name: _suggest(trial, name, spec) for name, spec in config.space.items()}
    output = Path(config.output) / "trials" / f"{trial.number:04d}"
    cfg = dataclasses.replace(config.base, output=str(output), final=False, refit=False, **values)  # a selection run

    metric = score_of(cfg)

    def report(row: dict) -> None:
        trial.report(row[f"val_{metric}"], step=row["epoch"])
        trial.set_user_attr("epochs", row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"val {SCORE_NAMES[metric]} {row[f'val_{metric}']:.4f} after epoch {row['epoch']}")

    try:
        summary = train(cfg, overwrite=True, quiet=True, on_epoch=report, test=False)
    except TrainingError as err:  # diverged: as hopeless as a pruned trial, and the study goes on
        raise optuna.TrialPruned(f"diverged: {err}") from err
    return summary[f"best_val_{metric}"]


def _suggest(trial, name: str, spec: list) -> Any:
    if is_range(spec):
        return trial.suggest_float(name, spec[1], spec[2], log=True)
    return trial.suggest_categorical(name, grid_values(spec))


def _retrain(config: SweepConfig, params: dict) -> dict:
    """The best setting, trained on train + val (no model selection) once per seed; test top-1 (mIoU) of each."""
    runs, metric = {}, score_of(config.base)
    for seed in config.seeds:
        run = RunDir(Path(config.output) / "final" / f"seed-{seed}")
        if run.summary.is_file():  # a rerun of the sweep keeps retrained seeds
            runs[seed] = run.read_summary()[f"test_{metric}"]
            continue
        cfg = dataclasses.replace(config.base, output=str(run.path), final=True, seed=seed, **params)
        runs[seed] = train(cfg, overwrite=True, quiet=True)[f"test_{metric}"]
    values = [v for v in runs.values() if v is not None]
    return {f"test_{metric}": runs, "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None}
