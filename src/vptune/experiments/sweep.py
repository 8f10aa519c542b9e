"""`vptune sweep`: the paper's per-task hyper-parameter search, on Optuna.

The protocol (VPT, Jia et al. 2022): tune on train -> val (train800 -> val200 under VTAB-1k), then retrain the best
setting on train + val with several seeds and report the mean and standard deviation of test top-1.

- One trial is one `TrainConfig` (the base settings plus the trial's values), trained by `vptune.train`, which
  reports val top-1 after every epoch to Optuna's pruner (successive halving or Hyperband), so a diverging or
  hopeless trial stops early. Trials never look at the test split.
- The study lives in Optuna storage: by default a journal file in the sweep directory (no server; rerun the same
  command to continue: finished trials are kept, trials whose process died are retried), or any RDB URL Optuna
  supports (`--storage postgresql://...`), so workers on many machines share one study.
- `workers` local processes share the study, each with its share of the cores.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import shutil
import socket
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_text, save_figure
from ..errors import ConfigError, TrainingError, VptuneError, WriteError
from ..rundir import RunDir
from ..training import TrainConfig, check_new_run, load_train_config, read_settings, train
from ..training.config import MAX_SEED

log = logging.getLogger("vptune")

SEARCHABLE = ("lr", "head_lr", "weight_decay", "num_tokens", "method")
SAMPLERS = ("grid", "tpe")
PRUNERS = ("hyperband", "halving", "none")
JOURNAL = "optuna-journal.log"
MARKER = "sweep.json"  # what makes a folder a sweep folder


@dataclass
class SweepConfig:
    """A search: the base training settings, the space, how to sample and prune, where the study lives."""

    base: TrainConfig
    output: str = "runs/sweep"
    space: dict[str, list] = field(default_factory=dict)  # setting -> grid values, or ["log", low, high]
    sampler: str = "grid"
    trials: int | None = None      # TPE: how many; grid: every point (None)
    pruner: str = "hyperband"
    storage: str | None = None     # None: a journal file in `output`; else an RDB URL
    study: str = "vptune"
    workers: int = 1
    seeds: tuple[int, ...] = (0, 1, 2)  # retrain seeds on train + val; () skips the retrain

    def validate(self) -> None:
        unknown = sorted(set(self.space) - set(SEARCHABLE))
        if unknown:
            raise ConfigError(f"sweep: cannot search {unknown}; searchable settings: {', '.join(SEARCHABLE)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sweep: --sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"sweep: --pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
        if self.sampler == "grid" and any(_is_range(v) for v in self.space.values()):
            raise ConfigError("sweep: the grid sampler needs lists of values; ranges (log:LOW:HIGH) need --sampler tpe")
        if self.trials is not None and (isinstance(self.trials, bool) or not isinstance(self.trials, int)
                                        or self.trials < 1):
            raise ConfigError(f"sweep: --trials must be a positive integer, got {self.trials!r}")
        if self.sampler == "tpe" and not self.trials:
            raise ConfigError("sweep: --sampler tpe needs --trials N")
        if not isinstance(self.study, str) or not self.study.strip():
            raise ConfigError(f"sweep: --study must be a non-empty name, got {self.study!r}")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"sweep: --workers must be a positive integer, got {self.workers!r}")
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):  # `seeds: 5` in YAML
            raise ConfigError(f"sweep: seeds {self.seeds} is one number, not a list of seeds; give the seeds to retrain "
                              f"with as a list, e.g. seeds: [0, 1, 2] in YAML or --seeds 0,1,2 (just seed "
                              f"{self.seeds}: [{self.seeds}])")
        if not isinstance(self.seeds, (tuple, list)) or any(
                isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in self.seeds):
            raise ConfigError(f"sweep: --seeds must be whole numbers from 0 to {MAX_SEED}, got {self.seeds!r}")
        if len(set(self.seeds)) < len(self.seeds):
            raise ConfigError(f"sweep: --seeds {self.seeds!r} names a seed more than once; name each once")
        if self.storage is not None:
            check_storage(self.storage)
        for name, values in self.space.items():
            for value in _grid_values(values):  # each value must make a valid TrainConfig
                dataclasses.replace(self.base, **{name: value}).resolved()
        self.base.resolved()


def parse_space_value(name: str, text: str) -> list:
    """'0.05,0.5,5' -> [0.05, 0.5, 5.0]; 'log:1e-3:1' -> ['log', 0.001, 1.0] (a log-uniform range, TPE only)."""
    kind = {"num_tokens": int, "method": str}.get(name, float)
    if text.startswith("log:"):
        try:
            low, high = (float(v) for v in text[4:].split(":"))
        except ValueError as err:
            raise ConfigError(f"--{name.replace('_', '-')} {text!r}: a range is log:LOW:HIGH") from err
        if not 0 < low < high:
            raise ConfigError(f"--{name.replace('_', '-')} {text!r}: need 0 < LOW < HIGH")
        return ["log", low, high]
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError as err:
        raise ConfigError(f"--{name.replace('_', '-')} {text!r}: expected comma-separated {kind.__name__} values") from err


def sweep_config(path: str | os.PathLike | None, settings: dict[str, Any], options: dict[str, Any]) -> SweepConfig:
    """What `vptune sweep` runs: training settings and sweep options from a YAML file (its `sweep:` mapping holds
    the sweep's own options, `space:` inside it the values to search), with `settings` / `options` on top."""
    file_settings = read_settings(path) if path is not None else {}
    file_sweep = file_settings.pop("sweep", None) or {}
    if not isinstance(file_sweep, dict):
        raise ConfigError(f"--config {path}: `sweep:` must be a mapping of sweep options")
    space = {k.replace("-", "_"): _space_values(k.replace("-", "_"), v)
             for k, v in (file_sweep.pop("space", None) or {}).items()}
    for name in SEARCHABLE:  # flags, as text
        if name in options:
            space[name] = parse_space_value(name, options.pop(name))
    for name in space:  # a searched setting is not also a training setting
        file_settings.pop(name, None)
    for name in [n for n, values in space.items() if not _is_range(values) and len(values) == 1]:
        file_settings[name] = space.pop(name)[0]  # one value is a fixed setting, not a dimension of the search
    merged = {**file_sweep, **options}
    seeds = merged.pop("seeds", "0,1,2")
    if isinstance(seeds, str):
        try:
            seeds = () if seeds.strip().lower() == "none" else tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise ConfigError(f"sweep: --seeds {seeds!r}: give comma-separated integers (e.g. 0,1,2), or none to "
                              f"skip the retrain") from None
    base = load_train_config(None, **{"output": "runs/sweep", **file_settings, **settings})
    options_known = sorted(f.name for f in dataclasses.fields(SweepConfig)
                           if f.name not in ("base", "output", "space"))  # output and space have their own place
    unknown = sorted(set(merged) - set(options_known))
    if unknown:
        searched = [name for name in unknown if name.replace("-", "_") in SEARCHABLE]
        settings_named = [name for name in unknown if name in {f.name for f in dataclasses.fields(TrainConfig)}]
        raise ConfigError(f"sweep: unknown option(s) {unknown}; the options are {', '.join(options_known)}"
                          + (f"; values to search ({', '.join(searched)}) go under `sweep: space:`" if searched
                             else "")
                          + (f"; training settings ({', '.join(settings_named)}) go at the top level of the file"
                             if settings_named and not searched else ""))
    config = SweepConfig(base=base, output=base.output, space=space or default_space(base),
                         seeds=tuple(seeds) if isinstance(seeds, list) else seeds,
                         **merged)
    config.validate()
    return config


def _space_values(name: str, values: Any) -> list:
    if isinstance(values, str):
        return parse_space_value(name, values)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"sweep space {name}: expected a list of values or 'log:LOW:HIGH', got {values!r}")
    return values


