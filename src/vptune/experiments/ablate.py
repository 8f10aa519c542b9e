"""`vptune ablate SET`: the paper's comparisons, rerun on your backbone and tasks with one command.

A named set is a list of cells (TrainConfig settings on top of the common ones: "prompts in the first 3 blocks",
"location add", "method full"); every cell is trained on every task with every seed. Each finished run is one
JSON line in OUT/runs.jsonl (settings, seed, test top-1, best val, the per-epoch curve, wall time), appended as
soon as it ends, and the set's tables and plots (OUT/SET.md, .csv, .png; `ablate_report.py`) are rewritten after
every run. Runs are keyed by their resolved settings, so a cell shared by two sets (VPT-deep with the default
prompt is in most of them) is trained once, and a killed `ablate` run continues where it stopped: the run that
was under way resumes from its last finished epoch (`vptune train --resume`, which ends exactly where an
uninterrupted run does) and nothing finished is repeated.

The `claims` set holds the cells the paper's main claims rest on and states one verdict a claim, pooled over the
pairs of cells it rests on (`Claim`); `--report` rewrites a set's reports from the runs already there, so
`vptune ablate claims --report` decides the claims from runs that `methods`, `location` and `depth` made.

    vptune ablate depth --tasks digits,animal-mnist --seeds 0,1,2 --epochs 6 --img-size 112 --out runs/ablate
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Container, Iterator

from .._io import atomic_write_text
from ..backbones import create_backbone
from ..data import builtin_name
from ..model import adapter_for
from ..errors import ConfigError, TrainingError
from ..rundir import RunDir
from ..training import TrainConfig, train
from ..training.config import MAX_SEED, check_output_outside_data
from .ablate_report import write_reports
from .recipes import RECIPES

log = logging.getLogger("vptune")

MARKER = "ablation.json"  # what makes a folder an ablation folder (never a folder of the user's)
FORMAT = "vptune-ablation"
RUNS = "runs.jsonl"
NUM_CLASSES = "num_classes"  # a cell's num_tokens may say this: p = the task's number of classes (init "cls")
# Settings that do not change what a run computes, left out of its key.
NOT_IN_KEY = ("output", "device", "num_workers", "tensorboard", "compile")
# Settings added after runs were recorded: left out of the key while they hold the value every earlier run had,
# so those runs keep their keys (and are not trained again); any other value is part of the key.
KEY_SINCE = {"precision": "fp32", "half_backbone": False, "refit": False, "label_smoothing": 0.0,
             "prompt_merge": "drop", "fourier_share": 0.5, "kv_tokens": 5,
             "prune_tokens": 0.0, "prune_segments": 0.0, "metric_weight": 0.01, "min_steps": None,
             "task": "classification", "seg_head": None, "cross_fit": False}


@dataclass(frozen=True)
class Cell:
    """One setting of a set: a label, the TrainConfig settings it changes, and where it goes on the set's plot."""

    name: str
    settings: dict[str, Any]
    series: str = ""          # a curve of a line plot (e.g. "first k" / "last k"), or "" for bars
    x: float | None = None    # its position on that curve (k, p)


@dataclass(frozen=True)
class Claim:
    """A finding of the paper and the pairs of cells (a, b) it rests on: a should beat b, or with `matches` at least
    not fall behind it. Its verdict pools the paired differences of every pair (ablate_report.claim_verdict)."""

    text: str
    pairs: tuple[tuple[str, str], ...]
    matches: bool = False


@dataclass(frozen=True)
class AblationSet:
    """A named comparison: its cells (given the backbone's depth), the plot that shows it, and the pairs of cells
    whose per-run differences the report states (a claim of the paper each)."""

    name: str
    summary: str
    cells: Callable[[int], list[Cell]]
    plot: str = "bars"        # bars, lines, log-lines (x on a log axis), or claims (each claim's paired difference)
    xlabel: str = ""
    pairs: Callable[[int], list[tuple[str, str]]] = lambda depth: []
    claims: Callable[[int], list[Claim]] = lambda depth: []
    default: str = ""         # the cell that is vptune's default: the report names any cell that beat it everywhere
    metric: str = "top1"      # the test score its tables compare: top1, or miou for segmentation tasks
    tasks: tuple[str, ...] = ("digits", "animal-mnist", "fashion-mnist")  # its tasks unless --tasks says otherwise


