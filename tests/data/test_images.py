"""Reading users' image files: 16-bit images keep their contrast, huge images are refused before decoding, file
names need not be UTF-8."""
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vptune.data import DataError, Sample, load_data, read_image


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    gradient = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(gradient).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    pixels = read_image(Sample(tmp_path / "deep.png", 0, "test"))[0].numpy().astype(int)
    expected = np.rint(gradient / 65535 * 255).astype(int)
    assert np.abs(pixels - expected).max() <= 1  # Pillow's own convert("RGB") gives 255 almost everywhere


def test_an_image_over_the_pixel_limit_is_refused_naming_it(tmp_path):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big.png .* is 300 x 200 pixels, over the limit of 50,000"):
        read_image(Sample(tmp_path / "big.png", 0, "test"), max_pixels=50_000)


def test_a_file_name_that_is_not_utf8_does_not_crash_the_fingerprint(tmp_path):
    root = tmp_path / "data"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / label / f"{i}.png")
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: a surrogate in Python's str
    Image.new("RGB", (8, 8)).save(Path(root / "a") / odd)
    splits = load_data(root, img_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert len(splits.describe()["fingerprint"]) == 16


def test_training_and_predict_refuse_images_over_the_pixel_limit_flag(workspace, tmp_path, capsys):
    from conftest import train_args

    from vptune.cli import main

    data = tmp_path / "data"
    for label in ("a", "b"):
        (data / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40 + i, 40), label == "a" and "red" or "blue").save(data / label / f"{i}.png")
    args = train_args(workspace, tmp_path / "run")
    args[args.index("--data") + 1] = str(data)
    assert main([*args, "--max-pixels", "1000"]) == 1  # every image is 1,600+ pixels
    assert "over the limit of 1,000" in capsys.readouterr().err and not (tmp_path / "run").exists()
    assert main(args) == 0
    assert main(["predict", str(tmp_path / "run"), str(data / "a" / "0.png"), "--max-pixels", "1000"]) == 1
    assert "0.png (40 x 40 pixels, over the limit of 1,000). Fix or remove them, or raise --max-pixels" in \
        capsys.readouterr().err


def test_only_the_promised_formats_are_opened(tmp_path):
    """An EPS file would go to Pillow's EPS plugin (Ghostscript where installed): it is refused unread."""
    import PIL

    from vptune.data import DataError, decode_image
    from vptune.data.datasets import open_image

    eps = tmp_path / "drawing.eps"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with Image.open(eps) as image:
        assert image.format == "EPS"  # what Pillow alone would do with it
    with pytest.raises(PIL.UnidentifiedImageError):
        open_image(eps)
    with pytest.raises(DataError, match="cannot read image .*drawing.eps"):
        decode_image(eps, str(eps))
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"):
        path = tmp_path / f"ok.{fmt.lower()}"
        Image.new("RGB", (8, 6), (200, 10, 10)).save(path, format=fmt)
        assert tuple(decode_image(path, str(path)).shape) == (3, 6, 8)


@pytest.mark.parametrize("high", [1.0, 255.0])
def test_a_32_bit_float_tiff_is_scaled_from_its_range_not_made_black(tmp_path, high):
    gradient = np.linspace(0, high, 64 * 64, dtype=np.float32).reshape(64, 64)
    Image.fromarray(gradient).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "float.tif").mode == "F"
    pixels = read_image(Sample(tmp_path / "float.tif", 0, "test"))[0].numpy().astype(int)
    expected = np.rint(gradient / high * 255).astype(int)
    assert np.abs(pixels - expected).max() <= 1


def test_a_float_tiff_with_negative_values_is_refused_naming_it(tmp_path):
    Image.fromarray(np.full((8, 8), -0.5, dtype=np.float32)).save(tmp_path / "signed.tif")
    with pytest.raises(DataError, match=r"signed.tif .* negative, NaN or infinite pixel values"):
        read_image(Sample(tmp_path / "signed.tif", 0, "test"))
