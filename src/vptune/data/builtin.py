"""Built-in data sets, real and offline-installable: fetched once from a package registry, then cached.

Each set is decoded once into `<cache>/data/<name>.npz` (uint8 images N x H x W, int64 labels, a bool test
marker, class names, where it came from, a content hash), written atomically. Later loads read only that file.

- fashion-mnist: Debian package `dataset-fashion-mnist` (MIT); 60,000 train + 10,000 test, 28 x 28 gray.
- animal-mnist:  PyPI package `animal-mnist==0.4` (MIT); 10,000 silhouettes 28 x 28, 10 classes of 1,000.
                 No official test split: a fixed, stratified 2,000 is held out (exact duplicates kept together).
- digits:        scikit-learn's `load_digits()`; 1,797 images 8 x 8; a fixed, stratified 500 is held out.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .._io import atomic_write, cache_dir, cache_folder, short_sha
from .errors import DataError, DataWarning, FetchError
from .splits import stratified_choice

BUILTIN_DATASETS: tuple[str, ...] = ("fashion-mnist", "animal-mnist", "digits")

# How each set's test split is defined (shown by describe()).
TEST_SPLITS = {"fashion-mnist": "official 10,000-image test set",
               "animal-mnist": "fixed stratified 2,000 held out (seed 0; duplicates kept together)",
               "digits": "fixed stratified 500 held out (seed 0)"}

CACHE_VERSION = 1  # bump when the cache file layout or a fixed split changes: old files are then rebuilt
FIXED_SPLIT_SEED = 0  # the held-out test sets of animal-mnist and digits never depend on the user's seed

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # where `apt-get install` puts it
FASHION_FILES = {("train", "images"): "train-images-idx3-ubyte.gz", ("train", "labels"): "train-labels-idx1-ubyte.gz",
                 ("test", "images"): "t10k-images-idx3-ubyte.gz", ("test", "labels"): "t10k-labels-idx1-ubyte.gz"}
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

ANIMAL_REQUIREMENT = "animal-mnist==0.4"
ANIMAL_DIR = "animal_mnist/data/Animal_MNIST/"
# sha256 of the two files inside the pinned package: they are pickles, so they are checked before unpickling.
ANIMAL_FILES = {"images": ("animal_data_version_3.gz",
                           "68a30346781a0984f839463a4615d2decb899d1ce65091bb92586311754a34ce"),
                "labels": ("animal_label_version_3.gz",
                           "dec8dba7c469830989fbab46825021a08a38470753a512f27ada847eced97b57")}
# Label k is the k-th name in alphabetical order (checked by looking at the images of each label).
ANIMAL_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


def builtin_name(source: object) -> str | None:
    """The built-in name `source` stands for, or None. Only plain strings count (a Path is always a path);
    `fashion_mnist` and `Fashion-MNIST` are accepted. Use `./digits` for a folder that is named like one."""
    if not isinstance(source, str):
        return None
    name = source.strip().lower().replace("_", "-")
    return name if name in BUILTIN_DATASETS else None


@dataclass(frozen=True)
class BuiltinArrays:
    images: np.ndarray    # N x H x W uint8
    labels: np.ndarray    # N int64
    is_test: np.ndarray   # N bool: the official (or fixed) test split
    class_names: list[str]
    origin: str           # where the data came from, for describe()
    content_sha256: str   # short hash of images, labels and split markers


def _arrays(images: np.ndarray, labels: np.ndarray, is_test: np.ndarray, class_names: list[str],
            origin: str) -> BuiltinArrays:
    images = np.ascontiguousarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    is_test = np.asarray(is_test, dtype=bool)
    if not (len(images) == len(labels) == len(is_test)) or labels.min() < 0 or labels.max() >= len(class_names):
        raise DataError(f"built-in data from {origin} is inconsistent: {images.shape} images, {labels.shape} "
                        f"labels in [{labels.min()}, {labels.max()}], {len(class_names)} classes")
    sha = short_sha(images.tobytes(), labels.tobytes(), is_test.tobytes())
    return BuiltinArrays(images, labels, is_test, list(class_names), origin, sha)


# ---------------------------------------------------------------------------------------------- cache file

def cache_path(name: str) -> Path:
    return cache_dir() / "data" / f"{name}.npz"


def load_builtin(name: str) -> BuiltinArrays:
    """The arrays of a built-in set: from the cache file, else fetched (once) and cached."""
    path = cache_path(name)
    if path.exists():
        try:
            return _read_cache(path)
        except Exception as err:  # a stale layout or a damaged file: rebuild instead of failing
            warnings.warn(f"rebuilding the cache file {path}: {err}", DataWarning, stacklevel=4)
    arrays = FETCHERS[name]()
    _write_cache(path, arrays)
    return arrays


def _write_cache(path: Path, arrays: BuiltinArrays) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            # Compressed: fashion-mnist takes 31 MB instead of 55 MB, for ~0.2 s more per load.
            np.savez_compressed(f, version=np.array(CACHE_VERSION), images=arrays.images,
                                labels=arrays.labels, is_test=arrays.is_test,
                                class_names=np.array(arrays.class_names), origin=np.array(arrays.origin),
                                content_sha256=np.array(arrays.content_sha256))
    atomic_write(path, write)


def _read_cache(path: Path) -> BuiltinArrays:
    with np.load(path, allow_pickle=False) as z:
        if int(z["version"]) != CACHE_VERSION:
            raise DataError(f"cache layout version {int(z['version'])}, expected {CACHE_VERSION}")
        return BuiltinArrays(z["images"], z["labels"], z["is_test"], [str(c) for c in z["class_names"]],
                             str(z["origin"]), str(z["content_sha256"]))


# ---------------------------------------------------------------------------------------------- fetchers

def _run(cmd: list[str], cwd: str | Path, hint: str) -> None:
    """Run a fetch command; any failure becomes a FetchError with the tool's own message and a hint."""
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"`{cmd[0]}` is not available on this machine. {hint}")
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as err:
        raise FetchError(f"`{' '.join(cmd)}` timed out. {hint}") from err
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-800:]
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {tail}. {hint}")


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): big-endian magic (0, 0, 0x08 = uint8, number of dims), dims, data."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path} is not a uint8 IDX file")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)  # 16 for images, 8 for labels
    if data.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {data.size} bytes for shape {shape}")
    return data.reshape(shape)


