"""The runs behind docs/recipe.md: candidate default recipes for VPT-deep (and the linear probe baseline) on
several tasks and seeds, one JSON line per run appended to --out. Runs already in --out are skipped, so a killed
sweep continues where it stopped, and results land on disk as they finish.

    python benchmarks/recipe.py --recipes linear,current,probe-norm-adamw --data digits,animal-mnist \\
        --seeds 0,1,2 --out docs/recipe/runs.jsonl

A recipe is a set of TrainConfig settings on top of COMMON; "data" may be a built-in name or a path (e.g. the
hold-out tasks that benchmarks/holdout_tasks.py writes).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from vptune import TrainConfig, TrainingError, train

COMMON = dict(method="vpt-deep", img_size=112)  # the demo's image size: what 2 CPU cores train in minutes
RECIPES: dict[str, dict] = {
    "linear": dict(method="linear"),
    # the defaults before docs/recipe.md, spelled out so the name keeps its meaning when the defaults change (every
    # recipe names its prompt init: the default became "patches" after these runs)
    "current": dict(optimizer="sgd", lr=0.5, head_lr=0.02, head_norm=False, head_init="random", prompt_init="xavier"),
    "probe-sgd": dict(head_init="probe", prompt_init="xavier"),
    "norm-sgd": dict(head_norm=True, prompt_init="xavier"),
    "probe-norm-sgd": dict(head_norm=True, head_init="probe", prompt_init="xavier"),
    "probe-norm-adamw": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-2,
                             weight_decay=1e-4, prompt_init="xavier"),
    # the head starts at an optimum: a tenth of the prompts' lr keeps it there while the prompts adapt (as LP-FT
    # does for fine-tuning after a linear probe); and the paper's prompt dropout for deep prompts
    "probe-norm-adamw-slowhead": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-3,
                                      weight_decay=1e-4, prompt_init="xavier"),
    "probe-norm-adamw-slowhead-dropout": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2,
                                              head_lr=1e-3, weight_decay=1e-4, prompt_dropout=0.1,
                                              prompt_init="xavier"),
    # prompts start at k-means prototypes of the patch tokens entering each block, not noise (model/prompted_vit.py);
    # rows named "sampled-patches-..." in docs/recipe/*.jsonl ran an earlier version of this init (single sampled
    # tokens instead of prototypes; commits 55c152f up to the k-means change)
    "patches-probe-norm-adamw": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-2,
                                     weight_decay=1e-4, prompt_init="patches"),
    "norm-adamw": dict(head_norm=True, optimizer="adamw", lr=1e-2, head_lr=1e-2, weight_decay=1e-4,
                       prompt_init="xavier"),
    "defaults": dict(),  # whatever TrainConfig's defaults are now
}


def done_keys(out: Path) -> set[tuple]:
    if not out.is_file():
        return set()
    return {(r["recipe"], r["data"], r["seed"]) for r in map(json.loads, out.read_text().splitlines()) if r}


def run_one(recipe: str, data: str, seed: int, epochs: int | None) -> dict:
    settings = {**COMMON, **RECIPES[recipe], "data": data, "seed": seed}
    if epochs is not None:
        settings["epochs"] = epochs
    folder = Path(tempfile.mkdtemp(prefix="vptune-recipe-"))
    started = time.perf_counter()
    try:
        summary = train(TrainConfig(output=str(folder / "run"), **settings), quiet=True)
        curve = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
        failure = None
    except TrainingError as err:
        summary, failure = {}, str(err)
        metrics = folder / "run" / "metrics.jsonl"
        curve = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.is_file() else []
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"recipe": recipe, "data": data, "seed": seed, "settings": settings,
            "test_top1": summary.get("test_top1"), "best_val_top1": summary.get("best_val_top1"),
            "best_epoch": summary.get("best_epoch"), "probe_weight_decay": summary.get("probe_weight_decay"),
            "failure": failure, "wall_seconds": time.perf_counter() - started,
            "curve": [{k: r.get(k) for k in ("epoch", "train_loss", "train_top1", "val_top1", "weight_decay")}
                      for r in curve]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="default: TrainConfig's")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    unknown = set(args.recipes.split(",")) - RECIPES.keys()
    if unknown:
        parser.error(f"unknown recipe(s) {sorted(unknown)}; known: {', '.join(RECIPES)}")
    done = done_keys(args.out)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seed in map(int, args.seeds.split(",")):  # a whole round of tasks per seed: partial results stay balanced
        for data in args.data.split(","):
            for recipe in args.recipes.split(","):
                if (recipe, data, seed) in done:
                    continue
                row = run_one(recipe, data, seed, args.epochs)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{recipe:>18} {Path(data).name:>14} seed {seed}: test {row['test_top1']}, "
                      f"val {row['best_val_top1']} (epoch {row['best_epoch']}), {row['wall_seconds']:.0f} s"
                      + (f", FAILED: {row['failure'][:80]}" if row["failure"] else ""), flush=True)


if __name__ == "__main__":
    main()
