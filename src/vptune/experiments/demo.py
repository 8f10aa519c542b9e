"""`vptune demo`: linear probe vs VPT-shallow vs VPT-deep on the offline default backbone and a built-in task.

Same data (VTAB-1k protocol: train800 -> best on val200 -> test), same loop, same metrics; prints a
comparison table and writes it (results.md, results.json) with a plot of the learning curves.

Sized to show its result in a few minutes on a 2-core CPU (docs/performance.md has the profile behind it): on a
CPU the run is bound by the backbone's matrix products (about 80% of a step), so its time is the images it pushes
through the backbone times the tokens per image. Hence 84 px (6 x 6 patches: the linear probe scores as at 112 px
on animal-mnist), 3 epochs (on animal-mnist VPT-deep's val accuracy is near its best by then), and test top-1 on a fixed stratified 1,000 of
the 2,000 test images (the same images for every method).

`vptune demo --segmentation`: the same three on the built-in segmentation task (pasted-animals: animal silhouettes
on textured ground, 400 train, 100 val, 200 test images; `vptune.data.builtin_segmentation`), where "linear" is the
linear head on the frozen patch tokens trained by gradient steps (DINOv2's linear protocol), each method's epoch
chosen by val mIoU and test mIoU scored at the masks' full resolution.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from .._io import atomic_write_text, save_figure
from ..backbones import DEFAULT_BACKBONE
from ..devices import describe_machine
from ..data import BUILTIN_DATASETS, builtin_name
from ..errors import ConfigError, TrainingError
from ..rundir import RunDir
from ..data.segmentation_dataset import SEGMENTATION_BUILTINS
from ..training import TrainConfig, train
from ..training.objective import SCORE_NAMES

log = logging.getLogger("vptune")

METHODS = ("linear", "vpt-shallow", "vpt-deep")
DEMO_DATA = "animal-mnist"
DEMO_IMG_SIZE = 84  # what 2 CPU cores can train in minutes; the backbone's position grid is resampled
DEMO_EPOCHS = 3
DEMO_TEST_IMAGES = 1000
SEGMENTATION_DATA = "pasted-animals"
SEGMENTATION_IMG_SIZE = 112  # 8 x 8 patches of a 96 px scene: objects of 24-56 px span 2-4 patches
SEGMENTATION_EPOCHS = 4
MARKER = "results.json"


def run_demo(output: Path, *, data: str | None = None, epochs: int | None = None, smoke: bool = False,
             quiet: bool = False, segmentation: bool = False) -> list[dict]:
    """Train the three methods into output/<method>/ and compare them; returns one row per method.
    segmentation: on a built-in segmentation task (default pasted-animals), compared by mIoU."""
    output = Path(output)
    data = data or (SEGMENTATION_DATA if segmentation else DEMO_DATA)  # animal-mnist needs no extra (digits needs
    builtins = SEGMENTATION_BUILTINS if segmentation else BUILTIN_DATASETS  # scikit-learn)
    if (data not in builtins) if segmentation else builtin_name(data) is None:  # before anything is fetched or deleted
        raise ConfigError(f"vptune demo{' --segmentation' * segmentation} --data {data!r}: the demo runs on a "
                          f"built-in {'segmentation task' if segmentation else 'data set'}, one of "
                          f"{', '.join(builtins)}; for your own data use vptune train --data PATH")
    epochs = (1 if smoke else SEGMENTATION_EPOCHS if segmentation else DEMO_EPOCHS) if epochs is None else epochs
    configs = [TrainConfig(data=data, output=str(output / method), method=method, backbone=DEFAULT_BACKBONE,
                           img_size=SEGMENTATION_IMG_SIZE if segmentation else DEMO_IMG_SIZE, epochs=epochs,
                           subset=(16 if segmentation else 64) if smoke else None, test_subset=DEMO_TEST_IMAGES,
                           refit=False) for method in METHODS]
    # refit=False: the VTAB-1k protocol the demo states (test from the best val200 epoch); a refit on all 1,000
    # images would double the VPT rows' training time and put the demo over five minutes
    for cfg in configs:  # bad settings (--epochs 0) stop here, before the previous demo is replaced
        cfg.resolved()
    _clear_previous_demo(output)
    started = time.perf_counter()
    rows = []
    for cfg in configs:
        log.info(f"=== {cfg.method} ===")
        summary = train(cfg, quiet=quiet)
        rows.append({**summary, "curve": RunDir(cfg.output).read_metrics()})
    seconds = time.perf_counter() - started
    table = (format_segmentation_table if segmentation else format_table)(rows, data, seconds)
    print("\n" + table)
    atomic_write_text(output / "results.md", table + "\n\n![learning curves](curves.png)\n")  # the page shows its plot
    atomic_write_text(output / MARKER, json.dumps(rows, indent=2) + "\n")
    plot_curves(rows, output / "curves.png")
    print(f"\nwritten: {output / 'results.md'}, {output / 'curves.png'}, task directories in {output}/<method>")
    print(f"demo wall time: {seconds / 60:.1f} min on {describe_machine(rows[0].get('device', 'cpu'))}")
    return rows


def _clear_previous_demo(output: Path) -> None:
    """Replace an earlier demo's results, but never a folder the demo did not write."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"--output {output} is a file; give a folder for the demo's runs and results")
    if output.exists() and any(output.iterdir()):
        if not (output / MARKER).is_file():
            raise TrainingError(f"{output} exists and is not a previous demo's output; choose another --output")
        shutil.rmtree(output)


