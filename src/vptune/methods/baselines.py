"""The baselines VPT is compared with in the paper: linear probe, full fine-tuning, bias tuning, partial-K."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..model import adapter_for

from ..errors import ConfigError
from .base import GradientMethod, Method, register

@register
@dataclass(frozen=True)
class Linear(Method):
    """Fitted, not trained by SGD: logistic regression on the frozen features to convergence (L-BFGS), its L2
    strength chosen on val (`vptune.training.linear_probe`); the lr, epoch and optimizer settings do not apply."""

    name = "linear"
    summary = "linear probe: converged logistic regression on frozen [CLS] features, L2 chosen on val"
    head_only = True


@dataclass(frozen=True)
class _Tuned(GradientMethod):
    """Methods that move backbone weights: the tuned tensors at `default_lr`, the shared head at its own."""

    frozen_backbone = False
    default_lr = 1e-3


@register
@dataclass(frozen=True)
class Full(_Tuned):
    name = "full"
    summary = "full fine-tuning: every backbone weight trains (AdamW)"
    # Every weight moving at the others' 1e-3 (x batch/256) undoes the pretraining: against 1e-4, val top-1 fell 1.5
    # to 12 points on three of four tasks (rose 1.5 on digits), test top-1 on all four (docs/results.md).
    default_lr = 1e-4

    def adapt(self, backbone: nn.Module) -> None:
        backbone.requires_grad_(True)


@register
@dataclass(frozen=True)
class Bias(_Tuned):
    name = "bias"
    summary = "bias tuning: every bias of the backbone trains (AdamW)"

    def adapt(self, backbone: nn.Module) -> None:
        for name, param in backbone.named_parameters():
            param.requires_grad_(name.endswith(".bias"))


@register
@dataclass(frozen=True)
class Partial(_Tuned):
    name = "partial-K"
    summary = "partial-K: the last K blocks and the final norm train, e.g. partial-2 (AdamW)"
    pattern = r"partial-(\d+)"
    k: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"method partial-K needs a block count K >= 1, e.g. partial-2; got K={self.k!r}")

    @property
    def label(self) -> str:
        return f"partial-{self.k}"

    def adapt(self, backbone: nn.Module) -> None:
        adapter = adapter_for(backbone)
        if self.k > adapter.depth:
            raise ConfigError(f"method {self.label!r}: K must be in 1..{adapter.depth} (the backbone's depth)")
        for module in adapter.last_blocks(self.k):
            module.requires_grad_(True)
