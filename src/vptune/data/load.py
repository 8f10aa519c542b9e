"""`load_data`: one entry point for built-in names and users' paths, returning the four splits of a task
(`read_data` reads and checks them, `TaskData.datasets` adds the transforms)."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from .builtin import TEST_SPLITS, BuiltinArrays, builtin_name, load_builtin
from .datasets import MAX_PIXELS, ArrayDataset, DataSplits, FileDataset, Sample, bad_images, check_images
from .errors import DataError, DataWarning
from .formats import read_user_data
from .splits import carve, vtab1k_split
from .transforms import build_transform

PROTOCOLS = ("vtab1k", "full")
USER_HOLDOUT = (0.15, 0.15)  # val, test share of each class when a user's data has no split files (70/15/15)
CARVED_VAL = 0.10            # val share carved from train when a source has a test split but no val split
TRAINED_SPLITS = ("train", "trainval")  # the splits that get the recipe's training transform


@dataclass(frozen=True)
class TaskData:
    """A task's splits read and checked, before any transform: what `read_data` returns. Every listed file exists
    and decodes and no split is empty; `datasets` makes the torch datasets once the backbone's input size and
    normalisation are known (reading first lets a run refuse bad data before it fetches a backbone)."""
    class_names: list[str]
    splits: dict[str, np.ndarray | list[Sample]]  # train, val, trainval, test: built-in row indices or a user's files
    info: dict                                    # source, format, protocol, seed, split rule, ...
    arrays: BuiltinArrays | None = None           # a built-in set's images and labels
    root: Path | None = None                      # a user's data: the folder its relative paths start from
    max_pixels: int = MAX_PIXELS

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def datasets(self, *, img_size: int, mean: tuple[float, float, float], std: tuple[float, float, float],
                 recipe: str = "vtab") -> DataSplits:
        """The four splits as datasets of (3 x img_size x img_size normalised float32, int label) items."""
        transforms = {train: build_transform(img_size, mean, std, recipe=recipe, train=train)
                      for train in (True, False)}

        def make(split: str) -> Dataset:
            rows, transform = self.splits[split], transforms[split in TRAINED_SPLITS]
            if self.arrays is not None:
                return ArrayDataset(self.arrays.images, self.arrays.labels, rows, transform)
            return FileDataset(rows, transform, self.root, self.max_pixels)

        source = {key: self.info[key] for key in ("source", "format", "protocol")}
        transform = {"recipe": recipe, "seed": self.info["seed"], "img_size": img_size,
                     "mean": [float(m) for m in mean], "std": [float(s) for s in std]}
        info = {**source, **transform, **{k: v for k, v in self.info.items() if k not in source and k != "seed"}}
        return DataSplits(make("train"), make("val"), make("trainval"), make("test"), self.class_names, info)


def load_data(source: str | os.PathLike, *, img_size: int, mean: tuple[float, float, float],
              std: tuple[float, float, float], protocol: str = "vtab1k", recipe: str = "vtab", seed: int = 0,
              skip_bad: bool = False, max_pixels: int = MAX_PIXELS) -> DataSplits:
    """Load a built-in data set by name or a user's data set by path, as train / val / trainval / test.

    source:   "fashion-mnist", "animal-mnist", "digits", or a path: image folder, .csv, VTAB-1k task folder,
              FGVC folder (see `vptune.data.formats`).
    img_size, mean, std: from the backbone's data config; items come out 3 x img_size x img_size, normalised.
    protocol: built-ins only: "vtab1k" (seeded stratified train800 / val200 from the train split) or "full"
              (all train minus a seeded 10% val). Users' splits come from their files (or a seeded 70/15/15).
    recipe:   "vtab" (plain resize) or "fgvc" (random crop + flip for train / trainval; center crop otherwise).
    seed:     fixes every sampled split (recorded in `describe()`).
    skip_bad: users' data: decode every file once up front and drop unreadable / missing ones with one warning,
              instead of failing (by default every file is decoded up front too, and a bad one is an error).
    max_pixels: users' images over this many pixels are refused (decompression bombs), from their header.

    The same as `read_data(...).datasets(...)`: read and check first, then transform.
    """
    build_transform(img_size, mean, std, recipe=recipe)  # a bad size or recipe is refused before any file is read
    data = read_data(source, protocol=protocol, seed=seed, skip_bad=skip_bad, max_pixels=max_pixels)
    return data.datasets(img_size=img_size, mean=mean, std=std, recipe=recipe)


def read_data(source: str | os.PathLike, *, protocol: str = "vtab1k", seed: int = 0, skip_bad: bool = False,
              max_pixels: int = MAX_PIXELS) -> TaskData:
    """A task's splits, read and checked (see `load_data` for the arguments), without transforms."""
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    info = {"protocol": protocol, "seed": int(seed)}
    name = builtin_name(source)
    if name is not None:
        return _builtin_splits(name, protocol, int(seed), info)
    return _user_splits(Path(source).expanduser(), int(seed), skip_bad, info, max_pixels)


