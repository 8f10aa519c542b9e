"""Every split is checked before training starts, and suspicious lists are warned about."""
import warnings

import numpy as np
import pytest
from PIL import Image

from vptune.data import DataError, DataWarning, load_data

KW = dict(img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3)


def make_csv(tmp_path, rows):
    """rows: (file name, label, split); each distinct file is a small random PNG."""
    rng = np.random.default_rng(0)
    for name in {r[0] for r in rows}:
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text("".join(f"{n},{label},{split}\n" for n, label, split in rows))
    return tmp_path / "labels.csv"


def base_rows(labels=("cat", "dog")):
    return [(f"{label}{i}.png", label, split) for label in labels for i, split in
            enumerate(["train"] * 4 + ["val", "test"])]


def test_a_corrupt_test_image_is_refused_before_training_naming_it(tmp_path):
    csv = make_csv(tmp_path, base_rows())
    (tmp_path / "dog5.png").write_bytes((tmp_path / "dog5.png").read_bytes()[:60])  # the test split's dog
    with pytest.raises(DataError, match=r"1 image file\(s\) cannot be read: .*labels.csv.*dog5.png.*--skip-bad"):
        load_data(csv, **KW)
    splits = load_data(csv, skip_bad=True, **KW)  # the fix the message names
    assert len(splits.test) == 1


def test_an_empty_val_list_is_refused(tmp_path):
    root = tmp_path / "vtab"
    root.mkdir()
    make_csv(root, base_rows())
    (root / "images").mkdir()
    for split in ("train800", "val200", "test"):
        wanted = {"train800": "train", "val200": "val", "test": "test"}[split]
        lines = [f"{n} {0 if label == 'cat' else 1}" for n, label, s in base_rows() if s == wanted]
        (root / f"{split}.txt").write_text("" if split == "val200" else "\n".join(lines) + "\n")
    (root / "labels.csv").unlink()
    with pytest.raises(DataError, match="val"):
        load_data(root, **KW)


def test_duplicates_test_only_classes_and_far_labels_are_warned_about(tmp_path):
    rows = [(f"{name}{i}.png", label, split) for name, label in (("a", 1), ("b", 2), ("c", 3))
            for i, split in enumerate(["train", "train", "val", "test"])]
    rows += [("a0.png", 1, "test"), ("x.png", 99, "test")]  # a train image listed again in test; a stray label
    csv = make_csv(tmp_path, rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_data(csv, **KW)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert any("1 image file(s) are listed in both train and test" in m for m in messages), messages
    assert any("appear in test but not in train: '99'" in m for m in messages), messages
    assert any("label 99 is far from the other labels (1..3)" in m for m in messages), messages


def test_a_test_image_copied_into_train_under_another_name_is_warned_about(tmp_path):
    csv = make_csv(tmp_path, base_rows())
    (tmp_path / "cat0.png").write_bytes((tmp_path / "cat5.png").read_bytes())  # train's cat0 = test's cat5
    with pytest.warns(DataWarning, match=r"1 image file\(s\) in train are byte-for-byte copies of test images under "
                                         r"another name \(e\.g\. .*cat0\.png = .*cat5\.png\)"):
        load_data(csv, **KW)
    (tmp_path / "cat0.png").write_bytes((tmp_path / "cat1.png").read_bytes())  # a copy within train: no leak
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        load_data(csv, **KW)


def test_a_data_set_with_one_class_is_refused(tmp_path):
    """Every prediction would be right: a test top-1 of 1.0 that means nothing."""
    with pytest.raises(DataError, match=r"has 1 class \(cat\); a classifier needs at least 2"):
        load_data(make_csv(tmp_path, base_rows(labels=("cat",))), **KW)


def test_an_image_listed_twice_is_used_once_and_never_on_both_sides_of_a_carved_split(tmp_path):
    rows = [(n, label, "") for n, label, _ in base_rows()]
    csv = make_csv(tmp_path, rows)
    csv.write_text("".join(f"{n},{label}\n" for n, label, _ in rows + rows[:3]))  # no split column: carved
    with pytest.warns(DataWarning, match=r"3 image\(s\) are listed more than once in the list \(e\.g\. "
                                         r".*labels\.csv line 1 and .*labels\.csv line 13\); each is used once"):
        splits = load_data(csv, **KW)
    names = {split: [s.path.name for s in getattr(splits, split).samples] for split in ("train", "val", "test")}
    assert sorted(sum(names.values(), [])) == sorted(n for n, _, _ in rows)  # each image once, in one split


def test_an_image_listed_twice_with_two_labels_is_refused_naming_both_rows(tmp_path):
    csv = make_csv(tmp_path, base_rows())
    csv.write_text(csv.read_text() + "cat0.png,dog,train\n")
    with pytest.raises(DataError, match=r"labels\.csv line 13: .*cat0\.png is listed again with label 'dog' "
                                        r"\(.*labels\.csv line 1 gives 'cat'\); an image has one label"):
        load_data(csv, **KW)


def test_evenly_spaced_numeric_labels_are_not_taken_for_a_typo(tmp_path):
    """Orientations 0, 15, ..., 165 are class names, not indices: no "far from the other labels" warning."""
    rows = [(f"{angle}_{i}.png", angle, split) for angle in range(0, 180, 15)
            for i, split in enumerate(["train", "train", "val", "test"])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_data(make_csv(tmp_path, rows), **KW)
    assert not any("far from the other labels" in str(w.message) for w in caught)
