"""The reports of `vptune ablate`: for a set, OUT/SET.csv (one row per run), OUT/SET.md (mean +- std over seeds per
cell and task, each seed in brackets, the trainable share, and the paired differences the paper's claims rest on)
and OUT/SET.png (shaped like the paper's figures: accuracy against k or p, or bars).

`config` and `ablation` are `ablate.AblateConfig` and `ablate.AblationSet` (not imported: ablate imports this);
`rows` are the set's finished runs, labelled with its cell names (`ablate.set_rows`).
"""
from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path
from typing import Any

from .._io import atomic_write_text, save_figure
from ..training.objective import SCORE_NAMES

CSV_FIELDS = ("set", "cell", "task", "seed", "test_top1", "best_val_top1", "best_epoch", "trainable_percent",
              "wall_seconds", "failure", "key")


def write_reports(config: Any, ablation: Any, rows: list[dict], figure: bool = True) -> list[Path]:
    """The set's CSV and Markdown tables, and (with `figure`) its plot, into OUT. Without `figure` the tables still
    link the plot an earlier call drew (mid-set it shows fewer runs than the tables), never one not yet drawn."""
    out = Path(config.out)
    cells = [cell.name for cell in config.cells()]
    linked = figure or (out / f"{ablation.name}.png").is_file()
    written = [atomic_write_text(out / f"{ablation.name}.csv", to_csv(rows, ablation.metric)),
               atomic_write_text(out / f"{ablation.name}.md", to_markdown(config, ablation, rows, cells, linked))]
    if rows and figure:
        written.append(plot(ablation, config, rows, out / f"{ablation.name}.png"))
    return written


def to_csv(rows: list[dict], metric: str = "top1") -> str:
    text = io.StringIO()
    fields = [field.replace("top1", metric) for field in CSV_FIELDS]
    writer = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


# ------------------------------------------------------------------------------------------------ tables
def scores(rows: list[dict], cell: str, task: str) -> list[tuple[int, float | None]]:
    """(seed, test score or None for a failed run) of one cell on one task, by seed (the score: the set's metric,
    top-1 or mIoU, as `ablate.set_rows` labels it)."""
    return sorted((r["seed"], r["score"]) for r in rows if r["cell"] == cell and r["task"] == task)


def summary_text(values: list[tuple[int, float | None]], best: bool = False) -> str:
    """'0.9234 +- 0.0050 (0.921, 0.930, fail)': mean and standard deviation of the finished seeds, each seed; the
    mean in bold for the best cell of its task."""
    if not values:
        return ""
    ok = [v for _, v in values if v is not None]
    mean = f"{statistics.fmean(ok):.4f}" if ok else "failed"
    if ok and best:
        mean = f"**{mean}**"
    spread = f" +- {statistics.stdev(ok):.4f}" if len(ok) > 1 else ""
    each = ", ".join("fail" if v is None else f"{v:.3f}" for _, v in values)
    return f"{mean}{spread} ({each})"


def paired(rows: list[dict], a: str, b: str) -> dict | None:
    """Per-run differences a - b in the test score over every (task, seed) both finished: the mean, how many runs a
    won, lost and tied, and the mean of each task's mean difference (every task weighs the same); "failed" counts
    the runs left out because one side failed (diverged)."""
    return pooled(rows, [(a, b)], a, b)


def pooled(rows: list[dict], pairs: list[tuple[str, str]], a: str, b: str) -> dict | None:
    """`paired` for a claim resting on several pairs of cells (first k - last k at every k), labelled a and b: the
    difference of one (task, seed) is the mean of its pairs' differences, counted once every pair finished there.
    Runs shared by several pairs so weigh once per (task, seed), which keeps the differences independent."""
    recorded = {(r["cell"], r["task"], r["seed"]): r["score"] for r in rows}
    complete = {(task, seed) for (_, task, seed) in recorded
                if all((cell, task, seed) in recorded for pair in pairs for cell in pair)}
    by_run = {run: top1 for run, top1 in recorded.items() if top1 is not None}
    units = sorted((task, seed) for task, seed in complete
                   if all((cell, task, seed) in by_run for pair in pairs for cell in pair))
    if not units:
        return None
    found = [(task, statistics.fmean(by_run[first, task, seed] - by_run[second, task, seed]
                                     for first, second in pairs)) for task, seed in units]
    diffs = [d for _, d in found]
    tasks = sorted({t for t, _ in found})
    per_task = {t: statistics.fmean(d for task, d in found if task == t) for t in tasks}
    return {"a": a, "b": b, "runs": len(diffs), "failed": len(complete) - len(units),
            "seeds": sorted({seed for _, seed in units}),
            "mean": statistics.fmean(diffs),
            "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs), "ties": sum(d == 0 for d in diffs),
            "per_task": per_task, "tasks_won": sum(v > 0 for v in per_task.values())}


