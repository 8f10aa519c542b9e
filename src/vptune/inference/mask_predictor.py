"""`MaskPredictor`: a segmentation task's masks for image files (what `vptune predict` does with such a task).

Each image is resized to the model's input size, its logits resized back to the image's own size (bilinear, as
`vptune eval` scores them) and the most likely class taken at every pixel. Each image gives a palette PNG of class
indices (`masks.save_mask`) and an overlay JPEG, written under the output folder at the image's path relative to
the inputs' common folder, so images of one name in different folders never overwrite each other.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .._io import atomic_write
from ..data import MAX_PIXELS, decode_image
from ..data.formats import readable_images
from ..data.joint_transforms import JointTransform
from ..devices import autocast, maybe_compile, resolve_precision
from ..errors import ConfigError
from ..model import PromptedSegmenter
from .masks import class_shares, mask_at, overlay_jpeg, save_mask

OVERLAY_SUFFIX = ".overlay.jpg"


class MaskPredictor:
    """Masks of one segmentation task; args as `Predictor`'s (`Predictor.from_task` gives one for such a task)."""

    def __init__(self, model: PromptedSegmenter, *, batch_size: int = 32, max_pixels: int = MAX_PIXELS,
                 precision: str = "auto", compile: bool = False) -> None:
        self.model = model.eval()
        data = model.data_config
        self.transform = JointTransform(data["input_size"][-1], data["mean"], data["std"], train=False)
        self.class_names = model.labels
        self.batch_size, self.max_pixels = batch_size, max_pixels
        self.precision = resolve_precision(precision, str(self.device))
        self.forward = maybe_compile(self.model, compile)

    @property
    def device(self) -> torch.device:
        return next(self.model.head.parameters()).device

    @torch.no_grad()
    def masks(self, images: Sequence[torch.Tensor]) -> list[np.ndarray]:
        """uint8 images (3, H, W), any sizes -> class indices (H, W) uint8 for each, at its own size."""
        batch = torch.stack([self.transform.image_for_model(image) for image in images]).to(self.device)
        with autocast(self.device, self.precision):
            logits = self.forward(batch)
        return [mask_at(one, tuple(image.shape[-2:])) for one, image in zip(logits, images)]

    def predict_files(self, paths: Sequence[str | os.PathLike], output: str | os.PathLike,
                      skip_bad: bool = False) -> list[dict]:
        """For each image file (a folder: each image under it): its mask PNG and overlay JPEG under `output`, and
        each class's share of its pixels. Every file is checked, and every output name, before the first is
        written: nothing of the user's is overwritten (an existing file of the same name is an error)."""
        files = readable_images(paths, self.max_pixels, skip_bad)
        targets = _targets(files, Path(output))
        results = []
        for start in range(0, len(files), self.batch_size):
            chunk = files[start:start + self.batch_size]
            images = [decode_image(path, str(path), self.max_pixels, "Fix it, or leave it out.") for path in chunk]
            for path, image, mask in zip(chunk, images, self.masks(images)):
                mask_path, overlay_path = targets[path]
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                save_mask(mask, mask_path)
                jpeg = overlay_jpeg(image.permute(1, 2, 0).numpy(), mask)
                atomic_write(overlay_path, lambda tmp: tmp.write_bytes(jpeg))
                results.append({"image": str(path), "mask": str(mask_path), "overlay": str(overlay_path),
                                "classes": class_shares(mask, self.class_names)})
        return results


def _targets(files: list[Path], output: Path) -> dict[Path, tuple[Path, Path]]:
    """Each image's (mask PNG, overlay JPEG) paths: its path under the images' common folder, under `output`.
    Refused before anything is written: an output folder that holds any input image (the masks would be read as
    images by the next run over it), and names that already exist."""
    output = output.expanduser().resolve()
    existing = next(path for path in (output, *output.parents) if path.exists())
    if not existing.is_dir():
        raise ConfigError(f"--output {output}: {existing} is a file; masks are written into a folder: give a "
                          f"folder's path")
    if not os.access(existing, os.W_OK):
        raise ConfigError(f"--output {output}: {existing} is not writable; choose a folder you can write to")
    resolved = [path.resolve() for path in files]
    common = Path(os.path.commonpath([path.parent for path in resolved]))
    if any(output == path.parent or output in path.parents for path in resolved):
        raise ConfigError(f"--output {output} holds the images being predicted: their masks would be read as images "
                          f"next time; choose an --output outside the images' folders")
    targets = {file: (output / path.relative_to(common).with_suffix(".png"),
                      output / path.relative_to(common).with_suffix(OVERLAY_SUFFIX))
               for file, path in zip(files, resolved)}
    existing = [str(p) for pair in targets.values() for p in pair if p.exists()]
    if existing:
        raise ConfigError(f"{len(existing)} output file(s) exist already (e.g. {existing[0]}); vptune does not "
                          f"overwrite them: choose another --output, or move them away")
    return targets
