"""`vptune bench`: speed and memory of VPT's fast "prefix" path against the reference and the frozen backbone.

For each model, prompt mode and prompt length p it measures, side by side in one process (the configs of a
group take turns within every repeat, so load from other processes hits them alike), after warm-up, the
median of several repeats of:
- training step time: forward + cross-entropy + backward (to the prompts and head) + SGD-momentum step (fp16:
  through a gradient scaler, as a training loop would);
- peak memory of one training step, above the resident model and batch. CUDA: `max_memory_allocated`.
  CPU: each model's configs run in a fresh subprocess whose allocator returns freed blocks to the OS at once
  (MALLOC_MMAP_THRESHOLD_), reading the kernel's resident-set high-water mark (reset per config);
- inference throughput, images/s at batch `--batch` and at batch 1 (eval + no_grad, prompt K/V cached);
for every precision of `--precisions` (fp32, or autocast to bf16 / fp16) and, with `--compile`, eagerly and
compiled (`torch.compile`); a group holds the floor and every path in every such variant. Each figure is also
given as a ratio to the reference "tokens" path and to the frozen backbone ("floor", no prompt) of the same
variant, and to the same config in fp32 eager: the median over repeats of the ratio within each round, so
that changes in the machine's load between rounds cancel. Random weights (`pretrained=False`): speed does not
depend on the values. With `--loader DATA` it also times the training data loader alone (images/s) and puts it
beside the model's training images/s at the same batch, to show which of the two limits training.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import timm
import torch
import torch.nn.functional as F

from .data import DataError, collate, load_data, read_data
from .devices import AUTO, autocast, cpu_name, maybe_compile, resolve_device, resolve_precision, resolve_workers
from .errors import ConfigError
from .model import PromptConfig, PromptedModel, adapter_for, family_of, supported_families


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
    # timm's Eva family: rotary positions, 4 register tokens, LayerScale (DINOv3-S/16's shape, random weights)
    "dinov3-s16": ModelSpec("vit_small_patch16_dinov3", {"img_size": 224}),
    "tiny": ModelSpec("vit_tiny_patch16_224", {"img_size": 32, "depth": 2, "embed_dim": 32, "num_heads": 2}, 1),
}
# floor: no prompt (linear probe); tokens: the reference; prefix: the fast path; -ckpt: gradient checkpointing
PATHS = ("floor", "tokens", "prefix", "prefix-ckpt", "tokens-ckpt")
PRECISIONS = ("fp32", "bf16", "fp16")  # fp32, or autocast to a 16-bit type (vptune.devices)
FIGURES = ("train_step_s", "train_peak_mb", "infer_ips", "infer_b1_ips")
BASES = ("ref", "floor", "fp32_eager")  # what each figure is also given as a ratio to (see `bases_of`)
# Defaults of the full grid and of --quick (explicit options win over both).
DEFAULTS = {"models": ["vit-s14", "vit-b16"], "prompts": [10, 50, 100, 200], "batch": 32, "threads": None}
QUICK = {"models": ["tiny"], "prompts": [2, 4], "batch": 4, "train_batch": 2, "repeats": 1, "threads": 1}
NUM_CLASSES = 100
B1_CALLS = 8  # batch-1 inference: images per timed repeat
SETTLE_ROUNDS = 5  # at most, untimed rounds of compiled configs before a figure's timed rounds (settle_compiled)


@dataclass(frozen=True)
class Config:
    """One measured model: the floor has mode "" and prompts 0. `precision` is fp32 or the autocast type;
    `compiled` runs the forward through `torch.compile`."""

    model: str
    mode: str
    prompts: int
    path: str
    precision: str = "fp32"
    compiled: bool = False

    def build(self, backbone: torch.nn.Module, device: str) -> PromptedModel:
        prompt = PromptConfig(num_tokens=self.prompts, mode=self.mode or "deep")
        path = "prefix" if self.path == "floor" else self.path.split("-")[0]
        model = PromptedModel(backbone, prompt, NUM_CLASSES, path=path, grad_checkpointing=self.path.endswith("-ckpt"))
        return model.to(device)

    def label(self) -> str:
        where = f" {self.mode} p={self.prompts}" if self.prompts else ""
        return f"{self.path}{where} {self.precision}{' compiled' if self.compiled else ''}"


def bases_of(cfg: Config) -> dict[str, Config | None]:
    """The configs each of cfg's figures is divided by: the reference path and the floor in the same precision
    and compile setting, and the same config in fp32 eager (what the 16-bit and compiled variants gain)."""
    return {"ref": replace(cfg, path="tokens") if cfg.path != "floor" else None,
            "floor": replace(cfg, mode="", prompts=0, path="floor"),
            "fp32_eager": replace(cfg, precision="fp32", compiled=False)}


@dataclass
class Built:
    """A config's model, the forward the bench calls (the model itself or its compiled form), its optimizer,
    and fp16's gradient scaler."""

    model: PromptedModel
    forward: Callable[[torch.Tensor], torch.Tensor]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None

    @property
    def compile_failed(self) -> bool:
        # maybe_compile's wrapper sets `failed` when it fell back to eager (its log line says why)
        return bool(getattr(self.forward, "failed", False))


