"""Gradient checkpointing recomputes blocks in the backward pass: results must not change at all."""
import pytest
import torch

from vptune import PromptConfig, PromptedViT

CASES = {
    "deep-prefix": (dict(num_tokens=4), "prefix"),
    "deep-tokens": (dict(num_tokens=4), "tokens"),
    "deep-gap-prefix": (dict(num_tokens=4, layers=[0, 2]), "prefix"),
    "shallow-prefix": (dict(num_tokens=4, mode="shallow"), "prefix"),
    "add": (dict(num_tokens=1, location="add"), "prefix"),
    "no-prompt": (dict(num_tokens=0), "prefix"),
}


def _logits_and_grads(model, images):
    model.zero_grad(set_to_none=True)
    logits = model(images)
    logits.square().sum().backward()
    return logits.detach(), [p.grad.clone() for p in model.trainable_parameters()]


@pytest.mark.parametrize("name", CASES)
def test_checkpointed_logits_and_gradients_equal_plain_ones(tiny_vit, images, name):
    prompt, path = CASES[name]
    torch.manual_seed(3)
    model = PromptedViT(tiny_vit(depth=3, reg_tokens=1), PromptConfig(**prompt), num_classes=5, path=path).train()
    plain_logits, plain_grads = _logits_and_grads(model, images)
    model.grad_checkpointing = True
    ckpt_logits, ckpt_grads = _logits_and_grads(model, images)
    assert torch.allclose(ckpt_logits, plain_logits, atol=1e-6, rtol=0)
    assert len(ckpt_grads) == len(plain_grads) > 0
    for ckpt, plain in zip(ckpt_grads, plain_grads):
        assert torch.allclose(ckpt, plain, atol=1e-6, rtol=0)


def test_checkpointing_is_a_constructor_option_and_off_by_default(tiny_vit):
    assert not PromptedViT(tiny_vit(), PromptConfig(), num_classes=2).grad_checkpointing
    assert PromptedViT(tiny_vit(), PromptConfig(), num_classes=2, grad_checkpointing=True).grad_checkpointing


def test_checkpointing_changes_nothing_at_inference(tiny_vit, images):
    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=3), num_classes=4, grad_checkpointing=True).eval()
    with torch.no_grad():
        first = model(images)
        assert len(model._kv_cache) > 0  # the prompt K/V cache still works
        model.grad_checkpointing = False
        assert torch.equal(model(images), first)


# ------------------------------------------------------------------ fast path with a wrapped qkv (e.g. LoRA)
class _WrappedLinear(torch.nn.Module):
    """Stands in for an adapter around attn.qkv (PEFT's LoRA): not an nn.Linear, and adds its own term."""

    def __init__(self, linear):
        super().__init__()
        self.base = linear
        self.delta = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
        torch.nn.init.normal_(self.delta.weight, std=0.5)

    def forward(self, x):
        return self.base(x) + self.delta(x)


@pytest.mark.parametrize("num_tokens", [0, 4])
def test_fast_path_runs_a_wrapped_qkv_as_a_module(tiny_vit, images, num_tokens):
    """The fast path slices the qkv weight only for a plain nn.Linear; a wrapper must stay in effect."""
    backbone = tiny_vit(depth=3)
    for block in backbone.blocks:
        block.attn.qkv = _WrappedLinear(block.attn.qkv)
    model = PromptedViT(backbone, PromptConfig(num_tokens=num_tokens), num_classes=4).eval()
    with torch.no_grad():
        fast = model.forward_features(images)
        expected = backbone.forward_features(images)[:, 0] if num_tokens == 0 else None
        if expected is None:
            model.path = "tokens"
            expected = model.forward_features(images)
        else:
            expected = backbone.fc_norm(expected)
    assert torch.allclose(fast, expected, atol=1e-5, rtol=0)
