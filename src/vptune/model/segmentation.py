"""Dense prediction with prompts (the VPT paper's section 4.4): the prompted backbone's final image tokens, as a
feature map, into a segmentation head, the logits upsampled to the image.

Heads:
- "linear": BatchNorm and a 1 x 1 convolution on the patch features (DINOv2's linear protocol, the baseline).
- "pup": SETR's progressive upsampling (Zheng et al., CVPR 2021; the VPT paper's head): four stages of 3 x 3
  convolution, BatchNorm, ReLU and 2x bilinear upsampling, then a 1 x 1 classifier. Its width follows the
  backbone's as SETR's did: 256 channels on ViT-L's 1024 (`pup_channels`), so 96 on a ViT-S.
The logits are resized to the input image bilinearly; evaluation resizes them to each mask's full resolution.
Everything about prompts (locations, depth, the fast path) is `PromptedModel`'s: this class only reads every final
image token (no [CLS]-only shortcut in the last block) and swaps the head. The feature map is the family's
(`BackboneAdapter.dense`), timm's own `forward_features`: a ViT's or Eva's patch tokens, Swin's last stage (stride
32), SAM's neck output.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .config import PromptConfig
from .families import BackboneAdapter, adapter_for
from .prompted import PromptedModel

HEADS = ("linear", "pup")
LEGACY_PUP_CHANNELS = 256  # SETR-PUP's width on ViT-L, which task files without "channels" were saved with


def pup_channels(width: int) -> int:
    """SETR-PUP's width for a backbone of `width` features: a quarter (256 on ViT-L's 1024), so the head's
    convolutions do not outweigh a small backbone (on a ViT-S at 112 px, 256 channels made a VPT-deep step 5.8
    times the linear head's on the 2-core CPU; 96 make it 1.8: `benchmarks/seg_head_cost.py`)."""
    return max(width // 4, 8)


class LinearHead(nn.Module):
    """(B, d, h, w) -> (B, classes, h, w): BatchNorm, then one linear map per patch."""

    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(width)
        self.classifier = nn.Conv2d(width, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.norm(features))


class PUPHead(nn.Module):
    """(B, d, h, w) -> (B, classes, 16h, 16w): SETR-PUP's four conv-norm-ReLU-upsample stages and a classifier."""

    def __init__(self, width: int, num_classes: int, channels: int | None = None) -> None:
        super().__init__()
        channels = channels or pup_channels(width)
        stages = []
        for i in range(4):
            stages += [nn.Conv2d(width if i == 0 else channels, channels, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                       nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)]
        self.stages = nn.Sequential(*stages)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(features))


def check_feature_map(adapter: BackboneAdapter) -> None:
    """ValueError in one line when the backbone's final feature map is under 2 x 2: a head's BatchNorm needs more
    than one value a channel in training, and a mask from one feature is one class everywhere."""
    (height, width), (image_height, image_width) = adapter.final_grid, adapter.img_size
    if min(height, width) < 2:
        raise ValueError(f"a {image_height} x {image_width} image gives this {adapter.family} backbone a {height} x "
                         f"{width} feature map (a feature per {adapter.dense_stride} px); segmentation needs at least "
                         f"2 x 2: use an image size (--img-size) of {2 * adapter.dense_stride} or more")


class PromptedSegmenter(PromptedModel):
    """A frozen backbone with prompts and a segmentation head: images (B, 3, H, W) -> logits (B, classes, H, W).

    Args: as `PromptedModel`, `head`: "linear" or "pup" (`HEADS`), and `head_channels`: the PUP head's width
    (default `pup_channels` of the backbone's)."""

    def __init__(self, backbone: nn.Module, prompt: PromptConfig, num_classes: int, *, head: str = "linear",
                 head_channels: int | None = None, **kwargs) -> None:
        if head not in HEADS:
            raise ValueError(f"segmentation head must be one of {', '.join(HEADS)}, got {head!r}")
        if not adapter_for(backbone).has_class_token:  # no head pools here; the config records the backbone's own
            prompt = dataclasses.replace(prompt, pooling="image-pool")
        super().__init__(backbone, prompt, num_classes, **kwargs)
        check_feature_map(self.adapter)
        self.head_kind = head
        if head == "linear":
            self.head = LinearHead(self.embed_dim, num_classes)
        else:
            self.head = PUPHead(self.embed_dim, num_classes, head_channels)

    @property
    def head_channels(self) -> int | None:
        """The PUP head's width (None for the linear head)."""
        return self.head.classifier.in_channels if self.head_kind == "pup" else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.dense_features(images))
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def dense_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the final normed image tokens as a map (B, d, H / patch, W / patch)."""
        x = self.stem(images)
        if self.prompts is None:
            x = self.run_plain(x)
        else:
            x, _ = self.location.run_blocks(self, x)
        return self.adapter.dense(x, self.adapter.grid_of(images))

    def queries_at(self, block: int) -> int | None:
        return None  # every image token's output is read

    def forward_from_stem(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a segmenter reads the image size from the images: call it on images")