# (group, config, figure) -> one value per timed round; the configs of a group share their rounds
Samples = dict[tuple[int, Config, str], list[float]]


# ------------------------------------------------------------------------------------------------ measuring
class Runner:
    """One model's backbone and batches on one device, and the timed operations on them."""

    def __init__(self, alias: str, args: argparse.Namespace) -> None:
        spec = spec_of(alias)
        torch.manual_seed(0)
        self.device, self.args = args.device, args
        self.backbone = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **spec.kwargs)
        self.backbone = self.backbone.to(self.device).eval()
        size = adapter_for(self.backbone).img_size
        self.images = torch.randn(max(args.batch, args.train_batch), 3, *size, device=self.device)
        self.labels = torch.randint(0, NUM_CLASSES, (args.train_batch,), device=self.device)
        self.models: dict[Config, Built] = {}

    def model(self, cfg: Config) -> Built:
        if cfg not in self.models:
            model = cfg.build(self.backbone, self.device)
            optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1e-3, momentum=0.9)
            # fp16 gradients underflow without loss scaling; a real fp16 training loop pays for the scaler
            scaler = torch.amp.GradScaler(self.device_type) if cfg.precision == "fp16" else None
            self.models[cfg] = Built(model, maybe_compile(model, cfg.compiled), optimizer, scaler)
        return self.models[cfg]

    @property
    def device_type(self) -> str:
        return torch.device(self.device).type

    def sync(self) -> None:
        if self.device_type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def train_step(self, cfg: Config, batch: int | None = None) -> None:
        built = self.model(cfg)
        batch = batch or self.args.train_batch
        built.model.train()
        built.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, cfg.precision):
            loss = F.cross_entropy(built.forward(self.images[:batch]), self.labels[:batch])
        if built.scaler is None:
            loss.backward()
            built.optimizer.step()
        else:
            built.scaler.scale(loss).backward()
            built.scaler.step(built.optimizer)
            built.scaler.update()

    def infer(self, cfg: Config, batch: int, calls: int = 1) -> None:
        built = self.model(cfg)
        built.model.eval()
        with torch.no_grad(), autocast(self.device, cfg.precision):
            for _ in range(calls):
                built.forward(self.images[:batch])

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


def settle_compiled(runner: Runner, configs: list[Config], call: Callable[[Config], object], phase: str,
                    compile_s: dict[tuple[Config, str], float]) -> None:
    """Untimed rounds of the compiled configs before a figure's rounds, whatever --warmup says, until a round
    compiles nothing. A call compiles (or recompiles) on a new batch size and on train or eval; and the configs'
    models share one forward code, so one config's compiled code can be picked up by another, which then compiles
    the rest of its call. The seconds of these rounds, the first time a config meets `phase`, are its compile time."""
    compiled = [c for c in configs if c.compiled]
    first_time = {c for c in compiled if (c, phase) not in compile_s}
    for _ in range(SETTLE_ROUNDS):
        frames = compiled_frames()
        for cfg in compiled:
            seconds = runner.timed(lambda: call(cfg))
            if cfg in first_time:
                compile_s[(cfg, phase)] = compile_s.get((cfg, phase), 0.0) + seconds
        if frames is not None and compiled_frames() == frames:
            break


def dynamo():
    """torch.compile's front end, imported when first needed (it is slow to import)."""
    from torch import _dynamo

    return _dynamo


