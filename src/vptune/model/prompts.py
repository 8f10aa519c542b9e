"""The learned prompt tokens: parameters, initialisation, optional projection, prompt dropout."""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import PromptConfig


class Prompts(nn.Module):
    """One learned prompt per prompted block.

    `tokens` has shape (num_blocks, length, prompt_dim): length is `num_tokens` for "prepend" and the
    backbone's sequence length for "add". `forward` returns the prompts as the blocks consume them:
    projected to the backbone width and, in training with dropout > 0, with an independent dropout
    mask per image (as the original does). Without dropout the batch dimension stays 1 so callers can
    broadcast, which is what lets the prefix path compute prompt keys/values once per batch.
    """

    def __init__(self, config: PromptConfig, blocks: tuple[int, ...], length: int, embed_dim: int,
                 patch_area: int) -> None:
        super().__init__()
        self.blocks = blocks
        prompt_dim = config.project or embed_dim
        self.tokens = nn.Parameter(torch.empty(len(blocks), length, prompt_dim))
        self.proj: nn.Module = nn.Linear(prompt_dim, embed_dim) if config.project else nn.Identity()
        self.dropout = nn.Dropout(config.dropout)
        self.reset_parameters(config, patch_area)

    def reset_parameters(self, config: PromptConfig, patch_area: int) -> None:
        if config.init in ("xavier", "patches"):  # "patches" is set from data later (PromptedViT)
            # The paper's rule: Xavier-uniform as for the patch projection (fan_in = 3 * ph * pw).
            bound = math.sqrt(6.0 / (3 * patch_area + self.tokens.shape[-1]))
            nn.init.uniform_(self.tokens, -bound, bound)
        elif config.init == "normal":
            nn.init.normal_(self.tokens, std=config.init_std)
        else:
            nn.init.zeros_(self.tokens)
        if isinstance(self.proj, nn.Linear):
            nn.init.kaiming_normal_(self.proj.weight, a=0, mode="fan_out")
            nn.init.zeros_(self.proj.bias)

    @property
    def per_image(self) -> bool:
        """True when each image sees its own prompt (training with prompt dropout)."""
        return self.training and self.dropout.p > 0

    def forward(self, batch_size: int) -> torch.Tensor:
        """Prompts for every prompted block: (num_blocks, B or 1, length, embed_dim)."""
        prompts = self.proj(self.tokens).unsqueeze(1)
        if self.per_image:
            prompts = self.dropout(prompts.expand(-1, batch_size, -1, -1))
        return prompts
