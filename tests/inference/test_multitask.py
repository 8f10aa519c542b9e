"""MultiTaskModel: many tasks on one backbone; a batch mixing them equals each task's model run alone."""
import pytest
import torch
from conftest import make_tiny_eva, make_tiny_swin, make_tiny_vit

from vptune import CheckpointError, ConfigError, MultiTaskModel, PromptConfig, build_model, load_task, save_task

# One of each kind of task the mixed pass handles: gathered deep prompts of two lengths (padding), a last-k depth
# that joins late, and the own-path kinds (shallow, add, deep on the first blocks only), and a linear probe.
KINDS = {
    "deep": ("vpt-deep", PromptConfig(num_tokens=4)),
    "deep-short": ("vpt-deep", PromptConfig(num_tokens=2)),
    "last2": ("vpt-deep", PromptConfig(num_tokens=3, layers="last 2")),
    "shallow": ("vpt-shallow", PromptConfig(num_tokens=5)),
    "add": ("vpt-deep", PromptConfig(location="add")),
    "first2": ("vpt-deep", PromptConfig(num_tokens=3, layers="first 2")),
    "linear": ("linear", PromptConfig(num_tokens=0)),
    "pixel": ("vpt-deep", PromptConfig(num_tokens=2, location="prepend-pixel")),  # shared pass, embedded pixels
    "image-pool": ("vpt-deep", PromptConfig(num_tokens=3, pooling="image-pool")),  # own path: not [CLS]
    "shared": ("vpt-deep", PromptConfig(num_tokens=3, shared=True)),
}


def _save_tasks(backbone, folder, kinds=KINDS):
    dirs = {}
    for k, (name, (method, prompt)) in enumerate(kinds.items()):
        torch.manual_seed(k)
        model = build_model(method, backbone, prompt, num_classes=3 + k, head_norm=k % 2 == 0)
        if k % 2 == 0:
            model.head_norm.set_(torch.randn(backbone.embed_dim), torch.rand(backbone.embed_dim) + 0.5)
        dirs[name] = save_task(model, folder / name)
    return dirs


@pytest.fixture
def backbone():
    return make_tiny_vit(depth=4)


def _alone(directory, backbone, images):
    with torch.no_grad():
        return load_task(directory, backbone=backbone).eval()(images)


