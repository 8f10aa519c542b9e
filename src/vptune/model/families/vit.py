"""timm's `VisionTransformer` (ViT, DeiT, DINO/DINOv2, CLIP-style ViTs): absolute positions, [CLS], optional
register tokens, LayerScale. The fast path knows timm's standard `Block` with its standard `Attention`; any other
block type runs the reference way."""
from __future__ import annotations

import torch
from timm.layers import Attention
from timm.models.vision_transformer import Block, VisionTransformer

from ..attention import prefix_attention
from .base import BackboneAdapter, register_family


@register_family
class ViTAdapter(BackboneAdapter):
    family = "vit"
    description = "timm VisionTransformer: ViT, DeiT, DINO/DINOv2, CLIP-style ViTs"
    timm_classes = (VisionTransformer,)

    def embed(self, images: torch.Tensor, patches: torch.Tensor | None = None) -> torch.Tensor:
        bb = self.backbone
        patches = bb.patch_embed(images) if patches is None else patches
        return bb.norm_pre(bb.patch_drop(bb._pos_embed(patches)))

    supports_extra_kv = True

    def block(self, index: int, x: torch.Tensor, prompts: int = 0, extra_kv: torch.Tensor | None = None
              ) -> torch.Tensor:
        if extra_kv is not None:  # every token, prompts included, asks queries; the learned rows are a prefix
            return self.prefix_block(index, x, extra_kv)
        return self.blocks[index](x)  # absolute positions are in the tokens: prompts need nothing else

    def supports_prefix(self, index: int) -> bool:
        block = self.blocks[index]
        return type(block) is Block and type(block.attn) is Attention

    def prefix_block(self, index: int, x: torch.Tensor, prompt_kv: torch.Tensor | None, queries: int | None = None,
                     prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        block = self.blocks[index]
        attn_out = prefix_attention(block.attn, block.norm1(x), prompt_kv, queries, prompt_mask)
        x = (x if queries is None else x[:, :queries]) + block.drop_path1(block.ls1(attn_out))
        return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
