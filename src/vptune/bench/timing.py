"""Timing: one model's `Runner` (its backbone, batches, built configs, the timed calls), configs timed side by
side in rounds, torch.compile's settling and caches, and the `Results` gathered."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import timm
import torch
import torch.nn.functional as F

from ..devices import autocast, maybe_compile
from ..methods import method_of
from ..model import PromptedModel, adapter_for
from .settings import BenchSettings
from .grid import B1_CALLS, NUM_CLASSES, SETTLE_ROUNDS, Config, spec_of


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


class Runner:
    """One model's backbone and batches on one device, and the timed operations on them."""

    def __init__(self, alias: str, args: BenchSettings) -> None:
        spec = spec_of(alias)
        torch.manual_seed(0)
        self.device, self.args = args.device, args
        given = {"img_size": args.img_size} if getattr(args, "img_size", None) else {}  # --img-size over the spec's
        self.backbone = timm.create_model(spec.timm_name, pretrained=False, num_classes=0, **{**spec.kwargs, **given})
        self.backbone = self.backbone.to(self.device).eval()
        size = adapter_for(self.backbone).img_size
        self.images = torch.randn(max(args.batch, args.train_batch), 3, *size, device=self.device)
        self.labels = torch.randint(0, NUM_CLASSES, (args.train_batch,), device=self.device)
        self.masks = torch.randint(0, NUM_CLASSES, (args.train_batch, *size), device=self.device)  # segmenters
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
        labels = (self.masks if cfg.head else self.labels)[:batch]
        with autocast(self.device, cfg.precision):
            loss = F.cross_entropy(built.forward(self.images[:batch]), labels)
        extra = method_of(built.model).training_loss(built.model, labels)  # DA-VPT's metric loss
        loss = loss if extra is None else loss + extra
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
