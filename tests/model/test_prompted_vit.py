import copy
import math

import pytest
import timm
import torch
from conftest import sharpen
from timm.models.vision_transformer import Block

from vptune import PromptConfig, PromptedViT, count_parameters
from vptune.model.prompted import kmeans


def _prompt_grads(model):
    return [p.grad.clone() for p in model.prompts.parameters()]


def _run(model, images, path):
    """Logits and prompt gradients of one forward/backward on `path`."""
    model.path = path
    model.zero_grad(set_to_none=True)
    logits = model(images)
    logits.square().sum().backward()
    return logits.detach(), _prompt_grads(model)


# ------------------------------------------------------------------------------------------ no prompt = probe
@pytest.mark.parametrize("mode", ["shallow", "deep"])
def test_no_prompt_gives_backbone_cls_through_head(tiny_vit, images, mode):
    backbone = tiny_vit()
    model = PromptedViT(backbone, PromptConfig(num_tokens=0, mode=mode), num_classes=5)
    with torch.no_grad():
        expected = model.head(backbone.forward_features(images)[:, 0])
        assert torch.allclose(model(images), expected, atol=1e-6, rtol=0)
        assert model.prompts is None


# ----------------------------------------------------------------------------------- fast path == reference
FAST_CASES = {
    "deep-all": dict(depth=4, layers=None),
    "deep-first-2": dict(depth=4, layers="first 2"),
    "deep-last-2": dict(depth=4, layers="last 2"),
    "deep-gap": dict(depth=6, layers=[0, 1, 4, 5]),
    "deep-registers": dict(depth=4, layers=None, reg_tokens=4),
    "deep-qknorm-layerscale": dict(depth=3, layers=None, qk_norm=True, init_values=0.1),
    "deep-projection": dict(depth=3, layers=None, project=8),
    "shallow": dict(depth=4, mode="shallow"),
    "shallow-at-block-2": dict(depth=4, mode="shallow", layers=[2]),
}


def _model_for(tiny_vit, case, dropout=0.0):
    case = dict(case)
    prompt = PromptConfig(num_tokens=5, mode=case.pop("mode", "deep"), layers=case.pop("layers", None),
                          project=case.pop("project", None), dropout=dropout)
    torch.manual_seed(7)
    return PromptedViT(tiny_vit(**case), prompt, num_classes=6)


@pytest.mark.parametrize("name", FAST_CASES)
def test_prefix_path_matches_tokens_path_in_training(tiny_vit, images, name):
    model = _model_for(tiny_vit, FAST_CASES[name]).train()
    fast_logits, fast_grads = _run(model, images, "prefix")
    ref_logits, ref_grads = _run(model, images, "tokens")
    assert torch.allclose(fast_logits, ref_logits, atol=1e-5, rtol=0)
    for fast, ref in zip(fast_grads, ref_grads):
        assert torch.allclose(fast, ref, atol=1e-5, rtol=0)
    assert all(g.abs().sum() > 0 for g in fast_grads), "prompts must receive a gradient"


def test_prefix_path_matches_with_per_image_prompt_dropout(tiny_vit, images):
    model = _model_for(tiny_vit, FAST_CASES["deep-gap"], dropout=0.3).train()
    torch.manual_seed(1)
    fast_logits, fast_grads = _run(model, images, "prefix")
    torch.manual_seed(1)
    ref_logits, ref_grads = _run(model, images, "tokens")
    assert torch.allclose(fast_logits, ref_logits, atol=1e-5, rtol=0)
    for fast, ref in zip(fast_grads, ref_grads):
        assert torch.allclose(fast, ref, atol=1e-5, rtol=0)


def test_prompt_dropout_draws_a_mask_per_image(tiny_vit):
    model = _model_for(tiny_vit, FAST_CASES["deep-all"], dropout=0.5).train()
    prompts = model.prompts(batch_size=4)
    assert prompts.shape == (4, 4, 5, 24)
    dropped = prompts == 0
    assert not torch.equal(dropped[:, 0], dropped[:, 1])
    assert model.eval().prompts(batch_size=4).shape[1] == 1  # no dropout at inference: one shared prompt