def verdict(comparison: dict) -> str:
    """The rule every report uses: a is ahead when its mean paired difference is over twice its standard error and
    it won more runs than it lost (b ahead likewise); anything else is within noise. Fewer than 3 runs: too few."""
    mean, margin = comparison["mean"], noise_margin(comparison)
    if comparison["runs"] < 3:
        return "too few runs"
    if mean > margin and comparison["wins"] > comparison["losses"]:
        return f"{comparison['a']} ahead"
    if mean < -margin and comparison["losses"] > comparison["wins"]:
        return f"{comparison['b']} ahead"
    return "within noise"


def noise_margin(comparison: dict) -> float:
    """Twice the standard error of the mean paired difference: `verdict`'s bar, and the claims plot's error bar."""
    return 2 * comparison["std"] / comparison["runs"] ** 0.5


def claim_verdict(comparison: dict | None, matches: bool = False) -> str:
    """A claim that a beats b holds when a is ahead by `verdict`'s rule; "a matches or beats b" holds unless b is
    ahead. `comparison` is `pooled(..., "a", "b")`."""
    if comparison is None:
        return "no runs yet"
    side = verdict(comparison)
    if side == "too few runs":
        return side
    if side == "b ahead":
        return "does not hold: the reverse is ahead"
    if side == "within noise":
        if not matches:
            return "not shown: within noise"
        behind = len(comparison["per_task"]) - comparison["tasks_won"]
        # level by the rule, yet a may trail on most tasks: say so, a level verdict is not a win
        return "holds: level" if comparison["mean"] >= 0 else (
            f"holds as level (within noise), though behind on average, on {behind} of {len(comparison['per_task'])} "
            f"tasks")
    return "holds"


def claim_comparisons(ablation: Any, depth: int, rows: list[dict]) -> list[tuple[Any, dict | None]]:
    """Each claim of the set with the pooled comparison of its pairs (None before any of them finished)."""
    return [(claim, pooled(rows, list(claim.pairs), "a", "b")) for claim in ablation.claims(depth)]


def claims_markdown(claims: list[tuple[Any, dict | None]], planned: int) -> list[str]:
    """The claims table; a verdict on fewer than the `planned` (task, seed) runs says so."""
    lines = ["| claim (the paper) | a - b | runs (seeds) | mean | std | a won / lost / tied | tasks where a is "
             "ahead on average | verdict |", "|---|---|---|---|---|---|---|---|"]
    for claim, c in claims:
        pairs = ", ".join(f"{a} - {b}" for a, b in claim.pairs)
        if c is None:
            lines.append(f"| {claim.text} | {pairs} | 0 | | | | | no runs yet |")
            continue
        so_far = f" (so far: {c['runs'] + c['failed']} of {planned} runs)" if c["runs"] + c["failed"] < planned else ""
        if c["failed"]:
            so_far += f"; {c['failed']} run{'s' * (c['failed'] > 1)} left out: a side failed"
        lines.append(f"| {claim.text} | {pairs} | {c['runs']} ({', '.join(map(str, c['seeds']))}) | "
                     f"{100 * c['mean']:+.2f} | {100 * c['std']:.2f} | {c['wins']} / {c['losses']} / {c['ties']} | "
                     f"{c['tasks_won']} of {len(c['per_task'])} | **{claim_verdict(c, claim.matches)}**{so_far} |")
    return lines + ["", "A run is one task and seed; a claim resting on several pairs of cells takes the mean of their "
                        "differences in each run. A claim that a beats b holds when a is ahead by the rule below; "
                        "\"matches or beats\" holds unless b is ahead."]