def default_space(base: TrainConfig) -> dict[str, list]:
    """Without a space: the tuned tensors' lr and the head's, a decade either side of the method's defaults."""
    resolved = base.resolved()
    return {"lr": [resolved.lr * f for f in (0.1, 0.3, 1.0, 3.0)],
            "head_lr": [resolved.head_lr * f for f in (0.3, 1.0, 3.0)]}


def sweep_help() -> str:
    return __doc__.split("\n\n", 1)[1] + (
        "\nexample: vptune sweep --data digits --output runs/sweep --lr 0.05,0.5,5 --head-lr 0.005,0.02 --epochs 10")


# ------------------------------------------------------------------------------------------------- the study
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
    results = {"best_params": best.params, "best_val_top1": best.value, "best_trial": best.number,
               "trial_epochs": sum(_epochs_run(t) for t in study.trials),
               "trials": {state: sum(t.state.name == state for t in study.trials)
                          for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")},
               "retrained": _retrain(config, best.params)}
    _write_outputs(out, study, results)
    return results


def _study(config: SweepConfig):
    import optuna

    sampler = (optuna.samplers.GridSampler({k: _grid_values(v) for k, v in config.space.items()}, seed=0)
               if config.sampler == "grid" else optuna.samplers.TPESampler(seed=0))
    epochs = config.base.epochs
    pruner = {"hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
              "halving": optuna.pruners.SuccessiveHalvingPruner(min_resource=1),
              "none": optuna.pruners.NopPruner()}[config.pruner]
    try:
        return optuna.create_study(study_name=config.study, storage=_storage(config), sampler=sampler,
                                   pruner=pruner, direction="maximize", load_if_exists=True)
    except OSError as err:  # the journal file: a read-only folder or file, a full disk
        raise WriteError(f"cannot write the sweep's study journal in {config.output}: {err.strerror or err}; make "
                         f"it writable, or choose another --output") from err
    except Exception as err:
        from sqlalchemy.exc import SQLAlchemyError

        if not isinstance(err, SQLAlchemyError):
            raise
        reason = " ".join(str(getattr(err, "orig", None) or err).split())
        raise ConfigError(f"--storage {_hide_password(config.storage)}: cannot open the study there ({reason}); check "
                          f"that the database is up, reachable and writable") from err


def _storage(config: SweepConfig):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if config.storage:
        return config.storage  # an RDB URL: Optuna connects, many machines can share it
    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(config.output) / JOURNAL)))


