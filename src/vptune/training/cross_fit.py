"""Cross-fitted heads (`--cross-fit`): the prompts learn from a loss on images their head has not seen.

On few images the converged probe the head starts at already fits every training image, so their loss is near 0
and the few it is least sure of steer the prompts (docs/recipe.md). Here each step's head is the probe fitted on
the features of every training image outside that step's batch, as the epoch began: each image's loss is that of
a probe that never saw it, which is what a comparison with a converged probe measures. The head an epoch ends
with, and the one that is validated, saved and tested, is the probe on all of them. Every probe has the L2
strength chosen by cross-validation on the epoch's features (as `--refit`'s final probe), and each batch's
probe starts from the full one (a warm start: the optimum does not depend on it).

The heads are functions of the model as the epoch began and of the data, so a resumed run fits the same ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .batches import precompute_rows
from .linear_probe import ProbeFit, choose_probe_cv, fit_logistic_regression

if TYPE_CHECKING:
    from .steps import Fit


@dataclass
class Snapshot:
    """The training images' features under the model at one moment, and the probe fitted on all of them."""

    features: torch.Tensor  # (N, d)
    labels: torch.Tensor    # (N,)
    probe: ProbeFit


def snapshot(fit: "Fit", dataset: Dataset) -> Snapshot:
    """Features of every training image (item order, no augmentation) and the probe on all of them."""
    fit.model.eval()
    features, labels = precompute_rows(fit.features, dataset, fit.cfg, True, fit.world).tensors
    probe, _ = choose_probe_cv(features, labels, fit.model.num_classes, seed=fit.cfg.seed)
    return Snapshot(features, labels, probe)


def batch_heads(state: Snapshot, batches: list[list[int]], num_classes: int) -> list[ProbeFit]:
    """For each batch (indices into the snapshot), the probe fitted on every other image."""
    heads = []
    for batch in batches:
        others = torch.ones(len(state.labels), dtype=torch.bool)
        others[batch] = False
        heads.append(fit_logistic_regression(state.features[others], state.labels[others], num_classes,
                                             state.probe.weight_decay, start=state.probe))
    return heads


def held_out_loss(state: Snapshot, batches: list[list[int]], heads: list[ProbeFit]) -> float:
    """The mean loss of each batch's head on its own images, on the snapshot's features: the loss the epoch starts
    from. On a hard task a probe that never saw an image can be confidently wrong about it, so this can be well
    over a uniform guess's ln(classes) without anything having diverged (`steps._check_not_diverged`)."""
    total = sum(F.cross_entropy(head.logits(state.features[batch]), state.labels[batch], reduction="sum").item()
                for head, batch in zip(heads, batches))
    return total / sum(len(batch) for batch in batches)
