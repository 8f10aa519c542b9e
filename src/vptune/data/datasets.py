"""Torch datasets over decoded arrays (built-ins) and over image files (users' data), and `DataSplits`."""
from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, default_collate
from torchvision.transforms.v2.functional import pil_to_tensor

from .._io import short_sha
from .errors import DataError
from .transforms import Transform


@contextmanager
def one_thread() -> Iterator[None]:
    """Run one item's transform on one thread. An item is ~10^4-10^5 numbers: sharing that across OpenMP
    threads gains nothing, and when another process keeps a core busy each parallel op waits for it (measured
    on 2 busy cores: 15 ms instead of 30 us to normalise one 3 x 112 x 112 image). DataLoader workers already
    run with one thread; this covers num_workers=0. Restored at once, so the model keeps all threads."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def collate(batch: list) -> object:
    """`default_collate` on one thread: pass as DataLoader(collate_fn=collate) with num_workers=0. Stacking 32
    images is a few MB of copying; on a busy 2-core machine the two-thread version was measured at ~400 ms per
    batch instead of ~1 ms (workers already collate on one thread). A field whose tensors differ in shape (a
    segmentation mask at each image's own resolution) stays a list of them."""
    with one_thread():
        if batch and isinstance(batch[0], tuple) and any(_shapes_differ(field) for field in zip(*batch)):
            return tuple(list(field) if _shapes_differ(field) else default_collate(list(field))
                         for field in zip(*batch))
        return default_collate(batch)


def _shapes_differ(field: tuple) -> bool:
    return isinstance(field[0], torch.Tensor) and len({tuple(t.shape) for t in field}) > 1


class ArrayDataset(Dataset):
    """Items `indices` of a shared uint8 image array (N x H x W gray, or N x H x W x 3) with int labels."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray, transform: Transform):
        self.images, self.all_labels = images, labels  # shared by every split: no copies
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        image = torch.from_numpy(self.images[j])
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        with one_thread():
            return self.transform(image), int(self.all_labels[j])

    @property
    def labels(self) -> np.ndarray:
        return self.all_labels[self.indices]

    def fingerprint(self) -> str:
        return short_sha(self.indices.astype("<i8").tobytes(), self.labels.astype("<i8").tobytes())


class Sample(NamedTuple):
    """One image file of a user's data set; `origin` says where it was listed (file and line, or folder)."""
    path: Path
    label: int
    origin: str


MAX_PIXELS = 40_000_000  # larger images are refused before decoding (Pillow's own bomb limit is 89 million)
# The formats vptune reads (JPEG includes phone cameras' multi-picture MPO files). Pillow would otherwise try every
# plugin it has, e.g. EPS, which runs Ghostscript where it is installed.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")


def open_image(source: str | os.PathLike | BinaryIO) -> Image.Image:
    """`PIL.Image.open` limited to `IMAGE_FORMATS`; anything else raises PIL.UnidentifiedImageError."""
    return Image.open(source, formats=IMAGE_FORMATS)


def read_image(sample: Sample, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
    """Decode one file to a uint8 3 x H x W tensor; any decoding failure becomes a DataError naming the file.

    16-bit gray images are scaled to 8 bits (Pillow's own conversion clips them to almost white), and images
    over `max_pixels` are refused from their header alone, before their pixels are decoded."""
    return decode_image(sample.path, f"{sample.path} ({sample.origin})", max_pixels,
                        "Fix or remove the file, or skip unreadable images with --skip-bad (skip_bad=True in "
                        "Python).")


def decode_image(source: str | os.PathLike | BinaryIO, name: str, max_pixels: int = MAX_PIXELS,
                 fix: str = "Send a PNG, JPEG, WebP, BMP, TIFF or GIF file.") -> torch.Tensor:
    """`read_image` for a path or an open binary file (an upload): errors say "image {name}: ..." and `fix`."""
    try:
        with open_image(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise DataError(f"image {name} is {width} x {height} pixels, over the limit of {max_pixels:,}; "
                                f"shrink it, or remove it from the data")
            rgb = _to_rgb(image, name)
    except DataError:
        raise
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... depending on format
        raise DataError(f"cannot read image {name}: {_unreadable(err)}. {fix}") from err
    return pil_to_tensor(rgb)


def _unreadable(err: Exception) -> str:
    """Why Pillow could not read a file, in words (its message for an unknown format names the file again, or
    the repr of an upload's buffer)."""
    return "not an image in a format vptune reads, or a damaged one" if isinstance(err, UnidentifiedImageError) \
        else str(err) or type(err).__name__


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """8-bit RGB. Pillow's own conversion clips 16-bit gray to almost white and float gray (mode F, values 0..1
    as most tools write them) to almost black, so those are scaled to their full range instead."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        full_scale = _full_scale(image.mode, pixels, name)
        image = Image.fromarray(np.clip(np.rint(pixels * (255.0 / full_scale)), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def _full_scale(mode: str, pixels: np.ndarray, name: str) -> float:
    """The pixel value that means white: 65535 for 16 bits; for 32-bit ints the brightest pixel; for floats 1.0
    (values 0..1), 255 (values 0..255) or the brightest pixel."""
    if mode.startswith("I;16"):
        return 65535.0
    if not np.isfinite(pixels).all() or pixels.min() < 0:
        raise DataError(f"image {name} has negative, NaN or infinite pixel values ({mode} mode); vptune reads "
                        f"float images as 0..1 or 0..255: rescale it, or save it as an 8-bit image")
    brightest = float(pixels.max())
    if mode == "F" and brightest <= 1.0:
        return 1.0
    if mode == "F" and brightest <= 255.0:
        return 255.0
    return max(brightest, 1.0)


class FileDataset(Dataset):
    """Image files with int labels, decoded with Pillow on each access."""

    def __init__(self, samples: list[Sample], transform: Transform, root: Path, max_pixels: int = MAX_PIXELS):
        self.samples, self.transform, self.root, self.max_pixels = samples, transform, root, max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[i]
        with one_thread():
            return self.transform(read_image(sample, self.max_pixels)), sample.label

    @property
    def labels(self) -> np.ndarray:
        return np.array([s.label for s in self.samples], dtype=np.int64)

    def fingerprint(self) -> str:
        # Paths relative to the data set's root: moving the folder keeps the fingerprint.
        lines = "".join(f"{_relative(s.path, self.root)}\t{s.label}\n" for s in self.samples)
        return short_sha(lines.encode("utf-8", "surrogateescape"))  # file names need not be valid UTF-8


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


class ImageCheck(NamedTuple):
    problem: str | None  # why the file is not a readable image; None if it is
    sha256: str | None   # of the file's bytes (None if it could not be read): finds copies under other names


def check_image(path: Path, max_pixels: int = MAX_PIXELS) -> ImageCheck:
    """The pixel limit from the header (a decompression bomb is refused before it is read), then one read of
    the file serves the rest: Pillow's verify() for structure, a full decode, which also catches truncated files
    that verify() lets through, and the hash."""
    problem = _not_a_regular_file(path)
    if problem:
        return ImageCheck(problem, None)
    try:
        with open_image(path) as image:
            width, height = image.size
        if width * height > max_pixels:
            return ImageCheck(f"{width} x {height} pixels, over the limit of {max_pixels:,}", None)
        blob = path.read_bytes()
    except Exception as err:
        return ImageCheck(_unreadable(err), None)
    return ImageCheck(_decode_problem(blob), hashlib.sha256(blob).hexdigest())


def _not_a_regular_file(path: Path) -> str | None:
    """Why `path` is no file to read, from its metadata alone: opening a FIFO would wait forever and /dev/zero
    never ends, and "file not found" for either (or for a symlink loop) sends the user looking for a typo."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symlink: its target does not exist" if path.is_symlink() else "file not found"
    except OSError as err:
        return "a symlink loop" if err.errno == errno.ELOOP else (err.strerror or str(err))
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISDIR: "a folder", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
             stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
    kind = next((name for test, name in kinds.items() if test(mode)), "a special file")
    return f"not a regular file: {kind}"


def _decode_problem(blob: bytes) -> str | None:
    try:
        with open_image(io.BytesIO(blob)) as image:
            image.verify()
        with open_image(io.BytesIO(blob)) as image:
            image.load()
    except Exception as err:
        return _unreadable(err)
    return None


def check_images(paths: Iterable[Path], max_pixels: int = MAX_PIXELS) -> dict[Path, ImageCheck]:
    """Check every file once (threads: Pillow decodes and hashlib hashes outside the GIL)."""
    unique = sorted(set(paths))
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(unique, pool.map(lambda path: check_image(path, max_pixels), unique)))


def bad_images(checks: dict[Path, ImageCheck]) -> dict[Path, str]:
    """{path: why} of the files `check_images` found unreadable."""
    return {path: check.problem for path, check in checks.items() if check.problem is not None}


@dataclass
class DataSplits:
    """The four splits of a task plus what is needed to reproduce and compare runs.

    Every item is (float32 tensor 3 x img_size x img_size, normalised; int label). `val` is never None for the
    formats this package reads (a val split is carved from train, seeded, when the source has none), but
    callers should still allow None.
    """
    train: Dataset
    val: Dataset | None
    trainval: Dataset
    test: Dataset
    class_names: list[str]
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def splits(self) -> dict[str, Dataset]:
        named = {"train": self.train, "val": self.val, "trainval": self.trainval, "test": self.test}
        return {name: ds for name, ds in named.items() if ds is not None}

    def describe(self) -> dict:
        """JSON-able summary: source, format, protocol, seed, split sizes and fingerprints (short sha256 of the
        chosen indices / file lists with labels), so two runs can be checked to have used the same data."""
        splits = self.splits()
        prints = {name: ds.fingerprint() for name, ds in splits.items()}
        return {**self.info,
                "num_classes": self.num_classes,
                "sizes": {name: len(ds) for name, ds in splits.items()},
                "fingerprints": prints,
                "fingerprint": short_sha("".join(f"{k}={v};" for k, v in sorted(prints.items())).encode())}