def check_storage(url: str) -> None:
    """A database URL that SQLAlchemy can parse and whose driver is installed; before anything is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except NoSuchModuleError as err:  # before ArgumentError, its base class
        raise ConfigError(f"--storage {_hide_password(url)}: SQLAlchemy knows no such database ({err})") from None
    except (ArgumentError, ValueError):
        raise ConfigError(f"--storage {url!r} is not a database URL: write DIALECT[+DRIVER]://USER:PASS@HOST/DB (e.g. "
                          f"postgresql://user:pass@host/db, or sqlite:///sweep.db); leave it out for a journal file "
                          f"in the sweep folder") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        module = (err.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise ConfigError(f"--storage {_hide_password(url)} needs the database driver {module!r}, which is not "
                          f"installed: pip install '{package}'") from None


# the PyPI package that provides the module SQLAlchemy's dialects import
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pymysql": "PyMySQL",
                   "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000", "oracledb": "oracledb"}


def _hide_password(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return repr(url)


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

    def report(row: dict) -> None:
        trial.report(row["val_top1"], step=row["epoch"])
        trial.set_user_attr("epochs", row["epoch"])
        if trial.should_prune():
            raise optuna.TrialPruned(f"val top-1 {row['val_top1']:.4f} after epoch {row['epoch']}")

    try:
        summary = train(cfg, overwrite=True, quiet=True, on_epoch=report, test=False)
    except TrainingError as err:  # diverged: as hopeless as a pruned trial, and the study goes on
        raise optuna.TrialPruned(f"diverged: {err}") from err
    return summary["best_val_top1"]


def _suggest(trial, name: str, spec: list) -> Any:
    if _is_range(spec):
        return trial.suggest_float(name, spec[1], spec[2], log=True)
    return trial.suggest_categorical(name, _grid_values(spec))


def _is_range(spec: list) -> bool:
    return len(spec) == 3 and spec[0] == "log"


def _grid_values(spec: list) -> list:
    return [spec[1], spec[2]] if _is_range(spec) else list(spec)


def _epochs_run(trial) -> int:
    return int(trial.user_attrs.get("epochs", 0))


# ------------------------------------------------------------------------------------------------- retrain
def _retrain(config: SweepConfig, params: dict) -> dict:
    """The best setting, trained on train + val (no model selection) once per seed; test top-1 of each."""
    runs = {}
    for seed in config.seeds:
        run = RunDir(Path(config.output) / "final" / f"seed-{seed}")
        if run.summary.is_file():  # a rerun of the sweep keeps retrained seeds
            runs[seed] = run.read_summary()["test_top1"]
            continue
        cfg = dataclasses.replace(config.base, output=str(run.path), final=True, seed=seed, **params)
        runs[seed] = train(cfg, overwrite=True, quiet=True)["test_top1"]
    values = [v for v in runs.values() if v is not None]
    return {"test_top1": runs, "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None}


# ------------------------------------------------------------------------------------------------- --lr auto
AUTO_LR_FACTORS = (0.1, 0.3, 1.0, 3.0)  # times the method's default lr
AUTO_MAX_EPOCHS = 5


def train_with_lr_search(cfg: TrainConfig, *, overwrite: bool = False, quiet: bool = False) -> dict:
    """`vptune train --lr auto`: a short pruned search of the tuned tensors' lr on train/val (the method's
    default times `AUTO_LR_FACTORS`, at most `AUTO_MAX_EPOCHS` epochs each, Hyperband), then the normal run with
    the winner. The search's table and plot are kept in the run's lr-search/ folder."""
    run = RunDir(cfg.output)
    check_new_run(run, overwrite)  # what the run would refuse, refused before the search
    base = dataclasses.replace(cfg, lr=None, epochs=min(cfg.epochs, AUTO_MAX_EPOCHS), final=False, refit=False)
    default = base.resolved().lr
    with tempfile.TemporaryDirectory(prefix="vptune-lr-search-") as folder:
        search = SweepConfig(base=dataclasses.replace(base, output=folder), output=folder, seeds=(),
                             space={"lr": [default * f for f in AUTO_LR_FACTORS]}, pruner="hyperband")
        log.info(f"--lr auto: searching lr in {search.space['lr']} ({base.epochs} epochs at most each)")
        results = run_sweep(search)
        chosen = dataclasses.replace(cfg, lr=results["best_params"]["lr"])
        log.info(f"--lr auto: lr {chosen.lr:g} (val top-1 {results['best_val_top1']:.4f}); training with it")
        summary = train(chosen, overwrite=overwrite, quiet=quiet)
        for name in ("trials.csv", "results.md", "results.json", "sweep.png"):
            shutil.copy2(Path(folder) / name, _mkdir(run.path / "lr-search") / name)
    return summary


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# ------------------------------------------------------------------------------------------------- outputs
def _write_outputs(out: Path, study, results: dict) -> None:
    names = sorted({k for t in study.trials for k in t.params})
    rows = [{"trial": t.number, "state": t.state.name, **{k: t.params.get(k) for k in names},
             "val_top1": t.value if t.value is not None else max(t.intermediate_values.values(), default=None),
             "epochs": _epochs_run(t),
             "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None} for t in study.trials]
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out / "results.md", _table(rows, results) + "\n")
    _plot(out, rows, names)


def _table(rows: list[dict], results: dict) -> str:
    retrained = results["retrained"]
    lines = [f"best setting (trial {results['best_trial']}): {results['best_params']}, val top-1 "
             f"{results['best_val_top1']:.4f}; {results['trial_epochs']} trial-epochs; trials {results['trials']}",
             ""]
    if retrained["mean"] is not None:
        seeds = ", ".join(f"{v:.4f}" for v in retrained["test_top1"].values())
        lines += [f"retrained on train + val: test top-1 {retrained['mean']:.4f} +- {retrained['std']:.4f} "
                  f"(seeds: {seeds})", ""]
    keys = [k for k in rows[0] if k != "seconds"]
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[k]) for k in keys) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _plot(out: Path, rows: list[dict], names: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name = "lr" if "lr" in names else (names[0] if names else None)
    fig, (by_value, history) = plt.subplots(1, 2, figsize=(11, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x"), ("FAIL", "s")):
        chosen = [r for r in rows if r["state"] == state and r["val_top1"] is not None]
        if x_name and isinstance(rows[0].get(x_name), (int, float)):
            by_value.scatter([r[x_name] for r in chosen], [r["val_top1"] for r in chosen], marker=marker,
                             label=state.lower())
        history.scatter([r["trial"] for r in chosen], [r["val_top1"] for r in chosen], marker=marker,
                        label=state.lower())
    if x_name and isinstance(rows[0].get(x_name), (int, float)):
        by_value.set_xscale("log")
    by_value.set(title=f"val top-1 against {x_name}", xlabel=x_name, ylabel="val top-1 (last reported)")
    history.set(title="history (x: pruned)", xlabel="trial", ylabel="val top-1")
    for ax in (by_value, history):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "sweep.png")