def to_markdown(config: Any, ablation: Any, rows: list[dict], cells: list[str], figure: bool = True) -> str:
    tasks, score = list(config.tasks), f"test {SCORE_NAMES[ablation.metric]}"
    names = [_task_label(t) for t in tasks]
    seeds = sorted(set(config.seeds) | {r["seed"] for r in rows})
    planned = len(tasks) * len(seeds)
    shares: dict[str, list[float]] = {}  # a cell's share differs by task where p or the head follows the classes
    for r in rows:
        if r.get("trainable_percent") is not None:
            shares.setdefault(r["cell"], []).append(r["trainable_percent"])
    lines = [f"# `vptune ablate {ablation.name}`: {ablation.summary}", ""]
    if rows and figure:  # the plot write_reports draws beside this file
        lines += [f"![vptune ablate {ablation.name}]({ablation.name}.png)", ""]
    claims = claim_comparisons(ablation, config.depth, rows)
    if claims:
        lines += [f"Each claim, decided on the paired runs it rests on (same task and seed; {score} points):", "",
                  *claims_markdown(claims, planned), ""]
    lines += [f"{score[0].upper()}{score[1:]}, mean +- std over seeds {', '.join(map(str, seeds))} (each seed in "
              f"brackets; the best mean of each task in bold). Common settings: "
              f"{_settings_text(config.common) or 'the defaults'}.",
              "", "| cell | " + " | ".join(names) + " | mean over tasks | trainable |",
              "|---|" + "---|" * (len(tasks) + 2)]
    means = {(cell, task): statistics.fmean(ok) for cell in cells for task in tasks
             if (ok := [v for _, v in scores(rows, cell, task) if v is not None])}
    best = {task: max((m for (_, t), m in means.items() if t == task), default=None) for task in tasks}
    ran = {r["cell"] for r in rows}  # a set like `recipes` keeps every candidate ever tried: show those run here
    for cell in (c for c in cells if c in ran):
        texts = [summary_text(scores(rows, cell, task), best=means.get((cell, task)) == best[task]) for task in tasks]
        task_means = [means[cell, task] for task in tasks if (cell, task) in means]
        mean = f"{statistics.fmean(task_means):.4f}" if len(task_means) == len(tasks) else ""
        low, high = (min(shares[cell]), max(shares[cell])) if cell in shares else (None, None)
        trainable = "" if low is None else f"{low:.3f}%" if f"{low:.3f}" == f"{high:.3f}" else f"{low:.3f}-{high:.3f}%"
        lines.append(f"| {cell} | " + " | ".join(texts) + f" | {mean} | {trainable} |")
    if not_run := [cell for cell in cells if cell not in ran]:
        lines += ["", f"Not run (yet): {', '.join(not_run)}."]
    comparisons = [c for a, b in ablation.pairs(config.depth) if (c := paired(rows, a, b))]
    if comparisons:
        lines += ["", f"Paired differences (same task and seed), {score} points:", "",
                  "| a - b | runs | mean | std | a won / lost / tied | tasks where a is ahead on average | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for c in comparisons:
            lines.append(f"| {c['a']} - {c['b']} | {c['runs']} | {100 * c['mean']:+.2f} | {100 * c['std']:.2f} | "
                         f"{c['wins']} / {c['losses']} / {c['ties']} | {c['tasks_won']} of {len(c['per_task'])} | "
                         f"{verdict(c)} |")
        lines += ["", "Verdict: a is ahead when the mean paired difference is over twice its standard error and a "
                      "won more runs than it lost (b likewise); otherwise within noise."]
    if ablation.default:
        lines += ["", beats_default(rows, ablation.default, cells, planned)]
    failed = [r for r in rows if r.get("failure")]
    if failed:
        lines += ["", "Failed runs: " + "; ".join(f"{r['cell']} on {_task_label(r['task'])} seed {r['seed']}: "
                                                  f"{r['failure'][:120]}" for r in failed)]
    minutes = sum(r["wall_seconds"] for r in rows) / 60
    lines += ["", f"{len(rows)} runs, {minutes:.0f} min of wall time in all."]
    return "\n".join(lines) + "\n"


def beats_default(rows: list[dict], default: str, cells: list[str], planned: int) -> str:
    """Which cells beat the default in every planned run (each task and seed): the bar for changing a default."""
    winners = [cell for cell in cells if cell != default and (c := paired(rows, cell, default))
               and c["runs"] == c["wins"] == planned]
    return (f"Cells that beat the default ({default}) in every one of the {planned} runs (each task and seed): "
            f"{', '.join(winners) or 'none'}.")


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _task_label(task: str) -> str:
    """A short name: a built-in's, or the folder of a path (the parent folder for a CSV or list file)."""
    path = Path(task)
    return path.parent.name if path.suffix else path.name


# ------------------------------------------------------------------------------------------------ plots
def plot(ablation: Any, config: Any, rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, score = list(config.tasks), f"test {SCORE_NAMES[ablation.metric]}"
    cells = config.cells()
    if ablation.plot == "claims":
        fig = _plot_claims(claim_comparisons(ablation, config.depth, rows), score)
    elif ablation.plot == "bars":
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tasks) * len(cells) / 3), 4))
        width = 0.8 / len(cells)
        for i, cell in enumerate(cells):
            means, stds = zip(*(_mean_std(scores(rows, cell.name, task)) for task in tasks))
            ax.bar([t + i * width for t in range(len(tasks))], means, width, yerr=stds, capsize=2, label=cell.name)
        ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tasks))], [_task_label(t) for t in tasks])
        ax.set_ylabel(score)
        _zoom(ax, rows)
        ax.legend(fontsize=7, ncol=2)
    else:
        fig, axes = plt.subplots(1, len(tasks), figsize=(3.6 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for series in dict.fromkeys(c.series for c in cells):
                members = [c for c in cells if c.series == series]
                points = [(c.x, *_mean_std(scores(rows, c.name, task))) for c in members]
                points = [p for p in points if p[1] == p[1]]  # cells not run yet (nan) are left out
                if points:
                    xs, means, stds = zip(*points)
                    ax.errorbar(xs, means, yerr=stds, marker="o", capsize=2, label=series)
            if ablation.plot == "log-lines":
                ax.set_xscale("log")
            ax.set(title=_task_label(task), xlabel=ablation.xlabel, ylabel=score)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle(f"vptune ablate {ablation.name}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    return path


def _plot_claims(claims: list[tuple[Any, dict | None]], score: str):
    """One row a claim: its mean paired difference (points) with the verdict rule's margin (2 standard errors),
    and each task's mean difference as a dot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.55 * len(claims) + 1.2))
    finished = [(row, c) for row, (_, c) in enumerate(claims) if c is not None]
    for row, c in finished:
        ax.errorbar(100 * c["mean"], row, xerr=100 * noise_margin(c), fmt="o", color="C0", capsize=3,
                    label="mean +- 2 SE" if row == finished[0][0] else None)
        ax.scatter([100 * v for v in c["per_task"].values()], [row] * len(c["per_task"]), s=12, color="grey",
                   zorder=3, label="a task's mean" if row == finished[0][0] else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(claims)), [claim.text for claim, _ in claims], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"a - b, {score} points")
    ax.grid(axis="x", alpha=0.3)
    if finished:
        ax.legend(fontsize=7)
    return fig


def _mean_std(values: list[tuple[int, float | None]]) -> tuple[float, float]:
    ok = [v for _, v in values if v is not None]
    if not ok:
        return float("nan"), 0.0
    return statistics.fmean(ok), statistics.stdev(ok) if len(ok) > 1 else 0.0


def _zoom(ax, rows: list[dict]) -> None:
    """Start the accuracy axis a little under the lowest score, so differences of a point are visible."""
    ok = [r["score"] for r in rows if r["score"] is not None]
    if ok:
        ax.set_ylim(max(0.0, min(ok) - 0.05), min(1.0, max(ok) + 0.03))
