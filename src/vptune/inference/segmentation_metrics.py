"""Semantic segmentation metrics from a confusion matrix: mIoU, pixel accuracy and per-class IoU.

Pixels labelled 255 (ignore) are not scored. A class's IoU is TP / (TP + FP + FN); a class absent from both the
labels and the predictions has no IoU (None) and is left out of the mean, as mmsegmentation's mIoU does."""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

IGNORE = 255


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore: int = IGNORE) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted, of every scored pixel of
    `predicted` and `target` (same shape, class indices)."""
    if predicted.shape != target.shape:
        raise ValueError(f"confusion_matrix: predictions {tuple(predicted.shape)} and labels {tuple(target.shape)} "
                         f"differ in shape")
    scored = target != ignore
    pairs = target[scored].long() * num_classes + predicted[scored].long()
    return torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor, class_names: list[str] | None = None) -> dict:
    """mIoU, pixel accuracy, per-class IoU (None where a class is in neither labels nor predictions), the number
    of scored pixels and the confusion matrix (as lists)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    present = union > 0
    iou = torch.where(present, true_positive / union.clamp(min=1), torch.nan)
    names = class_names or [str(k) for k in range(len(confusion))]
    pixels = confusion.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else None,
        "pixel_accuracy": float(true_positive.sum() / pixels) if pixels else None,
        "per_class_iou": {name: (float(value) if present[k] else None) for k, (name, value) in enumerate(zip(names, iou))},
        "num_pixels": int(pixels),
        "confusion": confusion.long().tolist(),
    }


def logits_at(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """One image's logits (classes, h, w) resized bilinearly to `size` (H, W): how every mask is scored and drawn."""
    return F.interpolate(logits[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]


@torch.no_grad()
def evaluate_segmentation(model: Callable[[torch.Tensor], torch.Tensor],
                          batches: Iterable[tuple[torch.Tensor, list[torch.Tensor]]], num_classes: int,
                          class_names: list[str] | None = None, device: str | torch.device = "cpu") -> dict:
    """`segmentation_metrics` over batches of (images (B, 3, S, S), masks at full resolution), and `loss`, the
    cross-entropy over the scored pixels: each image's logits are resized to its own mask (bilinear) first, so
    every original pixel is scored."""
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    loss_sum = 0.0
    for images, masks in batches:
        logits = model(images.to(device)).float().cpu()
        for one, mask in zip(logits, masks):
            resized = logits_at(one, tuple(mask.shape))
            confusion += confusion_matrix(resized.argmax(0), mask, num_classes)
            loss_sum += float(F.cross_entropy(resized[None], mask[None], ignore_index=IGNORE, reduction="sum"))
    metrics = segmentation_metrics(confusion, class_names)
    return {"loss": loss_sum / max(metrics["num_pixels"], 1), **metrics}
