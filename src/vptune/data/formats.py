"""Users' data sets: find the layout of a path and list its images and labels, split by split.

Layouts (autodetected in this order):
- CSV file (`*.csv`): rows `path,label` or `path,label,split` (split = train / val / test), or any columns under a
  header that names them (path / file / image..., label / class..., and optionally split; others are not read);
  comma-, semicolon- or tab-separated; paths relative to the CSV's folder; label = class name or int.
- VTAB-1k task folder: `train800.txt`, `val200.txt`, `test.txt` (+ optional `train800val200.txt`, else the
  union of the first two); lines `relative/path.jpg label`, paths relative to the folder; int labels.
- FGVC folder: `train.json`, `test.json` (+ optional `val.json`), each {image path: class id}; paths relative
  to the folder, or to its `images/` or `Images/` sub-folder (as in the VPT releases).
- Split image folder (torchvision ImageFolder / Hugging Face `imagefolder` style): `train/`, `test/` and optional
  `val/` (or `valid/`, `validation/`; folder names case-insensitive), each holding one sub-folder of images per
  class; class names = the class folder names, which must be the same in every split folder. Without `val/`,
  val is carved from train. Chosen when a split-named folder holds class sub-folders (and no images directly);
  other top-level folders holding images then make the layout ambiguous, an error.
- Image folder: one sub-folder of images per class (searched recursively); class names = folder names.

Class names for the int-labelled layouts (and CSVs with int labels): a `classes.txt` (or `labels.txt`) next to
the split files, one name per line, line k naming class k, fixes the class list, and labels must index into it;
without one, the classes are the sorted unique label ids over all split files (mapped to 0..K-1, named by id;
ids 0..K-1 therefore stay as they are). CSV labels that are not all ints are class names, sorted.

Nothing here opens an image; `load.py` checks existence (or decodability, with skip_bad) of the listed files.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .datasets import MAX_PIXELS, Sample, bad_images, check_images
from .errors import DataError, DataWarning

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm"})
UNREAD_IMAGE_EXTENSIONS = frozenset({".heic", ".heif", ".avif", ".jxl", ".jp2", ".dng", ".cr2", ".nef", ".arw",
                                     ".psd", ".svg"})  # photos a user may expect to count, which Pillow cannot read
VTAB_FILES = {"train": "train800.txt", "val": "val200.txt", "trainval": "train800val200.txt", "test": "test.txt"}
FGVC_FILES = {"train": "train.json", "val": "val.json", "test": "test.json"}
CLASS_FILES = ("classes.txt", "labels.txt")
CSV_PATH_HEADERS = {"path", "file", "filename", "filepath", "image", "image_path", "img"}
CSV_LABEL_HEADERS = {"label", "class", "class_name", "target", "category", "y"}
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

ACCEPTED = ("Accepted: a built-in name (fashion-mnist, animal-mnist, digits); a folder with one sub-folder of "
            "images per class; a folder with train/, test/ and optional val/ (or valid/, validation/) folders, "
            "each with one sub-folder of images per class (the same classes in each); "
            "a .csv file of `path,label` rows; a VTAB-1k task folder with train800.txt, "
            "val200.txt and test.txt (`relative/path.jpg label` lines); an FGVC folder with train.json and "
            "test.json (image path -> class id).")

RawEntry = tuple[Path, str, str]  # image path, label as written, origin ("<file> line N")


@dataclass
class UserData:
    """What a user's data set lists. `splits` keys: "all" (no split given) or "train", "test" and maybe "val",
    "trainval"; the loader carves what is missing."""
    format: str
    root: Path
    splits: dict[str, list[Sample]]
    class_names: list[str]
    class_names_from: str


def read_user_data(source: Path) -> UserData:
    """Detect the layout of `source` and read it; DataError naming the accepted layouts if none fits."""
    if not source.exists():
        raise DataError(f"{source} does not exist. {ACCEPTED}")
    if source.is_file():
        if source.suffix.lower() == ".csv":
            return read_csv(source)
        raise DataError(f"{source} is a file but not a .csv. {ACCEPTED}")
    present = {p.name for p in source.iterdir()}
    if present & set(VTAB_FILES.values()):
        return read_vtab(source)
    if present & set(FGVC_FILES.values()):
        return read_fgvc(source)
    class_dirs = _sub_folders(source)
    split_dirs = [d for d in class_dirs if _holds_class_folders(d)]
    if split_dirs:
        return read_split_image_folder(source, split_dirs, [d for d in class_dirs if d not in split_dirs])
    images = {d: _images_in(d) for d in class_dirs}
    if any(images.values()):
        return read_image_folder(source, images)
    raise DataError(f"{source} matches no accepted layout. {ACCEPTED}")


# ---------------------------------------------------------------------------------------------- image folder

def _images_in(folder: Path) -> list[Path]:
    """Image files under `folder`, sorted; hidden files and folders (e.g. macOS `._x.jpg`) are skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def expand_image_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Image files to predict: a file as given (its decoding names it if it is no image), a folder as the images
    under it (sorted, hidden ones skipped); a folder without any is an error naming the extensions looked for."""
    if isinstance(paths, (str, os.PathLike)):  # one path, not its characters
        paths = [paths]
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = _images_in(path)
            if not found:
                raise DataError(f"folder {path} has no images (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))}); "
                                f"give image files or a folder that holds some")
            files += found
        else:
            files.append(path)
    return files


def read_image_folder(root: Path, images: dict[Path, list[Path]]) -> UserData:
    _warn_unused_images(root)
    return UserData("image-folder", root, {"all": _class_samples(images)}, [d.name for d in images], "folder names")


def _class_samples(images: dict[Path, list[Path]]) -> list[Sample]:
    """{class folder: its images} -> samples labelled by the folder's position; an empty class folder is an error."""
    empty = [d for d, files in images.items() if not files]
    if empty:
        raise DataError(f"class folder {empty[0]} has no images (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
                        + (f"; {len(empty) - 1} more empty class folder(s)" if len(empty) > 1 else ""))
    return [Sample(path, label, f"class folder {folder}")
            for label, (folder, files) in enumerate(images.items()) for path in files]


