"""timm's `VisionTransformerSAM`: Segment Anything's image encoder (windowed attention in most blocks, global
attention in a few, decomposed relative positions, no [CLS], a convolutional neck).

Semantics, as for Swin's windows and a ViT's global blocks:
- A windowed block's p prompts are shared by every window: a window attends over its own tokens plus the prompts.
  A global block attends over every token plus the prompts. Prompts get no relative-position term, as keys or as
  queries (they have no position); they enter after the absolute position embedding, as in a ViT.
- Where a prompt's outputs are needed (the reference "tokens" path, shallow prompts carried on), a windowed
  block's prompt slot output is the mean of its outputs over the image's windows.
- Deep and shallow, prepend only ("add" and the pixel locations are not offered: SAM's tokens are a grid without
  prefix tokens, and its embedding is not timm's plain one).
- No [CLS]: the head reads the mean of the final tokens after the neck ("image-pool": the backbone's own pooling,
  timm's average over the neck's output: 256 channels for SAM-B). The neck is a convolution over the image grid,
  which has no place for prompts, so poolings that read the prompts' outputs are not offered.
- Fast path: prompt keys and values computed once per block and shared by every window of every image.

Token layout in the prompted model: (B, [p prompt slots,] H * W, C), the grid flattened row by row.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed_nhwc
from timm.models.vision_transformer_sam import Attention, Block, VisionTransformerSAM, get_decomposed_rel_pos_bias
from torch import nn

from .base import register_family
from .windows import GridAdapter, hide_prompts, partition, unpartition, window_qkv


@register_family
class SamAdapter(GridAdapter):
    family = "sam"
    description = "timm VisionTransformerSAM: Segment Anything's image encoder (windowed + global attention)"
    timm_classes = (VisionTransformerSAM,)
    locations = ("prepend",)

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__(backbone)
        unknown = sorted({type(b).__name__ for b in backbone.blocks
                          if type(b) is not Block or type(b.attn) is not Attention or b.attn.rope is not None})
        if unknown:
            raise TypeError(f"vptune's SAM adapter knows timm's SAM Block with relative or no positions in its "
                            f"attention (not rotary); this backbone has {unknown}")

    def width_at(self, index: int) -> int:
        return self.backbone.embed_dim

    def attended_tokens(self, index: int) -> int:
        window = self.blocks[index].window_size  # 0: a global block
        return min(window * window, self.num_patches) if window else self.num_patches

    def summary(self) -> str:
        windowed = sum(block.window_size > 0 for block in self.blocks)
        return (f"{self.family} ({type(self.backbone).__name__}): {self.depth} blocks ({windowed} windowed, window "
                f"{max(block.window_size for block in self.blocks)}), width {self.width_at(0)}, patch "
                f"{self.patch_size}, no [CLS], neck to {self.embed_dim} channels")

    # -------------------------------------------------------------------------------------------- forward
    def embed(self, images: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        bb = self.backbone
        self.check_size(images)
        x = bb.patch_embed(images) if patches is None else patches  # (B, H, W, C)
        if bb.pos_embed is not None:
            x = x + resample_abs_pos_embed_nhwc(bb.pos_embed, x.shape[1:3])
        return bb.norm_pre(bb.patch_drop(bb.pos_drop(x))).flatten(1, 2)

    def block(self, index: int, x: torch.Tensor, prompts: int = 0, extra_kv: None = None) -> torch.Tensor:
        block = self.blocks[index]
        if not prompts:  # the frozen block as timm runs it
            return block(self._grid(x)).flatten(1, 2)
        out, prompt_out = self._attention(block, block.norm1(self._grid(x[:, prompts:])),
                                          prompts=block.norm1(x[:, :prompts]))
        return _mlp(block, x + block.drop_path1(block.ls1(torch.cat([prompt_out, out.flatten(1, 2)], dim=1))))

    def supports_prefix(self, index: int) -> bool:
        return True  # every block type is checked at construction

    def kv_width(self, index: int) -> int:
        return 2 * self.blocks[index].attn.proj.in_features

    def prefix_block(self, index: int, x: torch.Tensor, prompt_kv: torch.Tensor | None, queries: int | None = None,
                     prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        block = self.blocks[index]
        out, _ = self._attention(block, block.norm1(self._grid(x)), prompt_kv=prompt_kv, prompt_mask=prompt_mask)
        return _mlp(block, x + block.drop_path1(block.ls1(out.flatten(1, 2))))

    def _grid(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.unflatten(1, tuple(self.backbone.patch_embed.grid_size))

    @staticmethod
    def _attention(block: nn.Module, image: torch.Tensor, prompts: torch.Tensor | None = None,
                   prompt_kv: torch.Tensor | None = None, prompt_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The block's attention on normed image tokens (B, H, W, C), in windows or over the whole grid, with
        prompts every window sees (as queries too, `prompts`; or keys/values alone, `prompt_kv`)."""
        window = (block.window_size, block.window_size) if block.window_size else tuple(image.shape[1:3])
        windows = partition(image, window)  # (B, nW, A, C); a global block: one window, the grid
        out, prompt_out = prompted_attention(block.attn, windows, window, prompts, prompt_kv, prompt_mask)
        return unpartition(out, window, tuple(image.shape[1:3])), prompt_out

    @property
    def poolings(self) -> tuple[str, ...]:
        return ("image-pool",)  # the neck is a convolution over the image grid: prompts have no place in it

    def pool(self, x: torch.Tensor, pooling: str, prompt_outputs: torch.Tensor | None = None) -> torch.Tensor:
        """The neck, then the mean of its output over the grid (timm's own pooling)."""
        return self.backbone.neck(self._grid(x).permute(0, 3, 1, 2)).mean(dim=(2, 3))

    @property
    def final_grid(self) -> tuple[int, int]:
        return tuple(self.backbone.patch_embed.grid_size)

    def dense(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The neck's output (B, 256, H / 16, W / 16): SAM's image embedding, timm's `forward_features`."""
        return self.backbone.neck(self._grid(x).permute(0, 3, 1, 2))

    # ------------------------------------------------------------------------- what methods may tune
    def last_blocks(self, k: int):
        return [*self.blocks[-k:], self.backbone.neck]


def prompted_attention(attn: nn.Module, windows: torch.Tensor, window: tuple[int, int],
                       prompts: torch.Tensor | None = None, prompt_kv: torch.Tensor | None = None,
                       prompt_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """SAM's attention within windows (B, nW, A, C) of a (wh, ww) grid each, plus p prompts shared by all windows:
    decomposed relative positions between image tokens only. Returns the windows' outputs and, when `prompts`
    asked queries, the prompts' outputs averaged over each image's windows (B, p, C)."""
    batch, num_windows, area, _ = windows.shape
    heads = attn.num_heads
    q, k, v = window_qkv(attn, windows, prompts, prompt_kv)  # (B, nW, heads, Q, hd), (B, nW, heads, p + A, hd)
    q, k, p = attn.q_norm(q), attn.k_norm(k), k.shape[3] - area
    queries = q.shape[3] - area  # prompt queries (tokens path) come first
    bias = q.new_zeros(batch, num_windows, heads, q.shape[3], p + area)
    if attn.use_rel_pos:
        image_q = q[:, :, :, queries:].flatten(0, 2)  # (B * nW * heads, A, hd), as timm lays it out
        rel = get_decomposed_rel_pos_bias(image_q, attn.rel_pos_h, attn.rel_pos_w, window, window)
        bias[:, :, :, queries:, p:] = rel.view(batch, num_windows, heads, area, area)
    bias = hide_prompts(bias, prompt_mask, area)
    dropout = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout, scale=attn.scale)
    out = attn.proj_drop(attn.proj(out.transpose(2, 3).flatten(-2)))  # (B, nW, Q, C)
    prompt_out = out[:, :, :queries].mean(dim=1) if prompts is not None else None
    return out[:, :, queries:], prompt_out


def _mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