def _fashion_from_dir(folder: Path, origin: str) -> BuiltinArrays:
    train_x, train_y, test_x, test_y = (_read_idx(folder / FASHION_FILES[split, kind])
                                        for split in ("train", "test") for kind in ("images", "labels"))
    is_test = np.r_[np.zeros(len(train_y), bool), np.ones(len(test_y), bool)]
    return _arrays(np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y]), is_test,
                   FASHION_CLASSES, origin)


def fetch_fashion_mnist() -> BuiltinArrays:
    """From the installed Debian package if present, else `apt-get download` + `dpkg-deb -x` (no root needed)."""
    if all((FASHION_SYSTEM_DIR / name).is_file() for name in FASHION_FILES.values()):
        return _fashion_from_dir(FASHION_SYSTEM_DIR, f"{FASHION_SYSTEM_DIR} (Debian dataset-fashion-mnist)")
    hint = ("fashion-mnist comes from the Debian package dataset-fashion-mnist: install it "
            "(apt-get install dataset-fashion-mnist) or make `apt-get download` work (apt-get update)")
    with tempfile.TemporaryDirectory() as download, tempfile.TemporaryDirectory(
            dir=cache_folder("data"), prefix=".fashion-mnist-unpack-") as unpacked:
        _run(["apt-get", "download", "dataset-fashion-mnist"], cwd=download, hint=hint)
        debs = sorted(Path(download).glob("*.deb"))
        if not debs:
            raise FetchError(f"`apt-get download dataset-fashion-mnist` left no .deb file. {hint}")
        _run(["dpkg-deb", "-x", str(debs[0]), unpacked], cwd=download, hint=hint)
        return _fashion_from_dir(Path(unpacked) / "usr/share/datasets/fashion-mnist", f"Debian {debs[0].name}")


