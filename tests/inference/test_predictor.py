"""Predictor: built from a model alone (its backbone's data config gives the transform), batched over files."""
import torch
from conftest import make_tiny_vit

from vptune import Predictor, PromptConfig, PromptedViT, save_task
from vptune.data import Sample, build_transform, read_image
from vptune.inference import describe


def test_a_model_built_in_python_predicts_like_its_saved_task(workspace, tmp_path):
    backbone = make_tiny_vit()
    backbone.pretrained_cfg = {**backbone.pretrained_cfg, "mean": (0.1, 0.2, 0.3), "std": (0.5, 0.5, 0.5)}
    model = PromptedViT(backbone, PromptConfig(num_tokens=2), num_classes=3, class_names=["blue", "green", "red"])
    files = sorted((workspace / "images").rglob("*.png"))[:5]
    direct = Predictor(model, batch_size=2).predict_files(files, top_k=3)
    save_task(model, tmp_path / "task")
    reloaded = Predictor.from_task(tmp_path / "task", backbone=backbone).predict_files(files, top_k=3)
    assert [r["image"] for r in direct] == [str(f) for f in files]
    for a, b in zip(direct, reloaded):
        assert [g["class"] for g in a["top"]] == [g["class"] for g in b["top"]]
        assert all(abs(x["probability"] - y["probability"]) < 1e-6 for x, y in zip(a["top"], b["top"]))

    # the transform is the backbone's: its mean and std, not ImageNet's
    transform = build_transform(32, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    image = transform(read_image(Sample(files[0], -1, "test")))[None]
    with torch.no_grad():
        expected = model.eval()(image).softmax(1)[0]
    assert abs(direct[0]["top"][0]["probability"] - expected.max().item()) < 1e-6


def test_info_reads_task_json_without_building_the_backbone(tmp_path, monkeypatch):
    model = PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=2, mode="deep"), num_classes=3)
    save_task(model, tmp_path / "task")
    import vptune.inference.info as info

    monkeypatch.setattr(info, "create_backbone", lambda *a, **k: (_ for _ in ()).throw(AssertionError("built")))
    text = describe(tmp_path / "task")
    prompts = 6 * 2 * 64
    assert f"prompts           {prompts:>12,}" in text and f"head              {64 * 3 + 3:>12,}" in text
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert f"({100 * (prompts + 64 * 3 + 3) / backbone:.3f}% of the backbone)" in text


def test_eval_of_someone_elses_task_never_fetches_data_unasked(tmp_path, monkeypatch):
    from vptune import ConfigError
    from vptune.inference import evaluate

    monkeypatch.setenv("VPTUNE_CACHE", str(tmp_path / "cache"))
    model = PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=2), num_classes=10)
    save_task(model, tmp_path / "task", training={"data": "digits", "protocol": "vtab1k", "seed": 0})
    try:
        evaluate(tmp_path / "task")
    except ConfigError as err:
        assert "built-in data set 'digits', which is not on this machine yet; pass --data digits" in str(err)
    else:
        raise AssertionError("evaluate fetched data it was not asked to")
    assert not (tmp_path / "cache").exists()


def test_a_folder_predicts_as_its_images_and_one_without_images_is_named(workspace, tmp_path):
    import shutil

    import pytest

    from vptune.data import DataError

    model = PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=2), num_classes=3)
    folder = tmp_path / "photos"
    shutil.copytree(workspace / "images", folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / "red" / ".hidden.png").write_bytes(b"macOS metadata")  # hidden files are skipped, not decoded
    predictor = Predictor(model, batch_size=4)
    files = sorted(p for p in folder.rglob("*.png") if not p.name.startswith("."))
    by_folder = predictor.predict_files([folder], top_k=2)
    assert by_folder == predictor.predict_files(files, top_k=2)
    assert predictor.predict_files(files[0]) == predictor.predict_files([files[0]])  # one path, not its characters
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"folder .*empty has no images \(extensions: "):
        predictor.predict_files([files[0], tmp_path / "empty"])


def test_every_file_is_checked_before_the_first_prediction_and_skip_bad_predicts_the_rest(workspace, tmp_path):
    import shutil

    import pytest

    from vptune.data import DataError, DataWarning

    folder = tmp_path / "photos"
    shutil.copytree(workspace / "images", folder)
    good = sorted(folder.rglob("*.png"))
    (folder / "blue" / "0_broken.png").write_bytes(b"not a png")   # sorted first
    (folder / "red" / "zz_truncated.png").write_bytes(good[-1].read_bytes()[:40])  # sorted last
    predictor = Predictor(PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=2), num_classes=3), batch_size=2)
    with pytest.raises(DataError, match=r"2 of \d+ image file\(s\) cannot be read: .*0_broken.png .*zz_truncated.png "
                                        r".*--skip-bad"):
        predictor.predict_files([folder])  # both named: the last one was not found after predicting the others
    with pytest.warns(DataWarning, match=r"skipped 2 of \d+ image file\(s\).*0_broken.png"):
        kept = predictor.predict_files([folder], top_k=2, skip_bad=True)
    assert kept == predictor.predict_files(good, top_k=2)
    with pytest.raises(DataError, match="none of the 1 image file"):
        predictor.predict_files([folder / "blue" / "0_broken.png"], skip_bad=True)


def test_a_batch_of_the_wrong_shape_is_a_value_error_naming_the_shape_wanted(tmp_path):
    import pytest

    from vptune import MultiTaskModel

    backbone = make_tiny_vit()
    model = PromptedViT(backbone, PromptConfig(num_tokens=2), num_classes=3)
    for batch in (torch.zeros(1, 3, 33, 32), torch.zeros(3, 32, 32)):  # timm raised an AssertionError from inside
        with pytest.raises(ValueError, match=r"images must be a \(B, 3, 32, 32\) batch .* got shape"):
            Predictor(model).predict(batch)
    assert len(Predictor(model).predict(torch.zeros(2, 3, 32, 32))) == 2
    with pytest.raises(ValueError, match=r"got shape \(1, 3, 33, 32\)"):
        MultiTaskModel(backbone, tasks={"a": save_task(model, tmp_path / "a")}).predict(torch.zeros(1, 3, 33, 32),
                                                                                        ["a"])


def test_a_path_that_is_no_regular_file_says_what_it_is(workspace, tmp_path):
    import os

    import pytest

    from vptune.data import DataError

    predictor = Predictor(PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=2), num_classes=3))
    fifo, loop, broken = tmp_path / "pipe.png", tmp_path / "loop.png", tmp_path / "broken.png"
    os.mkfifo(fifo)  # opening it would wait for a writer forever
    loop.symlink_to(loop)
    broken.symlink_to(tmp_path / "gone.png")
    for path, why in [(fifo, "not a regular file: a FIFO"), ("/dev/zero", "not a regular file: a character device"),
                      (loop, "a symlink loop"), (broken, "a broken symlink"),
                      (tmp_path / "missing.png", "file not found")]:
        with pytest.raises(DataError, match=rf"can be read: {path} \({why}"):
            predictor.predict_files([path])
