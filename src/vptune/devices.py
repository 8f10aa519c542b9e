"""Where and how a model runs, checked before any work: the device (`--device`, `auto` by default), the precision
(`--precision`, `auto` by default), `--compile`, and how many data-loading workers keep that device fed.

Every command takes the same names, and the library calls (`train`, `evaluate`, `Predictor`, `MultiTaskModel`)
take the same values, so a rule lives here once:
- device auto: CUDA when torch sees a GPU, else Apple's MPS, else the CPU;
- precision auto: bf16 autocast on a GPU that has bf16 units, fp32 elsewhere (a CPU without bf16 units runs bf16
  slower than fp32: docs/performance.md); the trained tensors always stay fp32 (autocast computes in 16 bits,
  the optimizer updates fp32 masters), and fp16 adds a gradient scaler (`training/loop.py`);
- compile: `torch.compile` of the forward, falling back to eager with one log line where it cannot compile.
"""
from __future__ import annotations

import logging
import os
import platform
import re
from contextlib import AbstractContextManager, nullcontext
from typing import Callable

import torch

from .errors import ConfigError, brief

log = logging.getLogger("vptune")

DEVICE_TYPES = ("cpu", "cuda", "mps")
AUTO = "auto"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
MAX_AUTO_WORKERS = 8  # loader processes per training process: enough to decode and resize for one GPU


def resolve_device(name: str) -> str:
    """`auto`: CUDA when torch sees a GPU, else Apple's MPS, else the CPU; any other name checked and returned."""
    if name == AUTO:
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    check_device(name)
    return name


def check_device(name: str) -> None:
    """A device torch knows, of a kind vptune runs on, that this machine has: cpu, cuda, cuda:N, mps."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: this machine has no CUDA GPU that torch can use; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use cuda:0..")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r}: Apple's MPS is not available here; use --device cpu")


def check_precision(name: str) -> None:
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")


def resolve_precision(name: str, device: str) -> str:
    """`auto`: bf16 on a CUDA GPU with bf16 units, fp32 elsewhere; fp16 on the CPU only where torch's CPU autocast
    has it. `device` is a resolved device name."""
    check_precision(name)
    kind = torch.device(device).type
    if name == AUTO:
        return "bf16" if kind == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"precision bf16: the GPU {torch.cuda.get_device_name(device)!r} has no bf16 support; use "
                          f"--precision fp16 (with a gradient scaler) or fp32")
    if name != "fp32" and not torch.amp.is_autocast_available(kind):
        raise ConfigError(f"precision {name}: torch {torch.__version__} has no autocast on {kind}; use --precision "
                          f"fp32")
    return name


def autocast(device: str | torch.device, precision: str) -> AbstractContextManager:
    """The forward's context: autocast to the precision's 16-bit type, or nothing for fp32 (a resolved precision)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def under_autocast(forward: Callable[[torch.Tensor], torch.Tensor], device: str | torch.device,
                   precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """`forward` run in `precision`'s autocast (its outputs then scored in fp32 by the caller)."""
    def run(inputs: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            return forward(inputs)
    return run


def maybe_compile(fn: Callable[[torch.Tensor], torch.Tensor], enabled: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """`torch.compile(fn)` when enabled, run eagerly after one log line wherever compiling fails (no C++ compiler,
    an unsupported platform or Python): the same numbers, without the speed-up."""
    if not enabled:
        return fn
    return _CompiledOrEager(fn)


class _CompiledOrEager:
    """Calls the compiled function; if the first compile fails, logs why once and calls `fn` from then on."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.fn, self.failed = fn, False
        try:
            self.compiled = torch.compile(fn)
        except Exception as err:  # torch.compile itself refuses (e.g. a Python version it does not support)
            self._fall_back(err)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.fn(inputs)
        try:
            return self.compiled(inputs)
        except Exception as err:
            if not _is_compile_failure(err):
                raise
            self._fall_back(err)
            return self.fn(inputs)

    def _fall_back(self, err: Exception) -> None:
        self.failed = True
        log.warning(f"vptune: --compile: torch.compile failed here ({brief(err)}); running eagerly")


def _is_compile_failure(err: Exception) -> bool:
    """An error of torch's compiler stack (dynamo, inductor, the C++ toolchain), not of the model's own code."""
    module = type(err).__module__ or ""
    return module.startswith(("torch._dynamo", "torch._inductor", "torch._subclasses")) or \
        "compile" in type(err).__name__.lower()


def describe_machine(device: str) -> str:
    """What a timing was measured on, in words: the GPU's name, or the CPU's model and the cores torch uses."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as info:
            names = re.findall(r"^model name\s*:\s*(.+)$", info.read(), re.M)
        if names:
            return names[0].strip()
    return platform.processor() or platform.machine()


def resolve_workers(name: int | str, device: str, local_world_size: int = 1) -> int:
    """Loader worker processes: `auto` is none on the CPU (images are decoded before training starts, and worker
    processes would take cores from the model's threads) and, on a GPU, the cores this process may use, less one
    for itself, at most 8; a number is taken as it is."""
    if name != AUTO:
        return int(name)
    if torch.device(device).type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(MAX_AUTO_WORKERS, cores // max(1, local_world_size) - 1))


__all__ = ["AUTO", "PRECISIONS", "autocast", "check_device", "check_precision", "cpu_name", "describe_machine",
           "maybe_compile", "resolve_device", "resolve_precision", "resolve_workers"]
