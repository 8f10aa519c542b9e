"""`--num-tokens auto`: the prompt length in proportion to the image tokens an attention sees, within a budget.

VPT's prompts are extra keys and values among the image tokens: what they can change in an attention grows with
their share of its keys. p = 10 on the default ViT-S/14 at 112 px (64 patch tokens) is what docs/recipe.md's
hold-out tasks were won with; at 224 px (256 patches) the same 10 are a quarter of that share, and p = 40, the same
share, was ahead on all three hold-out tasks at seed 0 (docs/recipe.md, "224 px"); on the tuning tasks it was not
(-0.6, -3.3, +1.0 points), so p = 10 stays the default and this is the option. The rule: p = 10 per 64 image tokens
one attention sees (every patch in a global block, one window's worth in a windowed block of Swin or SAM), capped so
the prompts stay within 1% of the backbone's weights, the size of task file VPT promises (p = 40 on ViT-S at 224 px
is 0.85%; the cap holds p at 47 there at 448 px, where the share would ask for 160).
"""
from __future__ import annotations

import dataclasses
import math
import statistics

from torch import nn

from .config import PromptConfig
from .families import adapter_for

PROMPTS_PER_64_TOKENS = 10
MAX_SHARE_OF_BACKBONE = 0.01


def auto_num_tokens(backbone: nn.Module, prompt: PromptConfig) -> int:
    """p for `prompt`'s blocks on `backbone` at the input size it is built for (`prompt.num_tokens` is ignored)."""
    adapter = adapter_for(backbone)
    # one token stands in for the length being chosen, so the blocks resolve (0 would mean no prompt at all)
    blocks = dataclasses.replace(prompt, num_tokens=1).resolve_layers(adapter.depth)
    tokens = statistics.median(adapter.attended_tokens(index) for index in blocks)  # most blocks' attention
    by_share = max(1, math.floor(PROMPTS_PER_64_TOKENS * tokens / 64 + 0.5))  # halves up (round() goes to even)
    width_per_token = adapter.width_at(blocks[0]) if prompt.shared else sum(adapter.width_at(i) for i in blocks)
    by_budget = max(1, int(MAX_SHARE_OF_BACKBONE * adapter.num_parameters() / width_per_token))
    return min(by_share, by_budget)