@pytest.mark.parametrize("name", ["deep-all", "deep-gap", "deep-registers", "deep-first-2"])
def test_eval_cache_matches_reference_and_follows_prompt_changes(tiny_vit, images, name):
    model = _model_for(tiny_vit, FAST_CASES[name]).eval()
    with torch.no_grad():
        model.path = "tokens"
        reference = model.forward_features(images)
        model.path = "prefix"
        first, second = model.forward_features(images), model.forward_features(images)
        assert len(model._kv_cache) > 0, "eval + no_grad must cache prompt keys/values"
        assert torch.allclose(first, reference, atol=1e-5, rtol=0)
        assert torch.equal(first, second)

        model.prompts.tokens.add_(torch.randn_like(model.prompts.tokens))  # like an optimizer step: the cache must notice
        changed = model.forward_features(images)
        model.path = "tokens"
        assert torch.allclose(changed, model.forward_features(images), atol=1e-5, rtol=0)
        assert not torch.allclose(changed, first, atol=1e-3)


def test_no_cache_while_gradients_are_needed(tiny_vit, images):
    model = _model_for(tiny_vit, FAST_CASES["deep-all"]).eval()
    model(images).sum().backward()
    assert len(model._kv_cache) == 0
    assert model.prompts.tokens.grad is not None


def test_unknown_block_type_falls_back_with_one_warning(tiny_vit, images):
    class MyBlock(Block):  # same maths, but a class the fast path does not know
        pass

    backbone = tiny_vit(depth=3)
    for i, block in enumerate(backbone.blocks):
        replacement = MyBlock(24, 3, mlp_ratio=2.0, qkv_bias=True)
        replacement.load_state_dict(block.state_dict())
        backbone.blocks[i] = replacement
    with pytest.warns(UserWarning, match="MyBlock") as record:
        model = PromptedViT(backbone, PromptConfig(num_tokens=4), num_classes=3)
    assert len(record) == 1
    model.eval()
    with torch.no_grad():
        fast = model(images)
        model.path = "tokens"
        assert torch.allclose(fast, model(images), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------- hand-checked semantics
def _explicit_embed(backbone, images):
    """[CLS] + patches with position embeddings, written out by hand (timm ViT with class token)."""
    patches = backbone.patch_embed(images)
    cls = backbone.cls_token.expand(images.shape[0], -1, -1)
    return torch.cat([cls, patches], dim=1) + backbone.pos_embed


def test_shallow_matches_hand_written_loop(tiny_vit, images):
    backbone = tiny_vit(depth=2)
    model = PromptedViT(backbone, PromptConfig(num_tokens=3, mode="shallow"), num_classes=4).eval()
    prompt = model.prompts.tokens[0]
    x = _explicit_embed(backbone, images)
    x = torch.cat([x[:, :1], prompt.expand(3, -1, -1), x[:, 1:]], dim=1)  # insert once after [CLS]
    x = backbone.blocks[1](backbone.blocks[0](x))  # carried through both blocks
    expected = model.head(backbone.norm(x)[:, 0])
    with torch.no_grad():
        for path in ("prefix", "tokens"):
            model.path = path
            assert torch.allclose(model(images), expected, atol=1e-6, rtol=0), path


def test_deep_matches_hand_written_loop(tiny_vit, images):
    backbone = tiny_vit(depth=2)
    model = PromptedViT(backbone, PromptConfig(num_tokens=3, mode="deep"), num_classes=4).eval()
    p0, p1 = model.prompts.tokens
    x = _explicit_embed(backbone, images)
    x = backbone.blocks[0](torch.cat([x[:, :1], p0.expand(3, -1, -1), x[:, 1:]], dim=1))
    x = backbone.blocks[1](torch.cat([x[:, :1], p1.expand(3, -1, -1), x[:, 4:]], dim=1))  # replace the slots
    expected = model.head(backbone.norm(x)[:, 0])
    with torch.no_grad():
        assert torch.allclose(model(images), expected, atol=1e-6, rtol=0)


def test_add_location_adds_a_vector_per_token(tiny_vit, images):
    backbone = tiny_vit(depth=2)
    model = PromptedViT(backbone, PromptConfig(num_tokens=1, location="add", layers=[1]), num_classes=4).eval()
    assert model.prompts.tokens.shape == (1, 1 + 4, 24)  # length set by the backbone: [CLS] + 4 patches
    x = backbone.blocks[0](_explicit_embed(backbone, images))
    x = backbone.blocks[1](x + model.prompts.tokens[0])
    expected = model.head(backbone.norm(x)[:, 0])
    with torch.no_grad():
        assert torch.allclose(model(images), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("prompt, depth", [
    (PromptConfig(num_tokens=3, layers="last 2"), 2),
    (PromptConfig(num_tokens=3, layers=[1, 3]), 1),
    (PromptConfig(num_tokens=1, location="add", layers="last 1"), 3),
    (PromptConfig(num_tokens=3), 0),
    (PromptConfig(num_tokens=0), 3),  # no prompt: the last block runs for [CLS] only, after the stem
])
def test_stem_is_the_backbone_up_to_the_first_prompt(tiny_vit, images, prompt, depth):
    backbone = tiny_vit(depth=4)
    model = PromptedViT(backbone, prompt, num_classes=4).eval()
    assert model.stem_depth == depth
    x = _explicit_embed(backbone, images)
    for block in backbone.blocks[:depth]:
        x = block(x)
    with torch.no_grad():
        stem = model.stem(images)
    assert torch.allclose(stem, x, atol=1e-6, rtol=0)
    if model.prompts is None:
        return
    # training from a stored stem gives the same logits and prompt gradients as training from the images
    reference_logits, reference_grads = _run(model, images, "prefix")
    model.zero_grad(set_to_none=True)
    logits = model.forward_from_stem(stem)
    logits.square().sum().backward()
    assert torch.allclose(logits, reference_logits, atol=1e-6, rtol=0)
    for grad, reference in zip(_prompt_grads(model), reference_grads):
        assert torch.allclose(grad, reference, atol=1e-6, rtol=0)


def test_add_location_rejects_other_image_sizes(tiny_vit):
    backbone = tiny_vit(depth=2, dynamic_img_size=True)
    model = PromptedViT(backbone, PromptConfig(num_tokens=1, location="add"), num_classes=4)
    with pytest.raises(ValueError, match="location='add'.*image size"):
        model(torch.randn(1, 3, 48, 48))


# ------------------------------------------------------------------------------------------ frozen backbone
def test_only_prompts_and_head_train_and_backbone_is_untouched(tiny_vit, images):
    backbone = tiny_vit(depth=3)
    before = copy.deepcopy(backbone.state_dict())
    model = PromptedViT(backbone, PromptConfig(num_tokens=4, project=8), num_classes=5).train()
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"prompts.tokens", "prompts.proj.weight", "prompts.proj.bias", "head.weight", "head.bias"}
    assert not backbone.training and model.training

    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=1.0, momentum=0.9, weight_decay=0.1)
    prompts_before = model.prompts.tokens.detach().clone()
    torch.nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2])).backward()
    optimizer.step()
    assert all(p.grad is None for p in backbone.parameters())
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not torch.equal(model.prompts.tokens, prompts_before)


