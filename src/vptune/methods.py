"""Tuning methods: VPT and the baselines users compare it with.

Every method is the same `PromptedViT` (frozen backbone + linear head on [CLS]); methods differ only in
the prompt config and in which backbone tensors they unfreeze. So one training loop, one checkpoint
format and one evaluation serve them all.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Sequence

from torch import nn

from .checkpoint import backbone_fingerprint
from .config import PromptConfig
from .model import PromptedViT

METHODS = ("vpt-deep", "vpt-shallow", "linear", "full", "bias", "partial-k", "lora")
FROZEN_BACKBONE = ("vpt-deep", "vpt-shallow", "linear")  # methods that leave every backbone weight as it was
_PARTIAL = re.compile(r"^partial-(\d+)$")


def check_method(method: str) -> str:
    if method not in METHODS and not _PARTIAL.match(method):
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)} "
                         f"(partial-k with a number, e.g. partial-2)")
    return method


def prompt_config_for(method: str, prompt: PromptConfig) -> PromptConfig:
    """VPT methods keep the user's prompt settings (with their mode); the baselines use no prompt."""
    if method == "vpt-deep":
        return replace(prompt, mode="deep")
    if method == "vpt-shallow":
        return replace(prompt, mode="shallow")
    return replace(prompt, num_tokens=0)


def build_model(method: str, backbone: nn.Module, prompt: PromptConfig, num_classes: int, *,
                class_names: Sequence[str] | None = None, lora: dict[str, Any] | None = None) -> PromptedViT:
    """The model for `method`, with exactly that method's parameters trainable."""
    check_method(method)
    backbone_fingerprint(backbone)  # remember the base weights before a method starts changing them
    model = PromptedViT(backbone, prompt_config_for(method, prompt), num_classes, class_names=class_names)
    adapt_backbone(backbone, method, lora)  # after the wrapper froze everything
    return model


def adapt_backbone(backbone: nn.Module, method: str, lora: dict[str, Any] | None = None) -> None:
    """Unfreeze (or, for LoRA, add) the backbone tensors a method tunes. Used at training and at loading."""
    backbone.requires_grad_(False)
    if method == "full":
        backbone.requires_grad_(True)
    elif method == "bias":
        for name, param in backbone.named_parameters():
            param.requires_grad_(name.endswith(".bias"))
    elif (match := _PARTIAL.match(method)) is not None:
        k = int(match.group(1))
        if not 1 <= k <= len(backbone.blocks):
            raise ValueError(f"method {method!r}: k must be in 1..{len(backbone.blocks)} (the backbone's depth)")
        for block in backbone.blocks[-k:]:
            block.requires_grad_(True)
        backbone.norm.requires_grad_(True)
    elif method == "lora":
        _inject_lora(backbone, **(lora or {}))


def _inject_lora(backbone: nn.Module, rank: int = 8, alpha: int = 8, dropout: float = 0.0) -> None:
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as err:
        raise ImportError("method 'lora' needs the PEFT library: pip install 'vptune[lora]' (or pip install peft)") from err
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=["qkv"])
    inject_adapter_in_model(config, backbone)  # adds trainable lora_A / lora_B beside each frozen attn.qkv


def optimizer_groups(model: PromptedViT, lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """Parameter groups: the head gets its own lr (the backbone's [CLS] norm can be large); the rest the main lr."""
    head = list(model.head.parameters())
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("head.")]
    groups = [{"params": head, "lr": head_lr, "weight_decay": weight_decay, "name": "head"}]
    if rest:
        groups.insert(0, {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "tuned"})
    return groups
