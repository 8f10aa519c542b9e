"""VPT on timm's `Eva` family (DINOv3, EVA-02, PE, RoPE ViTs): prompts are prefix tokens, with no position.

The references here are written from the semantics, not from vptune's adapter: the "tokens" path must equal a
sequence in which the prompts sit with [CLS] and the registers among the tokens the attention does not rotate; the
fast path must equal the tokens path; and DINOv2 rebuilt as an `Eva` must give what the ViT gives.
"""
from functools import partial

import pytest
import torch
from timm.models.eva import Eva
from torch import nn

from conftest import EVA_SHAPES, make_tiny_eva
from vptune import PromptConfig, PromptedModel, load_task, save_task
from vptune.errors import CheckpointError

SHAPES = list(EVA_SHAPES)


def images(size=48, batch=3, seed=1):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def model_of(backbone, path="prefix", seed=0, **prompt):
    torch.manual_seed(seed)
    model = PromptedModel(backbone, PromptConfig(**{"num_tokens": 3, **prompt}), num_classes=4, path=path)
    with torch.no_grad():  # prompts at the scale of real tokens, so that a wrong placement shows
        model.prompts.tokens.normal_(0, 1)
    return model


def reference_features(model, x):
    """The final normed [CLS] with the prompts as extra prefix tokens: the attention rotates only the tokens after
    [CLS], the registers and the prompts (its `num_prefix_tokens` widened by p), as for tokens without position."""
    bb, cfg, start = model.backbone, model.prompt_config, model.num_prefix_tokens
    p = cfg.num_tokens
    x, rope = bb._pos_embed(bb.patch_embed(x))
    x = bb.norm_pre(x)
    prompts = model.prompts.tokens
    inserted = False
    for i, block in enumerate(bb.blocks):
        if i in model.prompt_blocks:
            row = prompts[0 if cfg.shared else model.prompt_blocks.index(i)][None].expand(len(x), -1, -1)
            x = torch.cat([x[:, :start], row, x[:, start + p if inserted else start:]], dim=1)
            inserted = True
        block.attn.num_prefix_tokens = start + (p if inserted else 0)
        try:
            table = rope[i] if bb.rope_mixed else rope
            x = block(x, rope=table) if rope is not None else block(x)
        finally:
            block.attn.num_prefix_tokens = start
    return bb.fc_norm(bb.norm(x[:, 0]))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode,layers", [("deep", None), ("shallow", None), ("deep", "1,2"), ("shallow", [1])])
def test_tokens_path_equals_prompts_as_unrotated_prefix_tokens(shape, mode, layers):
    model = model_of(make_tiny_eva(shape).double(), path="tokens", mode=mode, layers=layers).double()
    x = images().double()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference_features(model, x), rtol=1e-10, atol=1e-10)


def test_prompts_change_the_output_and_rotating_them_would_change_it_again():
    """The reference's premise can fail: prompts move the [CLS], and which tokens are rotated matters."""
    backbone = make_tiny_eva("eva02").double()
    x = images().double()
    model = model_of(backbone, path="tokens").double()
    frozen = PromptedModel(backbone, PromptConfig(num_tokens=0), num_classes=4).double()
    with torch.no_grad():
        prompted = model.forward_features(x)
        assert (prompted - frozen.forward_features(x)).abs().max() > 1e-2
        bb = model.backbone
        tokens, rope = bb._pos_embed(bb.patch_embed(x))
        row = model.prompts.tokens[0][None].expand(len(x), -1, -1)
        seq = torch.cat([tokens[:, :1], row, tokens[:, 1:]], dim=1)
        rotated_prompts = bb.blocks[0](seq, rope=torch.cat([rope[:3], rope], dim=0))  # prompts given positions
        ours = model.adapter.block(0, seq, 3)
        assert (rotated_prompts - ours).abs().max() > 1e-3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prompt", [dict(mode="deep"), dict(mode="shallow"), dict(mode="deep", layers="last 2"),
                                    dict(mode="deep", layers=[0, 2]), dict(mode="deep", pooling="image-pool"),
                                    dict(mode="deep", pooling="global-pool"), dict(mode="deep", shared=True)])