def _read_archive_members(archive: Path, wanted: list[str]) -> dict[str, bytes]:
    """Files ending in `ANIMAL_DIR + name` from a wheel (zip) or an sdist (tar.gz), by name."""
    def pick(members: list[str]) -> dict[str, str]:
        found = {}
        for name in wanted:
            hits = [m for m in members if m.endswith(ANIMAL_DIR + name)]
            if not hits:
                raise FetchError(f"{archive.name} has no {ANIMAL_DIR + name}; is it {ANIMAL_REQUIREMENT}?")
            found[name] = hits[0]
        return found

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return {name: z.read(member) for name, member in pick(z.namelist()).items()}
    with tarfile.open(archive) as t:
        return {name: t.extractfile(member).read() for name, member in pick(t.getnames()).items()}


def _unpickle_checked(blob: bytes, name: str, sha256: str) -> np.ndarray:
    """The one place vptune reads a pickle: a file from the pinned registry package, whose sha256 is checked
    first, so only those exact bytes are ever unpickled. Converted to numpy at once."""
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise FetchError(f"{name} from {ANIMAL_REQUIREMENT} has an unexpected sha256; refusing to unpickle it")
    return np.asarray(pickle.loads(gzip.decompress(blob)))


def fixed_test_split(images: np.ndarray, labels: np.ndarray, n_test: int) -> np.ndarray:
    """A held-out test marker that never changes: stratified, fixed seed, and exact duplicate images kept on one
    side (animal-mnist holds 284 duplicated pairs, which would otherwise leak test images into training)."""
    _, groups = np.unique(images.reshape(len(images), -1), axis=0, return_inverse=True)
    test = stratified_choice(labels, n_test, np.random.default_rng(FIXED_SPLIT_SEED), groups=groups.ravel())
    is_test = np.zeros(len(labels), bool)
    is_test[test] = True
    return is_test


def fetch_animal_mnist() -> BuiltinArrays:
    """`pip download --no-deps animal-mnist==0.4`, then read its two data files from the archive. The package
    is never imported (it imports tensorflow)."""
    hint = f"animal-mnist comes from PyPI ({ANIMAL_REQUIREMENT}); pip must be able to reach the registry"
    with tempfile.TemporaryDirectory() as download:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--no-input",
              ANIMAL_REQUIREMENT, "-d", download], cwd=download, hint=hint)
        archives = sorted(Path(download).iterdir())
        if not archives:
            raise FetchError(f"pip download left no file. {hint}")
        blobs = _read_archive_members(archives[0], [name for name, _ in ANIMAL_FILES.values()])
        origin = f"PyPI {archives[0].name}"
    images, labels = (_unpickle_checked(blobs[name], name, sha) for name, sha in ANIMAL_FILES.values())
    return _arrays(images, labels, fixed_test_split(images, labels, 2000), ANIMAL_CLASSES, origin)


def fetch_digits() -> BuiltinArrays:
    """scikit-learn's bundled 8 x 8 digits; pixel values 0..16 scaled to 0..255."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise DataError("the digits data set needs scikit-learn: pip install scikit-learn "
                        "(or pip install vptune[digits])") from err
    import sklearn

    digits = load_digits()
    images = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return _arrays(images, digits.target, fixed_test_split(images, digits.target, 500),
                   [str(d) for d in range(10)], f"scikit-learn {sklearn.__version__} load_digits()")


# Looked up at call time, so tests can swap a fetcher out (e.g. to prove the cache is used).
FETCHERS: dict[str, Callable[[], BuiltinArrays]] = {
    "fashion-mnist": fetch_fashion_mnist,
    "animal-mnist": fetch_animal_mnist,
    "digits": fetch_digits,
}
