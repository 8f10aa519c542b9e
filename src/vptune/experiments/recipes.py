"""Candidate default recipes for VPT-deep, compared in docs/recipe.md (`vptune ablate recipes`).

Each is a set of TrainConfig settings that spells out everything it changes, so a name keeps its meaning when
vptune's defaults change (every recipe names its prompt init: the default became "patches" after these runs).
"""
from __future__ import annotations

from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "linear": dict(method="linear"),
    # the defaults before docs/recipe.md: the original's SGD with lrs chosen on one built-in
    "current": dict(optimizer="sgd", lr=0.5, head_lr=0.02, head_norm=False, head_init="random", prompt_init="xavier"),
    "probe-sgd": dict(head_init="probe", prompt_init="xavier"),
    "norm-sgd": dict(head_norm=True, prompt_init="xavier"),
    "probe-norm-sgd": dict(head_norm=True, head_init="probe", prompt_init="xavier"),
    "probe-norm-adamw": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-2,
                             weight_decay=1e-4, prompt_init="xavier"),
    # the head starts at an optimum: a tenth of the prompts' lr keeps it there while the prompts adapt (as LP-FT
    # does for fine-tuning after a linear probe); and the paper's prompt dropout for deep prompts
    "probe-norm-adamw-slowhead": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-3,
                                      weight_decay=1e-4, prompt_init="xavier"),
    "probe-norm-adamw-slowhead-dropout": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2,
                                              head_lr=1e-3, weight_decay=1e-4, prompt_dropout=0.1,
                                              prompt_init="xavier"),
    # prompts start at k-means prototypes of the patch tokens entering each block, not noise (model/prompted.py);
    # rows named "sampled-patches-..." in docs/recipe/*.jsonl ran an earlier version of this init
    "patches-probe-norm-adamw": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-2,
                                     weight_decay=1e-4, prompt_init="patches"),
    # few images (issue "VPT must win on data nobody tuned for"): the probe chosen for top-1 often fits them
    # exactly, so the prompts start with no gradient; two ways to leave them one
    "calibrated-head": dict(head_norm=True, head_init="calibrated-probe", optimizer="adamw", lr=1e-2, head_lr=1e-2,
                            weight_decay=1e-4, prompt_init="patches"),
    "label-smoothing": dict(head_norm=True, head_init="probe", optimizer="adamw", lr=1e-2, head_lr=1e-2,
                            weight_decay=1e-4, prompt_init="patches", label_smoothing=0.1),
    # few images: 10 epochs of a 180-image task are 60 AdamW steps, too few for the prompts to move from their
    # start; at least the steps 10 epochs of VTAB-1k's 800 images take at batch 32 (the built-ins keep theirs)
    "min-steps": dict(min_steps=250),
    "norm-adamw": dict(head_norm=True, optimizer="adamw", lr=1e-2, head_lr=1e-2, weight_decay=1e-4,
                       prompt_init="xavier"),
    # few images, again: a probe-started head has fitted them before the first step, so the training loss carries
    # no signal for the prompts (docs/recipe.md); started near zero, head and prompts fit them together, as in the
    # paper, with the defaults' other parts (AdamW, standardised head input, patch-prototype prompts)
    "random-head": dict(head_init="random", head_norm=True),
    "random-head-min-steps": dict(head_init="random", head_norm=True, min_steps=250),
    # or keep the probe, but let no image's loss come from a head fitted on it (training/cross_fit.py)
    "cross-fit": dict(cross_fit=True),
    # where cross-fit applies the carved val is a few dozen images, too few to tell one epoch from another: train
    # the whole schedule on train + val and keep the last epoch, as the paper's final runs do (no selection run:
    # a median 0.7 of the time, docs/recipe.md); `vptune train`'s default where cross-fit is (loop.with_final)
    "cross-fit-fixed": dict(cross_fit=True, final=True),
    # the same with p in proportion to the patch tokens: at 224 px (256 patches) p = 40 keeps 112 px's share of
    # prompts among the tokens (10 to 64), which p = 10 cuts to a quarter
    "cross-fit-fixed-p40": dict(cross_fit=True, final=True, num_tokens=40),
    # TrainConfig's defaults now, under ablate's protocol (no refit, cross-fit or final unless asked)
    "defaults": dict(),
}