def _quarters(depth: int) -> list[int]:
    """The paper's k in {1, 3, 6, 9, 12} for 12 blocks: 1, a quarter, half, three quarters and all of them."""
    return sorted({1, *(max(1, round(depth * q / 4)) for q in (1, 2, 3, 4))})


def _depth_cells(depth: int) -> list[Cell]:
    def prompted(which: str, k: int) -> dict[str, Any]:
        # every block is VPT-deep's default, the first block alone is VPT-shallow: the same models, one run shared
        if k == depth:
            return {"method": "vpt-deep"}
        if (which, k) == ("first", 1):
            return {"method": "vpt-shallow"}
        return {"method": "vpt-deep", "prompt_layers": f"{which} {k}"}

    cells = []
    for k in _quarters(depth):
        cells.append(Cell(f"first {k}", prompted("first", k), "first k", k))
        cells.append(Cell(f"last {k}", prompted("last", k), "last k", k))
    return cells


def _depth_pairs(depth: int) -> list[tuple[str, str]]:
    ks = [k for k in _quarters(depth) if k < depth]
    return [(f"first {k}", f"last {k}") for k in ks] + [(f"first {depth}", f"first {k}") for k in ks]


def _claim_cells(depth: int) -> list[Cell]:
    """The cells the paper's main claims rest on, each once: the methods, add against prepend, first against last
    k blocks (first 1 is VPT-shallow and all blocks VPT-deep, so those two are not repeated)."""
    return ([Cell(m, {"method": m}) for m in ("linear", "full", "vpt-shallow", "vpt-deep")]
            + [Cell(f"add {m}", {"method": f"vpt-{m}", "prompt_location": "add"}) for m in ("shallow", "deep")]
            + [cell for cell in _depth_cells(depth) if "prompt_layers" in cell.settings])


def _claims(depth: int) -> list[Claim]:
    def blocks(which: str, k: int) -> str:  # the claims set's name of a depth cell
        return "vpt-deep" if k == depth else "vpt-shallow" if (which, k) == ("first", 1) else f"{which} {k}"

    ks = [k for k in _quarters(depth) if k < depth]
    return [Claim("VPT-deep beats VPT-shallow", (("vpt-deep", "vpt-shallow"),)),
            Claim("prepended prompts beat added ones, VPT-shallow", (("vpt-shallow", "add shallow"),)),
            Claim("prepended prompts beat added ones, VPT-deep", (("vpt-deep", "add deep"),)),
            Claim("prompts in the first k blocks beat the last k, at equal k",
                  tuple((blocks("first", k), blocks("last", k)) for k in ks)),
            Claim(f"more prompted blocks do better: all {depth} beat the first k",
                  tuple(("vpt-deep", blocks("first", k)) for k in ks)),
            Claim("VPT-deep beats the linear probe", (("vpt-deep", "linear"),)),
            Claim("VPT-deep matches or beats full fine-tuning", (("vpt-deep", "full"),), matches=True)]


LOCATIONS = ("prepend", "add", "prepend-pixel", "concat-channel")
# input channels exist before the first block only, so concat-channel is shallow only (PromptConfig refuses deep)
LOCATION_MODES = {(loc, mode) for loc in LOCATIONS for mode in ("shallow", "deep")} - {("concat-channel", "deep")}
POOLINGS = ("cls", "image-pool", "prompt-pool", "global-pool")
LENGTHS = (1, 5, 10, 50, 100)
INITS = ("xavier", "patches", "cls")
BASELINES = ("linear", "full", "bias", "partial-1", "lora")
# the follow-up methods with their defaults, and E2VPT with pruning (half of each block's tokens, then a quarter of
# the kept tokens' segments: the middle of the shares its paper searched per task)
# (gated VPT is a shallow method: VPT-shallow is its own baseline, as in its paper, beside VPT-deep)
FOLLOWUPS = {name: {"method": name} for name in ("linear", "vpt-shallow", "vpt-deep", "e2vpt", "vfpt", "gated-vpt")}
FOLLOWUPS["e2vpt-pruned"] = {"method": "e2vpt", "prune_tokens": 0.5, "prune_segments": 0.25}
FOLLOWUPS["da-vpt"] = {"method": "da-vpt"}
# the paper's segmentation comparison (its table 4: VPT-deep against the linear head, full fine-tuning and bias, with
# SETR-PUP's head), with both of vptune's heads; "linear" is the linear head trained by gradient steps
SEGMENTATION = {name: {"method": name} for name in ("linear", "vpt-shallow", "vpt-deep", "bias", "full")}
SEGMENTATION.update({f"{name} pup": {"method": name, "seg_head": "pup"} for name in ("linear", "vpt-deep")})

