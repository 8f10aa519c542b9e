"""Markdown tables from the JSON lines benchmarks/recipe.py writes: test top-1 per recipe and task (mean +- std
over seeds, each seed listed), and a * where a run was unstable (its train loss rose by over a quarter from one
epoch to the next, to above 0.5, or it failed).

    python benchmarks/recipe_table.py docs/recipe/runs.jsonl
"""
from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def task_name(data: str) -> str:
    path = Path(data)
    return path.parent.name if path.suffix == ".csv" else data


def unstable(row: dict) -> bool:
    losses = [c["train_loss"] for c in row["curve"] if c.get("train_loss") is not None]
    rose = any(later > 1.25 * earlier and later > 0.5 for earlier, later in zip(losses, losses[1:]))
    return row["failure"] is not None or (row["recipe"] != "linear" and rose)  # a probe's rows are L2 strengths


def table(rows: list[dict]) -> str:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        cells[row["recipe"], task_name(row["data"])].append(row)
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    tasks = list(dict.fromkeys(task_name(r["data"]) for r in rows))
    lines = ["| recipe | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for recipe in recipes:
        out = []
        for task in tasks:
            runs = sorted(cells.get((recipe, task), []), key=lambda r: r["seed"])
            scores = [r["test_top1"] for r in runs if r["test_top1"] is not None]
            if not runs:
                out.append("")
                continue
            mean = f"{statistics.fmean(scores):.4f}" if scores else "failed"
            spread = f" +- {statistics.stdev(scores):.4f}" if len(scores) > 1 else ""
            each = ", ".join(f"{r['test_top1']:.3f}" + ("*" if unstable(r) else "") if r["test_top1"] is not None
                             else "fail" for r in runs)
            out.append(f"**{mean}**{spread} ({each})")
        lines.append(f"| {recipe} | " + " | ".join(out) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table([json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line]))
