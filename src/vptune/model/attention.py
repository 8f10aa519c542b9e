"""The prefix fast path: a timm ViT block where prompts contribute keys and values only.

When a block's prompt outputs are never read (the next block replaces them, or the head reads [CLS]
only), running the prompts through queries, the attention output projection, the MLP and LayerScale is
wasted work. What the real tokens see of the prompts is just their keys and values:

    K_p = k_norm(LN1(P) W_k + b_k),   V_p = LN1(P) W_v + b_v

which depend on the prompt alone, not on the image. So they are computed once per batch (or once per
task, cached, at inference) and broadcast, and the rest of the block runs on the real tokens alone.

Only timm's standard `Block` with its standard `Attention` is reproduced here; any other block type is
run the reference way by the caller (see `supports_prefix`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block


def supports_prefix(block: torch.nn.Module) -> bool:
    """True if `prefix_block` reproduces `block` exactly (its exact class is known to us)."""
    return type(block) is Block and type(block.attn) is Attention


def prompt_key_values(block: Block, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of prompt tokens (B or 1, p, d) -> two (B or 1, heads, p, head_dim) tensors."""
    attn = block.attn
    b, p, _ = prompts.shape
    dim = attn.attn_dim
    # Only the K and V thirds of the fused qkv projection: the prompts' queries are never needed.
    weight = attn.qkv.weight[dim:]
    bias = attn.qkv.bias[dim:] if attn.qkv.bias is not None else None
    kv = F.linear(block.norm1(prompts), weight, bias)
    k, v = kv.reshape(b, p, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    return attn.k_norm(k), v


def prefix_attention(attn: Attention, x: torch.Tensor, prompt_k: torch.Tensor, prompt_v: torch.Tensor) -> torch.Tensor:
    """timm `Attention.forward` for tokens x (B, N, d) that also attend to prompt keys/values."""
    B, N, _ = x.shape
    gate = attn.gate(x).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, k, v = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    # Prompt keys first, as in the reference sequence [CLS, prompts, patches] (order does not change softmax).
    k = torch.cat([prompt_k.expand(B, -1, -1, -1), k], dim=2)
    v = torch.cat([prompt_v.expand(B, -1, -1, -1), v], dim=2)
    dropout_p = attn.attn_drop.p if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=attn.scale)
    out = attn.norm(out.transpose(1, 2).reshape(B, N, attn.attn_dim))
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


def prefix_block(block: Block, x: torch.Tensor, prompt_k: torch.Tensor, prompt_v: torch.Tensor) -> torch.Tensor:
    """timm `Block.forward` on the real tokens x (B, N, d), with the prompts as key/value prefixes."""
    x = x + block.drop_path1(block.ls1(prefix_attention(block.attn, block.norm1(x), prompt_k, prompt_v)))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
