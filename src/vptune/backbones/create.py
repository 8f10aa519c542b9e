"""`create_backbone`: a frozen timm backbone for VPT, by name; and its weights' fingerprint.

Any timm model of a family vptune has an adapter for (`vptune.model.families`: ViT, Eva) is accepted.
The returned model is in eval mode with every parameter frozen, has no classifier, and
its `pretrained_cfg` carries the input size and normalisation, so data code reads them through
`timm.data.resolve_model_data_config(model)`. Offline backbones are described in `OFFLINE_BACKBONES`; any other
name is a timm model name (downloaded from timm's hub unless `weights=` gives a local file).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import VisionTransformer
from torch import nn

from ..errors import BackboneError
from ..model import family_of, supported_families
from . import imgfocus
from .weights import StateDict, load_state_dict, read_weights


@dataclass(frozen=True)
class OfflineBackbone:
    """A backbone whose pretrained weights can be had without timm's hub."""

    timm_arch: str                     # the timm architecture its weights fit
    default_img_size: int
    mean: tuple[float, float, float]   # the normalisation it was trained with
    std: tuple[float, float, float]
    weights: Callable[[Callable[[StateDict], None]], StateDict]  # (check) -> state dict, converting once
    on_this_machine: Callable[[], bool]  # whether `weights` needs no download
    antialias: bool = True             # how its position grid is resampled to other image sizes


OFFLINE_BACKBONES: dict[str, OfflineBackbone] = {
    imgfocus.NAME: OfflineBackbone(imgfocus.TIMM_ARCH, 224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD,
                                   imgfocus.converted_weights, imgfocus.on_this_machine, antialias=False),
}
DEFAULT_BACKBONE = imgfocus.NAME


def create_backbone(name: str = DEFAULT_BACKBONE, *, img_size: int | None = None,
                    weights: str | os.PathLike | None = None, pretrained: bool = True) -> nn.Module:
    """Create a frozen backbone for VPT.

    Args:
        name: an `OFFLINE_BACKBONES` name (the default is DINOv2 ViT-S/14) or a timm model name of a supported
            family (e.g. 'vit_base_patch16_224', 'vit_small_patch16_dinov3', 'eva02_small_patch14_224').
        img_size: input resolution; position embeddings are resampled to it. Defaults to the offline backbone's
            size or the timm model's own.
        weights: a local .safetensors / .pth / .bin state dict to load instead of the pretrained weights.
        pretrained: load pretrained weights (ignored when `weights` is given); False gives a random init.
    """
    offline = OFFLINE_BACKBONES.get(name)
    if offline is not None:
        model = timm.create_model(offline.timm_arch, pretrained=False, num_classes=0, global_pool="token",
                                  img_size=img_size or offline.default_img_size)
        _check_patch_fits(model, name, img_size)
        load = lambda state, source: load_state_dict(model, state, source, antialias=offline.antialias)  # noqa: E731
        if weights is not None:
            load(read_weights(weights), str(weights))
        elif pretrained:
            load(offline.weights(lambda state: load(state, name)), name)
        mean_std = {"mean": offline.mean, "std": offline.std}
    else:
        model = _create_timm_backbone(name, img_size=img_size, hub=pretrained and weights is None)
        _check_patch_fits(model, name, img_size)
        if weights is not None:
            load_state_dict(model, read_weights(weights), source=str(weights))
        mean_std = {}

    # timm keeps the architecture's default input_size even when img_size is overridden; data code reads it here
    size = tuple(model.patch_embed.img_size)
    model.pretrained_cfg = {**model.pretrained_cfg, **mean_std, "input_size": (3, *size)}
    model.default_cfg = model.pretrained_cfg  # timm's backwards-compatible alias
    model.requires_grad_(False).eval()
    model.vptune_name = name
    model.vptune_weights = str(weights) if weights is not None else None  # recorded in task checkpoints
    return model


def _check_patch_fits(model: nn.Module, name: str, img_size: int | None) -> None:
    """Before any weights are loaded (resampling position embeddings to an empty grid fails deep inside timm)."""
    if min(model.patch_embed.grid_size) < 1:
        raise BackboneError(f"img_size {img_size} is smaller than {name!r}'s patch ({model.patch_embed.patch_size[0]} "
                            f"px): the image would have no patch; use at least {model.patch_embed.patch_size[0]}")


def _create_timm_backbone(name: str, *, img_size: int | None, hub: bool) -> nn.Module:
    """Build a timm model of a supported family by name, with no classifier (a ViT pools its class token)."""
    if not timm.is_model(name):
        raise BackboneError(f"unknown backbone {name!r}: it is neither an offline backbone "
                            f"({', '.join(OFFLINE_BACKBONES)}) nor a timm model name; see timm.list_models('*vit*')")
    unsupported = f"backbone {name!r} is not usable: vptune prompts these timm families: {supported_families()}"
    kwargs = {} if img_size is None else {"img_size": img_size}
    try:
        model = timm.create_model(name, pretrained=hub, num_classes=0, **kwargs)
    except TypeError as err:  # e.g. a CNN that takes no img_size
        raise BackboneError(unsupported) from err
    except Exception as err:
        if not hub:
            raise
        raise BackboneError(f"could not fetch pretrained weights for {name!r} ({type(err).__name__}: {err}); pass "
                            f"weights= a local .safetensors/.pth file, or use the offline default "
                            f"{DEFAULT_BACKBONE!r}") from err
    if family_of(model) is None:
        raise BackboneError(f"{unsupported}; got {type(model).__name__}")
    if isinstance(model, VisionTransformer) and model.has_class_token:
        # Pool via the class token without rebuilding, so norm placement (norm vs fc_norm) matches the weights
        model.reset_classifier(0, global_pool="token")
    return model


def backbone_on_this_machine(name: str) -> bool:
    """Whether `create_backbone(name)` can build the pretrained backbone without downloading anything."""
    offline = OFFLINE_BACKBONES.get(name)
    if offline is not None:
        return offline.on_this_machine()
    if not timm.is_model(name):
        return True  # nothing to fetch: create_backbone names the mistake
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo = cfg.hf_hub_id.split("@")[0]
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        return any(isinstance(try_to_load_from_cache(repo, file), str) for file in files)
    return bool(cfg.url) and (Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name).is_file()


def backbone_fingerprint(backbone: torch.nn.Module) -> str:
    """sha256 over the frozen weights as they were when first asked (names, shapes, dtypes and bytes).

    Remembered on the module so a method that later tunes backbone weights still records the base
    backbone it started from.
    """
    cached = getattr(backbone, "_vptune_fingerprint", None)
    if cached is None:
        digest = hashlib.sha256()
        for name, tensor in sorted(backbone.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        cached = digest.hexdigest()[:16]
        backbone._vptune_fingerprint = cached
    return cached