SETS: dict[str, AblationSet] = {s.name: s for s in (
    AblationSet("claims", "the paper's main claims, each decided on its paired runs (the cells of methods, location "
                          "and depth that they rest on)", _claim_cells, plot="claims",
                pairs=lambda depth: list(dict.fromkeys(p for claim in _claims(depth) for p in claim.pairs)),
                claims=_claims),
    AblationSet("methods", "VPT-shallow and VPT-deep against the linear probe and the tuning baselines",
                lambda depth: [Cell(m, {"method": m}) for m in (*BASELINES, "vpt-shallow", "vpt-deep")],
                pairs=lambda depth: [("vpt-deep", "vpt-shallow"), ("vpt-deep", "linear"), ("vpt-deep", "full"),
                                     ("vpt-shallow", "linear")]),
    AblationSet("location", "where prompts go: prepended tokens, added to the tokens, pixel patches, input channels",
                lambda depth: [Cell(f"{loc} {mode}", {"method": f"vpt-{mode}", "prompt_location": loc})
                               for mode in ("shallow", "deep") for loc in LOCATIONS if (loc, mode) in LOCATION_MODES],
                pairs=lambda depth: [(f"prepend {m}", f"{loc} {m}") for m in ("shallow", "deep")
                                     for loc in LOCATIONS[1:] if (loc, m) in LOCATION_MODES]),
    AblationSet("depth", "prompts in the first k blocks against the last k blocks (VPT-deep)", _depth_cells,
                plot="lines", xlabel="prompted blocks k", pairs=_depth_pairs),
    AblationSet("length", "prompt length p (VPT-deep)",
                lambda depth: [Cell(f"p={p}", {"method": "vpt-deep", "num_tokens": p}, "p", p) for p in LENGTHS],
                plot="log-lines", xlabel="prompt length p", default="p=10",
                pairs=lambda depth: [("p=10", f"p={p}") for p in LENGTHS if p != 10]),
    AblationSet("pooling", "what the head reads: [CLS], the mean of image tokens, of prompts, of all tokens",
                lambda depth: [Cell(pool, {"method": "vpt-deep", "pooling": pool}) for pool in POOLINGS],
                pairs=lambda depth: [("cls", pool) for pool in POOLINGS[1:]], default="cls"),
    AblationSet("init", "prompt initialisation (p = the number of classes, so that 'cls' prototypes apply)",
                lambda depth: [Cell(init, {"method": "vpt-deep", "prompt_init": init, "num_tokens": NUM_CLASSES})
                               for init in INITS],
                pairs=lambda depth: [("xavier", "cls"), ("patches", "xavier"), ("patches", "cls")],
                default="patches"),
    AblationSet("followups", "prompt methods since VPT (E2VPT, VFPT, gated VPT, DA-VPT) against VPT-deep and the linear "
                             "probe (gated VPT, a shallow method, also against VPT-shallow)",
                lambda depth: [Cell(name, settings) for name, settings in FOLLOWUPS.items()],
                pairs=lambda depth: [(m, "vpt-deep") for m in FOLLOWUPS if m not in ("vpt-deep", "linear", "vpt-shallow")]
                + [("gated-vpt", "vpt-shallow"), ("vpt-deep", "linear"), ("e2vpt-pruned", "e2vpt")],
                default="vpt-deep"),
    AblationSet("segmentation", "semantic segmentation: VPT against the linear head, VPT-shallow, full fine-tuning "
                                "and bias, with a linear and a progressive-upsampling (SETR-PUP) head",
                lambda depth: [Cell(name, settings) for name, settings in SEGMENTATION.items()],
                pairs=lambda depth: [("vpt-deep", "linear"), ("vpt-deep", "vpt-shallow"), ("vpt-deep", "full"),
                                     ("vpt-deep", "bias"), ("vpt-deep pup", "linear pup"),
                                     ("vpt-deep pup", "vpt-deep")],
                default="vpt-deep", metric="miou", tasks=("pasted-animals", "surface-defects")),
    AblationSet("recipes", "candidate default recipes for VPT-deep (docs/recipe.md)",
                lambda depth: [Cell(name, settings) for name, settings in RECIPES.items()]),
)}