def test_a_mixed_batch_equals_each_task_run_alone(backbone, tmp_path):
    dirs = _save_tasks(backbone, tmp_path)
    multi = MultiTaskModel(backbone, dirs)
    names = list(dirs) * 2 + ["deep", "add"]  # every kind twice, in an interleaved order
    images = torch.randn(len(names), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = multi(images, names)
    for j, name in enumerate(names):
        expected = _alone(dirs[name], backbone, images[j:j + 1])[0]
        assert outputs[j].shape == expected.shape
        torch.testing.assert_close(outputs[j], expected, atol=1e-5, rtol=0, msg=f"image {j} ({name})")


@pytest.mark.parametrize("shape", ["dinov3", "gqa"])
def test_a_mixed_batch_on_an_eva_backbone_equals_each_task_run_alone(tmp_path, shape):
    """Rotary positions, registers (DINOv3), grouped-query K/V (the stack's rows are the K/V heads' width)."""
    backbone = make_tiny_eva(shape)
    kinds = {name: KINDS[name] for name in ("deep", "deep-short", "last2", "shallow", "linear", "pixel")}
    dirs = _save_tasks(backbone, tmp_path, kinds)
    multi = MultiTaskModel(backbone, dirs)
    names = list(dirs) * 2
    images = torch.randn(len(names), 3, 48, 48, generator=torch.Generator().manual_seed(1))
    outputs = multi(images, names)
    for j, name in enumerate(names):
        torch.testing.assert_close(outputs[j], _alone(dirs[name], backbone, images[j:j + 1])[0], atol=1e-5, rtol=0,
                                   msg=f"image {j} ({name})")


def test_a_mixed_batch_on_a_swin_backbone_equals_each_task_run_alone(tmp_path):
    """No [CLS]: the shared pass pools the mean of the final tokens (pooling "cls" asked of build_model becomes
    that); deep prompts of every stage's width are gathered per block; shallow prompts dropped or tiled at patch
    merging finish on their own path."""
    backbone = make_tiny_swin()
    kinds = {name: KINDS[name] for name in ("deep", "deep-short", "last2", "first2", "shallow", "linear")}
    kinds["tile"] = ("vpt-shallow", PromptConfig(num_tokens=2, merge="tile", pooling="global-pool"))
    dirs = {}
    for k, (name, (method, prompt)) in enumerate(kinds.items()):
        torch.manual_seed(k)
        dirs[name] = save_task(build_model(method, backbone, prompt, num_classes=3 + k), tmp_path / name)
    multi = MultiTaskModel(backbone, dirs)
    assert {name for name, task in multi.tasks.items() if multi._in_shared_pass(task)} == \
        {"deep", "deep-short", "last2", "linear"}
    names = list(dirs) * 2
    images = torch.randn(len(names), 3, 32, 32, generator=torch.Generator().manual_seed(1))
    outputs = multi(images, names)
    for j, name in enumerate(names):
        torch.testing.assert_close(outputs[j], _alone(dirs[name], backbone, images[j:j + 1])[0], atol=1e-5, rtol=0,
                                   msg=f"image {j} ({name})")


def test_the_same_image_gets_the_same_answer_whatever_else_is_in_the_batch(backbone, tmp_path):
    multi = MultiTaskModel(backbone, _save_tasks(backbone, tmp_path))
    image = torch.randn(1, 3, 32, 32)
    alone = multi(image, ["last2"])[0]
    crowd = multi(torch.cat([torch.randn(5, 3, 32, 32), image]), ["deep", "shallow", "add", "linear", "deep-short",
                                                                  "last2"])[-1]
    torch.testing.assert_close(crowd, alone, atol=1e-5, rtol=0)


def test_tasks_are_added_and_removed_at_run_time(backbone, tmp_path):
    dirs = _save_tasks(backbone, tmp_path)
    multi = MultiTaskModel(backbone, {"deep": dirs["deep"]})
    images = torch.randn(2, 3, 32, 32)
    before = multi(images, ["deep", "deep"])
    multi.add_task("other", dirs["deep-short"])  # a shorter prompt joins the stack: "deep" must not change
    after = multi(images, ["deep", "other"])
    torch.testing.assert_close(after[0], before[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(after[1], _alone(dirs["deep-short"], backbone, images[1:])[0], atol=1e-5, rtol=0)
    multi.remove_task("deep")
    with pytest.raises(KeyError, match="unknown task.*'deep'.*loaded: other"):
        multi(images, ["deep", "other"])
    torch.testing.assert_close(multi(images[1:], ["other"])[0], after[1], atol=1e-6, rtol=0)
    assert sum(p.numel() for p in multi.parameters()) < 1.1 * sum(p.numel() for p in backbone.parameters())


def test_the_first_task_brings_the_backbone_when_none_is_given(workspace, tmp_path):
    from vptune import create_backbone

    backbone = create_backbone("test_vit", img_size=32, weights=str(workspace / "tiny.safetensors"))
    dirs = _save_tasks(backbone, tmp_path, {k: KINDS[k] for k in ("deep", "shallow")})
    multi = MultiTaskModel(tasks=dirs)
    images = torch.randn(2, 3, 32, 32)
    out = multi(images, ["shallow", "deep"])
    torch.testing.assert_close(out[1], _alone(dirs["deep"], backbone, images[1:])[0], atol=1e-5, rtol=0)
    top = multi.predict(images, ["shallow", "deep"], top_k=2)
    assert [len(t) for t in top] == [2, 2] and top[0][0]["probability"] >= top[0][1]["probability"]


def test_tasks_that_cannot_share_the_backbone_are_refused_by_name(backbone, tmp_path):
    dirs = _save_tasks(backbone, tmp_path, {"deep": KINDS["deep"]})
    multi = MultiTaskModel(backbone, dirs)

    other = make_tiny_vit(depth=4, seed=7)  # same architecture, other weights
    save_task(build_model("vpt-deep", other, PromptConfig(num_tokens=2), 2), tmp_path / "foreign")
    with pytest.raises(CheckpointError, match="task 'foreign'.*backbone weights fingerprint"):
        multi.add_task("foreign", tmp_path / "foreign")

    bigger = make_tiny_vit(depth=4, img_size=48)
    save_task(build_model("vpt-deep", bigger, PromptConfig(num_tokens=2), 2), tmp_path / "big")
    with pytest.raises(CheckpointError, match="task 'big'"):
        multi.add_task("big", tmp_path / "big")

    lora_backbone = make_tiny_vit(depth=4)
    save_task(build_model("lora", lora_backbone, PromptConfig(num_tokens=0), 2), tmp_path / "lora")
    with pytest.raises(CheckpointError, match="task 'lora'.*'lora', which changes the backbone's weights"):
        multi.add_task("lora", tmp_path / "lora")

    channel = PromptConfig(num_tokens=2, mode="shallow", location="concat-channel")
    save_task(build_model("vpt-shallow", make_tiny_vit(depth=4), channel, 2), tmp_path / "channel")
    with pytest.raises(CheckpointError, match="task 'channel'.*'concat-channel'.*serve it on its own"):
        multi.add_task("channel", tmp_path / "channel")

    with pytest.raises(ConfigError, match="already loaded"):
        multi.add_task("deep", dirs["deep"])
    with pytest.raises(ConfigError, match="task name 'a/b'"):
        multi.add_task("a/b", dirs["deep"])
    assert list(multi.tasks) == ["deep"]  # nothing half-added
