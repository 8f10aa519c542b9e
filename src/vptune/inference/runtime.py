"""Where and how inference runs: `--device` and `--precision` resolved once (the rules live in `vptune.devices`),
logged once, and the flags' help text that `eval`, `predict` and `serve` share."""
from __future__ import annotations

import logging

import torch

from ..devices import PRECISIONS, resolve_device, resolve_precision

log = logging.getLogger("vptune")

DEVICE_HELP = "where the model runs: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps"
_NAMED = [p for p in PRECISIONS if p != "auto"]
PRECISION_HELP = (f"autocast of the forward: auto (bf16 on a GPU that supports it, fp32 elsewhere), "
                  f"{', '.join(_NAMED[:-1])} or {_NAMED[-1]}; the weights stay fp32")
COMPILE_HELP = "run the forward through torch.compile (falls back to eager, with one log line, where it cannot)"


def resolve_runtime(device: str | torch.device, precision: str) -> tuple[str, str]:
    """(device, precision) with `auto` resolved; a ConfigError naming the problem (e.g. cuda on a machine without
    one, an unknown precision) before any model or data is loaded."""
    device = resolve_device(str(device))
    return device, resolve_precision(precision, device)


def log_runtime(what: str, device: str | torch.device, precision: str, compile: bool = False) -> None:
    """One INFO line saying where `what` runs, so a run on the wrong device (auto falling back to the CPU) shows."""
    log.info(f"{what}: device {device}, precision {precision}{', compiled' if compile else ''}")
