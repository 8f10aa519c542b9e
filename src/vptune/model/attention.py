"""The prefix fast path: an attention layer where prompts contribute keys and values only.

When a block's prompt outputs are never read (the next block replaces them, or the head reads [CLS]
only), running the prompts through queries, the attention output projection, the MLP and LayerScale is
wasted work. What the real tokens see of the prompts is just their keys and values:

    K_p = k_norm(LN1(P) W_k + b_k),   V_p = LN1(P) W_v + b_v

which depend on the prompt alone, not on the image. So they are computed once per batch (or once per
task, cached, at inference) and broadcast, and the rest of the block runs on the real tokens alone.

The same reasoning applies to the real tokens of the last block: the head reads [CLS] only, so there
every token is still needed as a key and value, but only [CLS] needs a query, an attention output and
the MLP (`queries=1`), which saves most of that block.

This file knows the attention layers of timm's ViT (`Attention`) and Eva (`EvaAttention`, `AttentionRope`):
fused or separate q/k/v projections, Eva's separate q/v biases, grouped-query K/V heads, q/k norms, rotary
positions (applied to the patch tokens only, never to a prompt: prompts are prefix tokens like [CLS]), the
output norm and gate. Each backbone family (`families/`) says which of its blocks use it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import apply_rot_embed_cat
from torch import nn


def prompt_key_values(attn: nn.Module, prompts: torch.Tensor) -> torch.Tensor:
    """Prompt tokens (B or 1, p, d), already through the block's first norm -> their keys and values side by
    side, (B or 1, p, 2 * kv_dim).

    k_norm is not applied yet: `prefix_attention` applies it to all keys at once (it acts per token), which
    lets the prompt rows be concatenated in front of the image rows with a single copy.
    """
    return project_qkv(attn, prompts, queries=0)[1]  # the prompts' queries are never needed


def kv_width(attn: nn.Module) -> int:
    """Width of one token's keys|values row (2 * kv heads * head dim)."""
    return 2 * getattr(attn, "num_kv_heads", attn.num_heads) * attn.head_dim


def prefix_attention(attn: nn.Module, x: torch.Tensor, prompt_kv: torch.Tensor | None,
                     queries: int | None = None, prompt_mask: torch.Tensor | None = None,
                     rope: torch.Tensor | None = None) -> torch.Tensor:
    """The attention layer's forward for tokens x (B, N, d) that also attend to prompt keys/values.

    prompt_kv: from `prompt_key_values`, or None for no prompt. queries: if set, only the first `queries`
    tokens' outputs are computed (all N tokens still serve as keys and values). prompt_mask: (B, p) bool,
    False for prompt rows an image must not see (a batch mixing tasks with different prompts pads them).
    rope: the rotary embedding of the patch tokens (those after the layer's `num_prefix_tokens`), or None.
    """
    B, N = x.shape[:2]
    heads, kv_heads, head_dim = attn.num_heads, getattr(attn, "num_kv_heads", attn.num_heads), attn.head_dim
    xq = x if queries is None else x[:, :queries]
    gate = attn.gate(xq).sigmoid() if getattr(attn, "gate", None) is not None else None
    q, kv = project_qkv(attn, x, queries)
    p = 0 if prompt_kv is None else prompt_kv.shape[1]
    if prompt_kv is not None:
        # Prompt keys first, as in the reference sequence [CLS, prompts, patches] (order does not change softmax).
        kv = torch.cat([prompt_kv.expand(B, -1, -1), kv], dim=1)
    q = q.unflatten(-1, (heads, head_dim)).transpose(1, 2)
    k, v = kv.unflatten(-1, (2, kv_heads, head_dim)).permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        start, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
        q, k = _rotate(q, rope, start, half).type_as(v), _rotate(k, rope, p + start, half).type_as(v)
    if kv_heads != heads:
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
    dropout_p = attn.attn_drop.p if attn.training else 0.0
    mask = None
    if prompt_mask is not None:  # (B, 1, 1, p + N): every image sees all of its own tokens
        mask = torch.cat([prompt_mask, prompt_mask.new_ones(B, N)], dim=1)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=attn.scale)
    out = attn.norm(out.transpose(1, 2).reshape(B, xq.shape[1], heads * head_dim))
    if gate is not None:
        out = out * gate
    return attn.proj_drop(attn.proj(out))


def _rotate(t: torch.Tensor, rope: torch.Tensor, start: int, half: bool) -> torch.Tensor:
    """Rotate rows start.. of t (B, heads, n, head_dim) by the first rows of rope (.., m, 2 * head_dim)."""
    rows = t.shape[2] - start
    if rows <= 0:
        return t
    rotated = apply_rot_embed_cat(t[:, :, start:], rope.narrow(-2, 0, rows), half=half)
    return torch.cat([t[:, :, :start], rotated.to(t.dtype)], dim=2)


def project_qkv(attn: nn.Module, x: torch.Tensor, queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries of the first `queries` tokens (all if None), and keys|values of all tokens: (B, ., q_dim),
    (B, N, 2 kv_dim).

    Two projections rather than one fused qkv: each computes only the rows it needs, and the attention's
    saved inputs then hold only what they need (a view of q would keep the whole 3 * dim output alive).
    """
    xq = x if queries is None else x[:, :queries]
    if getattr(attn, "qkv", None) is None:  # separate projections (Eva's qkv_fused=False)
        kv = torch.cat([attn.k_proj(x), attn.v_proj(x)], dim=-1)
        return (x[:, :0] if queries == 0 else attn.q_proj(xq)), kv
    qkv, dim = attn.qkv, attn.proj.in_features  # the queries' width: heads x head dim
    bias = _fused_bias(attn)
    if type(qkv) is not nn.Linear:  # a wrapped layer (e.g. a LoRA adapter): one call over all tokens, as timm does
        out = qkv(x) if bias is None else qkv(x) + bias
        return out[:, :queries, :dim], out[..., dim:]
    weight = qkv.weight
    kv = F.linear(x, weight[dim:], None if bias is None else bias[dim:])
    if queries == 0:  # prompts: keys and values only
        return x[:, :0], kv
    return F.linear(xq, weight[:dim], None if bias is None else bias[:dim]), kv


def _fused_bias(attn: nn.Module) -> torch.Tensor | None:
    """The fused qkv's bias: the Linear's own, or Eva's separate q and v biases with a zero key bias."""
    if getattr(attn, "q_bias", None) is not None:
        return torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
    return attn.qkv.bias if type(attn.qkv) is nn.Linear else None
