"""The bench's outputs: one row per config (medians and paired ratios), the markdown table, the loader's verdict,
and bench.csv / bench.json / bench.md written whole after every group."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..devices import cpu_name
from .settings import BenchSettings
from .grid import BASES, FIGURES, METHOD_MODES, Config, bases_of
from .timing import Results, Samples


def paired_ratio(samples: Samples, cfg: Config, base: Config, figure: str) -> float | None:
    """Median over the rounds that measured both of cfg's value divided by base's."""
    ratios = [x / b for (g, c, f), values in samples.items() if c == cfg and f == figure
              for x, b in zip(values, samples.get((g, base, figure), [])) if b]
    return statistics.median(ratios) if ratios else None


def make_rows(results: Results, args: BenchSettings) -> list[dict]:
    """One row per config: the median of each figure, then each figure as a ratio to each base (`bases_of`),
    then the seconds its compiled variant spent in untimed first calls and whether compiling failed."""
    rows = []
    for c in results.configs:
        row = {"model": c.model, "mode": c.mode, "prompts": c.prompts, "path": c.path, "precision": c.precision,
               "compiled": c.compiled, "head": c.head, "img_size": args.img_size, "train_batch": args.train_batch,
               "infer_batch": args.batch}
        for f in FIGURES:
            values = [v for (_, cfg, fig), vs in results.samples.items() if cfg == c and fig == f for v in vs]
            row[f] = statistics.median(values) if values else None
        for name, base in bases_of(c).items():
            for f in FIGURES:
                row[f"{f}_vs_{name}"] = paired_ratio(results.samples, c, base, f) if base else None
        seconds = [s for (cfg, _), s in results.compile_s.items() if cfg == c]
        row["compile_s"] = sum(seconds) if seconds else None
        row["compile_failed"] = results.compile_failed.get(c, False)
        rows.append(row)
    return rows


def machine_info(args: BenchSettings) -> dict:
    import timm

    kind, cpu = torch.device(args.device).type, cpu_name()
    device_name = {"cuda": lambda: torch.cuda.get_device_name(args.device),
                   "mps": lambda: f"Apple MPS ({cpu})"}.get(kind, lambda: cpu)()
    info = {"device": args.device, "device_name": device_name, "precisions": args.precisions,
            "compile": args.compile, "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version()}
    if kind == "cuda":
        info["gpu"] = device_name
    return info


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _compiled_cell(row: dict) -> str:
    return "no" if not row["compiled"] else "failed: eager" if row["compile_failed"] else "yes"


def table(rows: list[dict]) -> str:
    """Markdown table: each figure, then its ratio to the reference path (x ref), to the floor (x floor) and,
    where more than one precision / compile setting was measured, to the same config in fp32 eager."""
    variants = len({(r["precision"], r["compiled"]) for r in rows})
    methods = any(r["mode"] in METHOD_MODES for r in rows)
    bases = [b for b in BASES if b in ("ref", "floor") or (b, True) in (("fp32_eager", variants > 1),
                                                                         ("vpt_deep", methods))]
    ratio_heads = [{"ref": "x ref", "floor": "x floor", "fp32_eager": "x fp32 eager", "vpt_deep": "x vpt-deep"}[b]
                   for b in bases]
    figure_heads = ["train s/step", "train peak MB", f"infer img/s (b{rows[0]['infer_batch']})", "infer img/s (b1)"]
    heads = any(r.get("head") for r in rows)
    head = ["model", "mode", "p", "path", *(["head"] if heads else []), "precision", "compiled"]
    for name in figure_heads:
        head += [name, *ratio_heads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["mode"] or "-", str(r["prompts"]), r["path"], *([r["head"]] if heads else []),
                 r["precision"], _compiled_cell(r)]
        for f, spec in zip(FIGURES, (".3f", ".0f", ".1f", ".1f")):
            cells += [_fmt(r[f], spec), *(_fmt(r[f"{f}_vs_{b}"], ".2f") for b in bases)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_ips(row: dict) -> float | None:
    """A row's training images/s at its training batch."""
    return row["train_batch"] / row["train_step_s"] if row["train_step_s"] else None


def loader_lines(loader: dict, rows: list[dict]) -> list[str]:
    """The loader's images/s beside each model's training images/s at the same batch (the fastest fast-path
    config, and the floor: a linear probe needs data fastest), and which of the two limits training."""
    pinned = ", pinned memory" if loader["pin_memory"] else ""
    head = (f"data loader ({loader['data']}, {loader['images']} training images at {loader['img_size']} px, "
            f"batch {loader['batch']}, {loader['num_workers']} workers{pinned}): {loader['img_per_s']:.0f} img/s")
    lines = []
    for model in loader["models"]:
        timed = [r for r in rows if r["model"] == model and train_ips(r)]
        fast = max((r for r in timed if r["path"] == "prefix"), key=train_ips, default=None)
        floor = max((r for r in timed if r["path"] == "floor"), key=train_ips, default=None)
        if fast is None:
            continue
        variant = f"{fast['precision']}{' compiled' if fast['compiled'] else ''}"
        line = (f"{head} vs {model} training {train_ips(fast):.0f} img/s (fast path, {fast['mode']} "
                f"p={fast['prompts']}, {variant})")
        if floor:
            line += f", {train_ips(floor):.0f} img/s (frozen backbone, linear probe)"
        verdict = "the model limits" if loader["img_per_s"] >= train_ips(fast) else "the data loader limits"
        if floor and train_ips(fast) <= loader["img_per_s"] < train_ips(floor):
            verdict += " (a linear probe would wait for the data loader)"
        lines.append(f"{line}: {verdict}")
    return lines or [head]


def write_outputs(out: Path, rows: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = io.StringIO()
    writer = csv.DictWriter(lines, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _write_whole(out / "bench.csv", lines.getvalue())
    _write_whole(out / "bench.json", json.dumps({**meta, "rows": rows}, indent=1))
    loaders = [line for loader in meta["loader"] for line in loader_lines(loader, rows)]
    _write_whole(out / "bench.md", f"Machine: {json.dumps(meta['machine'])}\n\nSettings: {json.dumps(meta['settings'])}"
                                   f"\n\nLoad average (1 min) at group starts: {json.dumps(meta['load_avg_1min'])}"
                                   f"\n\n{table(rows)}\n" + "".join(f"\n{line}\n" for line in loaders))


def _write_whole(path: Path, text: str) -> None:
    """Write then rename: a run stopped mid-write (a time limit) keeps the previous complete file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def write_results(args: BenchSettings, results: Results, started: float) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "memory_worker"}
    meta = {"machine": machine_info(args), "seconds": round(time.time() - started),
            "load_avg_1min": results.load_summary(), "settings": settings, "loader": results.loaders,
            "samples": [{"group": g, **asdict(c), "figure": f, "values": v}
                        for (g, c, f), v in results.samples.items()]}
    write_outputs(args.out, make_rows(results, args), meta)
    print(f"  wrote {args.out}/bench.csv, bench.json, bench.md ({meta['seconds']} s)", file=sys.stderr)
