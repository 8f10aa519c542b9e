"""What a task's training minimises and how its epochs are scored: classification (one label an image, chosen by
val top-1) or semantic segmentation (a class index a pixel, 255 ignored, chosen by val mIoU). The loop asks the
model's objective (`objective_of`) and is otherwise the same for both."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..devices import under_autocast
from ..inference.evaluate import evaluate_logits
from ..inference.segmentation_metrics import IGNORE, evaluate_segmentation
from ..model import PromptedModel, PromptedSegmenter
from .batches import make_loader, precompute_rows
from .config import TrainConfig
from .distributed import World

if TYPE_CHECKING:
    from .steps import Fit


class Classification:
    """Cross-entropy on the head's logits (B, classes); epochs chosen by val top-1."""

    task = "classification"
    score = "top1"          # the val metric that chooses the epoch (higher is better)
    train_metric = "top1"   # what the training rows count besides the loss
    caches_stem = True      # the stem cache may apply (`stem_cache.py`)
    test_keys = ("test_top1", "test_top5", "test_images")  # summary.json's test fields

    def item_losses(self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """One loss an image, (B,)."""
        return F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)

    def batch_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.item_losses(logits, labels).mean()

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        """(right, counted) for the training rows' `train_metric`."""
        return int((logits.argmax(1) == labels).sum()), len(labels)

    def validate(self, fit: "Fit", dataset: Dataset) -> dict:
        logits, labels = precompute_rows(fit.inference, dataset, fit.cfg, True, fit.world).tensors
        return {"loss": F.cross_entropy(logits, labels).item(), "top1": evaluate_logits(logits, labels)["top1"]}

    def test(self, model: PromptedModel, dataset: Dataset, cfg: TrainConfig, quiet: bool, world: World) -> dict:
        """summary.json's test fields (`test_keys`)."""
        logits, labels = precompute_rows(model, dataset, cfg, quiet, world).tensors
        metrics = evaluate_logits(logits, labels)
        return {"test_top1": metrics["top1"], "test_top5": metrics.get("top5"), "test_images": metrics["num_images"]}


class Segmentation(Classification):
    """Cross-entropy a pixel (255 = ignore) on the upsampled logits (B, classes, H, W), each image the mean over its
    scored pixels (a mostly-ignored crop counts as much as a full one); epochs chosen by val mIoU, scored at each
    mask's full resolution."""

    task = "segmentation"
    score = "miou"
    train_metric = "pixel_accuracy"
    caches_stem = False     # random scale and crop change every image's stem every epoch
    test_keys = ("test_miou", "test_pixel_accuracy", "test_per_class_iou", "test_images")

    def item_losses(self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        pixels = F.cross_entropy(logits, labels, reduction="none", ignore_index=IGNORE, label_smoothing=label_smoothing)
        scored = (labels != IGNORE).sum((1, 2))
        return pixels.sum((1, 2)) / scored.clamp(min=1)

    def hits(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
        scored = labels != IGNORE
        return int(((logits.argmax(1) == labels) & scored).sum()), int(scored.sum())

    def validate(self, fit: "Fit", dataset: Dataset) -> dict:
        metrics = self._evaluate(fit.inference, dataset, fit.model, fit.cfg)
        return {key: metrics[key] for key in ("loss", "miou", "pixel_accuracy")}

    def test(self, model: PromptedModel, dataset: Dataset, cfg: TrainConfig, quiet: bool, world: World) -> dict:
        metrics = self._evaluate(model, dataset, model, cfg)
        return {"test_miou": metrics["miou"], "test_pixel_accuracy": metrics["pixel_accuracy"],
                "test_per_class_iou": metrics["per_class_iou"], "test_images": len(dataset)}

    @staticmethod
    def _evaluate(forward: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, model: PromptedModel,
                  cfg: TrainConfig) -> dict:
        batches = make_loader(dataset, cfg, batch_size=cfg.batch_size)
        return evaluate_segmentation(under_autocast(forward, cfg.device, cfg.precision), batches, model.num_classes,
                                     model.labels, cfg.device)


CLASSIFICATION, SEGMENTATION = Classification(), Segmentation()
SCORE_NAMES = {"top1": "top-1", "miou": "mIoU"}  # a score as records key it, and as people read it


def score_of(cfg: TrainConfig) -> str:
    """The score a run's records hold (val_SCORE, best_val_SCORE, test_SCORE): "top1", or "miou" on a segmentation
    task (`cfg` is resolved to know which)."""
    return SEGMENTATION.score if cfg.resolved().task == SEGMENTATION.task else CLASSIFICATION.score


def objective_of(model: PromptedModel) -> Classification:
    """The objective a model trains for: segmentation for a `PromptedSegmenter`, else classification."""
    return SEGMENTATION if isinstance(model, PromptedSegmenter) else CLASSIFICATION
