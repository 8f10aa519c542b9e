"""`vptune bench`: speed and memory of VPT's fast "prefix" path against the reference and the frozen backbone.

For each model, prompt mode and prompt length p it measures, side by side in one process (the configs of a
group take turns within every repeat, so load from other processes hits them alike), after warm-up, the
median of several repeats of:
- training step time: forward + cross-entropy + backward (to the prompts and head) + SGD-momentum step;
- peak memory of one training step, above the resident model and batch. CUDA: `max_memory_allocated`.
  CPU: each model's configs run in a fresh subprocess whose allocator returns freed blocks to the OS at once
  (MALLOC_MMAP_THRESHOLD_), reading the kernel's resident-set high-water mark (reset per config);
- inference throughput, images/s at batch `--batch` and at batch 1 (eval + no_grad, prompt K/V cached);
and every figure as a ratio to the reference "tokens" path and to the frozen backbone ("floor", no prompt),
measured in the same group: the median over repeats of the ratio within each round, so that changes in the
machine's load between rounds cancel. Random weights (`pretrained=False`): speed does not depend on the values.
With `--loader DATA` it also times the training data loader alone (images/s), to show it is not the bottleneck.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .data import DataError, collate, load_data
from .model import PromptConfig, PromptedViT


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked backbone, and its defaults when --repeats / --modes are not given."""

    timm_name: str
    kwargs: dict
    repeats: int = 3
    modes: tuple[str, ...] = ("deep", "shallow")


