"""Tuning methods, one registry: VPT (deep, shallow), the follow-ups (E2VPT, VFPT, gated VPT, DA-VPT) and the
baselines (linear, full, bias, partial-K, LoRA).

    method = get_method("vpt-deep")             # or "partial-2", get_method("lora", lora_rank=4)
    model = build_model(method, backbone, PromptConfig(num_tokens=10), num_classes=5)
"""
from . import vpt  # noqa: F401, I001  (importing a method's module registers it; VPT first in --help)
from . import baselines, da_vpt, lora  # noqa: F401
from .base import (HEAD_LR, REGISTRY, Method, build_model, get_method, method_from_dict, method_names, method_of,
                   method_summaries, optimizer_groups, register)

METHODS = tuple(method_names())

__all__ = ["HEAD_LR", "METHODS", "REGISTRY", "Method", "build_model", "get_method", "method_from_dict", "method_names",
           "method_of", "method_summaries", "optimizer_groups", "register"]
