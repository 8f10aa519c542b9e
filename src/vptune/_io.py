"""Small file helpers shared by every room: atomic writes, sha256, the cache directory, the package version.

Imports nothing of vptune but `errors` (which imports nothing), so anything may import it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

from .errors import WriteError


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically (a full disk is a WriteError naming the file), then
    closed."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        plt.close(fig)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then rename it over `path` (atomic on POSIX).

    A reader sees the old file or the new one, never half of one; a failed write leaves the old file as it was.
    The new file gets the permissions any file created here would get (the umask), not mkstemp's private 0600.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise _write_error(path, err) from err
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError from its C++ writer
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) or _disk_full(path.parent):
            raise _write_error(path, err) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 1 << 20
    except OSError:
        return False


def _write_error(path: Path, err: Exception) -> WriteError:
    kept = " (its previous version is intact)" if path.exists() else ""
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or _disk_full(path.parent):
        return WriteError(f"cannot write {path}: the disk is full{kept}; free some space or write somewhere else")
    reason = getattr(err, "strerror", None) or str(err)
    return WriteError(f"cannot write {path}: {reason}{kept}; check that the folder exists and is writable, or write "
                      f"somewhere else")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


def file_sha256(path: str | os.PathLike) -> str:
    """Full hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def short_sha(*chunks: bytes) -> str:
    """First 16 hex digits of the sha256 of the chunks: enough to tell two things apart, short enough to read."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Root of vptune's cache: $VPTUNE_CACHE if set, else ~/.cache/vptune. Not created here: writers create
    the sub-folder they write into (`atomic_write` does)."""
    return Path(os.environ.get("VPTUNE_CACHE") or Path.home() / ".cache" / "vptune")


def cache_folder(*parts: str) -> Path:
    """`cache_dir() / parts`, created; a cache that cannot be (a file, no permission) is a WriteError naming
    $VPTUNE_CACHE, not a failed download or install further on."""
    folder = cache_dir().joinpath(*parts)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(f"cannot create vptune's cache folder {folder}: {err.strerror or err}; set VPTUNE_CACHE to a "
                         f"writable folder (default ~/.cache/vptune)") from err
    return folder


def package_version() -> str:
    try:
        return version("vptune")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+unknown"