@pytest.mark.parametrize("mode, blocks", [("deep", 4), ("shallow", 1)])
def test_parameter_counts(tiny_vit, mode, blocks):
    model = PromptedViT(tiny_vit(depth=4), PromptConfig(num_tokens=7, mode=mode), num_classes=10)
    counts = count_parameters(model)
    backbone_size = sum(p.numel() for p in model.backbone.parameters())
    assert counts.prompts == blocks * 7 * 24
    assert counts.head == 24 * 10 + 10
    assert counts.backbone == backbone_size
    assert math.isclose(counts.percent_of_backbone, 100 * (counts.prompts + counts.head) / backbone_size)
    assert f"{counts.percent_of_backbone:.3f}% of the backbone" in str(counts)


def test_xavier_init_uses_the_papers_bound(tiny_vit):
    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=50), num_classes=2)
    bound = math.sqrt(6.0 / (3 * 16 * 16 + 24))
    tokens = model.prompts.tokens
    assert tokens.abs().max() <= bound
    assert tokens.abs().max() > 0.9 * bound


@pytest.mark.parametrize("mode,layers", [("deep", None), ("deep", "1,3"), ("shallow", None)])
def test_patches_init_sets_each_prompt_to_centroids_of_its_blocks_input(tiny_vit, mode, layers):
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=3, mode=mode, layers=layers, init="patches"),
                        num_classes=2)
    model.init_prompts_from_patches(images, torch.Generator().manual_seed(0))
    x, start = model.embed(images), model.num_prefix_tokens
    for i, block in enumerate(model.backbone.blocks):
        if model.is_prompted(i):
            patches = x[:, start:].flatten(0, 1)  # every token the backbone feeds block i, without prompts
            prompt = model.prompts.tokens[model.prompt_row(i)]
            nearest = torch.cdist(patches, prompt).argmin(dim=1)
            assert len(set(nearest.tolist())) == 3, f"block {i}: every prototype has tokens of its own"
            for k in range(3):  # Lloyd's fixed point: each prototype is the mean of the tokens nearest to it
                torch.testing.assert_close(prompt[k], patches[nearest == k].mean(0), atol=1e-4, rtol=0)
        x = block(x)


