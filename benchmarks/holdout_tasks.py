"""Image tasks that are NOT among vptune's built-in data sets, to check that a recipe chosen on the built-ins holds
elsewhere. Each is written as a folder of PNGs with a `labels.csv` of `path,label,split` rows, the way a user
would bring their own data.

- textures: 3 classes (brick, grass, gravel), 96 px gray crops of scikit-image's bundled 512 x 512 photographs;
  train / val / test crops come from disjoint horizontal bands of each photograph (no pixel is shared).
  100 train, 30 val, 60 test per class (a small, low-variety task like a surface-inspection data set).
- faces: 2 classes (face, not face), scikit-image's bundled LFW subset, 25 x 25 gray; 60 train, 20 val,
  20 test per class.
- defects: 3 classes (clean, scratch, spot) of 96 px crops of the same three photographs, a small synthetic
  defect drawn on two of them (a thin line of random angle, or a blob of random size), like a surface-inspection
  task where the class is a small local detail; 100 train, 30 val, 60 test per class, bands as for textures.

    python benchmarks/holdout_tasks.py OUT_DIR        # needs: pip install scikit-image
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from PIL import Image

CROP = 96
BANDS = {"train": (0, 300), "val": (300, 400), "test": (400, 512)}  # rows of each 512 x 512 photograph
COUNTS = {"train": 100, "val": 30, "test": 60}


def write_task(root: Path, rows: list[tuple[np.ndarray, str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "split"])
        for i, (pixels, label, split) in enumerate(rows):
            name = f"{split}/{label}_{i:04d}.png"
            (root / split).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(root / name)
            out.writerow([name, label, split])
    return root / "labels.csv"


def textures(root: Path, seed: int = 0) -> Path:
    import skimage.data

    rng = np.random.default_rng(seed)
    rows = []
    for label in ("brick", "grass", "gravel"):
        photo = getattr(skimage.data, label)()
        for split, (top, bottom) in BANDS.items():
            for _ in range(COUNTS[split]):
                y = rng.integers(top, bottom - CROP + 1)
                x = rng.integers(0, photo.shape[1] - CROP + 1)
                rows.append((np.ascontiguousarray(photo[y:y + CROP, x:x + CROP]), label, split))
    return write_task(root, rows)


def _draw_defect(crop: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    from PIL import ImageDraw

    image = Image.fromarray(crop)
    draw = ImageDraw.Draw(image)
    shade = int(rng.choice([20, 235]))  # dark or bright
    if kind == "scratch":
        x0, y0 = rng.integers(10, CROP - 10, size=2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(25, 60)
        x1, y1 = x0 + length * np.cos(angle), y0 + length * np.sin(angle)
        draw.line([(int(x0), int(y0)), (int(x1), int(y1))], fill=shade, width=int(rng.integers(1, 3)))
    elif kind == "spot":
        cx, cy = rng.integers(15, CROP - 15, size=2)
        rx, ry = rng.uniform(3, 8, size=2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=shade)
    return np.asarray(image)


def defects(root: Path, seed: int = 0) -> Path:
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)() for name in ("brick", "grass", "gravel")]
    rows = []
    for label in ("clean", "scratch", "spot"):
        for split, (top, bottom) in BANDS.items():
            for _ in range(COUNTS[split]):
                photo = photos[rng.integers(len(photos))]
                y = rng.integers(top, bottom - CROP + 1)
                x = rng.integers(0, photo.shape[1] - CROP + 1)
                crop = np.ascontiguousarray(photo[y:y + CROP, x:x + CROP])
                rows.append((_draw_defect(crop, label, rng), label, split))
    return write_task(root, rows)


def faces(root: Path, seed: int = 0) -> Path:
    import skimage.data

    images = (skimage.data.lfw_subset() * 255).round().astype(np.uint8)  # first 100 faces, then 100 non-faces
    rng = np.random.default_rng(seed)
    rows = []
    for label, block in (("face", images[:100]), ("not_face", images[100:])):
        order = rng.permutation(len(block))
        for split, (start, stop) in {"train": (0, 60), "val": (60, 80), "test": (80, 100)}.items():
            rows += [(block[i], label, split) for i in order[start:stop]]
    return write_task(root, rows)


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/holdout")
    for make in (textures, faces, defects):
        print(make(out / make.__name__))
