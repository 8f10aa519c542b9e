"""LoRA on the attention's qkv projection, through the PEFT library (an optional extra: vptune[lora])."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError
from ..model import adapter_for
from .base import GradientMethod, check_setting, register


@register
@dataclass(frozen=True)
class LoRA(GradientMethod):
    name = "lora"
    summary = "LoRA (PEFT) on every attention's q/k/v projection, rank --lora-rank (AdamW)"
    frozen_backbone = False  # the inserted adapters change what the blocks compute
    lora_rank: int = 8
    lora_alpha: int | None = None  # None: equal to the rank (scale 1)
    lora_dropout: float = 0.0

    def __post_init__(self) -> None:
        check_setting("lora_rank", self.lora_rank, lambda rank: rank >= 1, "a positive integer", whole=True)

    def adapt(self, backbone: nn.Module) -> None:
        try:
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError as err:
            raise ConfigError("method 'lora' needs the PEFT library: pip install 'vptune[lora]' "
                              "(or pip install peft)") from err
        try:
            targets = adapter_for(backbone).lora_targets()
        except ValueError as err:
            raise ConfigError(f"method 'lora': {err}") from err
        config = LoraConfig(r=self.lora_rank, lora_alpha=self.lora_alpha or self.lora_rank,
                            lora_dropout=self.lora_dropout, target_modules=targets)
        inject_adapter_in_model(config, backbone)  # adds trainable lora_A / lora_B beside each frozen projection
