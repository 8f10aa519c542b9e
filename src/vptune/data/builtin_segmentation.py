"""Built-in segmentation tasks, offline and deterministic, written once into `<cache>/data/NAME/` as users' data
are laid out (images/ and masks/ with train/, val/, test/ folders, classes.txt) and read back through the same
loader as theirs. Fixed splits: 400 train, 100 val, 200 test images of 96 x 96.

- `pasted-animals`: colour images, each with 1 to 3 animal-mnist silhouettes (the built-in classification set's,
  28 x 28) pasted at random scales (24 to 56 px) and places onto a random texture (a sum of oriented sine waves and
  noise, random colours); every object is filled with a texture of its own, so neither colour nor texture tells the
  class: its shape does. Mask: 0 = ground, k + 1 = animal class k, later pastes over earlier ones. The splits come
  from disjoint silhouettes (animal-mnist's own test images give the test split).
- `surface-defects`: gray textured surfaces (the same kind of texture, in gray) with 1 to 4 small defects drawn
  on them, as the hold-out generator's defects task draws them (benchmarks/holdout_tasks.py), now with their
  pixels: scratches (thin lines of random angle, 25 to 60 px long, 2 to 4 px wide) and spots (ellipses with radii
  of 4 to 10 px), each dark or bright. Mask: 0 = surface, 1 = scratch, 2 = spot. Thin structures a few pixels wide,
  where a patch of 16 px holds several classes: the task that shows what a head that upsamples is worth.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .._io import atomic_write_text, cache_folder
from .builtin import BuiltinArrays, load_builtin

NAME = "pasted-animals"
DEFECTS = "surface-defects"
SIZE = 96
COUNTS = {"train": 400, "val": 100, "test": 200}
SCALES = (24, 56)
SEED = 0  # the task is fixed: it never depends on the user's seed
DONE = ".complete"  # written last: a folder without it was cut short and is written again


def builtin_segmentation_folder(name: str = NAME) -> Path:
    """The task's folder, written on first use (pasted-animals from the cached animal-mnist arrays)."""
    folder = cache_folder("data", name)
    if not (folder / DONE).is_file():
        if name == DEFECTS:
            write_surface_defects(folder)
        else:
            write_pasted_animals(folder, load_builtin("animal-mnist"))
    return folder


def write_pasted_animals(folder: Path, animals: BuiltinArrays, counts: dict[str, int] = COUNTS) -> Path:
    """Write the task into `folder` from silhouettes `animals` (train/val scenes from their train split, test
    scenes from their test split, so no silhouette is in two splits)."""
    rng = np.random.default_rng(SEED)
    pools = _silhouette_pools(animals, rng)
    scenes = {split: [_scene(animals, pools[split], rng) for _ in range(count)] for split, count in counts.items()}
    _write(folder, scenes, ["ground", *animals.class_names], f"{NAME} from {animals.origin} ({animals.content_sha256})")
    return folder


def write_surface_defects(folder: Path, counts: dict[str, int] = COUNTS) -> Path:
    """Write `surface-defects` into `folder` (numpy and Pillow alone)."""
    rng = np.random.default_rng(SEED)
    _write(folder, {split: [_defects_scene(rng) for _ in range(count)] for split, count in counts.items()},
           ["surface", "scratch", "spot"], DEFECTS)
    return folder


def _write(folder: Path, scenes: dict[str, list[tuple[np.ndarray, np.ndarray]]], classes: list[str],
           origin: str) -> None:
    for split, pairs in scenes.items():
        for sub in ("images", "masks"):
            (folder / sub / split).mkdir(parents=True, exist_ok=True)
        for i, (image, mask) in enumerate(pairs):
            Image.fromarray(image).save(folder / "images" / split / f"{i:04}.png")
            Image.fromarray(mask).save(folder / "masks" / split / f"{i:04}.png")
    atomic_write_text(folder / "classes.txt", "\n".join(classes) + "\n")
    atomic_write_text(folder / DONE, origin + "\n")


def _silhouette_pools(animals: BuiltinArrays, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices of the silhouettes each split draws from: animal-mnist's test images for test, the rest divided
    80/20 between train and val."""
    rest = rng.permutation(np.flatnonzero(~animals.is_test))
    cut = int(0.8 * len(rest))
    return {"train": rest[:cut], "val": rest[cut:], "test": np.flatnonzero(animals.is_test)}


def _scene(animals: BuiltinArrays, pool: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image (SIZE, SIZE, 3) uint8 and its mask (SIZE, SIZE) uint8."""
    image, mask = _texture(rng), np.zeros((SIZE, SIZE), dtype=np.uint8)
    for index in rng.choice(pool, size=rng.integers(1, 4), replace=False):
        side = int(rng.integers(SCALES[0], SCALES[1] + 1))
        shape = np.asarray(Image.fromarray(animals.images[index]).resize((side, side), Image.BILINEAR)) > 127
        top, left = (int(v) for v in rng.integers(0, SIZE - side + 1, size=2))
        region = (slice(top, top + side), slice(left, left + side))
        image[region][shape] = _texture(rng, side)[shape]
        mask[region][shape] = animals.labels[index] + 1
    return image, mask


def _texture(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A random colour texture (size, size, 3) uint8: two oriented sine waves between two colours, plus noise."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    wave = sum(np.sin(2 * np.pi * rng.uniform(2, 9) * (np.cos(a) * xx + np.sin(a) * yy) + rng.uniform(0, 6.3))
               for a in rng.uniform(0, np.pi, size=2)) / 4 + 0.5
    low, high = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    pixels = low + (high - low) * wave[..., None] + rng.normal(0, 12, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _defects_scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A gray surface (SIZE, SIZE) uint8 with 1 to 4 scratches and spots, and its mask."""
    surface = Image.fromarray(_texture(rng).mean(axis=2).astype(np.uint8))
    mask = Image.new("L", (SIZE, SIZE), 0)
    paint, label = ImageDraw.Draw(surface), ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(1, 5))):
        shade = int(rng.choice([20, 235]))  # dark or bright
        if rng.random() < 0.5:  # a scratch
            x0, y0 = rng.integers(10, SIZE - 10, size=2)
            angle, length, width = rng.uniform(0, np.pi), rng.uniform(25, 60), int(rng.integers(2, 5))
            line = [(int(x0), int(y0)), (int(x0 + length * np.cos(angle)), int(y0 + length * np.sin(angle)))]
            paint.line(line, fill=shade, width=width)
            label.line(line, fill=1, width=width)
        else:  # a spot
            cx, cy = rng.integers(15, SIZE - 15, size=2)
            rx, ry = rng.uniform(4, 10, size=2)
            box = [cx - rx, cy - ry, cx + rx, cy + ry]
            paint.ellipse(box, fill=shade)
            label.ellipse(box, fill=2)
    return np.asarray(surface), np.asarray(mask)