def _warn_unused_images(root: Path) -> None:
    """Say which of the user's images a folder layout leaves out: files directly in the root (in no class folder)
    and photos in formats vptune does not read (an iPhone's HEIC); silently, a class would just be smaller."""
    stray = _direct_images(root)
    if stray:
        warnings.warn(f"{len(stray)} image(s) directly in {root} are in no class folder and are not used (e.g. "
                      f"{stray[0].name}); move them into their class's folder", DataWarning, stacklevel=4)
    other = Counter(p.suffix.lower() for p in root.rglob("*") if p.suffix.lower() in UNREAD_IMAGE_EXTENSIONS
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if other:
        counts = ", ".join(f"{ext}: {n}" for ext, n in sorted(other.items()))
        warnings.warn(f"{sum(other.values())} image(s) under {root} are in formats vptune does not read and are not "
                      f"used ({counts}); convert them to JPEG or PNG", DataWarning, stacklevel=4)


def _sub_folders(folder: Path) -> list[Path]:
    return [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def _direct_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))


def _holds_class_folders(folder: Path) -> bool:
    """A split folder (train / val / test, any case) holding class folders: a sub-folder with images, and no
    images directly in it. A `train` folder of images (say, a class of vehicles) stays a class folder."""
    return (folder.name.lower() in SPLIT_FOLDERS and not _direct_images(folder)
            and any(_images_in(d) for d in _sub_folders(folder)))


def read_split_image_folder(root: Path, split_dirs: list[Path], other_dirs: list[Path]) -> UserData:
    """root/<split>/<class>/...: one image folder per split, with the same class folders in each."""
    _refuse_mixed_layout(root, split_dirs, other_dirs)
    by_split = _split_folders_by_name(root, split_dirs)
    classes = {split: {d.name: d for d in _sub_folders(folder)} for split, folder in by_split.items()}
    _require_same_classes(by_split, classes)
    names = sorted(classes["train"])
    _warn_unused_images(root)
    splits = {split: _class_samples({classes[split][name]: _images_in(classes[split][name]) for name in names})
              for split in by_split}
    return UserData("image-folder-splits", root, splits, names, f"class folder names in {by_split['train']}")


