"""Segmentation end to end on the tiny ViT: `vptune train` tells the task from the data, trains prompts and a
segmentation head on the pixel loss (255 ignored), chooses the epoch by val mIoU, refits on train + val, and eval,
predict and info agree with each other and with a hand computation from the files on disk."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_VIT, killed_in_epoch, without_timings
from PIL import Image
from safetensors.torch import load_file

from vptune import ConfigError, RunDir, TrainConfig, train
from vptune.cli import main
from vptune.training.objective import SEGMENTATION

CLASSES = ("ground", "bright", "red")
COUNTS = {"train": 12, "val": 4, "test": 4}


@pytest.fixture(scope="module")
def seg_data(workspace, tmp_path_factory):
    """images/ and masks/ with train/val/test folders and classes.txt: a bright or a red square on dark noise, its
    border ignored (255), images of three sizes."""
    root = tmp_path_factory.mktemp("seg") / "data"
    rng = np.random.default_rng(0)
    for split, count in COUNTS.items():
        for sub in ("images", "masks"):
            (root / sub / split).mkdir(parents=True)
        for i in range(count):
            height, width = 36, 40 + 4 * (i % 3)
            mask = np.zeros((height, width), np.uint8)
            top, left = rng.integers(0, 16, 2)
            mask[top:top + 18, left:left + 18] = 255
            mask[top + 1:top + 17, left + 1:left + 17] = 1 + i % 2
            image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
            image[mask == 1] += 150
            image[mask == 2, 0] += 190
            Image.fromarray(image).save(root / "images" / split / f"{i}.png")
            Image.fromarray(mask).save(root / "masks" / split / f"{i}.png")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def seg_args(workspace, data, out, *extra):
    return ["train", "--data", str(data), "--output", str(out), "--backbone", TINY_VIT, "--weights",
            str(workspace / "tiny.safetensors"), "--img-size", "32", "--epochs", "2", "--batch-size", "4",
            "--num-tokens", "4", "--quiet", *extra]


def seg_config(workspace, data, out, **overrides):
    return TrainConfig(**{**dict(data=str(data), output=str(out), backbone=TINY_VIT, img_size=32, epochs=2,
                                 weights=str(workspace / "tiny.safetensors"), batch_size=4, num_tokens=4,
                                 refit=False), **overrides})


def hand_miou(predicted: list[np.ndarray], truth: list[np.ndarray], num_classes: int) -> float:
    """Mean over classes present in labels or predictions of TP / (TP + FP + FN), 255 left out."""
    ious = []
    for k in range(num_classes):
        tp = fp = fn = 0
        for p, t in zip(predicted, truth):
            scored = t != 255
            tp += int(((p == k) & (t == k) & scored).sum())
            fp += int(((p == k) & (t != k) & scored).sum())
            fn += int(((p != k) & (t == k)).sum())
        if tp + fp + fn:
            ious.append(tp / (tp + fp + fn))
    return float(np.mean(ious))


def test_train_eval_predict_agree_with_the_masks_on_disk(workspace, seg_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(seg_args(workspace, seg_data, out)) == 0  # no --task: the masks folder says segmentation
    summary = RunDir(out).read_summary()
    assert summary["task"] == "segmentation" and "test_top1" not in summary
    assert summary["train_images"] == COUNTS["train"] + COUNTS["val"]  # the refit saw train + val
    assert summary["selection"]["train_images"] == COUNTS["train"]
    assert summary["test_images"] == COUNTS["test"] and set(summary["test_per_class_iou"]) == set(CLASSES)
    assert f"test mIoU {summary['test_miou']:.4f}" in capsys.readouterr().out

    assert main(["eval", str(out)]) == 0
    metrics = json.loads((out / "eval" / "test_metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(summary["test_miou"], abs=1e-12)
    assert (out / "eval" / "test_confusion.png").is_file()

    masks = tmp_path / "masks"
    assert main(["predict", str(out), str(seg_data / "images" / "test"), "--output", str(masks)]) == 0
    names = sorted(p.name for p in (seg_data / "images" / "test").iterdir())
    predicted = [np.asarray(Image.open(masks / name)) for name in names]
    truth = [np.asarray(Image.open(seg_data / "masks" / "test" / name)) for name in names]
    assert [p.shape for p in predicted] == [t.shape for t in truth]  # at each image's own size
    assert all((masks / name.replace(".png", ".overlay.jpg")).is_file() for name in names)
    assert hand_miou(predicted, truth, len(CLASSES)) == pytest.approx(metrics["miou"], abs=1e-12)

    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    total = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("trainable total"))
    assert f"{summary['trainable_parameters']:,}" in total  # BatchNorm's statistics are stored, not counted


def test_a_second_predict_into_the_same_folder_or_into_the_images_is_refused(workspace, seg_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(seg_args(workspace, seg_data, out, "--no-refit", "--epochs", "1")) == 0
    images, masks = seg_data / "images" / "test", tmp_path / "masks"
    assert main(["predict", str(out), str(images), "--output", str(masks)]) == 0
    written = {p: p.read_bytes() for p in masks.iterdir()}
    capsys.readouterr()
    (tmp_path / "a-file").write_text("mine")
    for target, message in ((masks, "exist already"), (seg_data / "images", "holds the images being predicted"),
                            (tmp_path / "a-file", "is a file"), (tmp_path / "a-file" / "below", "is a file")):
        assert main(["predict", str(out), str(images), "--output", str(target)]) == 1
        assert message in capsys.readouterr().err
    assert main(["predict", str(out), str(images), "--output", str(tmp_path / "new"), "--top-k", "3"]) == 1
    assert "leave out --top-k" in capsys.readouterr().err and not (tmp_path / "new").exists()
    assert {p: p.read_bytes() for p in masks.iterdir()} == written  # nothing overwritten
    assert (tmp_path / "a-file").read_text() == "mine"
    assert sorted(p.name for p in images.iterdir()) == [f"{i}.png" for i in range(COUNTS["test"])]


def test_a_killed_segmentation_run_resumes_to_the_same_result(workspace, seg_data, tmp_path, monkeypatch):
    whole = train(seg_config(workspace, seg_data, tmp_path / "whole"), quiet=True)
    cfg = seg_config(workspace, seg_data, tmp_path / "killed")
    with killed_in_epoch(monkeypatch, lambda fit, epoch: epoch == 1):
        train(cfg, quiet=True)
    resumed = train(cfg, resume=True, quiet=True)
    assert resumed["test_miou"] == whole["test_miou"]
    assert without_timings(RunDir(tmp_path / "killed").read_metrics()) == \
        without_timings(RunDir(tmp_path / "whole").read_metrics())
    first, second = (load_file(str(tmp_path / name / "best" / "prompt.safetensors")) for name in ("whole", "killed"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_the_linear_head_trains_by_gradient_steps_on_a_segmentation_task(workspace, seg_data, tmp_path):
    summary = train(seg_config(workspace, seg_data, tmp_path / "run", method="linear"), quiet=True)
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [row["epoch"] for row in rows] == [1, 2] and all("val_miou" in row for row in rows)
    width, classes = 64, len(CLASSES)  # the workspace's tiny ViT; BatchNorm (2 x width) and a 1 x 1 convolution
    assert summary["trainable_parameters"] == 2 * width + width * classes + classes
    assert summary["probe_weight_decay"] is None and summary["test_miou"] is not None


def test_the_pixel_loss_is_each_images_mean_over_its_scored_pixels():
    logits = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[[0, 255], [2, 1]], [[255, 255], [255, 1]]])
    log_p = F.log_softmax(logits, dim=1)
    first = -(log_p[0, 0, 0, 0] + log_p[0, 2, 1, 0] + log_p[0, 1, 1, 1]) / 3
    second = -log_p[1, 1, 1, 1]  # one scored pixel: its loss alone, not a quarter of it
    assert torch.allclose(SEGMENTATION.item_losses(logits, labels), torch.stack([first, second]))
    right = int(logits[0].argmax(0)[0, 0] == 0) + int(logits[0].argmax(0)[1, 0] == 2) + \
        int(logits[0].argmax(0)[1, 1] == 1) + int(logits[1].argmax(0)[1, 1] == 1)
    assert SEGMENTATION.hits(logits, labels) == (right, 4)


@pytest.mark.parametrize("settings, message", [
    (dict(task="segmentation", data="digits"), "is a classification data set"),
    (dict(task="classification", data="pasted-animals"), "is segmentation data"),
    (dict(task="classification"), "is segmentation data"),
    (dict(method="da-vpt"), "segmentation task has not"),
    (dict(head_init="probe"), "a segmentation head starts random"),
    (dict(pooling="image-pool"), "leave out --pooling"),
    (dict(seg_head="fpn"), "seg_head must be one of linear, pup"),
    (dict(recipe="fgvc"), "leave out --recipe and --protocol"),
])
def test_what_a_segmentation_task_cannot_take_is_refused_before_anything_is_written(workspace, seg_data, tmp_path,
                                                                                    settings, message):
    settings = {"data": seg_data, **settings}
    cfg = seg_config(workspace, settings.pop("data"), tmp_path / "run", **settings)
    with pytest.raises(ConfigError, match=message):
        train(cfg, quiet=True)
    assert not (tmp_path / "run").exists()


def test_a_sweep_on_a_segmentation_task_chooses_by_val_miou(workspace, seg_data, tmp_path):
    pytest.importorskip("optuna")
    from vptune.experiments import SweepConfig, run_sweep

    out = tmp_path / "sweep"
    config = SweepConfig(base=seg_config(workspace, seg_data, out, epochs=1), output=str(out),
                         space={"lr": [0.001, 0.05]}, pruner="none", seeds=(0,))
    results = run_sweep(config)
    trials = {float(row.split(",")[2]): float(row.split(",")[3])
              for row in (out / "trials.csv").read_text().splitlines()[1:]}
    assert (out / "trials.csv").read_text().splitlines()[0].split(",")[:4] == ["trial", "state", "lr", "val_miou"]
    assert results["metric"] == "miou" and results["best_val_miou"] == max(trials.values())
    retrained = RunDir(out / "final" / "seed-0").read_summary()
    assert results["retrained"]["test_miou"] == {0: retrained["test_miou"]}
    assert "val mIoU" in (out / "results.md").read_text()


def ablate_config(workspace, task, out, set_name="segmentation", **kwargs):
    from vptune.experiments.ablate import AblateConfig

    common = dict(backbone=TINY_VIT, weights=str(workspace / "tiny.safetensors"), img_size=32, epochs=1, batch_size=4,
                  num_tokens=2)
    return AblateConfig(set=set_name, tasks=(str(task),), seeds=(0,), out=str(out), common=common, **kwargs)


def test_ablate_segmentation_compares_test_miou_and_refuses_a_task_of_the_other_kind(workspace, seg_data, tmp_path):
    from vptune.experiments.ablate import SETS, read_runs, run_ablation

    out = tmp_path / "ablate"
    rows = run_ablation(ablate_config(workspace, seg_data, out))  # every cell: both heads, every method
    assert [r["cell"] for r in rows] == [cell.name for cell in SETS["segmentation"].cells(4)]
    assert all(r["test_top1"] is None and r["failure"] is None for r in rows)
    assert [r["test_miou"] for r in rows] == [r["test_miou"] for r in read_runs(out)] and None not in \
        [r["test_miou"] for r in rows]
    table = (out / "segmentation.md").read_text()
    assert "Test mIoU, mean +- std" in table
    for row in rows:  # one seed: the cell's mean is its run's test mIoU
        line = next(line for line in table.splitlines() if line.startswith(f"| {row['cell']} |"))
        assert line.split(" | ")[1].strip("*").startswith(f"{row['test_miou']:.4f}")  # the best in bold
    assert (out / "segmentation.csv").read_text().splitlines()[0].split(",")[4] == "test_miou"
    assert all("val_miou" in epoch for row in rows for epoch in row["curve"])

    with pytest.raises(ConfigError, match="a classification task, but `ablate segmentation` compares segmentation"):
        run_ablation(ablate_config(workspace, workspace / "images", tmp_path / "other"))
    with pytest.raises(ConfigError, match="a segmentation task, but `ablate methods` compares classification"):
        run_ablation(ablate_config(workspace, seg_data, tmp_path / "other", set_name="methods"))
    assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("settings", [dict(method="vpt-shallow"), dict(method="e2vpt"), dict(method="vfpt"),
                                      dict(method="gated-vpt"), dict(method="lora"), dict(method="bias"),
                                      dict(method="full"), dict(method="vpt-deep", prompt_location="add"),
                                      dict(method="vpt-deep", seg_head="pup"),
                                      dict(method="e2vpt", prune_tokens=0.5, prune_segments=0.25)])
def test_every_method_and_head_trains_a_segmentation_task_and_the_saved_task_predicts_the_same(
        workspace, seg_data, tmp_path, settings):
    from vptune.inference.info import describe
    from vptune.inference.mask_predictor import MaskPredictor
    from vptune.tasks import load_task

    summary = train(seg_config(workspace, seg_data, tmp_path / "run", epochs=1, **settings), quiet=True)
    assert summary["task"] == "segmentation" and 0 <= summary["test_miou"] <= 1
    model = load_task(tmp_path / "run" / "best")
    assert model.head_kind == settings.get("seg_head", "linear")
    width = f", {model.head_channels} channels" if model.head_kind == "pup" else ""
    assert f"predicts     a class a pixel (segmentation, {model.head_kind} head{width})" in describe(tmp_path / "run")
    # the task reloads to the model that was scored: eval's mIoU from the files equals the summary's
    assert main(["eval", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "eval" / "test_metrics.json").read_text())
    assert metrics["miou"] == pytest.approx(summary["test_miou"], abs=1e-9)
    image = torch.from_numpy(np.array(Image.open(seg_data / "images" / "test" / "0.png"))).permute(2, 0, 1)
    assert MaskPredictor(model).masks([image])[0].shape == image.shape[1:]


def test_a_segmentation_head_on_classification_data_is_refused(workspace, tmp_path):
    with pytest.raises(ConfigError, match="seg_head chooses a segmentation head, but .* is a classification task"):
        train(seg_config(workspace, workspace / "images", tmp_path / "run", seg_head="pup"), quiet=True)
    assert not (tmp_path / "run").exists()


def test_skip_bad_leaves_out_the_pairs_that_cannot_be_used_and_says_so(workspace, seg_data, tmp_path):
    import shutil

    from vptune.data import DataError, DataWarning

    data = tmp_path / "data"
    shutil.copytree(seg_data, data)
    (data / "masks" / "train" / "3.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(data / "masks" / "train" / "4.png")  # the wrong size
    with pytest.raises(DataError, match="2 of 20 image/mask pairs cannot be used: .*pass --skip-bad"):
        train(seg_config(workspace, data, tmp_path / "refused"), quiet=True)
    with pytest.warns(DataWarning, match=r"left out 2 of 20 image/mask pairs .*3\.png.*4\.png"):
        summary = train(seg_config(workspace, data, tmp_path / "run", skip_bad=True, epochs=1), quiet=True)
    assert summary["train_images"] == COUNTS["train"] - 2 and summary["data"]["sizes"]["train"] == COUNTS["train"] - 2


def test_eval_refuses_data_of_the_other_kind_in_one_line(workspace, seg_data, tmp_path, capsys):
    classifier, segmenter = tmp_path / "classifier", tmp_path / "segmenter"
    train(seg_config(workspace, workspace / "images", classifier, epochs=1), quiet=True)
    train(seg_config(workspace, seg_data, segmenter, epochs=1), quiet=True)
    capsys.readouterr()
    assert main(["eval", str(classifier), "--data", str(seg_data)]) == 1
    assert "is segmentation data (images with masks), but" in capsys.readouterr().err
    assert main(["eval", str(segmenter), "--data", str(workspace / "images")]) == 1
    assert "not a layout vptune knows" in capsys.readouterr().err
    assert not (classifier / "eval").exists() and not (segmenter / "eval").exists()

