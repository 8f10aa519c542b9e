"""The prefix fast path: a timm ViT block where prompts contribute keys and values only.

When a block's prompt outputs are never read (the next block replaces them, or the head reads [CLS]
only), running the prompts through queries, the attention output projection, the MLP and LayerScale is
wasted work. What the real tokens see of the prompts is just their keys and values:

    K_p = k_norm(LN1(P) W_k + b_k),   V_p = LN1(P) W_v + b_v

which depend on the prompt alone, not on the image. So they are computed once per batch (or once per
task, cached, at inference) and broadcast, and the rest of the block runs on the real tokens alone.

The same reasoning applies to the real tokens of the last block: the head reads [CLS] only, so there
every token is still needed as a key and value, but only [CLS] needs a query, an attention output and
the MLP (`queries=1`), which saves most of that block.

Only timm's standard `Block` with its standard `Attention` is reproduced here; any other block type is
run the reference way by the caller (see `supports_prefix`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn


def supports_prefix(block: torch.nn.Module) -> bool:
    """True if `prefix_block` reproduces `block` exactly (its exact class is known to us)."""
    return type(block) is Block and type(block.attn) is Attention


def prompt_key_values(block: Block, prompts: torch.Tensor) -> torch.Tensor:
    """Prompt tokens (B or 1, p, d) -> their keys and values side by side, (B or 1, p, 2 * attn_dim).

    k_norm is not applied yet: `prefix_attention` applies it to all keys at once (it acts per token), which
    lets the prompt rows be concatenated in front of the image rows with a single copy.
    """
    return _project(block.attn, block.norm1(prompts), queries=0)[1]  # the prompts' queries are never needed


def prefix_attention(attn: Attention, x: torch.Tensor, prompt_kv: torch.Tensor | None,
                     queries: int | None = None, prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """timm `Attention.forward` for tokens x (B, N, d) that also attend to prompt keys/values.

    prompt_kv: from `prompt_key_values`, or None for no prompt. queries: if set, only the first `queries`
    tokens' outputs are computed (all N tokens still serve as keys and values). prompt_mask: (B, p) bool,
    False for prompt rows an image must not see (a batch mixing tasks with different prompts pads them).
    """
    B = x.shape[0]
    dim, heads = attn.attn_dim, attn.num_heads
    xq = x if queries is None else x[:, :queries]
    gate = attn.gate(xq).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, kv = _project(attn, x, queries)
    q = q.unflatten(-1, (heads, attn.head_dim)).transpose(1, 2)
    if prompt_kv is not None:
        # Prompt keys first, as in the reference sequence [CLS, prompts, patches] (order does not change softmax).
        kv = torch.cat([prompt_kv.expand(B, -1, -1), kv], dim=1)
    k, v = kv.unflatten(-1, (2, heads, attn.head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    dropout_p = attn.attn_drop.p if attn.training else 0.0
    mask = None
    if prompt_mask is not None:  # (B, 1, 1, p + N): every image sees all of its own tokens
        mask = torch.cat([prompt_mask, prompt_mask.new_ones(B, x.shape[1])], dim=1)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=attn.scale)
    out = attn.norm(out.transpose(1, 2).reshape(B, xq.shape[1], dim))
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


def prefix_block(block: Block, x: torch.Tensor, prompt_kv: torch.Tensor | None,
                 queries: int | None = None, prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
    """timm `Block.forward` on the real tokens x (B, N, d), with the prompts as key/value prefixes.

    Returns (B, N, d), or (B, queries, d): the outputs of the first `queries` tokens only.
    """
    attn_out = prefix_attention(block.attn, block.norm1(x), prompt_kv, queries, prompt_mask)
    x = (x if queries is None else x[:, :queries]) + block.drop_path1(block.ls1(attn_out))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


def _project(attn: Attention, x: torch.Tensor, queries: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries of the first `queries` tokens (all if None), and keys|values of all tokens: (B, ., dim), (B, N, 2 dim).

    Two projections rather than one fused qkv: each computes only the rows it needs, and the attention's
    saved inputs then hold only what they need (a view of q would keep the whole 3 * dim output alive).
    """
    qkv, dim = attn.qkv, attn.attn_dim
    if type(qkv) is not nn.Linear:  # a wrapped layer (e.g. a LoRA adapter): one call over all tokens, as timm does
        out = qkv(x)
        return out[:, :queries, :dim], out[..., dim:]
    weight, bias = qkv.weight, qkv.bias
    kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
    if queries == 0:  # prompts: keys and values only
        return x[:, :0], kv
    q = F.linear(x if queries is None else x[:, :queries], weight[:dim], None if bias is None else bias[:dim])
    return q, kv
