"""Semantic segmentation data: images and masks of class indices, in the layouts users have.

A mask holds one class index per pixel, 255 = ignore (as VOC and ADE20K write it). Palette PNGs are read as their
indices (never as colours); 8- and 16-bit gray PNGs as their values. Colour masks, and JPEG masks (lossy
compression changes indices along every edge), are refused with the fix.

Layouts (autodetected in this order):
- CSV file (`*.csv`) whose header names a mask column (mask / annotation / segmentation / gt) beside an image column
  (image / path / file...) and optionally split; paths relative to the CSV. (A headerless `image,mask[,split]`
  CSV is read too when the data are known to be segmentation, `--task segmentation`.)
- VOC: `JPEGImages/`, `SegmentationClass/` and optional `ImageSets/Segmentation/{train,val,test}.txt` (one image
  name a line; without lists every image with a mask is used).
- ADE20K (`ADEChallengeData2016`): `images/{training,validation}/` and `annotations/{training,validation}/`; its
  masks count classes from 1 with 0 = "other", so they are shifted down by one and 0 becomes 255 (ignored).
- Image and mask folders: `images/` and `masks/` (or `labels/`, `annotations/`), masks matched to images by file
  name without extension, optionally in `train/`, `val/`, `test/` sub-folders of both.

Class names: `classes.txt` (or `labels.txt`) in the root, one name a line, line k naming class k; VOC's own 21
names for a VOC folder without one; else the classes are 0..K-1, K = the largest index in any mask + 1.
Splits missing from the layout are carved from train with the seed (no test either: 70/15/15 of the images).

`check_segmentation` decodes every image and mask once, before anything else happens: sizes must match, and every
index must name a class (or be 255); all problems are named in one error, with the file and the fix.
"""
from __future__ import annotations

import csv
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .datasets import MAX_PIXELS, check_image, open_image
from .errors import DataError, DataWarning
from .formats import IMAGE_EXTENSIONS, SPLIT_FOLDERS, find_class_file, read_class_file

IGNORE = 255  # the mask value that marks pixels no class is scored on
SPLITS = ("train", "val", "test")
IMAGE_FOLDERS = ("images", "imgs", "img")
MASK_FOLDERS = ("masks", "labels", "annotations", "gt")
CSV_IMAGE_HEADERS = {"image", "img", "path", "file", "filename", "image_path"}
# a classification CSV's "label" column is not a mask: a segmentation CSV names its mask column as one
CSV_MASK_HEADERS = {"mask", "mask_path", "masks", "annotation", "segmentation", "seg", "gt"}
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
ACCEPTED = ("Accepted for segmentation: a .csv of `image,mask[,split]` rows; a VOC folder (JPEGImages/, "
            "SegmentationClass/, optional ImageSets/Segmentation/*.txt); an ADE20K folder (images/ and annotations/, "
            "each with training/ and validation/); or images/ and masks/ folders with matching file names "
            "(optionally in train/, val/, test/ sub-folders of both).")
ERRORS_SHOWN = 3


@dataclass(frozen=True)
class Pair:
    """One image and its mask."""

    image: Path
    mask: Path


@dataclass
class SegmentationData:
    """A segmentation task as found on disk: pairs by split, the class names (None until known), and how masks
    are read (`shift`: ADE20K's masks count classes from 1)."""

    root: Path
    layout: str
    splits: dict[str, list[Pair]]
    class_names: list[str] | None = None
    shift: bool = False
    split_rule: str = "from the layout"
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names or ())


def is_segmentation_data(source: str | os.PathLike) -> bool:
    """Whether `source` looks like segmentation data (so `vptune train --data` can tell without a flag)."""
    path = Path(source)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _csv_has_mask_column(path)
    return path.is_dir() and _layout_of(path) is not None


