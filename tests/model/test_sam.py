"""VPT on SAM's image encoder (timm `VisionTransformerSAM`): windowed blocks as Swin's (prompts shared by every
window), global blocks as a ViT's, no relative-position term for a prompt, the head on the mean of the neck's output.

The reference is written from those semantics with explicit loops over images and windows; the tokens path must
equal it, and the fast path the tokens path (logits and prompt gradients, float64).
"""
import itertools

import pytest
import torch

from conftest import assert_paths_agree, make_tiny_sam, make_tiny_vit
from vptune import PromptConfig, PromptedModel, load_task, save_task
from vptune.errors import CheckpointError


def images(batch=2, seed=1):
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def model_of(backbone, path="prefix", **prompt):
    torch.manual_seed(0)
    model = PromptedModel(backbone, PromptConfig(**{"num_tokens": 3, "pooling": "image-pool", **prompt}), 4,
                          path=path).double()
    with torch.no_grad():
        for row in model.prompts.rows():
            row.normal_(0, 1)
    return model


def reference_attention(attn, grid, prompts, window):
    """grid (H, W, C) normed, prompts (p, C) normed -> outputs of both: each window (zero-padded) attends over its
    tokens and the prompts; q . R_h[dy] + q . R_w[dx] between image tokens only."""
    height, width, channels = grid.shape
    wh, ww = window
    heads, p = attn.num_heads, len(prompts)
    hd = channels // heads
    padded_h, padded_w = -(-height // wh) * wh, -(-width // ww) * ww
    padded = grid.new_zeros(padded_h, padded_w, channels)
    padded[:height, :width] = grid
    out, prompt_sum = torch.zeros_like(padded), torch.zeros_like(prompts)
    corners = list(itertools.product(range(0, padded_h, wh), range(0, padded_w, ww)))
    for top, left in corners:
        cells = [(top + r, left + c) for r in range(wh) for c in range(ww)]
        sequence = torch.cat([prompts, torch.stack([padded[y, x] for y, x in cells])])
        q, k, v = attn.qkv(sequence).chunk(3, dim=-1)
        result = []
        for h in range(heads):
            qh, kh, vh = (t[:, h * hd:(h + 1) * hd] for t in (q, k, v))
            logits = qh @ kh.T * hd ** -0.5
            for (i, a), (j, b) in itertools.product(enumerate(cells), repeat=2):
                dy, dx = (a[0] - top) - (b[0] - top) + wh - 1, (a[1] - left) - (b[1] - left) + ww - 1
                logits[p + i, p + j] += qh[p + i] @ attn.rel_pos_h[dy] + qh[p + i] @ attn.rel_pos_w[dx]
            result.append(logits.softmax(dim=-1) @ vh)
        result = attn.proj(torch.cat(result, dim=-1))
        prompt_sum += result[:p]
        for i, (y, x) in enumerate(cells):
            out[y, x] = result[p + i]
    return out[:height, :width], prompt_sum / len(corners)


def reference_features(model, x):
    bb = model.backbone
    rows = model.prompt_tokens(1)
    features = []
    for image in bb.patch_embed(x):
        grid, prompts = image + bb.pos_embed[0], None
        for i, block in enumerate(bb.blocks):
            if model.is_prompted(i):
                prompts = rows[model.prompt_row(i)][0]
            if prompts is None:
                grid = block(grid[None])[0]
                continue
            window = (block.window_size,) * 2 if block.window_size else tuple(grid.shape[:2])
            out, prompt_out = reference_attention(block.attn, block.norm1(grid), block.norm1(prompts), window)
            grid, prompts = grid + out, prompts + prompt_out
            grid, prompts = (t + block.mlp(block.norm2(t)) for t in (grid, prompts))
        features.append(bb.neck(grid.permute(2, 0, 1)[None]).mean(dim=(2, 3))[0])
    return torch.stack(features)


CASES = [dict(mode="deep"), dict(mode="shallow"), dict(mode="deep", layers="last 2"), dict(mode="shallow", layers=[1])]


@pytest.mark.parametrize("prompt", CASES)
def test_tokens_path_equals_prompts_shared_by_every_window_without_position(prompt):
    model = model_of(make_tiny_sam().double(), path="tokens", **prompt)
    x = images()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference_features(model, x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("prompt", CASES)
def test_fast_path_equals_tokens_path_in_logits_and_prompt_gradients(prompt):
    backbone = make_tiny_sam().double()
    build = lambda path: model_of(backbone, path=path, **prompt)  # noqa: E731
    _, *gradients = assert_paths_agree(build, images(batch=3), torch.tensor([0, 3, 1]))
    assert all(g.abs().max() > 0 for g in gradients)


def test_no_prompt_equals_the_frozen_encoder_and_its_pooling():
    backbone = make_tiny_sam().double()
    x = images()
    with torch.no_grad():
        plain = PromptedModel(backbone, PromptConfig(num_tokens=0, pooling="image-pool"), 4).double()
        torch.testing.assert_close(plain.forward_features(x), backbone.forward_features(x).mean(dim=(2, 3)),
                                   atol=1e-12, rtol=0)


@pytest.mark.parametrize("prompt,message", [
    (dict(location="add"), "location='add' is not supported on sam"),
    (dict(pooling="prompt-pool"), "pooling='prompt-pool' is not supported on sam backbones"),
    (dict(pooling="cls"), "no class token"),
])
def test_what_sam_cannot_do_is_one_line(prompt, message):
    with pytest.raises(ValueError) as err:
        PromptedModel(make_tiny_sam(), PromptConfig(**{"num_tokens": 2, "pooling": "image-pool", **prompt}), 4)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_save_load_predict_round_trip_and_a_sam_task_refuses_a_vit(tmp_path):
    backbone = make_tiny_sam()
    model = model_of(backbone).float()
    save_task(model, tmp_path / "task")
    x = images().float()
    with torch.no_grad():
        torch.testing.assert_close(load_task(tmp_path / "task", backbone=backbone)(x), model(x), atol=0, rtol=0)
    with pytest.raises(CheckpointError) as err:
        load_task(tmp_path / "task", backbone=make_tiny_vit())
    assert "\n" not in str(err.value)
