import json

import pytest
import torch

import vptune
from vptune import CheckpointError, PromptConfig, PromptedViT, load_task
from vptune.checkpoint import CONFIG_FILE, WEIGHTS_FILE


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
    model.save_task(tmp_path / "task", method="vpt-deep")
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
    assert meta["vptune_version"] == vptune.__version__ and meta["method"] == "vpt-deep"
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

    monkeypatch.setattr("vptune.checkpoint.save_file", broken_save)
    with torch.no_grad():
        model.prompts.tokens.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        model.save_task(task)
    assert {name: (task / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in task.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]
    load_task(task, backbone=backbone)  # still loads
