"""`vptune info`: what a task holds (from task.json, checked as `load_task` checks it, no weights loaded), or a
backbone's shape."""
from __future__ import annotations

import json
import os
from math import prod
from pathlib import Path

from ..backbones import create_backbone
from ..model import ParameterCount, PromptConfig, adapter_for, auto_num_tokens
from ..errors import CheckpointError
from ..rundir import RunDir
from ..tasks import WEIGHTS_FILE, check_task, segmentation_head_of


def describe(target: str | os.PathLike) -> str:
    """A task's method, prompt config, trainable share and size on disk; or, for a name, a backbone's shape."""
    if Path(target).exists():
        return describe_task(target)
    if any(sep in str(target) for sep in ("/", os.sep)) or str(target).startswith("."):  # meant as a path
        raise CheckpointError(f"{target}: no such task directory (a backbone name has no '/'); check the path")
    return describe_backbone(str(target))


def describe_task(path: str | os.PathLike) -> str:
    task = RunDir.find_task(path)
    meta = check_task(task)  # what predict would refuse, info refuses too
    backbone = meta["backbone"]
    method = meta.get("method")
    lines = [f"task         {task}",
             f"backbone     {backbone.get('name')} ({backbone.get('family', 'vit')} family) at {backbone.get('img_size')} px "
             f"(fingerprint {backbone.get('fingerprint')})",
             f"method       {json.dumps(method) if isinstance(method, dict) else method or 'vpt'}",
             f"prompt       {json.dumps(meta['prompt'])}",
             f"predicts     {_predicts(meta)}",
             f"classes      {meta['num_classes']}: {', '.join(map(str, meta.get('class_names') or []))}",
             str(parameter_count(meta)),
             f"checkpoint   {(task / WEIGHTS_FILE).stat().st_size:,} bytes ({WEIGHTS_FILE})"]
    return "\n".join(lines)


def _predicts(meta: dict) -> str:
    head = segmentation_head_of(meta)
    if not head:
        return "a class an image"
    width = f", {meta['head']['channels']} channels" if "channels" in meta["head"] else ""
    return f"a class a pixel (segmentation, {head} head{width})"


# tensors a task stores that are not parameters: E2VPT's segment mask (its pruned segments are stored zeros of the
# prompt tokens, and counted with them, as `count_parameters` counts them) and a segmentation head's BatchNorm
# statistics
BUFFERS = ("prompts.segment_mask", ".running_mean", ".running_var", ".num_batches_tracked")


def parameter_count(meta: dict) -> ParameterCount:
    """Trainable parameters by kind, from the tensor shapes task.json lists (the backbone's size is recorded
    since task format 2; 0 when unknown)."""
    sizes = {name: prod(shape) for name, shape in meta["tensors"].items() if not name.endswith(BUFFERS)}
    return ParameterCount(prompts=sum(n for name, n in sizes.items() if name.startswith("prompts.")),
                          head=sum(n for name, n in sizes.items() if name.startswith("head.")),
                          other_trainable=sum(n for name, n in sizes.items() if name.startswith("backbone.")),
                          backbone=meta["backbone"].get("num_parameters", 0))


def describe_backbone(name: str) -> str:
    adapter = adapter_for(create_backbone(name, pretrained=False))
    widths = [adapter.width_at(i) for i in range(adapter.depth)]
    per_token = (f"{adapter.depth} x p x {widths[0]}" if len(set(widths)) == 1
                 else f"p x {sum(widths):,} (the sum of the blocks' widths)")
    p = auto_num_tokens(adapter.backbone, PromptConfig())
    return (f"backbone     {name}: {adapter.summary()}, {adapter.num_parameters():,} parameters\n"
            f"VPT-deep with p prompts adds {per_token} parameters (+ head on {adapter.embed_dim} features); "
            f"--num-tokens auto at {adapter.img_size[0]} px is p = {p} "
            f"({100 * p * sum(widths) / adapter.num_parameters():.2f}% of the backbone)")
