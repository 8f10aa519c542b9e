"""A sweep's settings: `SweepConfig` (the base training settings, the space, sampler, pruner, storage, seeds), read
from flags and a YAML `sweep:` mapping, and checked before anything runs."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ...training import TrainConfig, load_train_config, read_settings
from ...training.config import MAX_SEED
from .storage import check_storage


SEARCHABLE = ("lr", "head_lr", "weight_decay", "num_tokens", "method")
SAMPLERS = ("grid", "tpe")
PRUNERS = ("hyperband", "halving", "none")


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
        if self.sampler == "grid" and any(is_range(v) for v in self.space.values()):
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
            for value in grid_values(values):  # each value must make a valid TrainConfig
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
    for name in [n for n, values in space.items() if not is_range(values) and len(values) == 1]:
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


def is_range(spec: list) -> bool:
    return len(spec) == 3 and spec[0] == "log"


def grid_values(spec: list) -> list:
    return [spec[1], spec[2]] if is_range(spec) else list(spec)
