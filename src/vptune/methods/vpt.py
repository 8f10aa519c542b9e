"""Visual Prompt Tuning (Jia et al. 2022): prompts + head train, the backbone never changes."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..model import PromptConfig
from .base import GradientMethod, check_setting, register

# The default recipe, chosen in docs/recipe.md on the three built-in tasks and checked on hold-out tasks: the
# original's SGD (prompt lr 0.5, head lr 0.02 on raw features) diverged on a small low-variety task, because the
# backbone's [CLS] has a large offset and scale that set the head's stable lr, and the prompts' gradient scale
# differs by task. The shared head (`GradientMethod`: standardised input, started at the linear probe) removes the
# first; AdamW's per-parameter steps the second; and starting the prompts as the backbone's own patch tokens (not
# noise) keeps the features the probe was fitted on. Base lr, scaled by batch / 256: 1.25e-3 at batch 32.
LR = 1e-2


@dataclass(frozen=True)
class _VPT(GradientMethod):
    default_lr = LR
    prompt_init = "patches"

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


# VFPT (Zeng et al., NeurIPS 2024): VPT-deep whose prompts enter partly through a 2-D Fourier transform. The share
# varies by task in the paper; half is its middle value and the default here.
FOURIER_SHARE = 0.5


@register
@dataclass(frozen=True)
class VFPT(_VPT):
    name = "vfpt"
    summary = "VFPT: VPT-deep with a share (--fourier-share, default 0.5) of each block's prompt tokens through a " \
              "2-D FFT (real part); no extra parameters"
    fourier_share: float = FOURIER_SHARE
    # the paper's init: Xavier-uniform. Patch prototypes have a token's scale, and the unnormalised transform would
    # multiply it by about sqrt(p * width) (the real part of a DFT is not invertible, so they cannot be undone)
    prompt_init = "xavier"

    def __post_init__(self) -> None:
        check_setting("fourier_share", self.fourier_share, lambda share: 0 < share <= 1,
                      "a number above 0 and at most 1 (the share of each block's prompt tokens through the Fourier "
                      "transform)")

    @property
    def mode(self) -> str:
        return "deep"

    def prompt_config(self, prompt: PromptConfig) -> PromptConfig:
        return dataclasses.replace(prompt, mode="deep", fourier=float(self.fourier_share))


@register
@dataclass(frozen=True)
class GatedVPT(_VPT):
    """Gated prompt tuning (Yoo et al., ICML 2023), made for self-supervised backbones (MAE, MoCo v3; the default
    backbone is self-supervised DINOv2): VPT-shallow whose prompt slots leave each block as g * the block's output
    + (1 - g) * its input, one learned gate per block. Its learnable attention temperatures are not included."""

    name = "gated-vpt"
    summary = "gated VPT: VPT-shallow with a learned gate per block on how far it changes the prompts"

    @property
    def mode(self) -> str:
        return "shallow"

    def prompt_config(self, prompt: PromptConfig) -> PromptConfig:
        return dataclasses.replace(prompt, mode="shallow", gated=True)


# E2VPT (Han et al., ICCV 2023): VPT-deep plus learned keys and values in every prompted block's attention. Its
# paper tunes the key-value prompt length per task (1 to 10 for ViT-B); 5 is in the middle.
KV_TOKENS = 5


@register
@dataclass(frozen=True)
class E2VPT(_VPT):
    """E2VPT's prompts: VPT-deep's tokens and `kv_tokens` learned key-value prompts per block, and its pruning:
    with `prune_tokens` (a share of each block's prompt tokens) or `prune_segments` (a share of the kept tokens'
    segments) above 0, a first run trains every prompt, the least important go (`vptune.model.pruning`), and the
    kept ones are rewound to their initial values and trained again: twice the training time, for a smaller task.
    Off by default: the paper searches the shares per task, and their gain is size, not accuracy."""

    name = "e2vpt"
    summary = "E2VPT: VPT-deep plus --kv-tokens (default 5) learned keys and values in every block's attention " \
              "(pruning: --prune-tokens, --prune-segments)"
    kv_tokens: int = KV_TOKENS
    prune_tokens: float = 0.0
    prune_segments: float = 0.0

    def __post_init__(self) -> None:
        check_setting("kv_tokens", self.kv_tokens, lambda count: count >= 1,
                      "a whole number >= 1 (learned keys and values per block)", whole=True)
        for name in ("prune_tokens", "prune_segments"):
            check_setting(name, getattr(self, name), lambda share: 0 <= share < 1,
                          f"a number from 0 (no pruning) to below 1 (the share of prompt {name.removeprefix('prune_')} "
                          f"pruned)")

    @property
    def prunes(self) -> bool:
        return bool(self.prune_tokens or self.prune_segments)

    @property
    def mode(self) -> str:
        return "deep"

    def prompt_config(self, prompt: PromptConfig) -> PromptConfig:
        return dataclasses.replace(prompt, mode="deep", kv_tokens=self.kv_tokens)

    def without_pruning(self) -> "E2VPT":
        """The same method with every prompt kept: the first run of a pruning, whose prompts are scored."""
        return dataclasses.replace(self, prune_tokens=0.0, prune_segments=0.0)