def _refuse_mixed_layout(root: Path, split_dirs: list[Path], other_dirs: list[Path]) -> None:
    shown = ", ".join(d.name for d in split_dirs)
    mixed = [d for d in other_dirs if _images_in(d)]
    if mixed:
        named = ", ".join(d.name for d in mixed[:5]) + (" ..." if len(mixed) > 5 else "")
        direct = [d for d in mixed if d.name.lower() in SPLIT_FOLDERS]
        raise DataError(
            f"{root} mixes split folders holding class folders ({shown}) with folders of images read as classes "
            f"({named}): it is unclear whether {root} is one data set with a class per folder, or split folders "
            f"each with a class per folder"
            + (f" ({', '.join(str(d) for d in direct)} holds image files directly, not in class folders)"
               if direct else "")
            + f". For splits: move every class folder into the split folders ({root}/train/<class>/..., likewise "
            f"val and test), with no images directly in a split folder. For classes: rename the class folder(s) "
            f"named like splits, or list the images in a .csv of `path,label` rows.")
    imageless = [d for d in other_dirs if d.name.lower() in SPLIT_FOLDERS]
    if imageless:
        raise DataError(f"split folder {imageless[0]} has no images; next to {shown} it needs one sub-folder of "
                        f"images per class, the same class folders as the others (or remove it)")


def _split_folders_by_name(root: Path, split_dirs: list[Path]) -> dict[str, Path]:
    """{"train": folder, "val": folder (optional), "test": folder}, in that order."""
    shown = ", ".join(d.name for d in split_dirs)
    by_split: dict[str, Path] = {}
    for d in split_dirs:
        split = SPLIT_FOLDERS[d.name.lower()]
        if split in by_split:
            raise DataError(f"{by_split[split]} and {d} are both {split} folders; keep one (merge their class "
                            f"folders) or rename the other")
        by_split[split] = d
    if "train" not in by_split:
        raise DataError(f"{root} has split folders ({shown}) but no train folder; add {root}/train/<class>/... "
                        f"with the same class folders, or load a folder with one sub-folder of images per class "
                        f"to have it split 70/15/15 per class")
    if "test" not in by_split:
        raise DataError(f"{root} has split folders ({shown}) but no test folder; add {root}/test/<class>/... with "
                        f"the same class folders as {by_split['train']} (val is optional: without one it is "
                        f"carved from train), or load {by_split['train']} alone to have it split 70/15/15 per "
                        f"class")
    return {split: by_split[split] for split in ("train", "val", "test") if split in by_split}


def _require_same_classes(by_split: dict[str, Path], classes: dict[str, dict[str, Path]]) -> None:
    reference = by_split["train"]
    problems = []
    for split in list(by_split)[1:]:
        lacks = sorted(set(classes["train"]) - set(classes[split]))
        extra = sorted(set(classes[split]) - set(classes["train"]))
        if lacks:
            problems.append(f"{by_split[split]} lacks class folder(s) {lacks} that {reference} has")
        if extra:
            problems.append(f"{by_split[split]} has class folder(s) {extra} that {reference} lacks")
    if problems:
        raise DataError("; ".join(problems) + ". Every split folder must hold the same class folders: add the "
                        "missing class folders (with at least one image each) or remove those classes from "
                        "every split folder.")


# ---------------------------------------------------------------------------------------------- VTAB-1k lists

def read_vtab(root: Path) -> UserData:
    required = [VTAB_FILES[s] for s in ("train", "val", "test")]
    missing = [name for name in required if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root} looks like a VTAB-1k task folder but lacks {', '.join(missing)} "
                        f"(needs {', '.join(required)}; {VTAB_FILES['trainval']} is optional)")
    raw = {split: _read_list(root / name, root) for split, name in VTAB_FILES.items() if (root / name).is_file()}
    return _with_labels("vtab1k", root, raw, names_allowed=False)


def _read_list(path: Path, root: Path) -> list[RawEntry]:
    """Lines `relative/path.jpg label`; the label is the last field, so paths may contain spaces."""
    entries = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.strip().rsplit(maxsplit=1)
        if len(fields) != 2:
            raise DataError(f"{path} line {number}: expected '<image path> <label>', got {line!r}")
        entries.append((root / fields[0], fields[1], f"{path} line {number}"))
    return entries


def find_class_file(root: Path) -> Path | None:
    """The classes file in a data folder's root (`CLASS_FILES`, the first found), or None."""
    return next((root / name for name in CLASS_FILES if (root / name).is_file()), None)


def read_class_file(path: Path) -> list[str]:
    """A classes file's names, one a non-blank line, line k naming class k; each name once."""
    lines = {number: line.strip() for number, line in enumerate(_read_text(path).splitlines(), start=1)
             if line.strip()}
    first: dict[str, int] = {}
    for number, name in lines.items():
        if name in first:
            raise DataError(f"{path} names class {name!r} twice (lines {first[name]} and {number}); each class "
                            f"needs its own name, one a line")
        first[name] = number
    return list(lines.values())


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from err
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from err


