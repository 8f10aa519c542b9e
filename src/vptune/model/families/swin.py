"""timm's Swin Transformer (`SwinTransformer`, `SwinTransformerV2`): prompts in windows, as the paper extends VPT
to hierarchical Transformers ("the prompts are attended within the local windows, but are ignored during patch
merging stages").

Semantics:
- Each block's p prompts are shared by every window of that block: a window attends over its own tokens plus the
  p prompts. Prompts get no relative-position bias and are never masked by the shifted-window mask (every window
  sees them).
- Where a prompt's outputs are needed (the reference "tokens" path, and shallow prompts carried to the next block),
  a prompt slot gets one output per window; the slot's output is their mean (as in the original code). Each image's
  windows average among themselves: prompts never mix images (the original's batch > 1 bug).
- Deep: a distinct prompt at every block, of that stage's width. Shallow (and "first k"): inserted at the first
  prompted block and carried through the blocks of its stage, then dropped at patch merging
  (`PromptConfig.merge="drop"`, the paper). `merge="tile"` is the original code's choice: the prompt slots go
  through the merge as four copies of themselves along channels (the merge's norm and reduction), and on.
- No [CLS]: the head reads the mean of the final stage's tokens after the final norm ("image-pool", the
  backbone's own pooling); "global-pool" includes the prompts' outputs (the original code's pool), "prompt-pool"
  reads them alone (both need prompts that reach the last block: deep, or merge="tile").
- Fast path: a prompt's keys and values do not depend on the image, so a block computes them once (per batch; per
  task at inference) and every window of every image shares them.
- Locations: prepend and concat-channel (the prompt in the patch embedding). "add" and "prepend-pixel" are not
  offered: their prompts have one width, and the stages do not.

Token layout in the prompted model: (B, [p prompt slots,] H * W, C), the block's grid flattened row by row (timm
keeps (B, H, W, C)). Patch merging belongs to the block before it: after the last block of a stage the output is
merged, so the tokens entering block i are at block i's grid and width.

SwinV2 differs in three places, all handled here: post-norm blocks (the norm after attention and MLP), cosine
attention with a learned per-head scale, and a continuous relative-position bias (an MLP of log coordinates).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.models.swin_transformer import SwinTransformer, SwinTransformerBlock
from timm.models.swin_transformer import WindowAttention as WindowAttentionV1
from timm.models.swin_transformer_v2 import SwinTransformerV2, SwinTransformerV2Block
from timm.models.swin_transformer_v2 import WindowAttention as WindowAttentionV2
from torch import nn

from ..attention import project_qkv
from .base import register_family
from .windows import GridAdapter, hide_prompts, partition, unpartition, window_qkv

KNOWN_BLOCKS = {SwinTransformerBlock: WindowAttentionV1, SwinTransformerV2Block: WindowAttentionV2}


@register_family
class SwinAdapter(GridAdapter):
    family = "swin"
    description = "timm SwinTransformer / SwinTransformerV2: windowed attention, patch merging, no [CLS]"
    timm_classes = (SwinTransformer, SwinTransformerV2)
    locations = ("prepend", "concat-channel")

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        self._blocks: list[nn.Module] = [block for stage in backbone.layers for block in stage.blocks]
        unknown = sorted({type(b).__name__ for b in self._blocks
                          if KNOWN_BLOCKS.get(type(b)) is not type(getattr(b, "attn", None))})
        if unknown:
            raise TypeError(f"vptune's Swin adapter knows timm's SwinTransformerBlock and SwinTransformerV2Block; "
                            f"this backbone has {unknown}")
        self._merge_after: dict[int, nn.Module] = {}  # last block of a stage -> the next stage's PatchMerging
        end = 0
        for stage in backbone.layers:
            if end and not isinstance(stage.downsample, nn.Identity):
                self._merge_after[end - 1] = stage.downsample
            end += len(stage.blocks)

    # ------------------------------------------------------------------------------------------- shape
    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def width_at(self, index: int) -> int:
        return self._blocks[index].norm1.normalized_shape[0]

    def merges_after(self, index: int) -> bool:
        return index in self._merge_after

    def kv_width(self, index: int) -> int:
        return 2 * self._blocks[index].attn.proj.in_features

    def attended_tokens(self, index: int) -> int:
        height, width = self._blocks[index].window_size
        return height * width

    def summary(self) -> str:
        depths = [len(stage.blocks) for stage in self.backbone.layers]
        widths = [self.width_at(sum(depths[:s])) for s in range(len(depths))]
        return (f"{self.family} ({type(self.backbone).__name__}): {self.depth} blocks in stages {depths}, widths "
                f"{widths}, patch {self.patch_size}, window {self._blocks[0].window_size}, no [CLS]")

    # -------------------------------------------------------------------------------------------- forward
    def embed(self, images: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        self.check_size(images)
        patches = self.backbone.patch_embed(images) if patches is None else patches  # (B, H, W, C)
        return patches.flatten(1, 2)

    def block(self, index: int, x: torch.Tensor, prompts: int = 0, extra_kv: None = None) -> torch.Tensor:
        """x (B, p + H * W, C), the p prompts as tokens (queries too) -> the block's output, merged when a stage
        ends here (the prompts through the merge as four copies each; the model drops them if merge is "drop")."""
        block = self._blocks[index]
        if not prompts:  # the frozen block as timm runs it
            return self._merge(index, block(self._grid(index, x)).flatten(1, 2), 0)
        image, prompt = _attention_half(block, self._grid(index, x[:, prompts:]), prompts=x[:, :prompts])
        return self._merge(index, _mlp_half(block, torch.cat([prompt, image.flatten(1, 2)], dim=1)), prompts)

    def supports_prefix(self, index: int) -> bool:
        return True  # every block type is checked at construction

    def prompt_kv(self, index: int, prompts: torch.Tensor) -> torch.Tensor:
        block = self._blocks[index]
        return project_qkv(block.attn, _before_attention(block, prompts), queries=0)[1]

    def prefix_block(self, index: int, x: torch.Tensor, prompt_kv: torch.Tensor | None, queries: int | None = None,
                     prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        block = self._blocks[index]
        image, _ = _attention_half(block, self._grid(index, x), prompt_kv=prompt_kv, prompt_mask=prompt_mask)
        return self._merge(index, _mlp_half(block, image.flatten(1, 2)), 0)

    def _grid(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        """Flat tokens (B, H * W, C) -> (B, H, W, C) on block `index`'s grid (the one timm built it for)."""
        height, width = self._blocks[index].input_resolution
        if tokens.shape[1] != height * width:
            raise ValueError(f"block {index} of this Swin backbone is built for a {height} x {width} grid, but these "
                             f"images give {tokens.shape[1]} tokens there; use the image size the backbone was "
                             f"created with ({self.img_size[0]} x {self.img_size[1]})")
        return tokens.unflatten(1, (height, width))

    def _merge(self, index: int, x: torch.Tensor, prompts: int) -> torch.Tensor:
        """After the last block of a stage: the next stage's patch merging on the image tokens, and on the prompt
        slots as four copies of each (a 2 x 2 patch of one token: channels tiled 4x through the merge)."""
        merge = self._merge_after.get(index)
        if merge is None:
            return x
        image = merge(self._grid(index, x[:, prompts:])).flatten(1, 2)
        if not prompts:
            return image
        tiles = x[:, :prompts, None, None, :].expand(-1, -1, 2, 2, -1).flatten(0, 1)  # (B * p, 2, 2, C)
        return torch.cat([merge(tiles).reshape(x.shape[0], prompts, -1), image], dim=1)

    def pool(self, x: torch.Tensor, pooling: str, prompt_outputs: torch.Tensor | None = None) -> torch.Tensor:
        """The final norm, then the mean of the image tokens (timm's own pooling), of the prompts' outputs, or of
        both."""
        if pooling in ("prompt-pool", "global-pool") and prompt_outputs is None:
            raise ValueError(f"pooling {pooling!r} reads the prompts' final outputs, but on this Swin backbone the "
                             f"prompts do not reach the last block (dropped at patch merging); prompt the last stage "
                             f"(deep), use merge 'tile', or pooling 'image-pool'")
        tokens = {"image-pool": lambda: x, "prompt-pool": lambda: prompt_outputs,
                  "global-pool": lambda: torch.cat([x, prompt_outputs], dim=1)}
        return self.backbone.norm(tokens[pooling]()).mean(dim=1)

    @property
    def final_grid(self) -> tuple[int, int]:
        return tuple(self._blocks[-1].input_resolution)

    @property
    def dense_stride(self) -> int:
        return self.patch_size[0] * 2 ** len(self._merge_after)  # each patch merging halves the grid

    def dense(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The last stage's tokens after the final norm, as a map (B, C, H / 32, W / 32): timm's `forward_features`
        in channels-first order (a head that upsamples 16x leaves the rest to the final resize)."""
        return self.backbone.norm(self._grid(self.depth - 1, x)).permute(0, 3, 1, 2)

    # ------------------------------------------------------------------------- what methods may tune
    def last_blocks(self, k: int) -> Sequence[nn.Module]:
        return [*self._blocks[-k:], self.backbone.norm]


def window_attention(block: nn.Module, image: torch.Tensor, prompts: torch.Tensor | None = None,
                     prompt_kv: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A Swin block's (shifted) window attention on image tokens (B, H, W, C), with prompts every window sees.

    prompts: (B or 1, p, C) prompt tokens (as they enter the attention) that also ask queries: their output,
    (B, p, C), is the mean of their outputs over each image's windows. prompt_kv: (B or 1, p, 2C) their keys|values
    alone (the fast path). prompt_mask: (B, p) bool, False for prompt rows an image must not see (mixed tasks).
    Returns the image tokens' output (B, H, W, C) and the prompts' (or None).
    """
    attn, window, shift = block.attn, block.window_size, block.shift_size
    batch, height, width, _ = image.shape
    if any(shift):
        image = torch.roll(image, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    # timm pads the (normed) tokens with zeros up to whole windows; the padding takes part as keys, as in timm
    windows = partition(image, window)  # (B, nW, A, C)
    num_windows, area = windows.shape[1:3]

    q, k, v = window_qkv(attn, windows, prompts, prompt_kv)  # (B, nW, heads, Q, hd), (B, nW, heads, p + A, hd)
    p = k.shape[3] - area
    padded = image.new_empty(1, -(-height // window[0]) * window[0], -(-width // window[1]) * window[1], 1)
    bias = _window_bias(block, padded, num_windows, area, p, queries=q.shape[3] - area)
    bias = hide_prompts(bias, prompt_mask, area)
    if isinstance(attn, WindowAttentionV2):  # cosine attention, a learned scale per head
        scale = torch.clamp(attn.logit_scale, max=math.log(1.0 / 0.01)).exp()
        q, k, softmax_scale = F.normalize(q, dim=-1) * scale, F.normalize(k, dim=-1), 1.0
    else:
        softmax_scale = attn.scale
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout, scale=softmax_scale)
    out = attn.proj_drop(attn.proj(out.transpose(2, 3).flatten(-2)))  # (B, nW, Q, C)

    prompt_out = out[:, :, :p].mean(dim=1) if prompts is not None else None
    out = unpartition(out[:, :, out.shape[2] - area:], window, (height, width))
    if any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out, prompt_out


def _window_bias(block: nn.Module, padded: torch.Tensor, num_windows: int, area: int, p: int,
                 queries: int) -> torch.Tensor:
    """The additive attention bias (nW, heads, queries + A, p + A): the relative-position bias and the shifted-
    window mask on the image rows and columns, zeros wherever a prompt is involved. padded: a tensor of the padded
    grid's shape (1, Hp, Wp, 1), from which a block without a fixed mask builds one."""
    attn = block.attn
    rel = _relative_position_bias(attn)  # (heads, A, A)
    bias = rel.new_zeros(num_windows, attn.num_heads, queries + area, p + area)
    bias[:, :, queries:, p:] = rel
    mask = block.get_attn_mask(padded) if getattr(block, "dynamic_mask", False) else block.attn_mask
    if mask is not None:  # (nW, A, A), 0 or -100
        bias[:, :, queries:, p:] += mask[:, None].to(bias.dtype)
    return bias


def _relative_position_bias(attn: nn.Module) -> torch.Tensor:
    """The window's relative-position bias (heads, A, A): Swin's table, or SwinV2's MLP of log coordinates."""
    if isinstance(attn, WindowAttentionV1):
        return attn._get_rel_pos_bias()[0]
    table = attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads)
    area = attn.window_size[0] * attn.window_size[1]
    bias = table[attn.relative_position_index.view(-1)].view(area, area, -1).permute(2, 0, 1)
    return 16 * torch.sigmoid(bias)


def _before_attention(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """What the attention gets: the tokens after the first norm (Swin), or the tokens themselves (SwinV2's
    post-norm block normalises the attention's output instead)."""
    return tokens if isinstance(block, SwinTransformerV2Block) else block.norm1(tokens)


def _attention_half(block: nn.Module, image: torch.Tensor, prompts: torch.Tensor | None = None,
                    prompt_kv: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The block's attention and residual on image tokens (B, H, W, C) and, given as tokens, the prompts (B, p, C)
    (or their keys|values alone): pre-norm (Swin) or post-norm (SwinV2)."""
    after = block.norm1 if isinstance(block, SwinTransformerV2Block) else (lambda t: t)
    out, prompt_out = window_attention(block, _before_attention(block, image),
                                       None if prompts is None else _before_attention(block, prompts),
                                       prompt_kv, prompt_mask)
    image = image + block.drop_path1(after(out))
    return image, None if prompts is None else prompts + block.drop_path1(after(prompt_out))


def _mlp_half(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's MLP and residual on every token (B, N, C): pre-norm (Swin) or post-norm (SwinV2)."""
    if isinstance(block, SwinTransformerV2Block):
        return x + block.drop_path2(block.norm2(block.mlp(x)))
    return x + block.drop_path2(block.mlp(block.norm2(x)))
