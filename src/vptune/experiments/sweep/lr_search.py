"""`--lr auto`: a short pruned search of the learning rate around the method's default, then the run itself."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

from ...rundir import RunDir
from ...training import TrainConfig, check_new_run, train
from ...training.objective import SCORE_NAMES
from .config import SweepConfig
from .study import run_sweep

log = logging.getLogger("vptune")


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
        metric = results["metric"]
        log.info(f"--lr auto: lr {chosen.lr:g} (val {SCORE_NAMES[metric]} {results[f'best_val_{metric}']:.4f}); "
                 f"training with it")
        summary = train(chosen, overwrite=overwrite, quiet=quiet)
        for name in ("trials.csv", "results.md", "results.json", "sweep.png"):
            shutil.copy2(Path(folder) / name, _mkdir(run.path / "lr-search") / name)
    return summary


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