def compiled_frames() -> int | None:
    """How many frames torch.compile has compiled so far in this process (None where torch does not say)."""
    try:
        from torch._dynamo.utils import counters  # private, but the only count of compiles torch keeps
    except ImportError:
        return None
    return counters["frames"]["total"]


@contextmanager
def compiler_settings(configs_at_once: int) -> Iterator[None]:
    """Room for `configs_at_once` compiled configs in torch.compile's caches, emptied before and after. Their
    models share one forward code, and dynamo gives a code 8 compiled versions by default, then silently runs it
    eagerly: the later configs' "compiled" figures would be eager ones. Each config needs a few versions (train,
    eval, batch 1, cache empty or filled); a limit still hit is made an error, so the config is reported as
    compile failed. Emptied: only these configs count, and no compiled code outlives them in this process."""
    if not configs_at_once:
        yield
        return
    limit = max(8, 16 * configs_at_once)
    dynamo().reset()
    try:
        with dynamo().config.patch(recompile_limit=limit, accumulated_recompile_limit=max(256, 4 * limit),
                                   fail_on_recompile_limit_hit=True):
            yield
    finally:
        dynamo().reset()


def load_average() -> float | None:
    """1-minute load average: other processes' work on the CPUs slows every figure (ratios less so)."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def time_group(runner: Runner, g: int, group: list[Config], repeats: int, results: Results) -> None:
    """Times one group's configs side by side into `results` (every figure but CPU memory)."""
    args, samples = runner.args, results.samples
    results.loads[g] = load_average()
    print(f"  {group[0].model} (load {results.loads[g]}): {', '.join(c.label() for c in group)}",
          file=sys.stderr, flush=True)
    infer = [c for c in group if not c.path.endswith("-ckpt")]  # checkpointing changes nothing without grad
    # (figure, its configs, the timed call, images per call: None for a figure in seconds, else images/s)
    phases = [("train_step_s", group, lambda c: runner.train_step(c), None),
              ("infer_ips", infer, lambda c: runner.infer(c, args.batch), args.batch),
              ("infer_b1_ips", infer, lambda c: runner.infer(c, 1, B1_CALLS), B1_CALLS)]
    for figure, configs, call, images in phases:
        settle_compiled(runner, configs, call, figure, results.compile_s)

        def value(cfg: Config) -> float:
            seconds = runner.timed(lambda: call(cfg))
            return seconds if images is None else images / seconds

        side_by_side(configs, value, args.warmup, repeats, samples, (g, figure))
    if args.memory and runner.device_type == "cuda":
        # back in training mode after inference: a compiled config must not count a recompile as its memory
        settle_compiled(runner, group, phases[0][2], "train_step_s", results.compile_s)
        for cfg in group:
            samples[(g, cfg, "train_peak_mb")] = [runner.cuda_peak_mb(cfg)]
    for cfg in group:
        if cfg.compiled:
            results.compile_failed[cfg] = runner.models[cfg].compile_failed
        if cfg.path != "floor":  # free this group's models (the floors are kept: they are in every group)
            runner.models.pop(cfg, None)


def check_loader_data(source: str) -> None:
    """Fail before any timing, not after minutes of it, when --loader names data that cannot be loaded."""
    try:
        read_data(source)
    except DataError as err:
        raise SystemExit(f"vptune bench: --loader {source}: {err}")


