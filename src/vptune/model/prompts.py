"""The learned prompts: parameters, initialisation, optional projection, prompt dropout."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .config import PIXEL_LOCATIONS, PromptConfig

# Gated prompts start with every gate at sigmoid(-10) ~ 5e-5: the prompts first pass the blocks almost unchanged
# (the gated prompt tuning paper's prior), and each gate opens as far as its block helps.
GATE_START = 10.0


class Prompts(nn.Module):
    """One learned prompt per prompted block (or one shared by all of them, `PromptConfig.shared`).

    `tokens` has shape (sets, length, prompt_dim), sets = 1 when shared, else one per prompted block (on a
    hierarchical backbone whose prompted blocks differ in width, a list of (length, width_i), one per block). What a row
    is depends on the location: "prepend": p tokens (prompt_dim = the backbone's width, or `project`); "add": one
    vector per existing token position; "prepend-pixel": p pixel patches, flattened (3 * patch_h * patch_w);
    "concat-channel": p image channels, flattened (H * W), with `channel_weight` (width, p, patch_h, patch_w), the
    patch embedding's new input weights for them.

    `forward` returns every prompted block's prompt as stored (projected, in training with dropout > 0 with an
    independent mask per image); the model maps pixel prompts to tokens. Without dropout the batch dimension stays 1
    so callers can broadcast, which is what lets the prefix path compute prompt keys/values once per batch.
    """

    def __init__(self, config: PromptConfig, blocks: tuple[int, ...], length: int, prompt_dim: int | Sequence[int],
                 embed_dim: int, patch_size: tuple[int, int], depth: int | None = None, kv_width: int = 0) -> None:
        super().__init__()
        self.blocks = blocks
        self.location = config.location
        sets = 1 if config.shared else len(blocks)
        dims = [prompt_dim] * sets if isinstance(prompt_dim, int) else list(prompt_dim)
        if len(dims) != sets:
            raise ValueError(f"Prompts: {sets} prompt set(s) but {len(dims)} widths")
        if len(set(dims)) == 1:
            self.tokens: nn.Parameter | nn.ParameterList = nn.Parameter(torch.empty(sets, length, dims[0]))
        else:  # a hierarchical backbone's blocks differ in width (Swin): one tensor per prompted block
            self.tokens = nn.ParameterList([nn.Parameter(torch.empty(length, dim)) for dim in dims])
        self.proj: nn.Module = nn.Linear(dims[0], embed_dim) if config.project else nn.Identity()
        self.channel_weight = nn.Parameter(torch.zeros(embed_dim, length, *patch_size)) \
            if config.location == "concat-channel" else None
        self.dropout = nn.Dropout(config.dropout)
        self.fourier_tokens = math.floor(config.fourier * length + 0.5)  # VFPT: these first tokens go through the FFT
        # E2VPT's key-value prompts: (sets, kv_tokens, keys|values width), learned directly in the attention's space
        self.kv = nn.Parameter(torch.empty(sets, config.kv_tokens, kv_width)) if config.kv_tokens else None
        # gated prompts: one gate logit per block from the prompted one to the last (`gate`)
        self.gate_logits = nn.Parameter(torch.full((depth - blocks[0],), -GATE_START)) \
            if config.gated and depth is not None else None
        # E2VPT's segment-wise pruning: which segments of each token's width are kept (1) or held at zero (0)
        if config.segments and (self.ragged or config.segments > dims[0]):
            raise ValueError(f"PromptConfig.segments={config.segments} cuts each prompt token's width into segments; "
                             f"it needs prompt blocks of one width of at least {config.segments}, got widths "
                             f"{sorted(set(dims))}")
        self.register_buffer("segment_mask", torch.ones(sets, length, config.segments) if config.segments else None)
        self.reset_parameters(config, patch_size[0] * patch_size[1])

    def gate(self, block: int) -> torch.Tensor:
        """Block `block`'s gate g in (0, 1): how far that block may change the prompt slots passing through it."""
        return self.gate_logits[block - self.blocks[0]].sigmoid()

    @property
    def ragged(self) -> bool:
        """True when the prompted blocks' widths differ (then `tokens` holds one tensor per block)."""
        return isinstance(self.tokens, nn.ParameterList)

    @property
    def device(self) -> torch.device:
        return self.rows()[0].device

    def rows(self) -> list[torch.Tensor]:
        """Each prompt set as stored, (length, width): views of `tokens` (set them in place with `copy_`)."""
        return list(self.tokens)

    def reset_parameters(self, config: PromptConfig, patch_area: int) -> None:
        for tensor in (self.tokens if self.ragged else [self.tokens]):
            _init_tokens(tensor, config, self.location, patch_area)
        if self.kv is not None:  # at the scale of a key or value of a token at the Xavier prompts' scale
            nn.init.uniform_(self.kv, -math.sqrt(6.0 / (patch_area * 3 + self.kv.shape[-1])),
                             math.sqrt(6.0 / (patch_area * 3 + self.kv.shape[-1])))
        if isinstance(self.proj, nn.Linear):
            nn.init.kaiming_normal_(self.proj.weight, a=0, mode="fan_out")
            nn.init.zeros_(self.proj.bias)
        if self.channel_weight is not None:
            nn.init.zeros_(self.channel_weight)  # the model starts as the pretrained one; the weights then learn

    @property
    def per_image(self) -> bool:
        """True when each image sees its own prompt (training with prompt dropout)."""
        return self.training and self.dropout.p > 0

    def row(self, block: int) -> int:
        """The row of `tokens` that holds `block`'s prompt."""
        return 0 if len(self.tokens) == 1 else self.blocks.index(block)

    def forward(self, batch_size: int) -> torch.Tensor | list[torch.Tensor]:
        """Prompts for every prompted block: (num_blocks, B or 1, length, dim); a list of (B or 1, length, dim_i),
        one per block, when the widths differ (`ragged`)."""
        if self.ragged:
            rows = [self.proj(row).unsqueeze(0) for row in self.tokens]
            rows = [self.dropout(row.expand(batch_size, -1, -1)) for row in rows] if self.per_image else rows
            return [self._fourier(row) for row in rows]
        tokens = self.tokens if self.segment_mask is None else self.tokens * self.width_mask()  # E2VPT's pruning
        prompts = self.proj(tokens).unsqueeze(1).expand(len(self.blocks), -1, -1, -1)
        if self.per_image:
            prompts = self.dropout(prompts.expand(-1, batch_size, -1, -1))
        return self._fourier(prompts)

    def width_mask(self) -> torch.Tensor:
        """`segment_mask` (sets, length, segments) spread over each token's width: (sets, length, width)."""
        sizes = segment_sizes(self.tokens.shape[-1], self.segment_mask.shape[-1])
        return self.segment_mask.repeat_interleave(torch.tensor(sizes, device=self.segment_mask.device), dim=-1)

    def _fourier(self, prompts: torch.Tensor) -> torch.Tensor:
        """VFPT's Fourier prompts: the first `fourier_tokens` tokens of each prompt (.., p, d) become the real part
        of their 2-D discrete Fourier transform, over the width and then over the tokens (a fixed linear map of the
        learned tokens: no parameters, and the fast path applies as for any prompt tokens)."""
        k = self.fourier_tokens
        if not k:
            return prompts
        tokens = prompts[..., :k, :]
        tokens = tokens.float() if tokens.dtype in (torch.float16, torch.bfloat16) else tokens  # FFTs in 32/64 bits
        spectrum = torch.fft.fft(torch.fft.fft(tokens, dim=-1), dim=-2).real
        return torch.cat([spectrum.to(prompts.dtype), prompts[..., k:, :]], dim=-2)


def segment_sizes(width: int, segments: int) -> list[int]:
    """The widths of `segments` consecutive segments of a token `width` wide (as equal as can be, larger first)."""
    return [len(part) for part in torch.arange(width).tensor_split(segments)]


def _init_tokens(row: torch.Tensor, config: PromptConfig, location: str, patch_area: int) -> None:
    """Initialise prompt tokens (.., length, width) in place, by `config.init`."""
    if config.init in ("xavier", "patches", "cls") and location in PIXEL_LOCATIONS:
        nn.init.normal_(row)  # pixels of a normalised image have unit variance
    elif config.init in ("xavier", "patches", "cls"):  # "patches" and "cls" are set from data later
        # The paper's rule: Xavier-uniform as for the patch projection (fan_in = 3 * ph * pw).
        bound = math.sqrt(6.0 / (3 * patch_area + row.shape[-1]))
        nn.init.uniform_(row, -bound, bound)
    elif config.init == "normal":
        nn.init.normal_(row, std=config.init_std)
    else:
        nn.init.zeros_(row)