def _not_utf8(path: Path, err: UnicodeDecodeError) -> DataError:
    return DataError(f"{path} is not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); save it "
                     f"as UTF-8 (in a spreadsheet: CSV UTF-8)")


# ---------------------------------------------------------------------------------------------- FGVC json

def read_fgvc(root: Path) -> UserData:
    missing = [FGVC_FILES[s] for s in ("train", "test") if not (root / FGVC_FILES[s]).is_file()]
    if missing:
        raise DataError(f"{root} looks like an FGVC folder but lacks {', '.join(missing)} "
                        f"(needs train.json and test.json; val.json is optional)")
    raw = {split: _read_json_split(root / name, root) for split, name in FGVC_FILES.items()
           if (root / name).is_file()}
    return _with_labels("fgvc", root, raw, names_allowed=False)


def _read_json_split(path: Path, root: Path) -> list[RawEntry]:
    try:
        mapping = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from err
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a JSON object mapping image path -> class id")
    image_root = _fgvc_image_root(root, next(iter(mapping), ""))
    # bool is an int in Python, but `true` is no class id; anything else non-int fails the int check later
    return [(image_root / key, str(value) if not isinstance(value, bool) else repr(value), f"{path} entry {key!r}")
            for key, value in mapping.items()]


def _fgvc_image_root(root: Path, first_key: str) -> Path:
    """The VPT releases put images next to the json files or in images/ (CUB, NABirds) or Images/ (Dogs)."""
    for candidate in (root, root / "images", root / "Images"):
        if first_key and (candidate / first_key).is_file():
            return candidate
    return root  # nothing found: the missing-file check reports the first entry against the folder itself


# ---------------------------------------------------------------------------------------------- CSV

def read_csv(path: Path) -> UserData:
    rows = _csv_rows(path)
    header = rows[0][0] if _is_header(rows[0][0]) else None
    if header is not None:
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path} has a header but no rows; expected rows of {', '.join(header)}")
        width, (path_at, label_at, split_at) = len(header), _named_columns(path, header)
    else:  # positional: path,label or path,label,split
        width = len(rows[0][0])
        path_at, label_at, split_at = 0, 1, (2 if width == 3 else None)
    shape = ",".join(header) if header is not None else "path,label" + (",split" if width == 3 else "")
    raw: dict[str, list[RawEntry]] = {}
    for cells, number in rows:
        if len(cells) != width or width < 2 or (header is None and width > 3) or not cells[path_at] \
                or not cells[label_at]:
            raise DataError(f"{path} line {number}: expected `{shape}` like the "
                            f"{'header' if header is not None else 'first row'}, got {cells}")
        split = cells[split_at].lower() if split_at is not None else "all"
        if split_at is not None and split not in ("train", "val", "test"):
            raise DataError(f"{path} line {number}: split must be train, val or test, got {cells[split_at]!r}")
        raw.setdefault(split, []).append((path.parent / cells[path_at], cells[label_at], f"{path} line {number}"))
    if split_at is not None and not ("train" in raw and "test" in raw):
        raise DataError(f"{path}: the split column must name at least one train and one test row")
    return _with_labels("csv", path.parent, raw, names_allowed=True)