def loader_throughput(source: str, img_size: int, batch: int, repeats: int, workers: int, pin: bool) -> dict:
    """Images/s of the training data loader alone (decode or cached arrays, transform, vptune's collate), set up
    as training sets it up (`workers` processes kept across passes, pinned memory for a GPU): the median over
    `repeats` passes of the train split, after one untimed pass (which also starts the workers)."""
    from torch.utils.data import DataLoader

    splits = load_data(source, img_size=img_size, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    loader = DataLoader(splits.train, batch_size=batch, shuffle=True, collate_fn=collate, num_workers=workers,
                        pin_memory=pin, persistent_workers=workers > 0)
    speeds = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        images = sum(len(labels) for _, labels in loader)
        if r:
            speeds.append(images / (time.perf_counter() - start))
    return {"data": source, "img_size": img_size, "batch": batch, "images": len(splits.train),
            "num_workers": workers, "pin_memory": pin, "img_per_s": statistics.median(speeds), "models": []}


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
        with compiler_settings(1 if cfg.compiled else 0):
            # First-call set-up (kernels, thread pools) is not the config's memory. A compiled config sets up at
            # the measured batch, so that the measured step does not compile a graph for a new batch size.
            runner.train_step(cfg, batch=None if cfg.compiled else 1)
            Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark (VmHWM) to the current RSS
            before = _proc_status_mb("VmRSS")
            runner.train_step(cfg)
        result[json.dumps(fields)] = max(_proc_status_mb("VmHWM") - before, 0.0)
        runner.models.pop(cfg)
    print(json.dumps(result))


def cpu_memory(alias: str, configs: list[Config], args: argparse.Namespace) -> dict[Config, float]:
    runner_args = {k: getattr(args, k) for k in ("device", "batch", "train_batch", "threads")}
    # Each config's precision and compile setting travel in its own fields (Config's dataclass fields).
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


def make_rows(results: Results, args: argparse.Namespace) -> list[dict]:
    """One row per config: the median of each figure, then each figure as a ratio to each base (`bases_of`),
    then the seconds its compiled variant spent in untimed first calls and whether compiling failed."""
    rows = []
    for c in results.configs:
        row = {"model": c.model, "mode": c.mode, "prompts": c.prompts, "path": c.path, "precision": c.precision,
               "compiled": c.compiled, "train_batch": args.train_batch, "infer_batch": args.batch}
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


def machine_info(args: argparse.Namespace) -> dict:
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
    bases = BASES if variants > 1 else BASES[:2]
    ratio_heads = [{"ref": "x ref", "floor": "x floor", "fp32_eager": "x fp32 eager"}[b] for b in bases]
    figure_heads = ["train s/step", "train peak MB", f"infer img/s (b{rows[0]['infer_batch']})", "infer img/s (b1)"]
    head = ["model", "mode", "p", "path", "precision", "compiled"]
    for name in figure_heads:
        head += [name, *ratio_heads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], r["mode"] or "-", str(r["prompts"]), r["path"], r["precision"], _compiled_cell(r)]
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


# ------------------------------------------------------------------------------------------------------ CLI
def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    return lambda text: [kind(item.strip()) for item in text.split(",") if item.strip()]


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
                        help="training batch (default: --batch on CUDA, 8 elsewhere, where a ViT-B/16 step at 32 "
                             "takes ~40 s on 2 CPU cores)")
    parser.add_argument("--repeats", type=int, help="timed repeats (default: 3; 1 for vit-b16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds before the repeats (default: 1)")
    parser.add_argument("--device", default=AUTO, help="auto (default: CUDA, else Apple's MPS, else the CPU), cpu, "
                        "cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--precisions", type=_csv(str), help=f"comma list from {', '.join(PRECISIONS)}: fp32, or "
                        "autocast to bf16 / fp16 (fp16 training with a gradient scaler), each measured side by side "
                        "(default: fp32,bf16 on a GPU with bf16, else fp32)")
    parser.add_argument("--compile", action="store_true", help="also measure every config compiled "
                        "(torch.compile; eager where compiling fails, with a log line), side by side with eager; "
                        "compile time is not timed but reported (compile_s)")
    parser.add_argument("--loader", metavar="DATA", help="also time the data loader alone on this data set "
                        "(built-in name or path), at each model's image size, beside the model's training img/s")
    parser.add_argument("--num-workers", default=AUTO, help="the --loader's worker processes: auto (default: as "
                        "training, none on the CPU, the free cores up to 8 on a GPU) or a number")
    parser.add_argument("--no-memory", dest="memory", action="store_false", help="skip peak-memory measurement")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes (for tests)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"),
                        help="folder for bench.csv, bench.json, bench.md (default: runs/bench)")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    bad_paths = [p for p in args.paths if p not in PATHS]
    if bad_paths or "tokens" not in args.paths or "floor" not in args.paths:
        parser.error(f"--paths must include floor and tokens (the ratios' bases), from {', '.join(PATHS)}; got "
                     f"{','.join(args.paths) or 'nothing'}")
    bad_modes = [m for m in args.modes or () if m not in ("deep", "shallow")]
    if bad_modes or args.modes == []:
        parser.error(f"--modes must be a comma list from deep, shallow; got {','.join(args.modes) or 'nothing'}")
    try:
        check_sizes(args)
        resolve_settings(args)
    except ConfigError as err:  # one line naming the mistake, as every vptune command prints it
        raise SystemExit(f"vptune bench: {err}")
    return args


