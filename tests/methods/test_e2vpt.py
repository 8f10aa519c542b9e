"""E2VPT's key-value prompts (Han et al., ICCV 2023): in every prompted block the attention's keys and values get
l learned rows appended, K' = [K; P_K], V' = [V; P_V] (no queries of their own), beside VPT-deep's prompt tokens.

The reference writes one ViT block's attention out by hand from that equation."""
import pytest
import torch
from conftest import assert_paths_agree, make_tiny_eva, make_tiny_swin, make_tiny_vit

from vptune import ConfigError, MultiTaskModel, PromptConfig, build_model, get_method, load_task, save_task


def e2vpt_model(backbone, path="prefix", kv_tokens=2, **prompt):
    torch.manual_seed(0)
    method = get_method("e2vpt", kv_tokens=kv_tokens)
    model = build_model(method, backbone, PromptConfig(num_tokens=3, **prompt), num_classes=3).double()
    model.path = path
    with torch.no_grad():
        model.prompts.tokens.normal_(0, 1)
        model.prompts.kv.normal_(0, 1)
    return model


def reference_block(block, x, learned):
    """x (B, N, d) through a timm ViT block whose attention also attends to `learned` (l, 2d) keys|values."""
    attn, (batch, n, width) = block.attn, x.shape
    heads = attn.num_heads
    q, k, v = attn.qkv(block.norm1(x)).chunk(3, dim=-1)
    learned_k, learned_v = learned.chunk(2, dim=-1)
    k = torch.cat([learned_k.expand(batch, -1, -1), k], dim=1)  # order does not change a softmax
    v = torch.cat([learned_v.expand(batch, -1, -1), v], dim=1)
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
    weights = (split(q) @ split(k).transpose(-1, -2) * (width // heads) ** -0.5).softmax(dim=-1)
    out = attn.proj((weights @ split(v)).transpose(1, 2).reshape(batch, n, width))
    x = x + block.ls1(out)
    return x + block.ls2(block.mlp(block.norm2(x)))


def reference_features(model, x):
    bb, p = model.backbone, model.prompt_config.num_tokens
    h = bb.norm_pre(bb._pos_embed(bb.patch_embed(x)))
    for i, block in enumerate(bb.blocks):
        prompts = model.prompts.tokens[i].expand(len(h), -1, -1)
        h = torch.cat([h[:, :1], prompts, h[:, 1 + p:] if i else h[:, 1:]], dim=1)
        h = reference_block(block, h, model.prompts.kv[i])
    return bb.fc_norm(bb.norm(h[:, 0]))


@pytest.mark.parametrize("path", ["tokens", "prefix"])
def test_both_paths_equal_the_key_value_prompt_equation(path):
    model = e2vpt_model(make_tiny_vit(depth=3).double(), path)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference_features(model, x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("backbone", [lambda: make_tiny_vit(depth=3), lambda: make_tiny_eva("dinov3")],
                         ids=["vit", "eva-dinov3"])
def test_fast_path_equals_tokens_path_in_logits_and_gradients(backbone):
    backbone = backbone().double()
    size = backbone.patch_embed.img_size[0]
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    _, _, kv = assert_paths_agree(lambda path: e2vpt_model(backbone, path), x, torch.tensor([0, 2, 1]))
    assert kv.abs().min() > 0  # every learned key and value gets a gradient


def test_key_value_prompts_are_what_e2vpt_adds_to_vpt_deep(tmp_path):
    backbone = make_tiny_vit(depth=3)
    deep = build_model("vpt-deep", backbone, PromptConfig(num_tokens=3), 3)
    e2vpt = build_model(get_method("e2vpt", kv_tokens=2), backbone, PromptConfig(num_tokens=3), 3)
    added = sum(p.numel() for p in e2vpt.trainable_parameters()) - sum(p.numel() for p in deep.trainable_parameters())
    assert added == 3 * 2 * 2 * backbone.embed_dim  # blocks x l x (key + value) x width
    dirs = {"e2vpt": save_task(e2vpt_model(backbone).float(), tmp_path / "e2vpt"),
            "deep": save_task(deep, tmp_path / "deep")}
    multi = MultiTaskModel(backbone, dirs)
    assert all(multi._in_shared_pass(task) for task in multi.tasks.values())  # both are key/value prefixes
    images, names = torch.randn(4, 3, 32, 32), ["e2vpt", "deep", "e2vpt", "deep"]
    for j, (out, name) in enumerate(zip(multi(images, names), names)):
        with torch.no_grad():
            torch.testing.assert_close(out, load_task(dirs[name], backbone=backbone)(images[j:j + 1])[0],
                                       atol=1e-5, rtol=0)


def test_a_windowed_backbone_refuses_key_value_prompts_in_one_line():
    with pytest.raises(ConfigError, match="kv_tokens .* not supported on swin backbones") as err:
        build_model("e2vpt", make_tiny_swin(), PromptConfig(num_tokens=2), 3)
    assert "\n" not in str(err.value)
