"""A segmentation split as a torch dataset: each image/mask pair decoded on access and through the joint transform."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .datasets import MAX_PIXELS, decode_image, one_thread
from .joint_transforms import JointTransform
from .segmentation import Pair, read_mask


class SegmentationDataset(Dataset):
    """Items (image (3, S, S) float, normalised; mask int64: (S, S) in training, the full (H, W) otherwise)."""

    def __init__(self, pairs: list[Pair], transform: JointTransform, shift: bool = False,
                 max_pixels: int = MAX_PIXELS) -> None:
        self.pairs, self.transform, self.shift, self.max_pixels = pairs, transform, shift, max_pixels

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = self.pairs[i]
        with one_thread():
            image = decode_image(pair.image, str(pair.image), self.max_pixels)
            mask = torch.from_numpy(read_mask(pair.mask, self.shift))
            return self.transform(image, mask)  # randomness: torch's global stream, seeded per item by the loader


def collate_masks(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Images stacked; masks kept as a list (at full resolution they differ in size)."""
    images, masks = zip(*batch)
    return torch.stack(images), list(masks)