def check_sizes(args: argparse.Namespace) -> None:
    """The counts and lists that are not the device's: ConfigError names a wrong one before anything is built."""
    for flag, value, least in (("--batch", args.batch, 1), ("--train-batch", args.train_batch, 1),
                               ("--repeats", args.repeats, 1), ("--warmup", args.warmup, 0),
                               ("--threads", args.threads, 1)):
        if value is not None and value < least:
            raise ConfigError(f"{flag} must be a whole number >= {least}, got {value}")
    if not args.prompts or min(args.prompts) < 1:
        raise ConfigError(f"--prompts must be a comma list of prompt lengths >= 1, got "
                          f"{','.join(map(str, args.prompts)) or 'nothing'}")
    unknown = [m for m in args.models if m not in MODELS and not timm.is_model(m)]
    if unknown or not args.models:
        raise ConfigError(f"--models: {','.join(unknown) or 'nothing'}: give aliases ({', '.join(MODELS)}) or timm "
                          f"model names (timm.list_models('vit_*'))")
    unsupported = [m for m in args.models if m not in MODELS and not _has_class_token_and_adapter(m)]
    if unsupported:
        raise ConfigError(f"--models: {','.join(unsupported)}: the bench needs a timm model with a class token of a "
                          f"family vptune prompts ({supported_families()})")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(f"--out {args.out} is a file; give a folder for bench.csv, bench.json and bench.md")


def _has_class_token_and_adapter(name: str) -> bool:
    with torch.device("meta"):  # the architecture without allocating its weights
        model = timm.create_model(name, pretrained=False, num_classes=0)
    return family_of(model) is not None and adapter_for(model).has_class_token


def resolve_settings(args: argparse.Namespace) -> None:
    """--device, --precisions, --num-workers and --train-batch, which depend on the device, checked and resolved
    in place (ConfigError names a wrong one)."""
    args.device = resolve_device(args.device)
    if args.precisions is None:  # bf16 where vptune's `auto` would train in it (a GPU with bf16 units)
        args.precisions = list(dict.fromkeys(["fp32", resolve_precision(AUTO, args.device)]))
    unknown = [p for p in args.precisions if p not in PRECISIONS]
    if unknown or not args.precisions:
        raise ConfigError(f"--precisions must be a comma list from {', '.join(PRECISIONS)}, got "
                          f"{','.join(unknown) or 'nothing'}")
    args.precisions = list(dict.fromkeys(resolve_precision(p, args.device) for p in args.precisions))
    if args.num_workers != AUTO and not str(args.num_workers).isdigit():
        raise ConfigError(f"--num-workers must be auto or a whole number >= 0, got {args.num_workers!r}")
    args.num_workers = resolve_workers(args.num_workers, args.device)
    if args.train_batch is None:
        args.train_batch = args.batch if args.device.startswith("cuda") else 8


def spec_of(alias: str) -> ModelSpec:
    return MODELS.get(alias) or ModelSpec(alias, {})


def variants(args: argparse.Namespace) -> list[tuple[str, bool]]:
    """(precision, compiled) pairs measured: every precision eagerly, and compiled too with --compile."""
    return [(p, compiled) for compiled in ((False, True) if args.compile else (False,)) for p in args.precisions]


def grid(args: argparse.Namespace, alias: str, first: int) -> dict[int, list[Config]]:
    """Groups measured side by side, numbered from `first`: at one (mode, p), the floor and every path, each in
    every variant (the variants of one path next to each other, as the table lists them)."""
    kinds = variants(args)
    floors = [Config(alias, "", 0, "floor", p, c) for p, c in kinds]
    groups = [floors + [Config(alias, mode, n, path, p, c) for path in args.paths if path != "floor" for p, c in kinds]
              for mode in args.modes or spec_of(alias).modes for n in args.prompts]
    return dict(enumerate(groups, start=first))