def _builtin_splits(name: str, protocol: str, seed: int, info: dict) -> TaskData:
    arrays = load_builtin(name)
    pool, test = np.flatnonzero(~arrays.is_test), np.flatnonzero(arrays.is_test)
    if protocol == "vtab1k":
        train, val = (pool[p] for p in vtab1k_split(arrays.labels[pool], seed))
        rule = "train800 + val200: seeded stratified sample of the train split; trainval = their union"
    else:
        (rest, held), _ = carve(arrays.labels[pool], (CARVED_VAL,), seed)
        train, val = pool[rest], pool[held]
        rule = "train = train split minus a seeded stratified 10% val; trainval = the whole train split"
    info = {"source": name, "format": "builtin", **info, "split_rule": rule, "test_split": TEST_SPLITS[name],
            "origin": arrays.origin, "data_sha256": arrays.content_sha256}
    splits = {"train": train, "val": val, "trainval": np.union1d(train, val), "test": test}
    return TaskData(arrays.class_names, splits, info, arrays=arrays)


def _user_splits(path: Path, seed: int, skip_bad: bool, info: dict, max_pixels: int) -> TaskData:
    data = read_user_data(path)
    if len(data.class_names) < 2:  # every prediction would be right: a test top-1 of 1.0 that means nothing
        raise DataError(f"{path}: the data set has {len(data.class_names)} class ({', '.join(data.class_names)}); a "
                        f"classifier needs at least 2: add the other classes' images")
    splits = data.splits
    skipped = 0
    if skip_bad:
        splits, digests, skipped = _drop_bad(splits, max_pixels)
    else:
        digests = _require_files(splits, max_pixels)
    splits, rule = _complete_splits(splits, data.class_names, seed)
    _warn_suspicious(splits, data.class_names, digests)
    for split in ("train", "val", "test"):
        if split in splits and not splits[split]:
            total = len({s.path for samples in splits.values() for s in samples})
            raise DataError(f"{path}: the {split} split is empty" + (" after dropping bad files" if skipped else "")
                            + f" ({total} images in all); a split is carved per class, so give each class at least "
                            f"3 images, or the {split} images yourself (a {split}/ folder, or a split column in a CSV)")
    info = {"source": str(path.resolve()), "format": data.format, **info, "split_rule": rule,
            "class_names_from": data.class_names_from, "skipped_bad": skipped,
            "note": "protocol only changes built-in data sets; users' splits come from their files or the rule"}
    return TaskData(data.class_names, splits, info, root=data.root, max_pixels=max_pixels)


def _require_files(splits: dict[str, list[Sample]], max_pixels: int) -> dict[Path, str]:
    """Every listed file of every split exists and decodes, checked up front (a bad test image must not stop a
    run after all its epochs); names the list file and line. Returns each file's sha256."""
    missing = list({s.path: s for samples in splits.values() for s in samples if not s.path.is_file()}.values())
    if missing:
        shown = "; ".join(f"{s.origin}: {s.path}" + (" (a folder, not an image)" if s.path.is_dir() else "")
                          for s in missing[:3])
        raise DataError(f"{len(missing)} listed image file(s) do not exist: {shown}"
                        + (" ..." if len(missing) > 3 else "")
                        + ". Fix the list, or load with skip_bad=True (--skip-bad) to drop them.")
    samples = {s.path: s for split in splits.values() for s in split}
    checks = check_images(samples, max_pixels)
    bad = bad_images(checks)
    if bad:
        shown = "; ".join(f"{samples[path].origin}: {path} ({why})" for path, why in list(bad.items())[:3])
        raise DataError(f"{len(bad)} image file(s) cannot be read: {shown}" + (" ..." if len(bad) > 3 else "")
                        + ". Fix or remove them, or load with skip_bad=True (--skip-bad) to drop them.")
    return {path: check.sha256 for path, check in checks.items()}


def _drop_bad(splits: dict[str, list[Sample]],
              max_pixels: int) -> tuple[dict[str, list[Sample]], dict[Path, str], int]:
    """skip_bad=True: decode every file once, drop the unreadable or missing ones, and say so once. Returns the
    kept splits, the kept files' sha256 and how many files were dropped."""
    checks = check_images((s.path for samples in splits.values() for s in samples), max_pixels)
    bad = bad_images(checks)
    if bad:
        shown = "; ".join(f"{path} ({why})" for path, why in list(bad.items())[:3])
        warnings.warn(f"skip_bad=True: dropped {len(bad)} unreadable or missing image file(s): {shown}"
                      + (" ..." if len(bad) > 3 else ""), DataWarning, stacklevel=4)
    kept = {split: [s for s in samples if s.path not in bad] for split, samples in splits.items()}
    return kept, {path: check.sha256 for path, check in checks.items() if path not in bad}, len(bad)