def test_kmeans_finds_well_separated_clusters():
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = torch.cat([c + 0.1 * torch.randn(50, 2, generator=generator) for c in centres])
    found = kmeans(points, 3, torch.Generator().manual_seed(1))
    distance = torch.cdist(found, centres)
    assert distance.min(dim=1).values.max() < 0.1 and len(set(distance.argmin(dim=1).tolist())) == 3
    assert kmeans(points[:2], 3, generator).shape == (3, 2)  # fewer points than prototypes: some repeat


def test_patches_init_is_refused_where_prompts_are_not_tokens():
    with pytest.raises(ValueError, match="init='patches'.*prepend"):
        PromptConfig(init="patches", location="add")
    with pytest.raises(ValueError, match="init='patches'.*projection"):
        PromptConfig(init="patches", project=8)


# ------------------------------------------------------------------------------------------- bad backbones
def test_backbone_without_class_token_is_refused(tiny_vit):
    with pytest.raises(ValueError, match="no class token"):
        PromptedViT(tiny_vit(class_token=False, global_pool="avg"), PromptConfig(), num_classes=2)


def test_backbone_of_no_known_family_is_refused_naming_the_families():
    with pytest.raises(TypeError, match="no adapter for Linear; supported backbone families: vit .*, eva "):
        PromptedViT(torch.nn.Linear(3, 3), PromptConfig(), num_classes=2)


def test_a_subclass_of_a_supported_timm_class_finds_its_family(tiny_vit):
    from timm.models.vision_transformer import VisionTransformer

    class MyViT(VisionTransformer):
        pass

    backbone = tiny_vit()
    mine = MyViT(img_size=32, patch_size=16, embed_dim=24, depth=4, num_heads=3, mlp_ratio=2.0, num_classes=0)
    mine.load_state_dict(backbone.state_dict())
    images = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ours = PromptedViT(mine.eval(), PromptConfig(num_tokens=2), num_classes=3)
    torch.manual_seed(0)
    theirs = PromptedViT(backbone, PromptConfig(num_tokens=2), num_classes=3)
    assert ours.family == "vit"
    torch.testing.assert_close(ours(images), theirs(images), atol=0, rtol=0)


def test_from_timm_builds_offline_and_checks_layers():
    model = PromptedViT.from_timm("vit_tiny_patch16_224", PromptConfig(num_tokens=2, layers="last 1"),
                                  num_classes=3, img_size=32, depth=2)
    assert model.prompt_blocks == (1,)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="out of range"):
        PromptedViT.from_timm("vit_tiny_patch16_224", PromptConfig(layers=[5]), num_classes=3, img_size=32, depth=2)


def test_dinov2_style_backbone_matches_reference(images):
    """A DINOv2-shaped ViT (patch 14, LayerScale, registers) from timm's own factory."""
    torch.manual_seed(0)
    backbone = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, num_classes=0, img_size=28,
                                 depth=2, embed_dim=24, num_heads=3).eval()
    sharpen(backbone)
    model = PromptedViT(backbone, PromptConfig(num_tokens=3), num_classes=4).train()
    x = torch.randn(2, 3, 28, 28)
    fast_logits, fast_grads = _run(model, x, "prefix")
    ref_logits, ref_grads = _run(model, x, "tokens")
    assert torch.allclose(fast_logits, ref_logits, atol=1e-5, rtol=0)
    assert torch.allclose(fast_grads[0], ref_grads[0], atol=1e-5, rtol=0)
