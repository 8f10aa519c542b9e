"""Experiments built on training: the demo (linear probe vs VPT-shallow vs VPT-deep) and the Optuna sweep."""
from .demo import run_demo
from .sweep import SweepConfig, parse_space_value, run_sweep, sweep_config, train_with_lr_search

__all__ = ["run_demo", "SweepConfig", "parse_space_value", "run_sweep", "sweep_config",
           "train_with_lr_search"]
