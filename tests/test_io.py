"""vptune._io: one cache directory rule for every room; atomic writes that follow the umask and never leave half
a file."""
import os
import stat
from pathlib import Path

import pytest

from vptune._io import atomic_write, atomic_write_text, cache_dir, file_sha256, short_sha
from vptune.backbones import DEFAULT_BACKBONE, imgfocus
from vptune.data import builtin


def test_cache_dir_honours_env_and_is_shared_by_backbones_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("VPTUNE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert imgfocus.cached_path() == tmp_path / "c" / "backbones" / f"{DEFAULT_BACKBONE}.safetensors"
    assert builtin.cache_path("digits") == tmp_path / "c" / "data" / "digits.npz"
    monkeypatch.delenv("VPTUNE_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "vptune"


def test_atomic_write_creates_folders_and_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_text(tmp_path / "new" / "file.txt", "hello")
    finally:
        os.umask(old)
    assert path.read_text() == "hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert file_sha256(path) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert short_sha(b"hello") == "2cf24dba5fb0a30e"


def test_a_failed_atomic_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = atomic_write_text(tmp_path / "file.txt", "old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_a_full_disk_names_the_file_and_keeps_its_last_good_version(tmp_path, monkeypatch):
    import errno
    from types import SimpleNamespace

    from vptune import _io
    from vptune.errors import WriteError

    target = atomic_write_text(tmp_path / "state.pt", "good")

    def no_space(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError, match=r"cannot write .*state.pt: the disk is full \(its previous version is intact\)"):
        atomic_write(target, no_space)
    # torch.save says it with a C++ RuntimeError; the free space tells it apart from a bug
    monkeypatch.setattr(_io.shutil, "disk_usage", lambda folder: SimpleNamespace(free=0))

    def torch_full(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    with pytest.raises(WriteError, match="the disk is full"):
        atomic_write(target, torch_full)
    assert target.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="a bug"):  # with space left, a RuntimeError is not the user's problem
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(RuntimeError("a bug")))


def test_an_output_folder_that_cannot_be_written_is_refused_before_training(workspace, tmp_path):
    from conftest import train_config

    from vptune import train
    from vptune.errors import WriteError

    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(WriteError, match="cannot write to the output folder .*a-file/run.*choose another --output"):
        train(train_config(workspace, tmp_path / "a-file" / "run"), quiet=True)
