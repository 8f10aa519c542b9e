"""timm's `Eva`: DINOv3, EVA-02, Meta's Perception Encoder (PE), timm's RoPE ViTs, and any other `Eva`.

What sets the family apart: rotary position embeddings (RoPE, "cat", "mixed", "dinov3" kinds), register tokens,
SwiGLU MLPs, LayerScale as `gamma_1`/`gamma_2`, q and v biases without a key bias, optional grouped-query K/V heads
(`AttentionRope`) and images of any size (`dynamic_img_size`).

Prompts are prefix tokens like [CLS] and the registers: the attention rotates the patch tokens only, so a prompt
has no position, rotary or absolute, and the patch tokens keep exactly the positions the frozen model gives them.
In the reference path the rotary table gets identity rows (sin 0, cos 1) for the prompt slots, so timm's own block
runs the prompted sequence unchanged; the fast path leaves the prompt keys unrotated.
"""
from __future__ import annotations

from math import isqrt, prod

import torch
from timm.layers import AttentionRope
from timm.models.eva import Eva, EvaAttention, EvaBlock

from ..attention import prefix_attention
from .base import BackboneAdapter, register_family


@register_family
class EvaAdapter(BackboneAdapter):
    family = "eva"
    description = "timm Eva: DINOv3, EVA-02, Perception Encoder, RoPE ViTs"
    timm_classes = (Eva,)

    def __init__(self, backbone: Eva) -> None:
        super().__init__(backbone)
        self._grid: tuple[int, int] | None = None  # the patch grid of the last embedded images (dynamic size)
        self._rope_cache: dict[tuple, torch.Tensor] = {}

    def embed(self, images: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        bb = self.backbone
        patches = bb.patch_embed(images) if patches is None else patches
        if patches.ndim == 4:  # NHWC (dynamic image size): the grid these images give
            self._grid = tuple(patches.shape[1:3])
        return bb.norm_pre(bb._pos_embed(patches)[0])  # rotary positions are applied inside each block

    supports_extra_kv = True

    def block(self, index: int, x: torch.Tensor, prompts: int = 0, extra_kv: torch.Tensor | None = None
              ) -> torch.Tensor:
        block = self.blocks[index]
        rope = self._rope(index, x.shape[1] - self.num_prefix_tokens - prompts)
        if rope is not None and prompts:  # identity rotation for the prompt slots, seen as patch tokens
            half = rope.shape[-1] // 2
            identity = torch.cat([rope.new_zeros(*rope.shape[:-2], prompts, half),
                                  rope.new_ones(*rope.shape[:-2], prompts, half)], dim=-1)
            rope = torch.cat([identity, rope], dim=-2)
        if extra_kv is not None:  # learned keys and values (E2VPT) as a prefix, unrotated like every prompt key
            return self._prefix_block(index, x, extra_kv, None, None, rope)
        return block(x) if rope is None else block(x, rope=rope)

    def supports_prefix(self, index: int) -> bool:
        block = self.blocks[index]
        return type(block) is EvaBlock and type(block.attn) in (EvaAttention, AttentionRope)

    def prefix_block(self, index: int, x: torch.Tensor, prompt_kv: torch.Tensor | None, queries: int | None = None,
                     prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._prefix_block(index, x, prompt_kv, queries, prompt_mask,
                                  self._rope(index, x.shape[1] - self.num_prefix_tokens))

    def _prefix_block(self, index: int, x: torch.Tensor, prompt_kv: torch.Tensor | None, queries: int | None,
                      prompt_mask: torch.Tensor | None, rope: torch.Tensor | None) -> torch.Tensor:
        block = self.blocks[index]
        attn_out = prefix_attention(block.attn, block.norm1(x), prompt_kv, queries, prompt_mask, rope=rope)
        x = x if queries is None else x[:, :queries]
        x = x + block.drop_path1(_scaled(block.gamma_1, attn_out))
        return x + block.drop_path2(_scaled(block.gamma_2, block.mlp(block.norm2(x))))

    def _rope(self, index: int, patches: int) -> torch.Tensor | None:
        """The rotary table for `patches` patch tokens at block `index` ((.., m, 2 * head_dim)), None without RoPE."""
        rope = self.backbone.rope
        if rope is None:
            return None
        grid = self._grid_for(patches)
        trainable = any(p.requires_grad for p in rope.parameters())  # "mixed" RoPE under full fine-tuning
        key = (grid, self.patch_embed.proj.weight.device)
        table = None if trainable else self._rope_cache.get(key)
        if table is None:
            table = rope.get_embed(shape=list(grid))
            if not trainable:
                self._rope_cache[key] = table
        return table[index] if getattr(self.backbone, "rope_mixed", False) else table

    def _grid_for(self, patches: int) -> tuple[int, int]:
        for grid in (self._grid, tuple(self.patch_embed.grid_size)):
            if grid is not None and prod(grid) == patches:
                return grid
        side = isqrt(patches)
        if side * side == patches:
            return side, side
        raise ValueError(f"{patches} patch tokens do not form the grid of the last images ({self._grid}) or of the "
                         f"backbone's size ({tuple(self.patch_embed.grid_size)}); use the model's image size")

    def lora_targets(self) -> list[str]:
        attn = self.blocks[0].attn
        if getattr(attn, "qkv", None) is None:
            return ["q_proj", "k_proj", "v_proj"]
        if getattr(attn, "q_bias", None) is not None:
            # EvaAttention then calls F.linear with the qkv layer's weight and its own biases, around the layer
            # itself: an adapter wrapped around `qkv` would never run.
            raise ValueError(f"LoRA cannot adapt {type(self.backbone).__name__}'s fused qkv with separate q/v biases "
                             f"(timm calls its weight directly); use vpt-deep, bias or partial-K on this backbone")
        return ["qkv"]


def _scaled(gamma: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return x if gamma is None else gamma * x