@dataclass
class Results:
    """Everything measured so far; `measure` adds to it group by group."""

    configs: list[Config] = field(default_factory=list)
    samples: Samples = field(default_factory=dict)
    loads: dict[int, float | None] = field(default_factory=dict)  # group -> 1-min load average at its start
    loaders: list[dict] = field(default_factory=list)  # `loader_throughput` results, one per image size
    compile_s: dict[tuple[Config, str], float] = field(default_factory=dict)  # (config, figure) -> first calls
    compile_failed: dict[Config, bool] = field(default_factory=dict)  # compiled configs that fell back to eager

    def load_summary(self) -> dict | None:
        known = [x for x in self.loads.values() if x is not None]
        return {"min": min(known), "max": max(known), "per_group": self.loads} if known else None


def measure(args: argparse.Namespace, results: Results, started: float) -> None:
    """Every model's groups, timed side by side in this process, then CPU memory in a subprocess per model
    and the data loader alone; the outputs are rewritten after each group (a run that is stopped keeps those)."""
    for alias in args.models:
        groups = grid(args, alias, first=len(results.loads))
        runner, repeats = Runner(alias, args), args.repeats or spec_of(alias).repeats
        for g, group in groups.items():
            results.configs += [c for c in group if c not in results.configs]
            with compiler_settings(sum(c.compiled for c in group)):
                time_group(runner, g, group, repeats, results)
            write_results(args, results, started)
        img_size = runner.images.shape[-1]
        del runner  # its models and batches: the memory subprocess and the loader do not need them
        if args.memory and torch.device(args.device).type != "cuda":
            print(f"  {alias}: peak memory (one subprocess)", file=sys.stderr, flush=True)
            model_configs = list(dict.fromkeys(c for group in groups.values() for c in group))
            peaks = cpu_memory(alias, model_configs, args)
            for g, group in groups.items():
                results.samples.update({(g, c, "train_peak_mb"): [peaks[c]] for c in group})
        if args.loader:
            time_loader(args, results, alias, img_size)
        write_results(args, results, started)


def time_loader(args: argparse.Namespace, results: Results, alias: str, img_size: int) -> None:
    """The data loader alone at this model's image size (once per size: models of one size share it)."""
    same_size = [x for x in results.loaders if x["img_size"] == img_size]
    if not same_size:
        print(f"  data loader alone: {args.loader} at {img_size} px, {args.num_workers} workers", file=sys.stderr,
              flush=True)
        pin = torch.device(args.device).type == "cuda"  # as training loads for a GPU
        same_size = [loader_throughput(args.loader, img_size, args.train_batch, 3, args.num_workers, pin)]
        results.loaders += same_size
    same_size[0]["models"].append(alias)


def write_results(args: argparse.Namespace, results: Results, started: float) -> None:
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "memory_worker"}
    meta = {"machine": machine_info(args), "seconds": round(time.time() - started),
            "load_avg_1min": results.load_summary(), "settings": settings, "loader": results.loaders,
            "samples": [{"group": g, **asdict(c), "figure": f, "values": v}
                        for (g, c, f), v in results.samples.items()]}
    write_outputs(args.out, make_rows(results, args), meta)
    print(f"  wrote {args.out}/bench.csv, bench.json, bench.md ({meta['seconds']} s)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_worker:
        memory_worker(json.loads(args.memory_worker))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.loader:
        check_loader_data(args.loader)
    results = Results()
    measure(args, results, started=time.time())
    rows = make_rows(results, args)
    print(table(rows))
    for loader in results.loaders:
        print("\n".join(loader_lines(loader, rows)))
    failed = [c.label() for c, bad in results.compile_failed.items() if bad]
    if failed:
        print(f"warning: torch.compile failed for {', '.join(failed)}: their 'compiled' figures are eager "
              f"ones, from the first call that failed on (the log above says why)", file=sys.stderr)
    load = results.load_summary()
    # The bench's own threads count in the load average: only load well beyond them is other processes' work.
    if load and load["max"] > 1.25 * torch.get_num_threads() and not args.device.startswith("cuda"):
        print(f"warning: the 1-min load average reached {load['max']} with {torch.get_num_threads()} torch threads "
              f"on {os.cpu_count()} CPUs: other processes competed for them; absolute figures suffer (ratios are "
              f"paired per round)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
