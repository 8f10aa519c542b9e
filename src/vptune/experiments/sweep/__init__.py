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

The package: `config.py` (SweepConfig and its reading), `storage.py` (journal file or RDB URL), `study.py` (the
study, trials, workers, retrain), `report.py` (the files it writes), `lr_search.py` (`--lr auto`).
"""
from .config import SEARCHABLE, SweepConfig, default_space, parse_space_value, sweep_config
from .lr_search import AUTO_LR_FACTORS, AUTO_MAX_EPOCHS, train_with_lr_search
from .storage import JOURNAL, check_storage
from .study import MARKER, run_sweep


def sweep_help() -> str:
    return __doc__.split("\n\n", 1)[1].split("\n\nThe package:")[0] + (
        "\nexample: vptune sweep --data digits --output runs/sweep --lr 0.05,0.5,5 --head-lr 0.005,0.02 --epochs 10")


__all__ = ["SweepConfig", "sweep_config", "parse_space_value", "default_space", "run_sweep", "train_with_lr_search",
           "sweep_help", "check_storage", "SEARCHABLE", "JOURNAL", "MARKER", "AUTO_LR_FACTORS", "AUTO_MAX_EPOCHS"]