def _csv_rows(path: Path) -> list[tuple[list[str], int]]:
    """The non-empty rows (cells stripped) with their line numbers. Comma-separated, or semicolon / tab where the
    first line has no comma (spreadsheets in many locales save `;`)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            delimiter = "," if "," in first else ";" if ";" in first else "\t" if "\t" in first else ","
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter)
            rows = [([c.strip() for c in row], reader.line_num) for row in reader]
    except UnicodeDecodeError as err:
        raise _not_utf8(path, err) from err
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV file ({err})") from err
    rows = [(cells, number) for cells, number in rows if any(cells)]
    if not rows:
        raise DataError(f"{path} has no rows; expected `path,label` rows")
    return rows


def _is_header(cells: list[str]) -> bool:
    return any(c.lower() in CSV_PATH_HEADERS | CSV_LABEL_HEADERS | {"split"} for c in cells)


def _named_columns(path: Path, header: list[str]) -> tuple[int, int, int | None]:
    """(path, label, split) column indices from a header; other columns (notes, sizes...) are not read."""
    names = [c.lower() for c in header]
    found = {}
    for role, accepted in (("path", CSV_PATH_HEADERS), ("label", CSV_LABEL_HEADERS)):
        found[role] = next((i for i, name in enumerate(names) if name in accepted), None)
        if found[role] is None:
            raise DataError(f"{path}: the header {header} names no {role} column; name one of "
                            f"{', '.join(sorted(accepted))}")
    return found["path"], found["label"], names.index("split") if "split" in names else None


# ---------------------------------------------------------------------------------------------- labels

def _with_labels(fmt: str, root: Path, raw: dict[str, list[RawEntry]], names_allowed: bool) -> UserData:
    """Turn the written labels into class indices (see the module docstring for the rules)."""
    class_file = find_class_file(root)
    written = [(label, origin) for entries in raw.values() for _, label, origin in entries]
    if class_file is not None:
        names = read_class_file(class_file)
        index = _index_from_class_file(class_file, names, names_allowed)
        names_from = class_file.name
    elif names_allowed and not all(_is_int(label) for label, _ in written):
        names = sorted({label for label, _ in written})
        by_name = {name: k for k, name in enumerate(names)}
        index = lambda label, origin: by_name[label]  # noqa: E731
        names_from = "sorted label names"
    else:
        ids = sorted({_int_label(label, origin) for label, origin in written})
        names = [str(i) for i in ids]
        by_id = {i: k for k, i in enumerate(ids)}
        index = lambda label, origin: by_id[int(label)]  # noqa: E731
        names_from = "sorted label ids"
    splits = {split: _one_row_per_image([Sample(path, index(label, origin), origin) for path, label, origin in entries],
                                        split, names)
              for split, entries in raw.items()}
    return UserData(fmt, root, splits, names, names_from)


def _one_row_per_image(samples: list[Sample], split: str, class_names: list[str]) -> list[Sample]:
    """An image listed twice in one split is used once (twice would weigh it double, and a carved split could put
    its copies on both sides); listed twice with two labels, it is refused: which label is right is the user's call.
    """
    first: dict[str, Sample] = {}
    repeats = []
    for sample in samples:
        key = os.path.normpath(sample.path)
        if key not in first:
            first[key] = sample
            continue
        kept = first[key]
        if kept.label != sample.label:
            raise DataError(f"{sample.origin}: {sample.path} is listed again with label "
                            f"{class_names[sample.label]!r} ({kept.origin} gives {class_names[kept.label]!r}); an "
                            f"image has one label: remove or fix one of the rows")
        repeats.append((kept.origin, sample.origin))
    if repeats:
        where = "in the list" if split == "all" else f"in {split}"
        warnings.warn(f"{len(repeats)} image(s) are listed more than once {where} (e.g. {repeats[0][0]} and "
                      f"{repeats[0][1]}); each is used once", DataWarning, stacklevel=5)
    return list(first.values())


def _is_int(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _int_label(text: str, origin: str) -> int:
    if not _is_int(text):
        raise DataError(f"{origin}: label {text!r} is not a non-negative integer class id")
    return int(text)


def _index_from_class_file(class_file: Path, names: list[str], names_allowed: bool):
    """label text -> class index, for labels that must name (or index into) the classes of `class_file`."""
    by_name = {name: k for k, name in enumerate(names)}

    def index(label: str, origin: str) -> int:
        if names_allowed and label in by_name:
            return by_name[label]
        k = _int_label(label, origin)
        if k >= len(names):
            raise DataError(f"{origin}: label {k} is outside the class list ({len(names)} classes in {class_file})")
        return k
    return index


def readable_images(paths: Sequence[str | os.PathLike], max_pixels: int = MAX_PIXELS,
                    skip_bad: bool = False) -> list[Path]:
    """The image files under `paths` (folders listed), each decoded once up front: a bad file found after an
    hour of predictions would lose them all."""
    files = expand_image_paths(paths)
    bad = bad_images(check_images(files, max_pixels))
    if bad:
        shown = "; ".join(f"{path} ({why})" for path, why in list(bad.items())[:3]) + (" ..." if len(bad) > 3 else "")
        fix = "Fix or remove them" + (", or raise --max-pixels (max_pixels=)" if any(
            "over the limit" in why for why in bad.values()) else "")
        if len(bad) == len(files):
            raise DataError(f"none of the {len(files)} image file(s) can be read: {shown}. {fix}")
        if not skip_bad:
            raise DataError(f"{len(bad)} of {len(files)} image file(s) cannot be read: {shown}. {fix}, or pass "
                            f"--skip-bad (skip_bad=True) to predict the others")
        warnings.warn(f"skipped {len(bad)} of {len(files)} image file(s) that cannot be read: {shown}", DataWarning,
                      stacklevel=3)
    return [path for path in files if path not in bad]
