"""Segmentation data: each layout users have loads, every bad image/mask pair is named in one line before anything
is written, masks are read as indices (palette PNGs too), the joint augmentation keeps image and mask aligned, and
mIoU matches a hand-computed example."""
import numpy as np
import pytest
import torch
from PIL import Image

from vptune.data import DataError
from vptune.data.joint_transforms import JointTransform
from vptune.data.segmentation import (VOC_CLASSES, check_segmentation, is_segmentation_data, read_mask,
                                      read_segmentation_data)
from vptune.inference.segmentation_metrics import confusion_matrix, segmentation_metrics


def write_pair(image_path, mask_path, size=(12, 10), value=1, mode="L"):
    """A noise image and a mask with a block of class `value` on 0 (a palette PNG when mode is "P")."""
    rng = np.random.default_rng(abs(hash(str(image_path))) % 2**32)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(image_path)
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    mask[2:6, 3:8] = value
    picture = Image.fromarray(mask, mode="L")
    if mode == "P":  # colours far from the indices: a reader that converts to RGB or L would see other values
        picture = picture.convert("P")
        picture.putpalette([200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * (256 * 3 - 9))
    picture.save(mask_path)
    return mask


def test_image_and_mask_folders_with_split_folders_and_a_class_file(tmp_path):
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            write_pair(tmp_path / "images" / split / f"{i}.jpg", tmp_path / "masks" / split / f"{i}.png", value=2)
    (tmp_path / "classes.txt").write_text("road\ncar\nperson\n")
    assert is_segmentation_data(tmp_path)
    data = check_segmentation(read_segmentation_data(tmp_path, seed=0))
    assert data.layout == "folders" and data.class_names == ["road", "car", "person"]
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [3, 2, 1]  # test carved from train: at least 1
    assert all(p.image.stem == p.mask.stem for pairs in data.splits.values() for p in pairs)


def test_without_splits_the_images_are_carved_70_15_15_by_the_seed(tmp_path):
    for i in range(20):
        write_pair(tmp_path / "images" / f"{i:02}.png", tmp_path / "labels" / f"{i:02}.png")
    first, again, other = (read_segmentation_data(tmp_path, seed=s) for s in (0, 0, 1))
    assert [len(first.splits[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    assert first.splits == again.splits and first.splits != other.splits
    assert len({p.image for pairs in first.splits.values() for p in pairs}) == 20  # no image in two splits
    assert check_segmentation(first).class_names == ["0", "1"]  # from the masks, without a class file


def test_voc_reads_palette_masks_as_indices_and_its_lists(tmp_path):
    for name, value in (("2007_000001", 15), ("2007_000002", 7), ("2007_000003", 1)):
        write_pair(tmp_path / "JPEGImages" / f"{name}.jpg", tmp_path / "SegmentationClass" / f"{name}.png",
                   value=value, mode="P")
    (tmp_path / "JPEGImages" / "2007_000004.jpg").write_bytes((tmp_path / "JPEGImages" / "2007_000001.jpg").read_bytes())
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("2007_000001\n2007_000002\n")
    (lists / "val.txt").write_text("2007_000003\n")
    data = check_segmentation(read_segmentation_data(tmp_path))
    assert data.layout == "voc" and data.class_names == list(VOC_CLASSES)
    assert [p.image.stem for p in data.splits["train"]] == ["2007_000001", "2007_000002"]
    assert np.unique(read_mask(data.splits["train"][0].mask)).tolist() == [0, 15]  # the index, not a colour


def test_ade20k_masks_count_classes_from_one_and_zero_is_ignored(tmp_path):
    for split in ("training", "validation"):
        write_pair(tmp_path / "images" / split / "ADE_1.jpg", tmp_path / "annotations" / split / "ADE_1.png", value=3)
    data = check_segmentation(read_segmentation_data(tmp_path))
    assert data.layout == "ade20k" and len(data.splits["val"]) == 1
    assert np.unique(read_mask(data.splits["train"][0].mask, shift=data.shift)).tolist() == [2, 255]
    assert data.class_names == ["0", "1", "2"]


def test_a_csv_with_a_mask_column(tmp_path):
    rows = ["image,mask,split"]
    for i, split in enumerate(["train", "train", "val", "test"]):
        write_pair(tmp_path / "img" / f"{i}.png", tmp_path / "gt" / f"{i}.png")
        rows.append(f"img/{i}.png,gt/{i}.png,{split}")
    (tmp_path / "seg.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "labels.csv").write_text("path,label\nimg/0.png,cat\n")
    assert is_segmentation_data(tmp_path / "seg.csv") and not is_segmentation_data(tmp_path / "labels.csv")
    data = check_segmentation(read_segmentation_data(tmp_path / "seg.csv"))
    assert data.layout == "csv" and [len(data.splits[s]) for s in ("train", "val", "test")] == [2, 1, 1]


def test_sixteen_bit_masks_are_read_as_their_values(tmp_path):
    write_pair(tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png")
    Image.fromarray(np.full((10, 12), 2, dtype=np.uint16)).save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "masks" / "a.png").mode.startswith("I")
    assert np.unique(read_mask(tmp_path / "masks" / "a.png")).tolist() == [2]


def _bad(tmp_path, kind):
    """A folder task of three good pairs and one bad one of `kind`; returns the name the error must give."""
    for i in range(3):
        write_pair(tmp_path / "images" / f"{i}.png", tmp_path / "masks" / f"{i}.png")
    (tmp_path / "classes.txt").write_text("background\nthing\n")
    image, mask = tmp_path / "images" / "bad.png", tmp_path / "masks" / "bad.png"
    if kind == "size":
        write_pair(image, mask)
        Image.fromarray(np.zeros((9, 12), dtype=np.uint8)).save(mask)
    elif kind == "index":
        write_pair(image, mask, value=7)
    elif kind == "colour":
        write_pair(image, mask)
        Image.fromarray(np.dstack([np.zeros((10, 12), np.uint8), np.ones((10, 12), np.uint8) * 9,
                                   np.zeros((10, 12), np.uint8)])).save(mask)
    elif kind == "jpeg":
        write_pair(image, mask.with_suffix(".jpg"))
        return "bad.jpg"
    elif kind == "sixteen-bit":
        write_pair(image, mask)
        Image.fromarray(np.full((10, 12), 300, dtype=np.uint16)).save(mask)
    elif kind == "no mask":
        write_pair(image, tmp_path / "elsewhere" / "bad.png")
    elif kind == "no image":
        write_pair(tmp_path / "elsewhere" / "bad.png", mask)
    elif kind == "unreadable image":
        write_pair(image, mask)
        image.write_bytes(b"not a png")
    return "bad.png"


@pytest.mark.parametrize("kind, says", [
    ("size", "must match their images"), ("index", "holds index 7, but there are 2 classes"),
    ("colour", "is a colour image"), ("jpeg", "is a JPEG"), ("sixteen-bit", "holds index 300"),
    ("no mask", "have no mask of the same name"), ("no image", "have no image of the same name"),
    ("unreadable image", "not an image"),
])
def test_each_bad_pair_is_one_line_naming_the_file_and_nothing_is_written(tmp_path, kind, says):
    name = _bad(tmp_path, kind)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DataError, match=says) as err:
        check_segmentation(read_segmentation_data(tmp_path))
    assert "\n" not in str(err.value) and name in str(err.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_every_bad_pair_is_named_in_the_one_error(tmp_path):
    _bad(tmp_path, "index")
    write_pair(tmp_path / "images" / "worse.png", tmp_path / "masks" / "worse.png", value=9)
    with pytest.raises(DataError, match=r"2 of 5 image/mask pairs cannot be used: .*bad\.png.*worse\.png"):
        check_segmentation(read_segmentation_data(tmp_path))


def _task_mistake(root, kind):
    """Three good pairs in images/ + masks/ with one task-level mistake of `kind`; returns what to read."""
    for i in range(3):
        write_pair(root / "images" / f"{i}.png", root / "masks" / f"{i}.png", value=1 + i % 2)
    (root / "classes.txt").write_text("background\nthing\nother\n")
    if kind == "class named twice":
        (root / "classes.txt").write_text("background\nthing\n\nthing\n")
    elif kind == "every train pixel ignored":
        for mask in (root / "masks").glob("*.png"):
            Image.fromarray(np.full((10, 12), 255, dtype=np.uint8)).save(mask)
    elif kind.startswith("empty"):
        rows = ["image,mask,split", "images/0.png,masks/0.png,train", "images/1.png,masks/1.png,train",
                ",masks/2.png,val" if kind == "empty image cell" else "images/2.png, ,val"]
        (root / "pairs.csv").write_text("\n".join(rows) + "\n")
        return root / "pairs.csv"
    return root


@pytest.mark.parametrize("kind, says", [
    ("class named twice", r"classes.txt names class 'thing' twice \(lines 2 and 4\)"),
    ("every train pixel ignored", "every pixel of every train mask is 255"),
    ("empty image cell", r"pairs.csv line 4: the image path is empty"),
    ("empty mask cell", r"pairs.csv line 4: the mask path is empty"),
])
def test_a_mistake_in_the_whole_task_is_one_line_naming_the_file(tmp_path, kind, says):
    source = _task_mistake(tmp_path, kind)
    with pytest.raises(DataError, match=says) as err:
        check_segmentation(read_segmentation_data(source))
    assert "\n" not in str(err.value)


def test_some_masks_wholly_ignored_are_fine_when_another_train_mask_is_labelled(tmp_path):
    source = _task_mistake(tmp_path, "none")
    Image.fromarray(np.full((10, 12), 255, dtype=np.uint8)).save(tmp_path / "masks" / "0.png")
    assert check_segmentation(read_segmentation_data(source)).class_names == ["background", "thing", "other"]


def test_miou_against_a_hand_computed_example_with_an_ignore_label_and_an_absent_class():
    target = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 255]])
    predicted = torch.tensor([[0, 1, 1, 1], [0, 3, 0, 2]])  # class 3 appears only under an ignored pixel
    confusion = confusion_matrix(predicted, target, num_classes=4)
    metrics = segmentation_metrics(confusion, ["a", "b", "c", "d"])
    # class 0: TP 2 (true 0 predicted 0), FN 1 (true 0 -> 1), FP 1 (true 1 -> 0): IoU 2/4; class 1: TP 2, FN 1,
    # FP 1: 2/4; class 2: in neither labels nor predictions of a scored pixel: no IoU; class 3: likewise
    assert metrics["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": None, "d": None}
    assert metrics["miou"] == 0.5 and metrics["pixel_accuracy"] == 4 / 6 and metrics["num_pixels"] == 6


def test_the_joint_augmentation_moves_image_and_mask_together():
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(20), indexing="ij")
    mask = rows // 4 * 5 + cols // 4  # blocks of 4 x 4 pixels, each its own index
    image = mask.to(torch.uint8).expand(3, -1, -1).clone()  # the image's pixels carry their mask's index
    transform = JointTransform(12, mean=(0, 0, 0), std=(1 / 255,) * 3, train=True, scales=(1.5, 3.0))
    flips = set()
    for seed in range(12):
        out_image, out_mask = transform(image, mask, torch.Generator().manual_seed(seed))
        assert out_image.shape == (3, 12, 12) and out_mask.shape == (12, 12)
        inner = (out_mask[1:-1, 1:-1] == out_mask[:-2, 1:-1]) & (out_mask[1:-1, 1:-1] == out_mask[2:, 1:-1]) \
            & (out_mask[1:-1, 1:-1] == out_mask[1:-1, :-2]) & (out_mask[1:-1, 1:-1] == out_mask[1:-1, 2:])
        assert inner.any()
        # inside a block (away from its edges, where bilinear resampling blends), image and mask agree
        torch.testing.assert_close(out_image[0, 1:-1, 1:-1][inner], out_mask[1:-1, 1:-1][inner].float(),
                                   atol=0.5, rtol=0)
        flips.add(bool(out_mask[0, 0] > out_mask[0, -1]))
    assert flips == {True, False}  # some crops were flipped, some not: both went through the same flip
    again = transform(image, mask, torch.Generator().manual_seed(3))
    assert torch.equal(again[1], transform(image, mask, torch.Generator().manual_seed(3))[1])


def test_evaluation_resizes_the_image_and_keeps_the_mask_whole():
    image, mask = torch.zeros(3, 30, 40, dtype=torch.uint8), torch.ones(30, 40, dtype=torch.long)
    out_image, out_mask = JointTransform(16, (0.5,) * 3, (0.5,) * 3, train=False)(image, mask)
    assert out_image.shape == (3, 16, 16) and torch.equal(out_mask, mask)


def test_the_built_in_task_is_written_the_same_every_time_and_loads_as_users_data(tmp_path):
    from vptune.data.builtin import _arrays
    from vptune.data.builtin_segmentation import write_pasted_animals

    silhouettes = np.zeros((60, 28, 28), np.uint8)
    silhouettes[:, 6:22, 8:20] = 255  # a block: every pasted object is a rectangle of its class
    animals = _arrays(silhouettes, np.arange(60) % 3, np.arange(60) >= 45, ["a", "b", "c"], "test")
    counts = {"train": 6, "val": 2, "test": 3}
    first, second = (write_pasted_animals(tmp_path / name, animals, counts) for name in ("first", "second"))
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 2 * 11 and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    data = check_segmentation(read_segmentation_data(first))
    assert data.class_names == ["ground", "a", "b", "c"] and [len(data.splits[s]) for s in counts] == [6, 2, 3]
    for pair in data.splits["train"]:
        mask = read_mask(pair.mask)
        labelled = np.argwhere(mask > 0)
        assert len(labelled) and set(np.unique(mask)) <= {0, 1, 2, 3}  # ground and pasted classes only


def test_the_defects_task_is_written_the_same_every_time_and_its_masks_cover_what_was_drawn(tmp_path):
    from vptune.data.builtin_segmentation import write_surface_defects

    counts = {"train": 5, "val": 2, "test": 2}
    first, second = (write_surface_defects(tmp_path / name, counts) for name in ("first", "second"))
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 2 * 9 and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    data = check_segmentation(read_segmentation_data(first))
    assert data.class_names == ["surface", "scratch", "spot"]
    for pair in data.splits["train"]:
        mask, image = read_mask(pair.mask), np.asarray(Image.open(pair.image))
        assert image.ndim == 2 and (mask > 0).any() and set(np.unique(mask)) <= {0, 1, 2}
        # a defect is drawn dark (20) or bright (235): every one of its pixels holds one of the two shades
        assert set(np.unique(image[mask > 0])) <= {20, 235}


def test_a_split_as_a_dataset_and_its_evaluation_at_full_resolution(tmp_path):
    from torch.utils.data import DataLoader

    from vptune.data import collate
    from vptune.data.segmentation_dataset import SegmentationDataset
    from vptune.inference.segmentation_metrics import evaluate_segmentation

    masks = [write_pair(tmp_path / "images" / f"{i}.png", tmp_path / "masks" / f"{i}.png", size=(12 + i, 10), value=1)
             for i in range(3)]
    data = check_segmentation(read_segmentation_data(tmp_path))
    pairs = [p for split in ("train", "val", "test") for p in data.splits[split]]
    dataset = SegmentationDataset(pairs, JointTransform(8, (0.5,) * 3, (0.5,) * 3, train=False))
    image, mask = dataset[0]
    assert image.shape == (3, 8, 8) and mask.shape == (10, 12 + int(pairs[0].image.stem))
    batches = DataLoader(dataset, batch_size=2, collate_fn=collate)
    images, first_masks = next(iter(batches))  # masks of two sizes stay a list; the images stack
    assert images.shape == (2, 3, 8, 8) and [m.shape for m in first_masks] == [(10, 12 + int(p.image.stem)) for p in pairs[:2]]

    def ground_everywhere(images):  # a model that always says class 0
        logits = torch.zeros(len(images), 2, 8, 8)
        logits[:, 0] = 1.0
        return logits

    metrics = evaluate_segmentation(ground_everywhere, batches, 2, ["ground", "thing"])
    ground = sum(int((m == 0).sum()) for m in masks)
    total = sum(m.size for m in masks)
    assert metrics["num_pixels"] == total and metrics["pixel_accuracy"] == pytest.approx(ground / total)
    assert metrics["per_class_iou"] == {"ground": pytest.approx(ground / total), "thing": 0.0}