def test_fast_path_equals_tokens_path_in_logits_and_prompt_gradients(shape, prompt):
    backbone = make_tiny_eva(shape).double()
    x = images().double()
    results = []
    for path in ("tokens", "prefix"):
        model = model_of(backbone, path=path, **prompt).double()
        logits = model(x)
        logits.square().sum().backward()
        results.append((logits.detach(), model.prompts.tokens.grad.clone(), model.head.weight.grad.clone()))
    for reference, fast in zip(*results):
        torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-10)


def test_the_fast_path_caches_prompt_key_values_at_inference_and_gives_the_same_logits():
    model = model_of(make_tiny_eva("dinov3")).eval()
    x = images()
    with torch.no_grad():
        first = model(x)
        assert len(model._kv_cache) == 3, "one cached K/V per prompted block whose outputs nobody reads"
        torch.testing.assert_close(model(x), first, rtol=0, atol=0)
        model.path = "tokens"
        torch.testing.assert_close(model(x), first, rtol=1e-5, atol=1e-5)


def test_an_image_size_other_than_the_backbones_uses_its_own_rotary_grid():
    """DINOv3 takes any image size: a 32 x 64 image has a 2 x 4 grid, and both paths agree on it."""
    backbone = make_tiny_eva("dinov3").double()
    x = torch.randn(2, 3, 32, 64, generator=torch.Generator().manual_seed(3)).double()
    with torch.no_grad():
        tokens = model_of(backbone, path="tokens").double()(x)
        fast = model_of(backbone, path="prefix").double()(x)
    torch.testing.assert_close(fast, tokens, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("shape", ["dinov3", "eva02"])
def test_add_with_zero_prompts_gives_the_frozen_backbones_features_exactly(shape):
    backbone = make_tiny_eva(shape)
    x = images()
    model = PromptedModel(backbone, PromptConfig(num_tokens=1, location="add", init="zeros"), num_classes=4)
    with torch.no_grad():
        expected = backbone.fc_norm(backbone.forward_features(x)[:, 0])  # timm's own forward, [CLS] after its norm
        assert torch.equal(model.forward_features(x), expected)


@pytest.mark.parametrize("location", ["prepend", "prepend-pixel", "add", "concat-channel"])
def test_one_optimizer_step_changes_only_prompts_and_head(location):
    backbone = make_tiny_eva("dinov3")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    mode = "shallow" if location == "concat-channel" else "deep"
    model = PromptedModel(backbone, PromptConfig(num_tokens=2, location=location, mode=mode), num_classes=4)
    trained = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith(("prompts.", "head.")) for n in trained)
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.5)
    nn.functional.cross_entropy(model.train()(images()), torch.tensor([0, 1, 2])).backward()
    optimizer.step()
    assert all(torch.equal(v, backbone.state_dict()[k]) for k, v in before.items()), "the backbone moved"
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert "head.weight" in moved and any(n.startswith("prompts.") for n in moved)


def test_cls_pooling_on_an_eva_without_class_token_is_one_line_naming_the_fix():
    backbone = make_tiny_eva("dinov3", class_token=False)
    with pytest.raises(ValueError, match="has no class token.*use pooling='image-pool'"):
        PromptedModel(backbone, PromptConfig(num_tokens=2), num_classes=3)
    model = PromptedModel(backbone, PromptConfig(num_tokens=2, pooling="image-pool"), num_classes=3)
    assert model(images()).shape == (3, 3)


def test_save_load_predict_round_trip_and_a_task_refuses_another_family(tmp_path, tiny_vit):
    backbone = make_tiny_eva("eva02")
    model = model_of(backbone, mode="deep").eval()
    x = images()
    with torch.no_grad():
        expected = model(x)
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=backbone).eval()
    assert loaded.family == "eva"
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="trained on a eva backbone .* given backbone is a vit"):
        load_task(tmp_path / "task", backbone=tiny_vit(), check_fingerprint=False)