def read_segmentation_data(source: str | os.PathLike, seed: int = 0) -> SegmentationData:
    """Find the layout of `source` and list its image/mask pairs by split (nothing is decoded here)."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"segmentation data {path}: no such file or folder. {ACCEPTED}")
    layout = "csv" if path.suffix.lower() == ".csv" and path.is_file() else _layout_of(path) if path.is_dir() else None
    if layout is None:
        raise DataError(f"segmentation data {path}: not a layout vptune knows. {ACCEPTED}")
    data = {"csv": _read_csv, "voc": _read_voc, "ade20k": _read_ade20k, "folders": _read_folders}[layout](path)
    if not data.splits.get("train"):
        raise DataError(f"segmentation data {path}: no training images found ({layout} layout); {ACCEPTED}")
    data.class_names = _class_names(data)
    _carve_missing_splits(data, seed)
    return data


# ---------------------------------------------------------------------------------------------------- layouts
def _layout_of(root: Path) -> str | None:
    if (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir():
        return "voc"
    if (root / "images" / "training").is_dir() and (root / "annotations" / "training").is_dir():
        return "ade20k"
    if _first_dir(root, IMAGE_FOLDERS) and _first_dir(root, MASK_FOLDERS):
        return "folders"
    return None


def _first_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    return next((root / name for name in names if (root / name).is_dir()), None)


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files directly in `folder`, by name without extension (two files of one name are an error)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            if path.stem in found:
                raise DataError(f"{folder}: {found[path.stem].name} and {path.name} share a name; masks are matched "
                                f"to images by name without extension: rename one")
            found[path.stem] = path
    return found


def _matched(images: dict[str, Path], masks: dict[str, Path], image_dir: Path, mask_dir: Path) -> list[Pair]:
    """Pairs by name; an image without a mask or a mask without an image is an error naming both folders."""
    no_mask, no_image = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if no_mask:
        raise DataError(f"{len(no_mask)} image(s) in {image_dir} have no mask of the same name in {mask_dir}, e.g. "
                        f"{', '.join(images[s].name for s in no_mask[:ERRORS_SHOWN])}; add their masks, or move the "
                        f"images out")
    if no_image:
        raise DataError(f"{len(no_image)} mask(s) in {mask_dir} have no image of the same name in {image_dir}, e.g. "
                        f"{', '.join(masks[s].name for s in no_image[:ERRORS_SHOWN])}; add the images, or remove "
                        f"the masks")
    return [Pair(images[stem], masks[stem]) for stem in sorted(images)]


def _read_folders(root: Path) -> SegmentationData:
    image_dir, mask_dir = _first_dir(root, IMAGE_FOLDERS), _first_dir(root, MASK_FOLDERS)
    split_dirs = {SPLIT_FOLDERS[p.name.lower()]: p for p in sorted(image_dir.iterdir())
                  if p.is_dir() and p.name.lower() in SPLIT_FOLDERS}
    if not split_dirs:
        pairs = _matched(_files_by_stem(image_dir), _files_by_stem(mask_dir), image_dir, mask_dir)
        return SegmentationData(root, "folders", {"train": pairs})
    splits = {}
    for split, images in split_dirs.items():
        masks = mask_dir / images.name
        if not masks.is_dir():
            raise DataError(f"{images} has no mask folder {masks}; give each split folder of {image_dir.name}/ its "
                            f"twin in {mask_dir.name}/")
        splits[split] = _matched(_files_by_stem(images), _files_by_stem(masks), images, masks)
    return SegmentationData(root, "folders", splits)


def _read_voc(root: Path) -> SegmentationData:
    images, masks = _files_by_stem(root / "JPEGImages"), _files_by_stem(root / "SegmentationClass")
    lists = root / "ImageSets" / "Segmentation"
    splits = {}
    for split in SPLITS:
        listed = lists / f"{split}.txt"
        if listed.is_file():
            names = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
            missing = [name for name in names if name not in images or name not in masks]
            if missing:
                raise DataError(f"{listed}: {len(missing)} listed name(s) lack an image in JPEGImages/ or a mask in "
                                f"SegmentationClass/, e.g. {', '.join(missing[:ERRORS_SHOWN])}; add the files or "
                                f"remove those lines")
            splits[split] = [Pair(images[name], masks[name]) for name in names]
    if not splits:  # no lists: every image that has a mask (VOC's JPEGImages also holds detection-only images)
        splits["train"] = [Pair(images[name], masks[name]) for name in sorted(masks) if name in images]
    return SegmentationData(root, "voc", splits)


def _read_ade20k(root: Path) -> SegmentationData:
    splits = {}
    for split, folder in (("train", "training"), ("val", "validation")):
        images, masks = root / "images" / folder, root / "annotations" / folder
        if images.is_dir():
            if not masks.is_dir():
                raise DataError(f"{images} has no annotation folder {masks}; ADE20K keeps each split's masks there")
            splits[split] = _matched(_files_by_stem(images), _files_by_stem(masks), images, masks)
    return SegmentationData(root, "ade20k", splits, shift=True,
                            notes=["ADE20K masks: index k -> class k - 1, 0 ('other') -> 255 (ignored)"])


def _read_csv(path: Path) -> SegmentationData:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(f"{path} is empty; give one `image,mask[,split]` row per image")
    header = [cell.strip().lower() for cell in rows[0]]
    named = bool(set(header) & CSV_MASK_HEADERS)
    image_col = next((i for i, name in enumerate(header) if name in CSV_IMAGE_HEADERS), 0) if named else 0
    mask_col = next(i for i, name in enumerate(header) if name in CSV_MASK_HEADERS) if named else 1
    split_col = (header.index("split") if "split" in header else None) if named else 2
    splits: dict[str, list[Pair]] = {}
    for number, row in enumerate(rows[1:] if named else rows, start=2 if named else 1):
        cells = [cell.strip() for cell in row]
        if len(cells) <= max(image_col, mask_col):
            raise DataError(f"{path} line {number}: {len(cells)} column(s); each row needs an image and a mask path")
        split = cells[split_col].lower() if split_col is not None and split_col < len(cells) else "train"
        if split not in SPLIT_FOLDERS:
            raise DataError(f"{path} line {number}: split {split!r} is not train, val or test")
        for role, col in (("image", image_col), ("mask", mask_col)):
            if not cells[col]:
                raise DataError(f"{path} line {number}: the {role} path is empty; give each row an image and its mask")
        pair = Pair(path.parent / cells[image_col], path.parent / cells[mask_col])
        splits.setdefault(SPLIT_FOLDERS[split], []).append(pair)
    return SegmentationData(path.parent, "csv", splits)


def _csv_has_mask_column(path: Path) -> bool:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = [cell.strip().lower() for cell in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return bool(set(header) & CSV_MASK_HEADERS)


def _class_names(data: SegmentationData) -> list[str] | None:
    class_file = find_class_file(data.root)
    if class_file is not None:
        names = read_class_file(class_file)
        if not names or len(names) > IGNORE:
            raise DataError(f"{class_file}: {len(names)} class names; give 1 to {IGNORE} names, one a line (index "
                            f"{IGNORE} is the ignore label)")
        return names
    return list(VOC_CLASSES) if data.layout == "voc" else None  # else: from the masks (check_segmentation)


def _carve_missing_splits(data: SegmentationData, seed: int) -> None:
    """Splits the layout lacks, from train by the seed: val 10% (or test 15%) when one is missing, 15% + 15% when
    both are, each at least one image when train has three or more."""
    missing = [split for split in ("val", "test") if not data.splits.get(split)]
    if not missing:
        return
    shares = {"val": 0.15, "test": 0.15} if len(missing) == 2 else {"val": 0.1} if missing == ["val"] else {"test": 0.15}
    train = data.splits["train"]
    order, start = np.random.default_rng(seed).permutation(len(train)), 0
    for split, share in shares.items():
        count = max(round(share * len(train)), 1 if len(train) >= 3 else 0)
        data.splits[split] = [train[i] for i in sorted(order[start:start + count])]
        start += count
    data.splits["train"] = [train[i] for i in sorted(order[start:])]
    data.split_rule = f"carved from train by seed {seed}: " + ", ".join(
        f"{split} {len(data.splits[split])}" for split in missing)


# ---------------------------------------------------------------------------------------------------- masks
def read_mask(path: Path, shift: bool = False) -> np.ndarray:
    """A mask file as class indices (H, W) int64; `shift`: ADE20K's (k -> k - 1, 0 -> 255)."""
    if path.suffix.lower() in (".jpg", ".jpeg", ".jfif"):
        raise DataError(f"mask {path} is a JPEG: lossy compression changes class indices along every edge; save "
                        f"masks as PNG")
    try:
        with open_image(path) as image:
            mode = image.mode
            values = np.asarray(image)
    except Exception as err:
        raise DataError(f"cannot read mask {path}: {err or type(err).__name__}; masks are PNGs of class indices")
    if values.ndim == 3:
        if not (values[..., :3] == values[..., :1]).all():
            raise DataError(f"mask {path} is a colour image ({mode}): masks hold one class index a pixel; save it as "
                            f"a palette or grayscale PNG of indices (0, 1, 2, ..., 255 = ignore)")
        values = values[..., 0]
    values = values.astype(np.int64)
    if shift:
        values = np.where(values == 0, IGNORE, values - 1)
    return values


