"""The hold-out table of docs/recipe.md: vptune's defaults (linear probe, VPT-deep) against the baseline a user fits on
their own (scikit-learn's logistic regression on all the training images, `sklearn_probe.py`), per task and image
size, mean of the seeds finished so far, and the margin the issue asks for (VPT-deep at least 2 points above
scikit-learn's probe on every task).

    python benchmarks/holdout_report.py docs/recipe/holdout        # reads SIZE/runs.jsonl and sklearn-SIZE.jsonl
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CELLS = {"linear": "vptune linear", "defaults": "vptune VPT-deep"}
GOAL = 0.02  # VPT-deep's margin over scikit-learn's probe, on every task


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def task_name(task: str) -> str:
    path = Path(task)
    return path.parent.name if path.name == "labels.csv" else task


def size_table(folder: Path, size: str) -> list[str]:
    sklearn = {row["task"]: row["test_top1"] for row in read_jsonl(folder / f"sklearn-{size}.jsonl")}
    runs: dict[tuple[str, str], dict[int, float]] = {}
    for row in read_jsonl(folder / size / "runs.jsonl"):
        if row.get("failure") is None:
            runs.setdefault((task_name(row["task"]), row["cell"]), {})[row["seed"]] = row["test_top1"]
    lines = [f"### {size} px", "",
             "| task | scikit-learn probe (all training images) | vptune linear | vptune VPT-deep "
             "| VPT-deep - scikit-learn | seeds |", "|---|---|---|---|---|---|"]
    for task in sorted({task for task, _ in runs} | set(sklearn)):
        cells = {cell: runs.get((task, cell), {}) for cell in CELLS}
        deep = cells["defaults"]
        margin = statistics.mean(deep.values()) - sklearn[task] if deep and task in sklearn else None
        verdict = "" if margin is None else (" (goal met)" if margin >= GOAL else " (goal not met)")
        lines.append("| " + " | ".join([
            task, f"{sklearn[task]:.4f}" if task in sklearn else "-",
            *(_mean(cells[cell]) for cell in CELLS),
            "-" if margin is None else f"{100 * margin:+.1f} points{verdict}",
            ",".join(map(str, sorted(deep))) or "-"]) + " |")
    return lines + candidate_lines(runs, sklearn)


def candidate_lines(runs: dict[tuple[str, str], dict[int, float]], sklearn: dict[str, float]) -> list[str]:
    """Other VPT-deep recipes run on the hold-out tasks (not the default), each against the same probe and against
    the defaults on the same seeds."""
    candidates = sorted({cell for _, cell in runs} - set(CELLS))
    if not candidates:
        return []
    lines = ["", "Other recipes (not the default) on the same tasks:", "",
             "| recipe | task | VPT-deep | VPT-deep - scikit-learn | defaults, same seeds | - defaults | seeds |",
             "|---|---|---|---|---|---|---|"]
    for cell in candidates:
        for task in sorted(task for task, c in runs if c == cell):
            by_seed = runs[(task, cell)]
            margin = statistics.mean(by_seed.values()) - sklearn[task] if task in sklearn else None
            defaults = {seed: top1 for seed, top1 in runs.get((task, "defaults"), {}).items() if seed in by_seed}
            paired = (statistics.mean(by_seed[seed] - top1 for seed, top1 in defaults.items())
                      if len(defaults) == len(by_seed) else None)
            lines.append(f"| {cell} | {task} | {_mean(by_seed)} | "
                         f"{'-' if margin is None else f'{100 * margin:+.1f} points'} | "
                         f"{_mean(defaults) if paired is not None else '-'} | "
                         f"{'-' if paired is None else f'{100 * paired:+.1f} points'} | "
                         f"{','.join(map(str, sorted(by_seed)))} |")
    return lines


def _mean(by_seed: dict[int, float]) -> str:
    if not by_seed:
        return "-"
    values = list(by_seed.values())
    spread = f" +- {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.4f}{spread}"


def main(folder: Path) -> None:
    sizes = sorted({p.name for p in folder.iterdir() if (p / "runs.jsonl").is_file()}
                   | {p.stem.split("-")[1] for p in folder.glob("sklearn-*.jsonl")}, key=int)
    print("\n\n".join("\n".join(size_table(folder, size)) for size in sizes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path("docs/recipe/holdout"),
                        help="holds SIZE/runs.jsonl and sklearn-SIZE.jsonl (the tables printed are its README.md's)")
    main(parser.parse_args().folder)