# ViT-B/16 gets fewer repeats and deep prompts only by default: a CPU training step costs ~3x ViT-S/14's, and
# the default run should stay near 15 minutes on 2 cores (pass --modes / --repeats for the full grid).
MODELS = {
    "vit-s14": ModelSpec("vit_small_patch14_dinov2", {"img_size": 224}),
    "vit-b16": ModelSpec("vit_base_patch16_224", {}, repeats=1, modes=("deep",)),
    "tiny": ModelSpec("vit_tiny_patch16_224", {"img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2}, 1),
}
# floor: no prompt (linear probe); tokens: the reference; prefix: the fast path; -ckpt: gradient checkpointing
PATHS = ("floor", "tokens", "prefix", "prefix-ckpt", "tokens-ckpt")
FIGURES = ("train_step_s", "train_peak_mb", "infer_ips", "infer_b1_ips")
# Defaults of the full grid and of --quick (explicit options win over both).
DEFAULTS = {"models": ["vit-s14", "vit-b16"], "prompts": [10, 50, 100, 200], "batch": 32, "threads": None}
QUICK = {"models": ["tiny"], "prompts": [2, 4], "batch": 4, "train_batch": 2, "repeats": 1, "threads": 1}
NUM_CLASSES = 100
B1_CALLS = 8  # batch-1 inference: images per timed repeat


@dataclass(frozen=True)
class Config:
    """One measured model: the floor has mode "" and prompts 0."""

    model: str
    mode: str
    prompts: int
    path: str

    def build(self, backbone: torch.nn.Module, device: str) -> PromptedViT:
        prompt = PromptConfig(num_tokens=self.prompts, mode=self.mode or "deep")
        path = "prefix" if self.path == "floor" else self.path.split("-")[0]
        model = PromptedViT(backbone, prompt, NUM_CLASSES, path=path, grad_checkpointing=self.path.endswith("-ckpt"))
        return model.to(device)


# (group, config, figure) -> one value per timed round; the configs of a group share their rounds
Samples = dict[tuple[int, Config, str], list[float]]


# ------------------------------------------------------------------------------------------------ measuring
class Runner:
    """One model's backbone and batches on one device, and the timed operations on them."""

    def __init__(self, alias: str, args: argparse.Namespace) -> None:
        import timm

        spec = spec_of(alias)
        torch.manual_seed(0)
        self.device, self.args = args.device, args
        self.backbone = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.kwargs)
        self.backbone = self.backbone.to(self.device).eval()
        size = self.backbone.patch_embed.img_size
        self.images = torch.randn(max(args.batch, args.train_batch), 3, *size, device=self.device)
        self.labels = torch.randint(0, NUM_CLASSES, (args.train_batch,), device=self.device)
        self.models: dict[Config, tuple[PromptedViT, torch.optim.Optimizer]] = {}

    def model(self, cfg: Config) -> tuple[PromptedViT, torch.optim.Optimizer]:
        if cfg not in self.models:
            model = cfg.build(self.backbone, self.device)
            self.models[cfg] = model, torch.optim.SGD(model.trainable_parameters(), lr=1e-3, momentum=0.9)
        return self.models[cfg]

    def autocast(self):
        dtype = torch.bfloat16 if self.args.dtype == "bfloat16" else None
        return torch.autocast(self.device.split(":")[0], dtype=dtype) if dtype else nullcontext()

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def train_step(self, cfg: Config, batch: int | None = None) -> None:
        model, optimizer = self.model(cfg)
        batch = batch or self.args.train_batch
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = F.cross_entropy(model(self.images[:batch]), self.labels[:batch])
        loss.backward()
        optimizer.step()

    def infer(self, cfg: Config, batch: int, calls: int = 1) -> None:
        model = self.model(cfg)[0].eval()
        with torch.no_grad(), self.autocast():
            for _ in range(calls):
                model(self.images[:batch])

    def cuda_peak_mb(self, cfg: Config) -> float:
        """Peak allocated memory of one training step above what was allocated before it."""
        self.sync()
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self.train_step(cfg)
        self.sync()
        return (torch.cuda.max_memory_allocated(self.device) - base) / 2**20


def side_by_side(configs: list[Config], measure: Callable[[Config], float], warmup: int, repeats: int,
                 samples: Samples, key: tuple[int, str]) -> None:
    """Every config once per round, starting one further along each round; warm-up rounds are dropped."""
    for r in range(warmup + repeats):
        for i in range(len(configs)):
            cfg = configs[(i + r) % len(configs)]
            value = measure(cfg)
            if r >= warmup:
                samples.setdefault((key[0], cfg, key[1]), []).append(value)


def load_average() -> float | None:
    """1-minute load average: other processes' work on the CPUs slows every figure (ratios less so)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def time_model(alias: str, groups: dict[int, list[Config]], args: argparse.Namespace, samples: Samples,
               loads: dict[int, float | None]) -> int:
    """Times every group of one model into `samples`; returns the model's image size."""
    runner = Runner(alias, args)
    repeats = args.repeats or spec_of(alias).repeats
    for g, group in groups.items():
        loads[g] = load_average()
        print(f"  {alias} (load {loads[g]}): "
              f"{', '.join(c.path + (f' {c.mode} p={c.prompts}' if c.prompts else '') for c in group)}",
              file=sys.stderr, flush=True)
        side_by_side(group, lambda c: runner.timed(lambda: runner.train_step(c)), args.warmup, repeats,
                     samples, (g, "train_step_s"))
        infer = [c for c in group if not c.path.endswith("-ckpt")]  # checkpointing changes nothing without grad
        side_by_side(infer, lambda c: args.batch / runner.timed(lambda: runner.infer(c, args.batch)),
                     args.warmup, repeats, samples, (g, "infer_ips"))
        side_by_side(infer, lambda c: B1_CALLS / runner.timed(lambda: runner.infer(c, 1, B1_CALLS)),
                     args.warmup, repeats, samples, (g, "infer_b1_ips"))
        if args.memory and args.device.startswith("cuda"):
            for cfg in group:
                samples[(g, cfg, "train_peak_mb")] = [runner.cuda_peak_mb(cfg)]
        for cfg in group:  # free this group's models (the floor is kept: it is in every group)
            if cfg.path != "floor":
                runner.models.pop(cfg, None)
    return runner.images.shape[-1]


def check_loader_data(source: str) -> None:
    """Fail before any timing, not after minutes of it, when --loader names data that cannot be loaded."""
    try:
        load_data(source, img_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    except DataError as err:
        raise SystemExit(f"vptune bench: --loader {source}: {err}")


def loader_throughput(source: str, img_size: int, batch: int, repeats: int) -> dict:
    """Images/s of the training data loader alone (decode or cached arrays, transform, vptune's collate):
    the median over `repeats` passes of the train split, after one untimed pass."""
    from torch.utils.data import DataLoader

    splits = load_data(source, img_size=img_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    loader = DataLoader(splits.train, batch_size=batch, shuffle=True, collate_fn=collate)
    speeds = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        images = sum(len(labels) for _, labels in loader)
        if r:
            speeds.append(images / (time.perf_counter() - start))
    return {"data": source, "img_size": img_size, "batch": batch, "images": len(splits.train),
            "img_per_s": statistics.median(speeds)}


# ---------------------------------------------------------------------------------- CPU memory (subprocess)
def _proc_status_mb(key: str) -> float:
    return int(re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M).group(1)) / 1024


def memory_worker(spec: dict) -> None:
    """Runs in a fresh process: prints {config: peak MB above the resident model and batch} as JSON."""
    args = argparse.Namespace(**spec["args"])
    if args.threads:
        torch.set_num_threads(args.threads)
    runner, result = Runner(spec["alias"], args), {}
    for fields in spec["configs"]:
        cfg = Config(**fields)
        runner.train_step(cfg, batch=1)  # first-call set-up (kernels, thread pools) is not the config's memory
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) to the current RSS
        before = _proc_status_mb("VmRSS")
        runner.train_step(cfg)
        result[json.dumps(fields)] = max(_proc_status_mb("VmHWM") - before, 0.0)
        runner.models.pop(cfg)
    print(json.dumps(result))


def cpu_memory(alias: str, configs: list[Config], args: argparse.Namespace) -> dict[Config, float]:
    runner_args = {k: getattr(args, k) for k in ("device", "dtype", "batch", "train_batch", "threads")}
    spec = {"alias": alias, "configs": [asdict(c) for c in configs], "args": runner_args}
    # A fixed mmap threshold turns off glibc's heap reuse of large freed blocks, so RSS follows live memory.
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-m", "vptune.bench", "--memory-worker", json.dumps(spec)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return {Config(**json.loads(k)): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


# ------------------------------------------------------------------------------------------------ reporting
def paired_ratio(samples: Samples, cfg: Config, base: Config, figure: str) -> float | None:
    """Median over the rounds that measured both of cfg's value divided by base's."""
    ratios = [x / b for (g, c, f), values in samples.items() if c == cfg and f == figure
              for x, b in zip(values, samples.get((g, base, figure), [])) if b]
    return statistics.median(ratios) if ratios else None


def make_rows(configs: list[Config], samples: Samples, args: argparse.Namespace) -> list[dict]:
    """One row per config: the median of each figure, then each figure as a ratio to the reference and floor."""
    rows = []
    for c in configs:
        row = {"model": c.model, "mode": c.mode, "prompts": c.prompts, "path": c.path,
               "train_batch": args.train_batch, "infer_batch": args.batch}
        for f in FIGURES:
            values = [v for (_, cfg, fig), vs in samples.items() if cfg == c and fig == f for v in vs]
            row[f] = statistics.median(values) if values else None
        bases = {"ref": Config(c.model, c.mode, c.prompts, "tokens") if c.path != "floor" else None,
                 "floor": Config(c.model, "", 0, "floor")}
        for name, base in bases.items():
            for f in FIGURES:
                row[f"{f}_vs_{name}"] = paired_ratio(samples, c, base, f) if base else None
        rows.append(row)
    return rows


def machine_info(device: str) -> dict:
    import timm

    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "device": device}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    """Markdown table: each figure, then its ratio to the reference path (x ref) and to the floor (x floor)."""
    head = ["model", "mode", "p", "path", "train s/step", "x ref", "x floor", "train peak MB", "x ref", "x floor",
            f"infer img/s (b{rows[0]['infer_batch']})", "x ref", "x floor", "infer img/s (b1)", "x ref", "x floor"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["mode"] or "-", str(r["prompts"]), r["path"]]
        for f, spec in zip(FIGURES, (".3f", ".0f", ".1f", ".1f")):
            cells += [_fmt(r[f], spec), _fmt(r[f"{f}_vs_ref"], ".2f"), _fmt(r[f"{f}_vs_floor"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_outputs(out: Path, rows: list[dict], meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "bench.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "bench.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (out / "bench.md").write_text(f"Machine: {json.dumps(meta['machine'])}\n\nSettings: {json.dumps(meta['settings'])}"
                                  f"\n\nLoad average (1 min) at group starts: {json.dumps(meta['load_avg_1min'])}"
                                  f"\n\n{table(rows)}\n"
                                  + "".join(f"\n{loader_line(x)}\n" for x in meta["loader"]))


# ------------------------------------------------------------------------------------------------------ CLI
def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(item) for item in text.split(",") if item.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vptune bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=_csv(str), help=f"aliases ({', '.join(MODELS)}) or timm ViT names "
                        f"(default: {','.join(DEFAULTS['models'])})")
    parser.add_argument("--prompts", type=_csv(int), help="prompt lengths p (default: 10,50,100,200)")
    parser.add_argument("--modes", type=_csv(str), help="deep,shallow (default: both; deep only for vit-b16)")
    parser.add_argument("--paths", type=_csv(str), default=list(PATHS[:4]),
                        help=f"from {', '.join(PATHS)} (default: {','.join(PATHS[:4])})")
    parser.add_argument("--batch", type=int, help="inference batch, default 32 (batch 1 is always measured too)")
    parser.add_argument("--train-batch", type=int, default=None,
                        help="training batch (default: --batch on CUDA, 8 on CPU where a ViT-B/16 step at 32 "
                             "takes ~40 s)")
    parser.add_argument("--repeats", type=int, help="timed repeats (default: 3; 1 for vit-b16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before the repeats (default: 1)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="float32 (default) or bfloat16 autocast")
    parser.add_argument("--loader", metavar="DATA", help="also time the data loader alone on this data set "
                        "(built-in name or path), at each model's image size")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak-memory measurement")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes (for tests)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"),
                        help="folder for bench.csv, bench.json, bench.md (default: runs/bench)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.train_batch is None:
        args.train_batch = args.batch if args.device.startswith("cuda") else 8
    bad = [p for p in args.paths if p not in PATHS] + [m for m in args.modes or () if m not in ("deep", "shallow")]
    if bad or "tokens" not in args.paths or "floor" not in args.paths:
        parser.error(f"--paths must include floor and tokens (the ratios' bases), from {PATHS}; "
                     f"--modes from deep, shallow; got {bad or args.paths}")
    return args


def spec_of(alias: str) -> ModelSpec:
    return MODELS.get(alias) or ModelSpec(alias, {})


def grid(args: argparse.Namespace, alias: str, first: int) -> dict[int, list[Config]]:
    """Groups measured side by side, numbered from `first`: the floor and every path at one (mode, p)."""
    floor = Config(alias, "", 0, "floor")
    groups = [[floor] + [Config(alias, mode, p, path) for path in args.paths if path != "floor"]
              for mode in args.modes or spec_of(alias).modes for p in args.prompts]
    return dict(enumerate(groups, start=first))


@dataclass
class Results:
    """Everything measured so far; `measure` adds to it model by model."""

    configs: list[Config] = field(default_factory=list)
    samples: Samples = field(default_factory=dict)
    loads: dict[int, float | None] = field(default_factory=dict)  # group -> 1-min load average at its start
    loaders: list[dict] = field(default_factory=list)  # `loader_throughput` results, one per image size

    def load_summary(self) -> dict | None:
        known = [x for x in self.loads.values() if x is not None]
        return {"min": min(known), "max": max(known), "per_group": self.loads} if known else None


def measure(args: argparse.Namespace, results: Results, started: float) -> None:
    """Every model's groups, timed side by side in this process, then CPU memory in a subprocess per model
    and the data loader alone; the outputs are rewritten after each model (a run that dies keeps those)."""
    for alias in args.models:
        groups = grid(args, alias, first=len(results.loads))
        model_configs = list(dict.fromkeys(c for group in groups.values() for c in group))
        results.configs += model_configs
        img_size = time_model(alias, groups, args, results.samples, results.loads)
        if args.memory and not args.device.startswith("cuda"):
            print(f"  {alias}: peak memory (one subprocess)", file=sys.stderr, flush=True)
            peaks = cpu_memory(alias, model_configs, args)
            for g, group in groups.items():
                results.samples.update({(g, c, "train_peak_mb"): [peaks[c]] for c in group})
        if args.loader and img_size not in [x["img_size"] for x in results.loaders]:
            print(f"  data loader alone: {args.loader} at {img_size} px", file=sys.stderr, flush=True)
            results.loaders.append(loader_throughput(args.loader, img_size, args.train_batch, repeats=3))
        write_results(args, results, started)


def write_results(args: argparse.Namespace, results: Results, started: float) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "memory_worker"}
    meta = {"machine": machine_info(args.device), "seconds": round(time.time() - started),
            "load_avg_1min": results.load_summary(), "settings": settings, "loader": results.loaders,
            "samples": [{"group": g, **asdict(c), "figure": f, "values": v}
                        for (g, c, f), v in results.samples.items()]}
    write_outputs(args.out, make_rows(results.configs, results.samples, args), meta)
    print(f"  wrote {args.out}/bench.csv, bench.json, bench.md ({meta['seconds']} s)", file=sys.stderr)


def loader_line(loader: dict) -> str:
    return (f"data loading alone ({loader['data']}, {loader['images']} training images at {loader['img_size']} px, "
            f"batch {loader['batch']}, no workers): {loader['img_per_s']:.0f} img/s")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        memory_worker(json.loads(args.memory_worker))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("vptune bench: --device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loader:
        check_loader_data(args.loader)
    results = Results()
    measure(args, results, started=time.time())
    print(table(make_rows(results.configs, results.samples, args)))
    for loader in results.loaders:
        print(loader_line(loader))
    load = results.load_summary()
    # The bench's own threads count in the load average: only load well beyond them is other processes' work.
    if load and load["max"] > 1.25 * torch.get_num_threads() and not args.device.startswith("cuda"):
        print(f"warning: the 1-min load average reached {load['max']} with {torch.get_num_threads()} torch threads "
              f"on {os.cpu_count()} CPUs: other processes competed for them; absolute figures suffer (ratios are "
              f"paired per round)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
