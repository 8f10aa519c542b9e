"""What segmentation predictions become on disk and on the page: palette PNGs of class indices, and overlays.

A predicted mask is saved as a palette ("P" mode) PNG: its pixels ARE the class indices (so vptune, VOC tools and
Pillow read it back as indices) and its palette gives each class a colour for viewers (VOC's colour map: class k
gets the colour built from the bits of k, so the first classes are far apart; 255, ignore, is white). The overlay
blends those colours over the image, leaving ignored pixels as they are.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .._io import atomic_write
from .segmentation_metrics import logits_at

IGNORE = 255


def palette() -> np.ndarray:
    """(256, 3) uint8: VOC's colour map (class k's colour from the bits of k), 255 white."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    for k in range(256):
        value, r, g, b = k, 0, 0, 0
        for shift in range(7, -1, -1):  # the bits of k, three at a time, from the most significant colour bit down
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[k] = (r, g, b)
    colours[IGNORE] = (255, 255, 255)
    return colours


def mask_image(mask: np.ndarray) -> Image.Image:
    """Class indices (H, W) -> a palette image whose pixel values are those indices."""
    if mask.ndim != 2 or mask.min() < 0 or mask.max() > IGNORE:
        raise ValueError(f"mask_image: a mask is (H, W) of indices 0..{IGNORE}, got shape {mask.shape} with values "
                         f"{mask.min()}..{mask.max()}")
    pixels = np.ascontiguousarray(mask, dtype=np.uint8)
    image = Image.frombytes("P", (pixels.shape[1], pixels.shape[0]), pixels.tobytes())  # the indices, as they are
    image.putpalette(palette().flatten().tolist())
    return image


def save_mask(mask: np.ndarray, path: str | Path) -> Path:
    """Write `mask` as a palette PNG, atomically."""
    image = mask_image(mask)
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """RGB image (H, W, 3) uint8 with each class's colour blended in at `alpha`; ignored pixels unchanged."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"overlay: image {image.shape[:2]} and mask {mask.shape} differ in size")
    colours = palette()[np.clip(mask, 0, IGNORE)].astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    keep = (mask == IGNORE)[..., None]
    return Image.fromarray(np.where(keep, image, np.rint(blended)).astype(np.uint8))


def overlay_jpeg(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5, quality: int = 90) -> bytes:
    """`overlay` as JPEG bytes (the server's page, `vptune predict`'s overlay files)."""
    buffer = io.BytesIO()
    overlay(image, mask, alpha).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def mask_at(logits: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """One image's logits (classes, h, w) -> its class indices (H, W) uint8 at `size` (H, W): the logits resized
    bilinearly first (as `vptune eval` scores them), then the most likely class at each pixel."""
    return logits_at(logits, size).argmax(0).to(torch.uint8).cpu().numpy()


def class_shares(mask: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """Each predicted class's {class, index, share} of the mask's pixels, largest first."""
    counts = np.bincount(mask.ravel(), minlength=len(class_names))
    order = np.argsort(-counts, kind="stable")
    return [{"class": class_names[k], "index": int(k), "share": float(counts[k] / mask.size)}
            for k in order if counts[k]]


def mask_png_base64(mask: np.ndarray) -> str:
    """`mask_image` as base64 PNG bytes (the server's answer: decoded, its pixels are the class indices)."""
    buffer = io.BytesIO()
    mask_image(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
