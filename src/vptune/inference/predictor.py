"""`Predictor`: a task model plus the test transform its backbone expects, for image files or tensors."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..data import MAX_PIXELS, Sample, build_transform, read_image
from ..devices import resolve_device
from ..errors import ConfigError
from ..model import PromptedViT
from ..rundir import RunDir
from ..tasks import load_task


class Predictor:
    """Top-k predictions of one task. The transform comes from the model's own data config (input size, mean,
    std of its backbone), so a model built in Python predicts exactly like one loaded from a task directory."""

    def __init__(self, model: PromptedViT, *, batch_size: int = 32, max_pixels: int = MAX_PIXELS) -> None:
        self.model = model.eval()
        data = model.data_config
        self.transform = build_transform(data["input_size"][-1], data["mean"], data["std"])
        self.class_names = model.class_names or [str(i) for i in range(model.head.out_features)]
        self.batch_size = batch_size
        self.max_pixels = max_pixels  # larger files are refused from their header, before decoding

    @classmethod
    def from_task(cls, path: str | os.PathLike, backbone: torch.nn.Module | str | None = None, *,
                  device: str = "auto", allow_download: bool = False, **kwargs) -> "Predictor":
        """A task directory, or a training run (its best checkpoint), on `device` (auto: CUDA, else MPS, else
        CPU); `allow_download` as in `load_task`."""
        device = resolve_device(device)
        model = load_task(RunDir.find_task(path), backbone=backbone, allow_download=allow_download)
        return cls(model.to(device), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.model.head.weight.device

    @torch.no_grad()
    def predict_files(self, paths: Sequence[str | os.PathLike], top_k: int = 5) -> list[dict]:
        """Top-k classes with probabilities for each image file, decoded `batch_size` at a time (errors name
        the file)."""
        results = []
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start:start + self.batch_size]
            images = torch.stack([self.transform(read_image(Sample(Path(p), -1, "command line"), self.max_pixels))
                                  for p in chunk])
            results += [{"image": str(path), "top": top} for path, top in zip(chunk, self.predict(images, top_k))]
        return results

    @torch.no_grad()
    def predict(self, images: torch.Tensor, top_k: int = 5) -> list[list[dict]]:
        """Normalised images (B, 3, H, W) -> for each, its top-k {class, index, probability}."""
        check_top_k(top_k)
        return top_k_rows(self.model(images.to(self.device)).softmax(dim=1).cpu(), self.class_names, top_k)


def top_k_rows(probabilities: torch.Tensor, class_names: Sequence[str], top_k: int) -> list[list[dict]]:
    """Probabilities (B, C) -> for each row, its top-k {class, index, probability}, most likely first."""
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return [[{"class": class_names[i], "index": int(i), "probability": float(p)}
             for p, i in zip(values.tolist(), indices.tolist())]
            for values, indices in zip(top.values, top.indices)]


def check_top_k(top_k: int) -> None:
    """ConfigError unless top_k is a positive integer."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer (how many classes to list), got {top_k!r}")
