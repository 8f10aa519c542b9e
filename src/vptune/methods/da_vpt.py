"""DA-VPT (Ren et al., CVPR 2025, "semantic-guided visual prompt tuning"): VPT-deep whose prompts are also pulled
toward the classes they should carry. At the guided block (the last prompted one, as its code's default) each
prompt token is a class proxy, and a metric-learning loss (Proxy Anchor, Kim et al., CVPR 2020) pulls the [CLS]
token and the mean image token entering that block toward their class's proxy and pushes them from the others;
the prompts then act as a bridge that carries class information from the image tokens to [CLS].

A training-time loss only: the model, the task file, inference and serving are VPT-deep's. Left out: its code's
k-means mapping of classes to proxies (class c takes prompt c mod p here; with p >= the number of classes, one
prompt a class) and DA-VPT+'s bias tuning.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..model import PromptConfig, PromptedModel
from .base import check_setting, register
from .vpt import _VPT

# Its code's most common setting (each of its two losses weighted 0.01), and Proxy Anchor's own alpha and delta
METRIC_WEIGHT = 0.01
ALPHA, DELTA = 32.0, 0.1


def proxy_anchor_loss(features: torch.Tensor, labels: torch.Tensor, proxies: torch.Tensor,
                      alpha: float = ALPHA, delta: float = DELTA) -> torch.Tensor:
    """Proxy Anchor: features (B, d) of classes `labels` (B,) against proxies (P, d), class c's proxy row c mod P.
    (1/|P+|) sum over proxies with positives of log(1 + sum_pos exp(-alpha (s - delta)))
    + (1/P) sum over proxies of log(1 + sum_neg exp(alpha (s + delta))), s the cosine similarity."""
    dtype = torch.promote_types(features.dtype, torch.float32)  # 16-bit autocast features: in 32 bits
    sims = F.normalize(features.to(dtype), dim=-1) @ F.normalize(proxies.to(dtype), dim=-1).T  # (B, P)
    positive = F.one_hot(labels % len(proxies), len(proxies)).bool()
    pos_terms = _log1p_sum_exp(-alpha * (sims - delta), positive)
    neg_terms = _log1p_sum_exp(alpha * (sims + delta), ~positive)
    with_positives = positive.any(dim=0)
    return pos_terms[with_positives].sum() / with_positives.sum() + neg_terms.mean()


def _log1p_sum_exp(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per proxy (column): log(1 + sum over the rows in `mask` of exp(logits)), stably; 0 where no row is in it."""
    masked = logits.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(torch.cat([masked, torch.zeros_like(masked[:1])], dim=0), dim=0)


@register
@dataclass(frozen=True)
class DAVPT(_VPT):
    name = "da-vpt"
    summary = "DA-VPT: VPT-deep plus a metric loss (--metric-weight, default 0.01) that makes the last prompted " \
              "block's prompts class proxies for [CLS] and the image tokens"
    metric_weight: float = METRIC_WEIGHT

    def __post_init__(self) -> None:
        check_setting("metric_weight", self.metric_weight, lambda weight: 0 <= weight < float("inf"),
                      "a number >= 0 (the weight of DA-VPT's metric loss beside the cross-entropy)")

    @property
    def mode(self) -> str:
        return "deep"

    def prompt_config(self, prompt: PromptConfig) -> PromptConfig:
        if prompt.location != "prepend":
            raise ConfigError(f"da-vpt's proxies are prompt tokens: it needs --prompt-location prepend, got "
                              f"{prompt.location!r}")
        return dataclasses.replace(prompt, mode="deep")

    def prepare(self, model: PromptedModel) -> None:
        model.observed_block = model.prompt_blocks[-1]  # the guided block

    def training_loss(self, model: PromptedModel, labels: torch.Tensor) -> torch.Tensor | None:
        tokens, block = model.observed, model.observed_block
        if not self.metric_weight or tokens is None:
            return None
        proxies = model.prompt_tokens_at(block)  # (p, d): the guided block's prompts
        start = model.adapter.num_prefix_tokens
        loss = proxy_anchor_loss(tokens[:, start:].mean(dim=1), labels, proxies)  # the image tokens' mean
        if model.adapter.has_class_token:
            loss = loss + proxy_anchor_loss(tokens[:, 0], labels, proxies)
        model.observed = None  # read once: the next forward leaves its own
        return self.metric_weight * loss