@dataclass(frozen=True)
class MaskCheck:
    problem: str | None   # why this pair cannot be used; None if it can
    largest: int = -1     # the largest class index in the mask (255 left out)


def check_pair(pair: Pair, shift: bool, num_classes: int | None, max_pixels: int = MAX_PIXELS) -> MaskCheck:
    """Decode the image and the mask once: readable, the same size, and indices inside the classes."""
    problem = check_image(pair.image, max_pixels).problem
    if problem:
        return MaskCheck(f"image {pair.image}: {problem}")
    try:
        mask = read_mask(pair.mask, shift)
    except DataError as err:
        return MaskCheck(str(err) if pair.mask.exists() else f"mask {pair.mask}: file not found")
    with Image.open(pair.image) as image:
        size = image.size
    if (mask.shape[1], mask.shape[0]) != size:
        return MaskCheck(f"mask {pair.mask} is {mask.shape[1]} x {mask.shape[0]} pixels but its image {pair.image} is "
                         f"{size[0]} x {size[1]}; masks must match their images pixel for pixel")
    labelled = mask[mask != IGNORE]
    if labelled.size and labelled.min() < 0:
        return MaskCheck(f"mask {pair.mask} holds negative values; class indices count from 0")
    largest = int(labelled.max()) if labelled.size else -1
    if num_classes is not None and largest >= num_classes:
        return MaskCheck(f"mask {pair.mask} holds index {largest}, but there are {num_classes} classes (0..."
                         f"{num_classes - 1}); name the class in classes.txt, or set those pixels to {IGNORE} to "
                         f"ignore them")
    return MaskCheck(None, largest)


