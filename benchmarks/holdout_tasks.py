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

The second set, kept apart from everything the recipe was tuned on (docs/recipe.md, "Hold-out tasks nobody tuned
for"), drawn with numpy and Pillow alone, each unlike the built-ins and unlike the others, and each with train and
test splits only (no val: vptune carves one, as it does for users' data):

- counting: 6 classes, how many discs (1 to 6) lie on a noisy background, VTAB's "structured" kind of task (CLEVR
  count); few-shot: 30 train, 60 test per class.
- shapes: 5 classes (circle, square, triangle, cross, star) of random size, angle and colour among clutter lines,
  imbalanced as real data often is: 120, 60, 30, 15 and 8 train images, 40 test per class.
- gratings: 12 classes, the orientation of a sine grating in steps of 15 degrees (jittered by up to 5), a faint
  patch of it somewhere in strong noise: fine-grained and far from any photograph; 30 train, 30 test per class.

    python benchmarks/holdout_tasks.py OUT_DIR              # all six (the first three need: pip install scikit-image)
    python benchmarks/holdout_tasks.py OUT_DIR --untuned    # the second set only
"""
from __future__ import annotations

import argparse
import csv
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


# ------------------------------------------------------------------------------ the second set (untuned)
SIZE = 96


def _canvas(rng: np.random.Generator, noise: float = 25.0) -> np.ndarray:
    """A gray background with a random tint and pixel noise, (SIZE, SIZE, 3) float."""
    base = rng.uniform(60, 140) + rng.uniform(-20, 20, size=3)
    return np.clip(base + rng.normal(0, noise, (SIZE, SIZE, 3)), 0, 255)


def _write_untuned(root: Path, draw, counts: dict[str, dict[str, int]], seed: int) -> Path:
    """Images from `draw(label, rng) -> uint8 (SIZE, SIZE, 3)`, `counts[split][label]` of each."""
    rng = np.random.default_rng(seed)
    rows = [(draw(label, rng), label, split) for split, per_label in counts.items()
            for label, count in per_label.items() for _ in range(count)]
    return write_task(root, rows)


def counting(root: Path, seed: int = 0) -> Path:
    from PIL import ImageDraw

    def draw(label: str, rng: np.random.Generator) -> np.ndarray:
        image = Image.fromarray(_canvas(rng).astype(np.uint8))
        pen, placed = ImageDraw.Draw(image), []
        while len(placed) < int(label):  # discs that do not touch, so every one can be counted
            r = rng.uniform(5, 10)
            x, y = rng.uniform(r + 2, SIZE - r - 2, size=2)
            if all((x - a) ** 2 + (y - b) ** 2 > (r + c + 3) ** 2 for a, b, c in placed):
                placed.append((x, y, r))
                colour = tuple(int(v) for v in rng.integers(150, 256, size=3))
                pen.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        return np.asarray(image)

    labels = [str(n) for n in range(1, 7)]
    return _write_untuned(root, draw, {"train": dict.fromkeys(labels, 30), "test": dict.fromkeys(labels, 60)}, seed)


def _polygon(label: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    def ring(points: int, radii: tuple[float, ...]) -> list[tuple[float, float]]:
        step = 2 * np.pi / (points * len(radii))
        return [(cx + r * radii[i % len(radii)] * np.cos(angle + i * step),
                 cy + r * radii[i % len(radii)] * np.sin(angle + i * step)) for i in range(points * len(radii))]

    if label == "square":
        return ring(4, (1.0,))
    if label == "triangle":
        return ring(3, (1.0,))
    if label == "star":
        return ring(5, (1.0, 0.4))
    # a cross: 12 corners on two radii, arms a third of its width
    return ring(4, (1.0, 1.0, 0.45))


def shapes(root: Path, seed: int = 0) -> Path:
    from PIL import ImageDraw

    def draw(label: str, rng: np.random.Generator) -> np.ndarray:
        image = Image.fromarray(_canvas(rng, noise=15).astype(np.uint8))
        pen = ImageDraw.Draw(image)
        for _ in range(3):  # clutter: lines of random colour across the image
            pen.line([tuple(rng.uniform(0, SIZE, size=2)), tuple(rng.uniform(0, SIZE, size=2))],
                     fill=tuple(int(v) for v in rng.integers(0, 256, size=3)), width=int(rng.integers(1, 4)))
        r = rng.uniform(12, 30)
        cx, cy = rng.uniform(r, SIZE - r, size=2)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if label == "circle":
            pen.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            pen.polygon(_polygon(label, cx, cy, r, rng.uniform(0, 2 * np.pi)), fill=colour)
        return np.asarray(image)

    train = {"circle": 120, "square": 60, "triangle": 30, "cross": 15, "star": 8}
    return _write_untuned(root, draw, {"train": train, "test": dict.fromkeys(train, 40)}, seed)


def gratings(root: Path, seed: int = 0) -> Path:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] - SIZE / 2

    def draw(label: str, rng: np.random.Generator) -> np.ndarray:
        angle = np.deg2rad(float(label) + rng.uniform(-5, 5))
        period = rng.uniform(4, 14)
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 2 * np.pi))
        window = np.exp(-((xx - rng.uniform(-20, 20)) ** 2 + (yy - rng.uniform(-20, 20)) ** 2)
                        / (2 * rng.uniform(12, 30) ** 2))  # a patch of grating somewhere, fading into noise
        gray = 128 + rng.uniform(20, 60) * wave * window + rng.normal(0, 45, (SIZE, SIZE))
        tint = rng.uniform(0.7, 1.3, size=3)
        return np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)

    labels = [f"{15 * k:g}" for k in range(12)]
    return _write_untuned(root, draw, {"train": dict.fromkeys(labels, 30), "test": dict.fromkeys(labels, 30)}, seed)


TUNED_ON = (textures, faces, defects)
UNTUNED = (counting, shapes, gratings)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("runs/holdout"), help="folder to write the tasks in")
    parser.add_argument("--untuned", action="store_true", help="the second set only (counting, shapes, gratings)")
    args = parser.parse_args()
    for make in UNTUNED if args.untuned else TUNED_ON + UNTUNED:
        print(make(args.out / make.__name__))