# ------------------------------------------------------------------------------- the DINOv2 twin oracle
def eva_twin(vit: nn.Module) -> Eva:
    """The same network as a timm `Eva`: absolute positions, no RoPE, LayerScale, q and v biases. The key bias is
    dropped: adding one vector to every key adds the same number to each of a query's scores, which softmax
    ignores."""
    block = vit.blocks[0]
    eva = Eva(img_size=vit.patch_embed.img_size, patch_size=vit.patch_embed.patch_size, embed_dim=vit.embed_dim,
              depth=len(vit.blocks), num_heads=block.attn.num_heads, mlp_ratio=block.mlp.fc1.out_features / vit.embed_dim,
              qkv_bias=True, init_values=1.0, norm_layer=partial(nn.LayerNorm, eps=vit.norm.eps), num_classes=0,
              global_pool="token", num_reg_tokens=vit.num_reg_tokens, no_embed_class=vit.no_embed_class)
    state = {}
    for name, tensor in vit.state_dict().items():
        if name.endswith("attn.qkv.bias"):
            q, _, v = tensor.chunk(3)
            state[name.replace("qkv.bias", "q_bias")], state[name.replace("qkv.bias", "v_bias")] = q, v
        else:
            state[name.replace("ls1.gamma", "gamma_1").replace("ls2.gamma", "gamma_2")] = tensor
    eva.load_state_dict(state, strict=True)
    return eva.eval()


@pytest.fixture(scope="module")
def dinov2_and_twin():
    from vptune import create_backbone

    vit = create_backbone(img_size=42).double()  # the offline DINOv2 ViT-S/14: a 3 x 3 grid keeps it fast
    return vit, eva_twin(vit).double()


@pytest.mark.parametrize("path", ["tokens", "prefix"])
@pytest.mark.parametrize("prompt", [dict(mode="deep"), dict(mode="shallow"), dict(mode="deep", layers="last 4")])
def test_dinov2_as_an_eva_gives_the_vits_logits_and_prompt_gradients(dinov2_and_twin, path, prompt):
    vit, eva = dinov2_and_twin
    x = images(size=42, batch=2).double()
    results = []
    for backbone in (vit, eva):
        model = model_of(backbone, path=path, **prompt).double()
        assert model.family == ("vit" if backbone is vit else "eva")
        logits = model(x)
        logits.square().sum().backward()
        results.append((logits.detach(), model.prompts.tokens.grad.clone()))
    assert results[0][0].abs().max() > 1e-3
    for on_vit, on_eva in zip(*results):
        torch.testing.assert_close(on_eva, on_vit, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("shape", ["dinov3", "pe", "gqa"])
def test_lora_adapts_every_attention_projection_and_both_paths_agree(shape):
    from vptune import ConfigError, build_model

    x = images().double()
    logits = {}
    for path in ("tokens", "prefix"):
        backbone = make_tiny_eva(shape).double()
        torch.manual_seed(0)
        model = build_model("lora", backbone, PromptConfig(num_tokens=0), num_classes=4).double()
        lora = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert len(lora) == 3 * (3 if shape == "gqa" else 1)  # every block's q/k/v projection(s)
        with torch.no_grad():
            for p in lora:
                p.normal_(0, 0.5)  # away from zero, where an adapter that never runs would not show
        model.path = path
        logits[path] = model(x)
    frozen = PromptedModel(make_tiny_eva(shape).double(), PromptConfig(num_tokens=0), num_classes=4).double()
    assert (frozen.forward_features(x) - model.forward_features(x)).abs().max() > 1e-3  # the adapters act
    torch.testing.assert_close(logits["prefix"], logits["tokens"], rtol=1e-9, atol=1e-10)
    with pytest.raises(ConfigError, match="LoRA cannot adapt Eva's fused qkv with separate q/v biases"):
        build_model("lora", make_tiny_eva("eva02"), PromptConfig(num_tokens=0), num_classes=4)


def test_partial_k_trains_the_last_blocks_and_the_final_norms_of_an_eva():
    from vptune import build_model

    model = build_model("partial-1", make_tiny_eva("eva02"), PromptConfig(num_tokens=0), num_classes=4)
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert all(n.startswith(("blocks.2.", "fc_norm.")) for n in names)  # EVA-02 pools through fc_norm
    assert any(n.startswith("blocks.2.") for n in names) and any(n.startswith("fc_norm.") for n in names)
