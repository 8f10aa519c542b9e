"""A sweep's outputs: trials.csv, results.md / results.json (the best setting, the retrained seeds' test top-1), and
sweep.png (val top-1 against each searched setting, the history with pruned trials marked); mIoU in place of top-1
for a segmentation task."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from ..._io import atomic_write_text, save_figure
from ...training.objective import SCORE_NAMES


def write_outputs(out: Path, study, results: dict) -> None:
    names = sorted({k for t in study.trials for k in t.params})
    metric = results.get("metric", "top1")  # "miou" for a segmentation task
    rows = [{"trial": t.number, "state": t.state.name, **{k: t.params.get(k) for k in names},
             f"val_{metric}": t.value if t.value is not None else max(t.intermediate_values.values(), default=None),
             "epochs": epochs_run(t),
             "seconds": (t.datetime_complete - t.datetime_start).total_seconds()
             if t.datetime_complete and t.datetime_start else None} for t in study.trials]
    with open(out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out / "results.md", _table(rows, results, metric) + "\n")
    _plot(out, rows, names, metric)


def _table(rows: list[dict], results: dict, metric: str) -> str:
    retrained, shown = results["retrained"], SCORE_NAMES[metric]
    lines = [f"best setting (trial {results['best_trial']}): {results['best_params']}, val {shown} "
             f"{results[f'best_val_{metric}']:.4f}; {results['trial_epochs']} trial-epochs; trials "
             f"{results['trials']}", ""]
    if retrained["mean"] is not None:
        seeds = ", ".join(f"{v:.4f}" for v in retrained[f"test_{metric}"].values())
        lines += [f"retrained on train + val: test {shown} {retrained['mean']:.4f} +- {retrained['std']:.4f} "
                  f"(seeds: {seeds})", ""]
    keys = [k for k in rows[0] if k != "seconds"]
    lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[k]) for k in keys) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _plot(out: Path, rows: list[dict], names: list[str], metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name = "lr" if "lr" in names else (names[0] if names else None)
    fig, (by_value, history) = plt.subplots(1, 2, figsize=(11, 4))
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x"), ("FAIL", "s")):
        chosen = [r for r in rows if r["state"] == state and r[f"val_{metric}"] is not None]
        if x_name and isinstance(rows[0].get(x_name), (int, float)):
            by_value.scatter([r[x_name] for r in chosen], [r[f"val_{metric}"] for r in chosen], marker=marker,
                             label=state.lower())
        history.scatter([r["trial"] for r in chosen], [r[f"val_{metric}"] for r in chosen], marker=marker,
                        label=state.lower())
    if x_name and isinstance(rows[0].get(x_name), (int, float)):
        by_value.set_xscale("log")
    shown = f"val {SCORE_NAMES[metric]}"
    by_value.set(title=f"{shown} against {x_name}", xlabel=x_name, ylabel=f"{shown} (last reported)")
    history.set(title="history (x: pruned)", xlabel="trial", ylabel=shown)
    for ax in (by_value, history):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, out / "sweep.png")


def epochs_run(trial) -> int:
    return int(trial.user_attrs.get("epochs", 0))