def format_table(rows: list[dict], data: str, seconds: float) -> str:
    machine = f"{describe_machine(rows[0].get('device', 'cpu'))}, torch {torch.__version__}"
    lines = [f"VPT demo: {DEFAULT_BACKBONE} at {DEMO_IMG_SIZE} px, {data} (VTAB-1k protocol: train800, best epoch "
             f"on val200, test top-1 on {rows[0].get('test_images', DEMO_TEST_IMAGES)} images), {rows[0]['epochs']} "
             f"epochs, {machine}; total {seconds / 60:.1f} min",
             "",
             "| method | test top-1 | val top-1 (chosen) | trainable params | % of backbone | checkpoint | train time |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        chosen = (f"L2 {row['probe_weight_decay']:g}" if row.get("probe_weight_decay") is not None
                  else f"epoch {row['best_epoch']}")
        lines.append(f"| {row['method']} | {row['test_top1']:.4f} | {row['best_val_top1']:.4f} ({chosen}) "
                     f"| {row['trainable_parameters']:,} | {row['trainable_percent']:.3f}% "
                     f"| {row['checkpoint_bytes'] / 1024:.1f} KiB | {row['train_seconds']:.0f} s |")
    return "\n".join(lines)


def format_segmentation_table(rows: list[dict], data: str, seconds: float) -> str:
    machine = f"{describe_machine(rows[0].get('device', 'cpu'))}, torch {torch.__version__}"
    sizes = rows[0]["data"]["sizes"]
    lines = [f"VPT segmentation demo: {DEFAULT_BACKBONE} at {SEGMENTATION_IMG_SIZE} px, {data} (train "
             f"{rows[0]['train_images']}, best epoch on val {sizes['val']} by mIoU, test mIoU at full resolution on "
             f"{rows[0]['test_images']} images), {rows[0]['epochs']} epochs, {machine}; total {seconds / 60:.1f} min",
             "",
             "| method | test mIoU | test pixel accuracy | val mIoU (chosen) | trainable params | % of backbone "
             "| checkpoint | train time |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['method']}{' head' * (row['method'] == 'linear')} | {row['test_miou']:.4f} "
                     f"| {row['test_pixel_accuracy']:.4f} | {row['best_val_miou']:.4f} (epoch {row['best_epoch']}) "
                     f"| {row['trainable_parameters']:,} | {row['trainable_percent']:.3f}% "
                     f"| {row['checkpoint_bytes'] / 1024:.1f} KiB | {row['train_seconds']:.0f} s |")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    score = "miou" if rows[0].get("task") == "segmentation" else "top1"
    for row in rows:
        if row.get("probe_weight_decay") is not None:  # a fitted probe has no curve: its chosen val accuracy
            acc_ax.axhline(row["best_val_top1"], linestyle="--", color="gray", label=f"{row['method']} (fitted)")
            continue
        epochs = [r["epoch"] for r in row["curve"]]
        loss_ax.plot(epochs, [r["train_loss"] for r in row["curve"]], marker="o", label=row["method"])
        acc_ax.plot(epochs, [r.get(f"val_{score}") for r in row["curve"]], marker="o", label=row["method"])
    loss_ax.set(title="training loss", xlabel="epoch", ylabel="cross-entropy")
    acc_ax.set(title=f"val {SCORE_NAMES[score]}", xlabel="epoch", ylabel=SCORE_NAMES[score])
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    return path
