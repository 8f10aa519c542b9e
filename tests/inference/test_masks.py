"""Predicted masks on disk: palette PNGs whose pixels are the class indices (read back as such), VOC's colours,
and an overlay that leaves ignored pixels alone."""
import io

import numpy as np
import pytest
from PIL import Image

from vptune.data.segmentation import read_mask
from vptune.inference.masks import overlay, overlay_jpeg, palette, save_mask


def test_a_saved_mask_reads_back_as_the_same_indices(tmp_path):
    mask = np.random.default_rng(0).integers(0, 21, (17, 23))
    mask[0, :5] = 255
    path = save_mask(mask, tmp_path / "out" / "a.png")
    with Image.open(path) as image:
        assert image.mode == "P" and image.size == (23, 17)
    assert np.array_equal(read_mask(path), mask)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "a.png"]  # no temp file left


def test_the_palette_is_vocs_and_ignore_is_white():
    colours = palette()
    assert colours[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert colours[15].tolist() == [192, 128, 128] and colours[255].tolist() == [255, 255, 255]
    assert len({tuple(c) for c in colours[:255]}) == 255  # every class its own colour


def test_the_overlay_blends_class_colours_and_leaves_ignored_pixels():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    mask = np.array([[1, 1, 255, 255]] * 4)
    out = np.asarray(overlay(image, mask, alpha=0.5))
    assert out[0, 0].tolist() == [114, 50, 50]  # halfway between (100, 100, 100) and class 1's (128, 0, 0)
    assert out[0, 3].tolist() == [100, 100, 100]
    with Image.open(io.BytesIO(overlay_jpeg(image, mask))) as jpeg:
        assert jpeg.format == "JPEG" and jpeg.size == (4, 4)
    with pytest.raises(ValueError, match="differ in size"):
        overlay(image, mask[:2])
