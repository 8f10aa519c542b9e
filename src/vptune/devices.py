"""Devices by name, checked before any work: what `--device` accepts on every command (`auto` by default)."""
from __future__ import annotations

import torch

from .errors import ConfigError

DEVICE_TYPES = ("cpu", "cuda", "mps")
AUTO = "auto"


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
