"""E2VPT's prompt pruning (Han et al., ICCV 2023): drop the prompt tokens, then the segments of the kept tokens,
that the loss depends on least, so a task stores fewer prompt parameters.

Each prompt token k (and each segment r of its width) is given a mask variable rho, 1 in the trained model, that
multiplies it. Its importance is E_x |dL(x)/d rho| (Michel et al.'s head importance, as the paper uses), and since
dL/d rho_k = <dL/d token_k, token_k>, one backward pass per batch gives every token's and segment's score at once.
Per prompted block the lowest-scoring share of tokens goes (every block keeps the same number, so the sequence
keeps one layout), then the lowest-scoring share of the remaining tokens' segments is held at zero
(`Prompts.segment_mask`). The training loop then rewinds the kept prompts to their initial values and trains again
(`vptune.training.loop`): the lottery-ticket rewinding of the paper.

A pruned token is gone from the task; a pruned segment is a zero in the saved tokens and a 0 in the saved mask.
The pruned model computes exactly what the unpruned one does with the pruned tokens hidden from every query and
the pruned segments set to zero (tests/methods/test_e2vpt_pruning.py).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from .prompted import PromptedModel
from .prompts import Prompts, segment_sizes

# The paper cuts each token into segments of a few dimensions; 16 segments of a ViT-S/B token are 24 or 48 wide.
SEGMENTS = 16


@dataclass(frozen=True)
class PruningPlan:
    """What pruning keeps: per prompt set, the kept token indices (sorted), and per kept token which of its
    segments are kept (None when segments are not pruned)."""

    keep: list[list[int]]
    segment_mask: list[list[list[int]]] | None = None

    @property
    def length(self) -> int:
        return len(self.keep[0])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PruningPlan":
        return cls(keep=data["keep"], segment_mask=data.get("segment_mask"))


def pruned_count(length: int, share: float) -> int:
    """How many of `length` items a pruning `share` removes (rounded half up)."""
    return math.floor(share * length + 0.5)


def prompt_importance(model: PromptedModel, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                      loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      segments: int = SEGMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """E_batch |dL/d rho| of every prompt token, (sets, length), and of every segment, (sets, length, segments),
    for the model as it is (trained), over `batches` of (inputs, labels) fed to `model`."""
    tokens = _tokens(model.prompts)
    sizes = segment_sizes(tokens.shape[-1], segments)
    token_scores = torch.zeros(tokens.shape[:2], dtype=torch.float64)
    segment_scores = torch.zeros(*tokens.shape[:2], segments, dtype=torch.float64)
    was_training, count = model.training, 0
    model.eval()
    for inputs, labels in batches:
        (grad,) = torch.autograd.grad(loss_fn(model(inputs), labels), tokens)
        contribution = (grad * tokens).detach().double().cpu()  # dL/d rho for each dimension of each token
        token_scores += contribution.sum(-1).abs()
        segment_scores += torch.stack([part.sum(-1) for part in contribution.split(sizes, dim=-1)], dim=-1).abs()
        count += 1
    model.train(was_training)
    if not count:
        raise ValueError("prompt_importance: no batch to score the prompts on")
    return token_scores / count, segment_scores / count


def plan_pruning(token_scores: torch.Tensor, segment_scores: torch.Tensor | None, prune_tokens: float,
                 prune_segments: float) -> PruningPlan:
    """Per prompt set, keep all but the `prune_tokens` share of tokens with the lowest scores; of those kept, hold
    the `prune_segments` share of segments with the lowest scores at zero. Ties go to the earlier token."""
    sets, length = token_scores.shape
    kept = length - pruned_count(length, prune_tokens)
    if kept < 1:
        raise ValueError(f"pruning {prune_tokens:g} of {length} prompt tokens leaves none; prune a smaller share")
    keep = [sorted(torch.argsort(-row, stable=True)[:kept].tolist()) for row in token_scores]
    if segment_scores is None or not prune_segments:
        return PruningPlan(keep)
    masks = []
    for row, scores in zip(keep, segment_scores):
        scores = scores[row]  # (kept, segments) of this set's kept tokens
        mask = torch.ones(scores.numel())
        mask[torch.argsort(scores.flatten(), stable=True)[:pruned_count(scores.numel(), prune_segments)]] = 0
        masks.append(mask.view_as(scores).int().tolist())
    return PruningPlan(keep, masks)


def prune_prompts(model: PromptedModel, plan: PruningPlan) -> None:
    """Shrink `model`'s prompts to what `plan` keeps (its kept tokens and key-value prompts keep their values;
    pruned segments are set to zero and masked). The model's prompt config then records the new length."""
    old = model.prompts
    tokens = _tokens(old)
    segments = len(plan.segment_mask[0][0]) if plan.segment_mask else 0
    config = dataclasses.replace(model.prompt_config, num_tokens=plan.length, segments=segments)
    new = model.build_prompts(config).to(device=tokens.device, dtype=tokens.dtype)
    with torch.no_grad():
        new.tokens.copy_(torch.stack([row[keep] for row, keep in zip(tokens, plan.keep)]))
        new.proj.load_state_dict(old.proj.state_dict())
        if new.kv is not None:
            new.kv.copy_(old.kv)
        if new.gate_logits is not None:
            new.gate_logits.copy_(old.gate_logits)
        if segments:
            new.segment_mask.copy_(torch.tensor(plan.segment_mask, dtype=new.segment_mask.dtype))
            new.tokens.mul_(new.width_mask())
    model.prompt_config = config
    model.prompts = new
    model.clear_cache()


def _tokens(prompts: Prompts | None) -> torch.Tensor:
    if prompts is None or prompts.ragged or prompts.location != "prepend":
        raise ValueError("prompt pruning needs prepended prompt tokens of one width (E2VPT on a ViT or Eva backbone)")
    return prompts.tokens