def check_segmentation(data: SegmentationData, max_pixels: int = MAX_PIXELS,
                       skip_bad: bool = False) -> SegmentationData:
    """Every pair decoded once (threads); all problems in one DataError (with `skip_bad`: the pairs that cannot be
    used left out, with one warning); the class names set from the masks when no file named them."""
    pairs = [pair for split in SPLITS for pair in data.splits.get(split, [])]
    known = data.num_classes or None
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checks = list(pool.map(lambda pair: check_pair(pair, data.shift, known, max_pixels), pairs))
    problems = {pair: check.problem for pair, check in zip(pairs, checks) if check.problem}
    if problems:
        shown = "; ".join(list(problems.values())[:ERRORS_SHOWN])
        more = f" (and {len(problems) - ERRORS_SHOWN} more)" if len(problems) > ERRORS_SHOWN else ""
        if not skip_bad:
            raise DataError(f"{len(problems)} of {len(pairs)} image/mask pairs cannot be used: {shown}{more}; fix "
                            f"them, or pass --skip-bad to leave them out")
        warnings.warn(f"left out {len(problems)} of {len(pairs)} image/mask pairs that cannot be used (--skip-bad): "
                      f"{shown}{more}", DataWarning, stacklevel=2)
        data.splits = {split: [p for p in kept if p not in problems] for split, kept in data.splits.items()}
        empty = [split for split in SPLITS if split in data.splits and not data.splits[split]]
        if empty:
            raise DataError(f"segmentation data {data.root}: no usable pair left in {', '.join(empty)}: {shown}{more}")
    largest = {pair: check.largest for pair, check in zip(pairs, checks) if not check.problem}  # -1: all ignored
    train = data.splits.get("train", [])
    if train and all(largest[pair] < 0 for pair in train):
        raise DataError(f"segmentation data {data.root}: every pixel of every train mask is {IGNORE} (ignored), so "
                        f"there is nothing to learn; label the train masks' pixels with class indices")
    if data.class_names is None:
        data.class_names = [str(k) for k in range(max(largest.values()) + 1)]
    return data
