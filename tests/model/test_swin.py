"""VPT on timm's Swin and SwinV2: prompts attended within the local windows, dropped (or tiled) at patch merging.

The reference here is written from the paper's semantics with explicit loops over images and windows, not from
vptune's adapter: every window attends over its own tokens plus the block's p prompts (no relative-position bias,
never masked by the shifted-window mask), a prompt slot's output is the mean of its outputs over the windows of
its own image, deep prompts replace the slots before every prompted block, and the slots are dropped at patch
merging (or, as the original code does, merged as four copies of themselves). The tokens path must equal it; the
fast path must equal the tokens path (logits and prompt gradients, in float64).
"""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer_v2 import SwinTransformerV2Block

from conftest import assert_paths_agree, make_tiny_swin, make_tiny_vit
from vptune import PromptConfig, PromptedModel, load_task, save_task
from vptune.errors import CheckpointError

VERSIONS = ["v1", "v2"]


def images(size=32, batch=2, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def model_of(backbone, path="prefix", seed=0, **prompt):
    torch.manual_seed(seed)
    settings = {"num_tokens": 3, "pooling": "image-pool", **prompt}
    model = PromptedModel(backbone, PromptConfig(**settings), num_classes=4, path=path).double()
    with torch.no_grad():  # prompts at the scale of real tokens, so that a wrong placement shows
        for row in model.prompts.rows():
            row.normal_(0, 1)
    return model


# ------------------------------------------------------------------------------------------- the reference
def bias_table(attn):
    """One bias per relative offset and head: Swin's learned table, or SwinV2's MLP of log-spaced relative
    coordinates squashed to (0, 16)."""
    if hasattr(attn, "cpb_mlp"):
        return 16 * torch.sigmoid(attn.cpb_mlp(attn.relative_coords_table).view(-1, attn.num_heads))
    return attn.relative_position_bias_table


def relative_bias(table, head, a, b, window):
    """The bias between window positions a and b (row, column pairs) for one head."""
    index = (a[0] - b[0] + window[0] - 1) * (2 * window[1] - 1) + (a[1] - b[1] + window[1] - 1)
    return table[index, head]


def shift_region(position, size, window, shift):
    """Which of the 3 bands (per axis) a padded, shifted position falls in: windows straddling bands get -100."""
    if not shift:
        return 0
    return 0 if position < size - window else (1 if position < size - shift else 2)


def reference_attention(block, tokens, prompts):
    """tokens (H, W, C) of one image as they enter the attention, prompts (p, C) -> outputs of both, by windows."""
    attn, window, shift = block.attn, block.window_size, block.shift_size
    height, width, channels = tokens.shape
    p, heads = len(prompts), attn.num_heads
    head_dim = channels // heads
    rolled = torch.roll(tokens, (-shift[0], -shift[1]), (0, 1))
    padded_h, padded_w = math.ceil(height / window[0]) * window[0], math.ceil(width / window[1]) * window[1]
    padded = tokens.new_zeros(padded_h, padded_w, channels)
    padded[:height, :width] = rolled
    bias = attn.qkv.bias if getattr(attn, "q_bias", None) is None else \
        torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
    table = bias_table(attn)
    out = torch.zeros_like(padded)
    prompt_sum = torch.zeros_like(prompts)
    windows = list(itertools.product(range(0, padded_h, window[0]), range(0, padded_w, window[1])))
    for top, left in windows:
        cells = [(top + r, left + c) for r in range(window[0]) for c in range(window[1])]
        sequence = torch.cat([prompts, torch.stack([padded[y, x] for y, x in cells])])  # (p + A, C)
        q, k, v = F.linear(sequence, attn.qkv.weight, bias).chunk(3, dim=-1)
        result = []
        for h in range(heads):
            qh, kh, vh = (t[:, h * head_dim:(h + 1) * head_dim] for t in (q, k, v))
            if hasattr(attn, "logit_scale"):  # SwinV2: cosine similarity times a learned per-head scale
                scale = torch.clamp(attn.logit_scale[h, 0, 0], max=math.log(100.0)).exp()
                logits = F.normalize(qh, dim=-1) @ F.normalize(kh, dim=-1).T * scale
            else:
                logits = qh @ kh.T * head_dim ** -0.5
            for (i, a), (j, b) in itertools.product(enumerate(cells), repeat=2):  # image token pairs only
                rel = (a[0] - top, a[1] - left), (b[0] - top, b[1] - left)
                logits[p + i, p + j] += relative_bias(table, h, *rel, window)
                regions = [(shift_region(y, padded_h, window[0], shift[0]),
                            shift_region(x, padded_w, window[1], shift[1])) for y, x in (a, b)]
                if regions[0] != regions[1]:
                    logits[p + i, p + j] += -100.0
            result.append(logits.softmax(dim=-1) @ vh)
        result = attn.proj(torch.cat(result, dim=-1))
        prompt_sum += result[:p]
        for i, (y, x) in enumerate(cells):
            out[y, x] = result[p + i]
    out = torch.roll(out[:height, :width], shift, (0, 1))
    return out, prompt_sum / len(windows)


def reference_block(block, image, prompts):
    """One Swin block on one image (H, W, C) with prompts (p, C): pre-norm (v1) or post-norm (v2)."""
    if isinstance(block, SwinTransformerV2Block):
        out, prompt_out = reference_attention(block, image, prompts)
        image, prompts = image + block.norm1(out), prompts + block.norm1(prompt_out)
        mlp = lambda t: t + block.norm2(block.mlp(t))  # noqa: E731
    else:
        out, prompt_out = reference_attention(block, block.norm1(image), block.norm1(prompts))
        image, prompts = image + out, prompts + prompt_out
        mlp = lambda t: t + block.mlp(block.norm2(t))  # noqa: E731
    return mlp(image), mlp(prompts)


def merge_prompts(merge, prompts):
    """The original's tiling: each prompt as four copies of itself along channels, through the merge's layers in
    the order the merge applies them (norm then reduction in v1, reduction then norm in v2)."""
    tiled = prompts.repeat(1, 4)
    first, second = (merge.reduction, merge.norm) if type(merge).__module__.endswith("_v2") else \
        (merge.norm, merge.reduction)
    return second(first(tiled))


def reference_features(model, x):
    """What the head reads, image by image: the final norm's mean over the last stage's tokens (and over the
    prompts' outputs where the pooling reads them)."""
    bb, cfg = model.backbone, model.prompt_config
    rows = model.prompt_tokens(1)
    features = []
    for image in bb.patch_embed(x):  # (H, W, C)
        prompts, index = None, 0
        for s, stage in enumerate(bb.layers):
            if s:
                image = stage.downsample(image[None])[0]
                prompts = merge_prompts(stage.downsample, prompts) if prompts is not None and \
                    cfg.merge == "tile" else None
            for block in stage.blocks:
                if model.is_prompted(index):
                    prompts = rows[model.prompt_row(index)][0]
                if prompts is None:
                    image = block(image[None])[0]
                else:
                    image, prompts = reference_block(block, image, prompts)
                index += 1
        tokens = {"image-pool": image.flatten(0, 1), "prompt-pool": prompts,
                  "global-pool": None if prompts is None else torch.cat([image.flatten(0, 1), prompts])}
        features.append(bb.norm(tokens[cfg.pooling]).mean(dim=0))
    return torch.stack(features)


CASES = [  # (prompt settings, image size): deep, shallow, first-k, last-k, the original's tiling, padded windows
    (dict(mode="deep"), 32),
    (dict(mode="shallow"), 32),
    (dict(mode="deep", layers="first 3"), 32),
    (dict(mode="deep", layers="last 2", pooling="prompt-pool"), 32),
    (dict(mode="shallow", merge="tile", pooling="global-pool"), 32),
    (dict(mode="deep"), 40),
    (dict(mode="shallow", merge="tile", pooling="prompt-pool"), 40),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("prompt,size", CASES)
def test_tokens_path_equals_prompts_attended_within_each_window(version, prompt, size):
    model = model_of(make_tiny_swin(version, img_size=size).double(), path="tokens", **prompt)
    x = images(size)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference_features(model, x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("prompt,size", CASES)
def test_fast_path_equals_tokens_path_in_logits_and_prompt_gradients(version, prompt, size):
    backbone = make_tiny_swin(version, img_size=size).double()
    build = lambda path: model_of(backbone, path=path, **prompt)  # noqa: E731
    _, *gradients = assert_paths_agree(build, images(size, batch=3), torch.tensor([0, 3, 1]))
    assert all(g.abs().max() > 0 for g in gradients)


def test_deep_prompts_have_each_stage_width_and_the_fast_path_skips_every_prompt_output():
    model = model_of(make_tiny_swin().double())
    assert [tuple(row.shape) for row in model.prompts.rows()] == [(3, 16)] * 2 + [(3, 32)] * 2 + [(3, 64)] * 2
    assert model.prefix_blocks == frozenset(range(6))
    shallow = model_of(make_tiny_swin().double(), mode="shallow")
    assert shallow.prefix_blocks == {1}  # block 1's prompt outputs are dropped at the merge that follows


def test_an_image_never_sees_another_images_prompt_outputs():
    """The original averaged prompt outputs over windows laid out across the batch, mixing images; here an image's
    logits do not depend on the other images of its batch."""
    model = model_of(make_tiny_swin().double(), path="tokens", mode="shallow")
    x = images(batch=3)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:1], model(x[:1]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("version", VERSIONS)
def test_no_prompt_and_zero_channel_prompts_equal_the_frozen_backbone(version):
    backbone = make_tiny_swin(version).double()
    x = images()
    with torch.no_grad():
        expected = backbone.forward_features(x).mean(dim=(1, 2))
        plain = PromptedModel(backbone, PromptConfig(num_tokens=0, pooling="image-pool"), 4).double()
        channels = PromptedModel(backbone, PromptConfig(num_tokens=2, mode="shallow", location="concat-channel",
                                                        pooling="image-pool"), 4).double()
        torch.testing.assert_close(plain.forward_features(x), expected, atol=1e-12, rtol=0)
        torch.testing.assert_close(channels.forward_features(x), expected, atol=1e-12, rtol=0)


def test_one_step_changes_only_prompts_and_head():
    backbone = make_tiny_swin()
    model = model_of(backbone.double())
    before = {name: t.clone() for name, t in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    F.cross_entropy(model(images()), torch.tensor([0, 2])).backward()
    optimizer.step()
    changed = {name for name, t in model.state_dict().items() if not torch.equal(t, before[name])}
    assert changed == {f"prompts.tokens.{i}" for i in range(6)} | {"head.weight", "head.bias"}


@pytest.mark.parametrize("prompt,message", [
    (dict(location="add"), "location='add' is not supported on swin"),
    (dict(location="prepend-pixel"), "location='prepend-pixel' is not supported on swin"),
    (dict(pooling="cls"), "no class token"),
    (dict(mode="deep", shared=True), "shares one prompt between blocks of widths [16, 32, 64]"),
    (dict(mode="deep", project=8), "leave project unset"),
])
def test_what_swin_cannot_do_is_one_line(prompt, message):
    with pytest.raises(ValueError, match=None) as err:
        PromptedModel(make_tiny_swin(), PromptConfig(**{"num_tokens": 2, "pooling": "image-pool", **prompt}), 4)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_prompt_pool_needs_prompts_that_reach_the_last_block():
    model = model_of(make_tiny_swin().double(), mode="shallow", pooling="prompt-pool")
    with pytest.raises(ValueError, match="dropped at patch merging"):
        model(images())


def test_images_of_another_size_are_refused_in_one_line():
    model = model_of(make_tiny_swin().double())
    with pytest.raises(ValueError, match=r"built for 32 x 32 images, got 40 x 40"):
        model(images(40))


def test_save_load_predict_round_trip_and_a_swin_task_refuses_a_vit(tmp_path):
    backbone = make_tiny_swin()
    model = model_of(backbone).float()
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=backbone)
    x = images().float()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    with pytest.raises(CheckpointError) as err:
        load_task(tmp_path / "task", backbone=make_tiny_vit())
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", ["vfpt", "gated-vpt"])
def test_the_follow_up_prompt_methods_run_both_paths_alike_on_swin(method):
    from vptune import build_model

    backbone = make_tiny_swin().double()

    def build(path):
        torch.manual_seed(0)
        model = build_model(method, backbone, PromptConfig(num_tokens=3), 4).double()
        model.path = path
        with torch.no_grad():
            for tensor in model.prompts.parameters():
                tensor.normal_()
        return model

    assert_paths_agree(build, images(batch=2), torch.tensor([0, 1]))
