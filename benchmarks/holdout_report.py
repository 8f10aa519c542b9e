"""The hold-out table of docs/recipe.md: vptune's defaults (linear probe, VPT-deep) against the baseline a user fits on
their own (scikit-learn's logistic regression on all the training images, `sklearn_probe.py`), per task and image
size, mean of the seeds finished so far, the margin the issue asks for (VPT-deep at least 2 points above
scikit-learn's probe on every task), and the minutes a run took.

VPT-deep's default on these tasks is the `cross-fit-fixed` cell: every one has fewer training images than twice
the backbone's features, where `vptune train` cross-fits (`training/loop.py: with_cross_fit`) and trains the whole
schedule on train + val without choosing an epoch on val (`with_final`). The `cross-fit` cell is the default before
that (the epoch chosen on val, then the refit), the `defaults` cell the recipe without cross-fit (`vptune ablate`
pins both off unless asked).

    python benchmarks/holdout_report.py docs/recipe/holdout        # reads SIZE/runs.jsonl and sklearn-SIZE.jsonl
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

# the cells of VPT-deep's default here, of it with the epoch chosen on val (the default before), and without cross-fit
DEFAULT, CHOSEN, WITHOUT = "cross-fit-fixed", "cross-fit", "defaults"
CELLS = {"linear": "vptune linear", WITHOUT: "VPT-deep without cross-fit", CHOSEN: "VPT-deep, epoch chosen on val",
         DEFAULT: "VPT-deep (default)"}
GOAL = 0.02  # VPT-deep's margin over scikit-learn's probe, on every task


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def task_name(task: str) -> str:
    path = Path(task)
    return path.parent.name if path.name == "labels.csv" else task


def size_table(folder: Path, size: str) -> list[str]:
    sklearn = {row["task"]: row["test_top1"] for row in read_jsonl(folder / f"sklearn-{size}.jsonl")}
    runs: dict[tuple[str, str], dict[int, float]] = {}
    minutes: dict[tuple[str, str], list[float]] = {}
    for row in read_jsonl(folder / size / "runs.jsonl"):
        if row.get("failure") is None:
            key = (task_name(row["task"]), row["cell"])
            runs.setdefault(key, {})[row["seed"]] = row["test_top1"]
            if row.get("wall_seconds") is not None:
                minutes.setdefault(key, []).append(row["wall_seconds"] / 60)
    lines = [f"### {size} px", "",
             "| task | scikit-learn probe (all training images) | " + " | ".join(CELLS.values()) +
             " | default - scikit-learn | seeds | minutes a run (linear, without, chosen, default) |",
             "|" + "---|" * (len(CELLS) + 5)]
    for task in sorted({task for task, _ in runs} | set(sklearn)):
        cells = {cell: runs.get((task, cell), {}) for cell in CELLS}
        deep = cells[DEFAULT]
        margin = statistics.mean(deep.values()) - sklearn[task] if deep and task in sklearn else None
        verdict = "" if margin is None else (" (goal met)" if margin >= GOAL else " (goal not met)")
        lines.append("| " + " | ".join([
            task, f"{sklearn[task]:.4f}" if task in sklearn else "-",
            *(_mean(cells[cell]) for cell in CELLS),
            "-" if margin is None else f"{100 * margin:+.1f} points{verdict}",
            ",".join(map(str, sorted(deep))) or "-",
            ", ".join(f"{statistics.median(minutes[(task, c)]):.1f}" if minutes.get((task, c)) else "-"
                      for c in CELLS)]) + " |")
    return lines + candidate_lines(runs, sklearn)


# What each other recipe is compared with on the same seeds: the one it was a candidate against (the default with the
# default before it, the longer prompts with the default), the rest with the recipe without cross-fit
COMPARED_WITH = {DEFAULT: CHOSEN, "cross-fit-fixed-p40": DEFAULT}


def candidate_lines(runs: dict[tuple[str, str], dict[int, float]], sklearn: dict[str, float]) -> list[str]:
    """Other VPT-deep recipes run on the hold-out tasks, each against the same probe and against the recipe it was
    a candidate against (`COMPARED_WITH`) on the same seeds (the default's own pairing included)."""
    candidates = sorted({cell for _, cell in runs} - {"linear", WITHOUT})
    if not candidates:
        return []
    lines = ["", "Each VPT-deep recipe against the recipe it was a candidate against, on the same seeds:", "",
             "| recipe | task | VPT-deep | VPT-deep - scikit-learn | against | its mean, same seeds | difference | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for cell in candidates:
        against = COMPARED_WITH.get(cell, WITHOUT)
        for task in sorted(task for task, c in runs if c == cell):
            by_seed = runs[(task, cell)]
            margin = statistics.mean(by_seed.values()) - sklearn[task] if task in sklearn else None
            other = {seed: top1 for seed, top1 in runs.get((task, against), {}).items() if seed in by_seed}
            paired = (statistics.mean(by_seed[seed] - top1 for seed, top1 in other.items())
                      if len(other) == len(by_seed) else None)
            lines.append(f"| {cell}{' (default)' if cell == DEFAULT else ''} | {task} | {_mean(by_seed)} | "
                         f"{'-' if margin is None else f'{100 * margin:+.1f} points'} | {against} | "
                         f"{_mean(other) if paired is not None else '-'} | "
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
