"""Visual Prompt Tuning (Jia et al. 2022): prompts + head train, the backbone never changes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..model import PromptConfig
from .base import Method, register

# Base rates (scaled by batch / 256, as in the original): at batch 32 the prompts get 0.0625, the head 0.0025.
# Chosen by benchmarks/lr_sweep.py on animal-mnist with the default backbone (docs/lr-sweep.md). The head needs a
# small SGD rate because the backbone's [CLS] has a norm near 48; prompt lr 0.5 with head lr 0.08 diverged.
PROMPT_LR = 0.5
HEAD_LR = 0.02


@dataclass(frozen=True)
class _VPT(Method):
    default_lr = PROMPT_LR
    default_head_lr = HEAD_LR

    @property
    def mode(self) -> str:
        return self.name.removeprefix("vpt-")

    def prompt_config(self, prompt: PromptConfig) -> PromptConfig:
        return dataclasses.replace(prompt, mode=self.mode)  # the rest of the prompt settings are the user's


@register
@dataclass(frozen=True)
class VPTDeep(_VPT):
    name = "vpt-deep"
    summary = "VPT-deep: a distinct set of prompt tokens at the input of every prompted block"


@register
@dataclass(frozen=True)
class VPTShallow(_VPT):
    name = "vpt-shallow"
    summary = "VPT-shallow: prompt tokens inserted once, at the first prompted block, carried through the rest"