def _complete_splits(splits: dict[str, list[Sample]], class_names: list[str],
                     seed: int) -> tuple[dict[str, list[Sample]], str]:
    """Fill in what the source did not give: all splits (70/15/15) or val (10% of train), and trainval."""
    if "all" in splits:
        samples = splits["all"]
        (train, val, test), small = carve(np.array([s.label for s in samples]), USER_HOLDOUT, seed)
        _warn_small(small, class_names, "train, val and test")
        picked = {"train": train, "val": val, "test": test}
        out = {split: [samples[i] for i in positions] for split, positions in picked.items()}
        rule = "no split files: seeded stratified 70/15/15 per class (every class keeps a train image)"
    else:
        out = dict(splits)
        rule = "splits from the files"
        if "val" not in out:
            samples = out["train"]
            (rest, held), small = carve(np.array([s.label for s in samples]), (CARVED_VAL,), seed)
            _warn_small(small, class_names, "train and the carved val")
            out["train"], out["val"] = [samples[i] for i in rest], [samples[i] for i in held]
            rule += "; no val file: val = seeded stratified 10% of train"
    if "trainval" not in out:
        out["trainval"] = out["train"] + out["val"]
    return out, rule


def _warn_suspicious(splits: dict[str, list[Sample]], class_names: list[str], digests: dict[Path, str]) -> None:
    """Warn about what makes test accuracy meaningless or hints at a typo: one file in train (or val) and test,
    or a copy of a test file under another name (`digests`: every listed file's sha256), a class seen only in
    test, a numeric label far outside the others."""
    files = {split: {s.path.resolve(): digests[s.path] for s in splits.get(split, [])}
             for split in ("train", "val", "test")}
    for split in ("train", "val"):
        shared = files[split].keys() & files["test"].keys()
        if shared:
            warnings.warn(f"{len(shared)} image file(s) are listed in both {split} and test (e.g. {sorted(shared)[0]}): "
                          f"test accuracy will be optimistic; remove the duplicates", DataWarning, stacklevel=4)
    for split, copies in _copies_of_test_images(files).items():
        kept, test = copies[0]
        warnings.warn(f"{len(copies)} image file(s) in {split} are byte-for-byte copies of test images under "
                      f"another name (e.g. {kept} = {test}): test accuracy will be optimistic; remove the copies",
                      DataWarning, stacklevel=4)
    trained = {s.label for s in splits["train"]}
    unseen = sorted({s.label for s in splits["test"]} - trained)
    if unseen:
        names = ", ".join(repr(class_names[c]) for c in unseen[:5])
        warnings.warn(f"{len(unseen)} class(es) appear in test but not in train: {names}; no model can learn them",
                      DataWarning, stacklevel=4)
    if class_names and all(name.lstrip("-").isdigit() for name in class_names) and len(class_names) > 2:
        values = sorted(int(name) for name in class_names)
        steps = sorted(b - a for a, b in zip(values, values[1:-1]))  # between the labels below the largest
        usual = steps[len(steps) // 2]  # 1 for indices 0..K, 15 for orientations 0, 15, ..., 165
        if values[-1] - values[-2] > max(len(values), 10 * usual):
            warnings.warn(f"label {values[-1]} is far from the other labels ({values[0]}..{values[-2]}): a typo?",
                          DataWarning, stacklevel=4)


def _copies_of_test_images(files: dict[str, dict[Path, str]]) -> dict[str, list[tuple[Path, Path]]]:
    """Per split (train, val): (file, test file) pairs of different files with the same bytes, as scraped or
    exported data sets often have. `files`: split -> {resolved path: sha256}."""
    test_by_digest: dict[str, Path] = {}
    for path, digest in sorted(files["test"].items()):
        test_by_digest.setdefault(digest, path)
    copies = {split: [(path, test_by_digest[digest]) for path, digest in sorted(files[split].items())
                      if path not in files["test"] and digest in test_by_digest] for split in ("train", "val")}
    return {split: pairs for split, pairs in copies.items() if pairs}


def _warn_small(classes: list[int], class_names: list[str], splits: str) -> None:
    if classes:
        names = ", ".join(repr(class_names[c]) for c in classes[:5]) + (" ..." if len(classes) > 5 else "")
        warnings.warn(f"{len(classes)} class(es) too small to appear in {splits}: {names}; "
                      "they are kept in train only", DataWarning, stacklevel=5)