@dataclass
class AblateConfig:
    """One `vptune ablate` invocation: which set, on which tasks and seeds, with which common settings."""

    set: str
    tasks: tuple[str, ...] | None = None  # None: the set's own (AblationSet.tasks)
    seeds: tuple[int, ...] = (0, 1, 2)
    out: str = "runs/ablate"
    common: dict[str, Any] = field(default_factory=dict)  # TrainConfig settings for every run (epochs, img_size..)
    only: tuple[str, ...] = ()  # run only these cells of the set (the report still shows every finished one)

    def __post_init__(self) -> None:
        if self.tasks is None:
            self.tasks = SETS[self.set].tasks if self.set in SETS else AblationSet.tasks

    def validate(self) -> AblationSet:
        """The set, after every cell's settings were checked on every task: bad input stops before any run."""
        if self.set not in SETS:
            raise ConfigError(f"unknown ablation set {self.set!r}; choose one of {', '.join(SETS)}")
        if not self.tasks or not all(isinstance(t, str) and t.strip() for t in self.tasks):
            raise ConfigError("--tasks needs at least one task: built-in names or data paths, comma-separated")
        bad = [s for s in self.seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
        if not self.seeds or bad:
            raise ConfigError(f"--seeds needs whole numbers from 0 to {MAX_SEED}, comma-separated; got "
                              f"{', '.join(map(str, bad)) or 'none'}")
        for flag, values in (("--tasks", self.tasks), ("--seeds", self.seeds), ("--cells", self.only)):
            twice = sorted({str(v) for v in values if values.count(v) > 1})
            if twice:  # the run would be trained twice over (its key is the same)
                raise ConfigError(f"{flag}: {', '.join(twice)} given more than once; name each once")
        clash = sorted({"data", "seed", "output"} & self.common.keys())
        if clash:
            raise ConfigError(f"ablate sets {clash} itself (from --tasks, --seeds, --out); leave them out")
        base = _train_config(self.common)
        base.validate()  # the common flags are checked before the set's cells build the backbone (for its depth)
        unfit = [f"{cell.name} ({self.unfit(cell)})" for cell in SETS[self.set].cells(self.depth)
                 if cell.name in self.only and self.unfit(cell)]
        if unfit:
            raise ConfigError(f"--cells: {'; '.join(unfit)}: this backbone cannot run them; leave them out")
        unknown = sorted(set(self.only) - {cell.name for cell in self.cells()})
        if unknown:
            raise ConfigError(f"--cells: {unknown} are not cells of {self.set!r}; its cells are "
                              f"{', '.join(cell.name for cell in self.cells())}")
        varied = [key for key in dict.fromkeys(k for cell in self.cells() for k in cell.settings) if key in self.common]
        if varied:  # a cell's setting wins over the common one: the flag would silently change some runs or none
            flags = ", ".join("--" + key.replace("_", "-") for key in varied)
            raise ConfigError(f"{flags}: `ablate {self.set}` varies {', '.join(varied)} across its cells itself; "
                              f"leave {flags} out (`--plan` lists each cell's settings)")
        segmentation = SETS[self.set].metric == "miou"
        for task in self.tasks:
            check_output_outside_data(self.out, task, flag="--out")  # before OUT holds a file
            for cell in self.to_run():
                cfg = _train_config({**self.common, **_concrete(cell.settings, 10), "data": task}).resolved()
                if (cfg.task == "segmentation") != segmentation:
                    raise ConfigError(f"--tasks {task}: a {cfg.task} task, but `ablate {self.set}` compares "
                                      f"{'segmentation' if segmentation else 'classification'} tasks; give "
                                      f"{' or '.join(SETS[self.set].tasks)}-like tasks"
                                      + ("" if segmentation else " (segmentation: `vptune ablate segmentation`)"))
        base.resolved()
        return SETS[self.set]

    def cells(self) -> list[Cell]:
        """The set's cells that this backbone's family can run (Swin has no "add" location and no [CLS])."""
        return [cell for cell in SETS[self.set].cells(self.depth) if not self.unfit(cell)]

    def left_out(self) -> list[str]:
        return [f"{cell.name} ({self.unfit(cell)})" for cell in SETS[self.set].cells(self.depth) if self.unfit(cell)]

    def unfit(self, cell: Cell) -> str:
        """Why this backbone's family cannot run `cell`, or "" when it can."""
        adapter = self.adapter
        location = cell.settings.get("prompt_location", "prepend")
        if location not in adapter.locations:
            return f"no {location} location on {adapter.family} backbones"
        if not adapter.has_class_token and (cell.settings.get("pooling") == "cls"
                                            or cell.settings.get("prompt_init") == "cls"):
            return f"no [CLS] token on {adapter.family} backbones"
        pooling = cell.settings.get("pooling")
        if pooling is not None and pooling != "cls" and pooling not in adapter.poolings:
            return f"no {pooling} pooling on {adapter.family} backbones"
        return ""

    def to_run(self) -> list[Cell]:
        return [cell for cell in self.cells() if not self.only or cell.name in self.only]

    @property
    def adapter(self):
        """The backbone's adapter (built once): its depth sets the depth set's k, its family what cells apply."""
        if not hasattr(self, "_adapter"):
            cfg = _train_config(self.common)
            self._adapter = adapter_for(create_backbone(cfg.backbone, img_size=cfg.img_size, weights=cfg.weights))
        return self._adapter

    @property
    def depth(self) -> int:
        """The backbone's number of blocks, across stages for Swin (the depth set's k follow it)."""
        return self.adapter.depth


def run_ablation(config: AblateConfig) -> list[dict]:
    """Train every (seed, task, cell) not yet in OUT/runs.jsonl, writing each result and the tables as it ends.
    Returns the set's rows (finished before or now), in cell order."""
    ablation = config.validate()
    out = Path(config.out)
    with _ablation_folder(out):
        done = {row["key"]: row for row in read_runs(out)}
        plan = [(seed, task, cell) for seed in config.seeds for task in config.tasks for cell in config.to_run()]
        todo = [(seed, task, cell) for seed, task, cell in plan if recorded_key(done, config, cell, task, seed) not in done]
        log.info(f"ablate {ablation.name}: {len(plan)} runs, {len(plan) - len(todo)} already done, {len(todo)} to go")
        for index, (seed, task, cell) in enumerate(todo, start=1):
            log.info(f"[{index}/{len(todo)}] {cell.name} on {task}, seed {seed}")
            row = _run_one(config, out, cell, task, seed)
            _append(out / RUNS, row)
            done[row["key"]] = row
            write_reports(config, ablation, set_rows(config, done), figure=False)  # the figure once, at the end
        write_reports(config, ablation, set_rows(config, done))
        if (out / "work").is_dir() and not any((out / "work").iterdir()):
            (out / "work").rmdir()
    return [done[recorded_key(done, config, cell, task, seed)] for seed, task, cell in plan]


def write_set_reports(config: AblateConfig) -> list[Path]:
    """Rewrite the set's reports from the runs OUT/runs.jsonl holds, training nothing: to see a set whose cells
    other sets trained (claims), or the tables after runs made elsewhere were merged in."""
    ablation = config.validate()
    out = Path(config.out)
    if not (out / MARKER).is_file():
        raise ConfigError(f"--out {out} is not an ablation folder (no {MARKER}); give the --out of an earlier "
                          f"`vptune ablate`")
    done = {row["key"]: row for row in read_runs(out)}
    return write_reports(config, ablation, set_rows(config, done))


def plan(config: AblateConfig) -> str:
    """What `run_ablation` would do: the set's cells and how many of its runs are finished."""
    config.validate()
    _check_out(Path(config.out))
    done = {row["key"] for row in read_runs(Path(config.out))}
    cells = config.to_run()
    lines = [f"{config.set}: {SETS[config.set].summary}", ""]
    for cell in cells:
        finished = sum(recorded_key(done, config, cell, task, seed) in done
                       for task in config.tasks for seed in config.seeds)
        settings = ", ".join(f"{k}={v}" for k, v in cell.settings.items())
        lines.append(f"  {cell.name:<36} {settings:<60} {finished}/{len(config.tasks) * len(config.seeds)} done")
    if config.left_out():
        lines += ["", f"  left out on this backbone: {'; '.join(config.left_out())}"]
    total = len(cells) * len(config.tasks) * len(config.seeds)
    left = sum(recorded_key(done, config, c, t, s) not in done for c in cells for t in config.tasks for s in config.seeds)
    lines += ["", f"{total} runs ({len(cells)} cells x {len(config.tasks)} tasks x {len(config.seeds)} seeds), "
                  f"{left} to do, into {config.out}"]
    return "\n".join(lines)


def ablate_help() -> str:
    sets = "\n".join(f"  {s.name:<10} {s.summary}" for s in SETS.values())
    return (__doc__.split("\n\n")[1] + "\n\nsets:\n" + sets + "\n\nEvery `vptune train` flag sets the common "
            "settings of all runs (e.g. --epochs 6 --img-size 112 --test-subset 2000).")


# ------------------------------------------------------------------------------------------------- runs
def run_settings(config: AblateConfig, cell: Cell, task: str, seed: int) -> dict[str, Any]:
    """The TrainConfig settings of one run (without its output folder)."""
    # The paper's protocol, unless --refit, --cross-fit or --final say otherwise: test from the best val epoch's
    # model, trained against its own head, comparable with every run recorded before vptune refitted, cross-fitted
    # and trained a fixed schedule on few images by default.
    return {"refit": False, "cross_fit": False, "final": False, **config.common, **_concrete(cell.settings, task),
            "data": task, "seed": seed}


def run_key(config: AblateConfig, cell: Cell, task: str, seed: int, portable: bool = True) -> str:
    """A run's identity: a hash of its resolved settings, so equal runs of different sets are trained once, and a
    run whose default meaning changed (a new default of vptune) is trained again. A task given as a path enters
    as its path relative to OUT, so a clone elsewhere (or OUT and the data moved together) keeps every run;
    `portable=False`: the absolute path, as keys were made before."""
    resolved = _train_config(run_settings(config, cell, task, seed)).resolved().to_dict()
    if portable and builtin_name(resolved["data"]) is None:
        resolved["data"] = Path(os.path.relpath(resolved["data"], Path(config.out).absolute())).as_posix()
    kept = {k: v for k, v in sorted(resolved.items())
            if k not in NOT_IN_KEY and not (k in KEY_SINCE and v == KEY_SINCE[k])}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def recorded_key(done: Container[str], config: AblateConfig, cell: Cell, task: str, seed: int) -> str:
    """The key `done` holds a run under: its own, or the absolute-path key it was recorded with before keys were
    portable; its own when `done` holds neither."""
    key = run_key(config, cell, task, seed)
    if key not in done and builtin_name(task) is None:
        legacy = run_key(config, cell, task, seed, portable=False)
        return legacy if legacy in done else key
    return key


def set_rows(config: AblateConfig, done: dict[str, dict]) -> list[dict]:
    """The finished runs of this set, labelled with this set's cell names (a run may have been made by another),
    at the seeds asked for and every other seed OUT holds: `--seeds 0` after seeds 0-2 ran keeps all three in the
    tables, so a later step never shrinks an earlier one's report."""
    rows = []
    for seed in sorted(set(config.seeds) | {row["seed"] for row in done.values()}):
        for task in config.tasks:
            for cell in config.cells():
                row = done.get(recorded_key(done, config, cell, task, seed))
                if row is not None:  # "score": the test score the set's tables compare (its metric)
                    rows.append({**row, "set": config.set, "cell": cell.name, "task": task, "seed": seed,
                                 "score": row.get(f"test_{SETS[config.set].metric}")})
    return rows


def _run_one(config: AblateConfig, out: Path, cell: Cell, task: str, seed: int) -> dict:
    key = run_key(config, cell, task, seed)
    run = RunDir(out / "work" / key)
    legacy = out / "work" / run_key(config, cell, task, seed, portable=False)
    if legacy.is_dir() and not run.path.exists():  # under way when keys held the absolute path: it continues
        legacy.rename(run.path)
    settings = run_settings(config, cell, task, seed)
    started = time.perf_counter()
    failure = None
    try:
        if run.started and run.config.is_file():  # killed mid-run: it continues exactly
            log.info(f"resuming the interrupted run in {run.path}")
            summary = train(TrainConfig(output=str(run.path)), resume=True, quiet=True)
        else:
            summary = train(_train_config({**settings, "output": str(run.path)}), overwrite=True, quiet=True)
    except TrainingError as err:  # diverged: a result of this setting, recorded as such
        summary, failure = {}, str(err)
    curve, selection = run.read_metrics(), RunDir(run.selection)
    row = {"key": key, "set": config.set, "cell": cell.name, "task": task, "seed": seed, "settings": settings,
           "test_top1": summary.get("test_top1"), "best_val_top1": summary.get("best_val_top1"),
           "best_epoch": summary.get("best_epoch"), "trainable_percent": summary.get("trainable_percent"),
           "trainable_parameters": summary.get("trainable_parameters"), "failure": failure,
           "wall_seconds": time.perf_counter() - started,
           "train_images": summary.get("train_images"), "curve": _curve(curve),
           **{key: summary.get(key) for key in SEGMENTATION_FIELDS if SETS[config.set].metric == "miou"}}
    if selection.metrics.is_file():  # a refit: the curve the epoch was chosen on
        row["selection_curve"] = _curve(selection.read_metrics())
    shutil.rmtree(run.path, ignore_errors=True)  # the row holds what the tables need; checkpoints are not kept
    return row


def _curve(rows: list[dict]) -> list[dict]:
    """Each epoch's row as the tables keep it (a segmentation run's pixel accuracy and mIoU too)."""
    return [{k: r.get(k) for k in ("epoch", "train_loss", "train_top1", "val_top1", "val_loss", "weight_decay")}
            | {k: r[k] for k in ("train_pixel_accuracy", "val_miou") if k in r} for r in rows]


SEGMENTATION_FIELDS = ("test_miou", "best_val_miou", "test_pixel_accuracy")  # a segmentation run's row keeps these too
# what the tables read of a row: its identity, and the figures (a diverged run's are None)
ROW_FIELDS = {"set": str, "cell": str, "task": str, "seed": int, "settings": dict,
              "test_top1": (int, float, type(None)), "trainable_percent": (int, float, type(None)),
              "wall_seconds": (int, float)}


def read_runs(out: Path) -> list[dict]:
    """The finished runs of OUT/runs.jsonl; a line cut short by a kill mid-write is ignored (its run reruns)."""
    path = Path(out) / RUNS
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning(f"{path}:{number}: an unfinished line (a write was interrupted); that run will run again")
            continue
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            continue
        wrong = [name for name, kinds in ROW_FIELDS.items() if not isinstance(row.get(name), kinds)
                 or isinstance(row.get(name), bool)]
        if wrong:  # an edited line: the tables would be built on it, or fail on it
            raise ConfigError(f"{path} line {number}: field(s) {wrong} missing or of the wrong type; restore the "
                              f"line, or delete it to run that run again")
        rows.append(row)
    return rows


def _append(path: Path, row: dict) -> None:
    """One line at the end of the runs file, flushed to disk before the next run starts."""
    text = path.read_text() if path.is_file() else ""
    if text and not text.endswith("\n"):  # a line cut short by a kill: end it, so the new row stays its own line
        text += "\n"
    atomic_write_text(path, text + json.dumps(row) + "\n")


@contextmanager
def _ablation_folder(out: Path) -> Iterator[None]:
    """OUT, marked as an ablation folder and locked while runs write there; a folder with other files is refused."""
    _check_out(out)
    with RunDir(out).lock(flag="--out"):
        if not (out / MARKER).is_file():
            atomic_write_text(out / MARKER, json.dumps({"format": FORMAT, "version": 1}) + "\n")
        yield


def _check_out(out: Path) -> None:
    """OUT must be new, empty, or an earlier ablation's folder: never a file or a folder of the user's."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the ablation's runs and reports")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ConfigError(f"--out {out} is not empty and is not an ablation folder (no {MARKER}); choose an empty "
                          f"or new folder, or the --out of an earlier `vptune ablate`")


# ------------------------------------------------------------------------------------------------ helpers
def _train_config(settings: dict[str, Any]) -> TrainConfig:
    return TrainConfig.from_dict(settings, origin="ablate")


def _concrete(settings: dict[str, Any], task: str | int) -> dict[str, Any]:
    """A cell's settings with NUM_CLASSES made the task's number of classes (`task` a task, or that number)."""
    if NUM_CLASSES not in settings.values():
        return dict(settings)
    count = task if isinstance(task, int) else _num_classes(task)
    return {k: (count if v == NUM_CLASSES else v) for k, v in settings.items()}


_CLASS_COUNTS: dict[str, int] = {}


def _num_classes(task: str) -> int:
    """How many classes a task has (read once per task)."""
    if task not in _CLASS_COUNTS:
        from ..data import read_data

        _CLASS_COUNTS[task] = read_data(task).num_classes
    return _CLASS_COUNTS[task]


__all__ = ["SETS", "AblationSet", "AblateConfig", "Cell", "Claim", "run_ablation", "write_set_reports", "plan",
           "read_runs", "run_key", "run_settings"]
