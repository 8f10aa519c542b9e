"""Shared fixtures: ONE tiny random timm ViT builder (timm's own `test_vit`, 32 px), and a workspace with an image
folder and that ViT's weights file, so the suite runs in seconds on a CPU and offline."""
import os
from contextlib import contextmanager

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n N`: N processes share the cores, so one thread each (and
    os.environ["OMP_NUM_THREADS"] = "1"    # each child they start): threads past the cores slow everything
    torch.set_num_threads(1)               # several-fold, not a little

TINY_VIT = "test_vit"  # timm's tiny ViT: patch 16, width 64, 6 blocks, 2 heads; at 32 px, 4 patches
COLOURS = {"red": (210, 40, 40), "green": (40, 210, 40), "blue": (40, 40, 210)}


def make_tiny_vit(depth: int | None = None, reg_tokens: int = 0, img_size: int = 32, seed: int = 0,
                  sharp: bool = True, **kwargs):
    """A random `test_vit` (arguments override its architecture). `sharp` redraws the weights at a trained
    network's scale (see `sharpen`); without it the model is exactly what `--backbone test_vit` builds."""
    torch.manual_seed(seed)
    if depth is not None:
        kwargs["depth"] = depth
    if reg_tokens:
        kwargs["reg_tokens"] = reg_tokens
    model = timm.create_model(TINY_VIT, pretrained=False, num_classes=0, img_size=img_size, **kwargs).eval()
    return sharpen(model) if sharp else model


@torch.no_grad()
def sharpen(model):
    """Re-draw weights at a trained network's scale: timm's init (std 0.02) gives near-uniform attention,
    under which a wrong key or value barely moves the output and equivalence tests could not fail."""
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "embed" not in name and "token" not in name:
            p.normal_(0, 1.5 / p.shape[-1] ** 0.5)
        elif "embed" in name or "token" in name:
            p.normal_(0, 1.0)
        elif "norm" in name and name.endswith("weight"):
            p.normal_(1.0, 0.2)
        else:
            p.normal_(0, 0.1)
    return model


# timm `Eva` shapes, tiny: each brings a part of the family the others lack.
EVA_SHAPES = {
    # DINOv3: "dinov3" RoPE (half rotation), 4 register tokens, LayerScale, no qkv bias, any image size
    "dinov3": ("vit_small_patch16_dinov3", {}),
    # EVA-02: "cat" RoPE, SwiGLU with a norm inside, q/v biases without a key bias
    "eva02": ("eva02_tiny_patch14_224", {"patch_size": 16}),
    # Perception Encoder: timm's AttentionRope, a norm before the blocks, attention pooling (unused by VPT)
    "pe": ("vit_pe_core_tiny_patch16_384", {"attn_pool_num_heads": 3}),
    # "mixed" RoPE: learned frequencies, one table per block
    "mixed": ("vit_small_patch16_rope_mixed_224", {}),
    # grouped-query attention: separate q/k/v projections, one K/V head for three query heads
    "gqa": ("vit_pe_core_tiny_patch16_384", {"qkv_fused": False, "num_kv_heads": 1, "attn_pool_num_heads": 3}),
}


def make_tiny_eva(shape: str = "dinov3", img_size: int = 48, seed: int = 0, **kwargs):
    """A random timm `Eva` of one of `EVA_SHAPES`, width 24, 3 heads, 3 blocks, patch 16 (a 3 x 3 grid at 48 px),
    weights at a trained network's scale (`sharpen`)."""
    name, shape_kwargs = EVA_SHAPES[shape]
    torch.manual_seed(seed)
    settings = dict(img_size=img_size, embed_dim=24, depth=3, num_heads=3, **shape_kwargs, **kwargs)
    return sharpen(timm.create_model(name, pretrained=False, num_classes=0, **settings).eval())


def make_tiny_swin(version: str = "v1", img_size: int = 32, window: int = 4, seed: int = 0, **kwargs):
    """A random timm Swin ("v1") or SwinV2 ("v2"): patch 4, stages of 2 blocks, widths 16 / 32 / 64, heads 2 / 2 /
    4, window 4. At 32 px: an 8 x 8 grid of 4 windows in stage 1 (shifted in its second block), one 4 x 4 window in
    stage 2, the window clipped to the 2 x 2 grid in stage 3; at 40 px a 10 x 10 grid padded to whole windows."""
    from timm.models.swin_transformer import SwinTransformer
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    torch.manual_seed(seed)
    cls = {"v1": SwinTransformer, "v2": SwinTransformerV2}[version]
    settings = dict(img_size=img_size, patch_size=4, embed_dim=16, depths=(2, 2, 2), num_heads=(2, 2, 4),
                    window_size=window, num_classes=0, **kwargs)
    return sharpen(cls(**settings).eval())  # SwinV2 starts its post-norms at 0 (identity blocks): sharpen them


def make_tiny_sam(seed=0, **kwargs):
    """A random timm SAM encoder: patch 4 at 32 px: an 8 x 8 grid; windows of 3 (padded to 9 x 9) in blocks 0 and
    2, global blocks 1 and 3; decomposed relative positions; a neck to 16 channels."""
    from timm.models.vision_transformer_sam import VisionTransformerSAM

    torch.manual_seed(seed)
    settings = dict(img_size=32, patch_size=4, embed_dim=24, depth=4, num_heads=3, window_size=3,
                    global_attn_indexes=(1, 3), use_rel_pos=True, neck_chans=16, num_classes=0, **kwargs)
    return sharpen(VisionTransformerSAM(**settings).eval())


def assert_paths_agree(build, x, labels):
    """The fast path equals the tokens path in float64: logits and the gradient of every prompt tensor (tokens,
    gates, key-value prompts). build(path) -> model. Returns the tokens path's [logits, *gradients]."""
    import torch.nn.functional as F

    results = {}
    for path in ("tokens", "prefix"):
        model = build(path)
        logits = model(x)
        F.cross_entropy(logits, labels).backward()
        results[path] = [logits.detach(), *(t.grad.clone() for t in model.prompts.parameters())]
    for fast, reference in zip(results["prefix"], results["tokens"], strict=True):
        torch.testing.assert_close(fast, reference, atol=1e-10, rtol=0)
    return results["tokens"]


# Narrower still for the model's equivalence tests, whose shapes and expected sizes are written for it.
NARROW = dict(depth=4, embed_dim=24, num_heads=3, mlp_ratio=2.0, dynamic_img_size=False)


@pytest.fixture
def tiny_vit():
    """make_tiny_vit with the NARROW shape unless told otherwise: width 24, 3 heads, 4 blocks."""
    return lambda **kwargs: make_tiny_vit(**{**NARROW, **kwargs})


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(123))


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    """What an offline user has: a 3-class image folder (noisy solid colours, 10 images each) in images/, and
    `tiny.safetensors`, the weights of the tiny ViT that `--backbone test_vit --img-size 32` builds."""
    root = tmp_path_factory.mktemp("ws")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
    save_file(make_tiny_vit(sharp=False).state_dict(), str(root / "tiny.safetensors"))
    return root


def train_config(ws, output, **overrides):
    """A TrainConfig for the workspace: tiny ViT, 2 epochs, batch 8, 4 prompt tokens, one stage (refit off: the
    tests of the loop look at one run; tests/training/test_refit.py trains the default's two stages)."""
    from vptune import TrainConfig

    settings = dict(data=str(ws / "images"), output=str(output), backbone=TINY_VIT,
                    weights=str(ws / "tiny.safetensors"), img_size=32, epochs=2, batch_size=8, num_tokens=4,
                    refit=False)
    settings.update(overrides)
    return TrainConfig(**settings)


def train_args(ws, output, *extra):
    """The same run as `train_config` (one stage: --no-refit), as `vptune train` arguments (without --num-tokens for
    a --method that trains no prompt: it would add a warning line)."""
    method = extra[extra.index("--method") + 1] if "--method" in extra else "vpt-deep"
    prompts = ["--num-tokens", "4"] if method.startswith("vpt") else []
    return ["train", "--data", str(ws / "images"), "--output", str(output), "--backbone", TINY_VIT,
            "--weights", str(ws / "tiny.safetensors"), "--img-size", "32", "--epochs", "2", "--batch-size", "8",
            *prompts, "--no-refit", "--quiet", *extra]


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "img_per_s")} for row in rows]


@pytest.fixture
def vptune_log():
    """The records the "vptune" logger emits during a test, INFO and up, caught by a handler of its own: whether
    "vptune" propagates to pytest's caplog depends on which CLI test ran before (the CLI sets its own handler)."""
    import logging

    records, handler, logger = [], logging.Handler(), logging.getLogger("vptune")
    handler.emit = records.append
    level = logger.level
    logger.setLevel(logging.INFO)  # setLevel, not the attribute: it also clears the logger's is-enabled cache
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


@contextmanager
def killed_in_epoch(monkeypatch, when):
    """Inside: training raises KeyboardInterrupt (a kill) as the epoch starts where `when(fit, epoch)` is true;
    after: training runs as usual again."""
    from vptune.training import loop

    real_epoch = loop.train_epoch

    def interrupted(fit, dataset, epoch):
        if when(fit, epoch):
            raise KeyboardInterrupt
        return real_epoch(fit, dataset, epoch)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(loop, "train_epoch", real_epoch)
