"""Image and mask through the same geometry: random scale, crop and flip for training; a resize for evaluation.

The image is resampled bilinearly, the mask by nearest neighbour (an index is never blended with its neighbour).
Padding, where a scaled image is smaller than the crop, is the mean colour for the image (0 after normalisation)
and 255 (ignore) for the mask, so padded pixels are never scored. Evaluation resizes the image to the model's size
and keeps the mask at full resolution: the logits are resized back to it (`vptune` scores every original pixel).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .segmentation import IGNORE
from .transforms import build_transform


class JointTransform:
    """uint8 image (3, H, W) and int64 mask (H, W) -> normalised float image (3, size, size) and mask.

    train: scale by a factor drawn from `scales` (of the side that makes the image `size` on its shorter side),
    crop `size` x `size` at a random place, flip left-right with probability 1/2. Otherwise: the image resized to
    `size` x `size` (as classification's test transform does) and the mask unchanged. Randomness from `generator`,
    so an item's augmentation is a function of its seed."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], train: bool,
                 scales: tuple[float, float] = (0.5, 2.0)) -> None:
        self.size, self.train, self.scales = size, train, scales
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.resize_for_model = build_transform(size, mean, std)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.train:
            return self.image_for_model(image), mask
        image = (image.float() / 255.0 - self.mean) / self.std
        low, high = self.scales
        factor = low + (high - low) * float(torch.rand((), generator=generator))
        height, width = mask.shape
        shape = tuple(max(1, round(side * factor * self.size / min(height, width))) for side in (height, width))
        image, mask = _resize(image, shape, "bilinear"), _resize(mask, shape, "nearest")
        image, mask = _pad_to(image, self.size, 0.0), _pad_to(mask, self.size, IGNORE)
        top = int(torch.randint(image.shape[1] - self.size + 1, (), generator=generator))
        left = int(torch.randint(image.shape[2] - self.size + 1, (), generator=generator))
        image = image[:, top:top + self.size, left:left + self.size]
        mask = mask[top:top + self.size, left:left + self.size]
        if float(torch.rand((), generator=generator)) < 0.5:
            image, mask = image.flip(-1), mask.flip(-1)
        return image.contiguous(), mask.contiguous()


    def image_for_model(self, image: torch.Tensor) -> torch.Tensor:
        """Evaluation's image side alone (prediction, where there is no mask): classification's test transform
        (resized to size x size, normalised), so eval, predict and the server's shared decoding see one input."""
        return self.resize_for_model(image)


def _resize(tensor: torch.Tensor, shape: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, H, W) float or (H, W) int resized to `shape`; masks by nearest neighbour, kept int64."""
    if tuple(tensor.shape[-2:]) == tuple(shape):
        return tensor
    if tensor.dim() == 2:
        return F.interpolate(tensor[None, None].float(), size=shape, mode="nearest-exact")[0, 0].long()
    return F.interpolate(tensor[None], size=shape, mode=mode, align_corners=False, antialias=True)[0]


def _pad_to(tensor: torch.Tensor, size: int, value: float) -> torch.Tensor:
    """Pad the bottom and right of (C, H, W) or (H, W) to at least size x size with `value`."""
    height, width = tensor.shape[-2:]
    return F.pad(tensor, (0, max(0, size - width), 0, max(0, size - height)), value=value)
