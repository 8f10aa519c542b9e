"""The prompted segmenter: the final image tokens as a feature map (equal to timm's own features without prompts,
and the same on both paths with them), a linear or SETR-PUP head, logits at the image's size, and only prompts
and head trained."""
import pytest
import torch
from conftest import NARROW, assert_paths_agree, make_tiny_eva, make_tiny_sam, make_tiny_swin, make_tiny_vit

from vptune.model import PromptConfig, PromptedSegmenter


def segmenter(backbone, num_tokens=3, path="prefix", head="linear", **prompt):
    torch.manual_seed(0)
    model = PromptedSegmenter(backbone, PromptConfig(num_tokens=num_tokens, **prompt), 5, head=head).double()
    model.path = path
    if model.prompts is not None:
        with torch.no_grad():
            for row in model.prompts.rows():  # one tensor a block (Swin's stages differ in width)
                row.normal_(0, 1)
    return model.eval()


@pytest.mark.parametrize("backbone", [lambda: make_tiny_vit(**NARROW, reg_tokens=2), lambda: make_tiny_eva("dinov3")],
                         ids=["vit-registers", "eva-dinov3"])
def test_without_prompts_the_feature_map_is_timms_final_tokens(backbone):
    backbone = backbone().double()
    size = backbone.patch_embed.img_size[0]
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        dense = segmenter(backbone, num_tokens=0).dense_features(x)
        tokens = backbone.forward_features(x)[:, backbone.num_prefix_tokens:]
    grid = size // backbone.patch_embed.patch_size[0]
    assert dense.shape == (2, tokens.shape[-1], grid, grid)
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), tokens, atol=1e-12, rtol=0)


@pytest.mark.parametrize("prompt", [dict(mode="deep"), dict(mode="shallow"), dict(mode="deep", layers="last 2")])
def test_both_paths_give_the_same_logits_and_prompt_gradients(prompt):
    backbone = make_tiny_vit(**NARROW).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    labels = torch.randint(0, 5, (2, 32, 32))
    logits, *_ = assert_paths_agree(lambda path: segmenter(backbone, path=path, **prompt), x, labels)
    assert logits.shape == (2, 5, 32, 32)


@pytest.mark.parametrize("head", ["linear", "pup"])
def test_one_step_trains_prompts_and_head_only_and_the_logits_match_the_image(head):
    model = segmenter(make_tiny_vit(**NARROW), head=head).float().train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    x, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2, 32, 32))
    labels[0, :4] = 255
    logits = model(x)
    assert logits.shape == (2, 5, 32, 32)
    torch.nn.functional.cross_entropy(logits, labels, ignore_index=255).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("prompts.", "head.")) for n in changed)
    assert "prompts.tokens" in changed and any(n.startswith("head.") for n in changed)


WINDOWED = {"swin": lambda: make_tiny_swin(), "swinv2": lambda: make_tiny_swin("v2"), "sam": lambda: make_tiny_sam()}


@pytest.mark.parametrize("name", list(WINDOWED))
def test_a_windowed_backbones_feature_map_is_timms_own_and_both_paths_agree_with_prompts(name):
    """Swin: the last stage's normed tokens (stride 32); SAM: the neck's output (its image embedding)."""
    backbone = WINDOWED[name]().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        dense = segmenter(backbone, num_tokens=0).dense_features(x)
        own = backbone.forward_features(x)
    torch.testing.assert_close(dense, own if name == "sam" else own.permute(0, 3, 1, 2), atol=1e-12, rtol=0)
    labels = torch.randint(0, 5, (2, 32, 32))
    logits, *_ = assert_paths_agree(lambda path: segmenter(backbone, path=path), x, labels)
    assert logits.shape == (2, 5, 32, 32)


@pytest.mark.parametrize("name", list(WINDOWED))
def test_a_windowed_segmenter_saves_and_loads_as_a_task(tmp_path, name):
    from vptune import load_task, save_task

    backbone = WINDOWED[name]()
    model = segmenter(backbone, head="pup").float()
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=backbone)
    assert isinstance(loaded, PromptedSegmenter) and loaded.prompt_config.pooling == "image-pool"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)


def test_an_unknown_head_is_refused():
    with pytest.raises(ValueError, match="must be one of linear, pup"):
        PromptedSegmenter(make_tiny_vit(**NARROW), PromptConfig(num_tokens=2), 3, head="fpn")


@pytest.mark.parametrize("head", ["linear", "pup"])
def test_a_segmenter_saves_and_loads_as_a_task(tmp_path, head):
    import json

    from vptune import CheckpointError, load_task, save_task

    backbone = make_tiny_vit(**NARROW)
    model = segmenter(backbone, head=head).float()
    with torch.no_grad():  # BatchNorm statistics that are not the defaults must come back too
        model.head.train()(torch.randn(2, 24, 2, 2) * 3 + 1)
    model.eval()
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=backbone)
    assert isinstance(loaded, PromptedSegmenter) and loaded.head_kind == head
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-6, rtol=0)
    meta = json.loads((tmp_path / "task" / "task.json").read_text())
    meta["head"]["segmentation"] = "fpn"
    (tmp_path / "task" / "task.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="head.segmentation must be one of linear, pup"):
        load_task(tmp_path / "task", backbone=backbone)


def test_the_pup_heads_width_follows_the_backbone_and_old_task_files_load_at_setrs_256(tmp_path):
    """SETR-PUP's 256 channels were ViT-L's (1024 / 4): a narrower backbone gets a narrower head. Task files saved
    before the width was recorded hold a 256-channel head and must load as one."""
    import json

    from vptune import CheckpointError, load_task, save_task
    from vptune.model import LEGACY_PUP_CHANNELS, pup_channels

    assert (pup_channels(1024), pup_channels(384), pup_channels(24)) == (256, 96, 8)
    assert segmenter(make_tiny_vit(**NARROW), head="pup").head_channels == pup_channels(NARROW["embed_dim"])
    backbone = make_tiny_vit(**NARROW)
    legacy = PromptedSegmenter(backbone, PromptConfig(num_tokens=2), 5, head="pup",
                               head_channels=LEGACY_PUP_CHANNELS).eval()
    save_task(legacy, tmp_path / "task")
    task_json = tmp_path / "task" / "task.json"
    meta = json.loads(task_json.read_text())
    assert meta["head"]["channels"] == LEGACY_PUP_CHANNELS
    del meta["head"]["channels"]
    task_json.write_text(json.dumps(meta))
    loaded = load_task(tmp_path / "task", backbone=backbone)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), legacy(x), atol=1e-6, rtol=0)
    for bad in (0, "wide", 2.5):
        task_json.write_text(json.dumps({**meta, "head": {**meta["head"], "channels": bad}}))
        with pytest.raises(CheckpointError, match="head.channels must be a positive integer"):
            load_task(tmp_path / "task", backbone=backbone)


@pytest.mark.parametrize("backbone, stride", [(lambda: make_tiny_vit(**NARROW, img_size=16), 16),
                                              (lambda: make_tiny_swin(img_size=16), 16)], ids=["vit", "swin"])
def test_a_feature_map_under_two_by_two_is_refused_naming_the_size_that_works(backbone, stride):
    """One feature a channel breaks the head's BatchNorm in training, and gives one class everywhere."""
    with pytest.raises(ValueError, match=rf"1 x 1 feature map \(a feature per {stride} px\); segmentation needs at "
                                         rf"least 2 x 2: use an image size \(--img-size\) of {2 * stride} or more"):
        PromptedSegmenter(backbone(), PromptConfig(num_tokens=2), 5)
