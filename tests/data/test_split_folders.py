"""Image folders split into train / val / test folders, each with one sub-folder per class (torchvision
ImageFolder / Hugging Face `imagefolder` layout): read as splits, never as classes named "train", "test", "val".

Fixtures are tiny real PNG files of solid colours (class k = colour k), so a label can be checked against the
pixels it comes with.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from vptune.data import DataError, DataSplits, load_data

MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
CLASSES = ["a_red", "b_green", "c_blue"]  # sorted order = colour order
SIZE = 16


@pytest.fixture(autouse=True)
def _cache_env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VPTUNE_CACHE", str(tmp_path_factory.mktemp("vptune-cache")))


def write_image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def write_split(root: Path, folder: str, per_class: int, classes: list[str] = CLASSES) -> None:
    for name in classes:
        k = CLASSES.index(name)
        for i in range(per_class):
            write_image(root / folder / name / f"{folder}_{k}_{i}.png", COLOURS[k])


def load(source) -> DataSplits:
    return load_data(source, img_size=SIZE, mean=MEAN, std=STD, seed=0)


def colour_of(x: torch.Tensor) -> int:
    """Class index of a normalised solid-colour image: the brightest channel after undoing mean / std."""
    pixels = x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    return int(pixels.mean(dim=(1, 2)).argmax())


def sizes(splits: DataSplits) -> dict[str, int]:
    return {name: len(ds) for name, ds in splits.splits().items()}


def check_labels(splits: DataSplits) -> None:
    """Every item's label matches its pixels and the class folder it came from."""
    for name, ds in splits.splits().items():
        for i, sample in enumerate(ds.samples):
            x, y = ds[i]
            assert x.shape == (3, SIZE, SIZE)
            assert colour_of(x) == y == sample.label, (name, sample.path)
            assert sample.path.parent.name == splits.class_names[y], (name, sample.path)


def test_split_folders_load_as_splits(tmp_path):
    root = tmp_path / "data"
    write_split(root, "train", 5)
    write_split(root, "val", 2)
    write_split(root, "test", 3)
    splits = load(root)
    assert splits.class_names == CLASSES  # not ["test", "train", "val"]
    assert sizes(splits) == {"train": 15, "val": 6, "trainval": 21, "test": 9}
    check_labels(splits)
    for name, folder in [("train", "train"), ("val", "val"), ("test", "test")]:
        assert {s.path.parent.parent.name for s in getattr(splits, name).samples} == {folder}
    assert splits.train.samples[0].origin == f"class folder {root / 'train' / 'a_red'}"
    info = splits.describe()
    assert info["format"] == "image-folder-splits"
    assert "val = seeded" not in info["split_rule"]


@pytest.mark.parametrize("val_name", ["valid", "validation", "Validation", "VAL"])
def test_val_folder_spellings(tmp_path, val_name):
    root = tmp_path / "data"
    write_split(root, "Train" if val_name.isupper() else "train", 4)
    write_split(root, val_name, 2)
    write_split(root, "test", 1)
    splits = load(root)
    assert splits.class_names == CLASSES
    assert sizes(splits) == {"train": 12, "val": 6, "trainval": 18, "test": 3}
    assert {s.path.parent.parent.name for s in splits.val.samples} == {val_name}
    check_labels(splits)


def test_train_and_test_only_gets_a_carved_val(tmp_path):
    root = tmp_path / "data"
    write_split(root, "train", 5)
    write_split(root, "test", 2)
    splits = load(root)
    assert splits.class_names == CLASSES
    # 10% of each class's 5 train images, rounded up to one, is carved off as val; test stays as given
    assert sizes(splits) == {"train": 12, "val": 3, "trainval": 15, "test": 6}
    assert "val = seeded" in splits.describe()["split_rule"]
    assert {s.path.parent.parent.name for s in splits.val.samples} == {"train"}
    check_labels(splits)


def test_differing_class_sets_name_the_folders(tmp_path):
    root = tmp_path / "data"
    write_split(root, "train", 3)
    write_split(root, "val", 1, classes=["b_green", "c_blue"])
    write_split(root, "test", 1)
    write_image(root / "test" / "d_extra" / "x.png", COLOURS[0])
    with pytest.raises(DataError) as err:
        load(root)
    message = str(err.value)
    assert f"{root / 'val'} lacks class folder(s) ['a_red'] that {root / 'train'} has" in message
    assert f"{root / 'test'} has class folder(s) ['d_extra'] that {root / 'train'} lacks" in message
    assert "same class folders" in message


def test_empty_class_folder_in_a_split_is_named(tmp_path):
    root = tmp_path / "data"
    write_split(root, "train", 3)
    write_split(root, "test", 1, classes=["a_red", "b_green"])
    (root / "test" / "c_blue").mkdir()
    with pytest.raises(DataError, match=r"class folder .*test[/\\]c_blue has no images"):
        load(root)


@pytest.mark.parametrize("with_test", [True, False])
def test_split_and_class_folders_mixed_is_an_error(tmp_path, with_test):
    root = tmp_path / "data"
    write_split(root, "train", 3)
    if with_test:
        write_split(root, "test", 1)
    write_image(root / "cat" / "0.png", COLOURS[0])
    with pytest.raises(DataError, match=r"mixes split folders .*train.* with folders of images read as classes "
                                        r"\(cat\)"):
        load(root)


def test_missing_test_folder_is_an_error(tmp_path):
    root = tmp_path / "data"
    write_split(root, "train", 3)
    write_split(root, "val", 1)
    with pytest.raises(DataError, match=r"no test folder"):
        load(root)


def test_a_class_named_train_stays_a_class(tmp_path):
    """Regression guard for the detection rule (passes on the old code too): a `train` folder of images, with
    no class sub-folders, is a class (say, of vehicles) in a plain image folder."""
    for k, name in enumerate(["bus", "car", "train"]):
        for i in range(6):
            write_image(tmp_path / "vehicles" / name / f"{i}.png", COLOURS[k])
    splits = load(tmp_path / "vehicles")
    assert splits.class_names == ["bus", "car", "train"]
    assert splits.describe()["format"] == "image-folder"
