"""`Predictor`: a task model plus the test transform its backbone expects, for image files or tensors."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence

import torch

from ..data import MAX_PIXELS, build_transform, decode_image
from ..data.formats import readable_images
from ..devices import autocast, maybe_compile, resolve_precision
from ..errors import ConfigError
from ..model import PromptedModel, PromptedSegmenter, adapter_for
from ..rundir import RunDir
from ..tasks import load_task
from .runtime import log_runtime, resolve_runtime

if TYPE_CHECKING:
    from .mask_predictor import MaskPredictor


class Predictor:
    """Top-k predictions of one task. The transform comes from the model's own data config (input size, mean,
    std of its backbone), so a model built in Python predicts exactly like one loaded from a task directory.

    Args:
        model: the task's model; it runs on the device its weights are on (`from_task` puts it on one).
        batch_size: images decoded and run at once by `predict_files`.
        max_pixels: larger image files are refused from their header, before decoding.
        precision: autocast of the forward, `auto` (bf16 on a GPU that supports it, fp32 elsewhere), fp32, bf16
            or fp16; logits come back as fp32 whichever it is.
        compile: run the forward through `torch.compile` (eager, after one log line, where it cannot compile).
    """

    def __init__(self, model: PromptedModel, *, batch_size: int = 32, max_pixels: int = MAX_PIXELS,
                 precision: str = "auto", compile: bool = False) -> None:
        self.model = model.eval()
        data = model.data_config
        self.transform = build_transform(data["input_size"][-1], data["mean"], data["std"])
        self.class_names = model.labels
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.precision = resolve_precision(precision, str(self.device))
        self.forward = maybe_compile(self.model, compile)

    @classmethod
    def from_task(cls, path: str | os.PathLike, backbone: torch.nn.Module | str | None = None, *,
                  device: str = "auto", precision: str = "auto", compile: bool = False,
                  allow_download: bool = False, **kwargs) -> "Predictor | MaskPredictor":
        """A task directory, or a training run (its best checkpoint), on `device` (auto: CUDA, else MPS, else
        CPU) with `precision` (see the class); `allow_download` as in `load_task`. The checkpoint is read onto
        the CPU and then moved, so a task trained on a GPU loads on a machine without one, and the reverse. A
        segmentation task gives a `MaskPredictor` (masks, not classes)."""
        device, precision = resolve_runtime(device, precision)  # before the task and its backbone load
        model = load_task(RunDir.find_task(path), backbone=backbone, allow_download=allow_download)
        log_runtime("predict", device, precision, compile)
        if isinstance(model, PromptedSegmenter):  # masks, not classes
            from .mask_predictor import MaskPredictor

            return MaskPredictor(model.to(device), precision=precision, compile=compile, **kwargs)
        return cls(model.to(device), precision=precision, compile=compile, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.head.parameters()).device

    @torch.no_grad()
    def predict_files(self, paths: Sequence[str | os.PathLike], top_k: int = 5,
                      skip_bad: bool = False) -> list[dict]:
        """Top-k classes with probabilities for each image file (a folder: each image under it), decoded
        `batch_size` at a time. Every file is checked before the first prediction: an unreadable one is an
        error naming it, or with `skip_bad` is left out of the results with one warning."""
        check_top_k(top_k)
        paths = readable_images(paths, self.max_pixels, skip_bad)
        results = []
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start:start + self.batch_size]
            images = torch.stack([self.transform(decode_image(p, str(p), self.max_pixels, "Fix it, or leave it out."))
                                  for p in chunk])
            results += [{"image": str(path), "top": top} for path, top in zip(chunk, self.predict(images, top_k))]
        return results

    @torch.no_grad()
    def predict(self, images: torch.Tensor, top_k: int = 5) -> list[list[dict]]:
        """Normalised images (B, 3, H, W) -> for each, its top-k {class, index, probability}."""
        check_top_k(top_k)
        return top_k_rows(self.logits(images).softmax(dim=1).cpu(), self.class_names, top_k)

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes), fp32, on the model's device."""
        check_image_batch(images, self.model.data_config["input_size"], self.model.backbone)
        with autocast(self.device, self.precision):
            logits = self.forward(images.to(self.device))
        return logits.float()


def top_k_rows(probabilities: torch.Tensor, class_names: Sequence[str], top_k: int) -> list[list[dict]]:
    """Probabilities (B, C) -> for each row, its top-k {class, index, probability}, most likely first."""
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return [[{"class": class_names[i], "index": int(i), "probability": float(p)}
             for p, i in zip(values.tolist(), indices.tolist())]
            for values, indices in zip(top.values, top.indices)]


def check_image_batch(images: torch.Tensor, input_size: Sequence[int], backbone: torch.nn.Module) -> None:
    """ValueError unless `images` is a (B, C, H, W) batch of the model's input size (timm's own check is an
    AssertionError from inside the patch embedding); where the backbone takes any size (dynamic_img_size), any
    size whose sides are whole multiples of the patch."""
    adapter = adapter_for(backbone)
    shape = tuple(images.shape[1:])
    whole_patches = (adapter.dynamic_img_size and len(shape) == 3 and shape[0] == input_size[0]
                     and all(side > 0 and side % patch == 0 for side, patch in zip(shape[1:], adapter.patch_size)))
    if images.ndim != 4 or (shape != tuple(input_size) and not whole_patches):
        raise ValueError(f"images must be a (B, {', '.join(map(str, input_size))}) batch of normalised tensors, got "
                         f"shape {tuple(images.shape)}; make them with the model's transform (or use predict_files)")


def check_top_k(top_k: int, name: str = "--top-k") -> None:
    """ConfigError unless top_k is a positive integer; `name` is how the caller spells it (a flag, a field)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"{name} must be a positive integer (how many classes to list), got {top_k!r}")
