"""Shared fixtures: tiny random timm ViTs, so the suite runs in seconds on a CPU and offline."""
import pytest
import timm
import torch


def make_tiny_vit(depth: int = 4, reg_tokens: int = 0, img_size: int = 32, seed: int = 0, **kwargs):
    """A random timm VisionTransformer: 32 px, patch 16 (4 patches), width 24, 3 heads."""
    torch.manual_seed(seed)
    options = dict(patch_size=16, embed_dim=24, num_heads=3, mlp_ratio=2.0, qkv_bias=True)
    options.update(kwargs)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=img_size,
                              depth=depth, reg_tokens=reg_tokens, **options).eval()
    return sharpen(model)


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


@pytest.fixture
def tiny_vit():
    return make_tiny_vit


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(123))
