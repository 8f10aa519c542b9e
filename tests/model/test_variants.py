"""The paper's remaining variants (pixel prompts, input channels, poolings, deep-shared prompts, class-prototype
init), each against an explicit reference written here from the paper's description: one loop over the blocks
with the prompts as tokens, nothing of PromptedViT's own. Both of vptune's paths (prefix, tokens) must give its
logits and its prompt gradients, in float64."""
import pytest
import torch
import torch.nn.functional as F

from vptune import PromptConfig, PromptedViT, load_task, save_task
from vptune.methods import build_model


def reference_features(model: PromptedViT, images: torch.Tensor) -> torch.Tensor:
    """What the head reads, computed the plain way from the backbone and the model's prompt parameters."""
    bb, cfg = model.backbone, model.prompt_config
    pe, start, p = bb.patch_embed, bb.num_prefix_tokens, cfg.num_tokens
    tokens = model.prompts.tokens
    if cfg.location == "concat-channel":  # one convolution over the image's 3 channels and the p prompt channels
        channels = tokens.view(1, p, *pe.img_size).expand(len(images), -1, -1, -1)
        weight = torch.cat([pe.proj.weight, model.prompts.channel_weight], dim=1)
        patches = F.conv2d(torch.cat([images, channels], dim=1), weight, pe.proj.bias, stride=pe.proj.stride)
        patches = pe.norm(patches.flatten(2).transpose(1, 2))
    else:
        patches = pe(images)
    x = bb.norm_pre(bb._pos_embed(patches))

    def prompt_of(block):
        row = tokens[0 if cfg.shared else model.prompt_blocks.index(block)]
        if cfg.location == "prepend-pixel":  # p pixel patches through the patch embedding's own convolution
            pixels = row.view(p, 3, *pe.patch_size)
            row = pe.norm(pe.proj(pixels).flatten(1))
        return row.expand(len(images), -1, -1)

    inserted = False
    for i, block in enumerate(bb.blocks):
        if i in model.prompt_blocks and cfg.location in ("prepend", "prepend-pixel"):
            x = torch.cat([x[:, :start], prompt_of(i), x[:, start + (p if inserted else 0):]], dim=1)
            inserted = True
        elif i in model.prompt_blocks and cfg.location == "add":
            x = x + prompt_of(i)
        x = block(x)
    x = bb.norm(x)
    p_in = p if inserted else 0
    pooled = {"cls": x[:, 0], "image-pool": x[:, start + p_in:].mean(1), "prompt-pool": x[:, start:start + p_in].mean(1),
              "global-pool": x.mean(1)}[cfg.pooling]
    return bb.fc_norm(pooled)


VARIANTS = {
    "pixel-shallow": dict(mode="shallow", location="prepend-pixel"),
    "pixel-deep": dict(location="prepend-pixel"),
    "pixel-deep-last-2": dict(location="prepend-pixel", layers="last 2"),
    "channel": dict(mode="shallow", location="concat-channel"),
    "image-pool-deep": dict(pooling="image-pool"),
    "prompt-pool-deep": dict(pooling="prompt-pool"),
    "global-pool-deep": dict(pooling="global-pool"),
    "prompt-pool-shallow": dict(mode="shallow", pooling="prompt-pool"),
    "global-pool-first-2": dict(layers="first 2", pooling="global-pool"),
    "image-pool-add": dict(location="add", pooling="image-pool"),
    "shared-deep": dict(shared=True),
    "shared-last-3": dict(shared=True, layers="last 3"),
    "shared-pixel-prompt-pool": dict(shared=True, location="prepend-pixel", pooling="prompt-pool"),
}


def _model(tiny_vit, **prompt):
    torch.manual_seed(3)
    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=3, **prompt), num_classes=5).double()
    with torch.no_grad():  # prompts and channel weights away from their init (zeros would hide a wrong weight)
        for param in model.prompts.parameters():
            param.normal_(0, 0.5)
    return model


def _logits_and_grads(model, images, fn):
    model.zero_grad(set_to_none=True)
    logits = fn(images)
    logits.pow(2).sum().backward()
    return logits.detach(), [p.grad.clone() for p in model.prompts.parameters()]


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("path", ["prefix", "tokens"])
def test_a_variant_equals_its_explicit_reference(tiny_vit, images, name, path):
    model = _model(tiny_vit, **VARIANTS[name])
    model.path = path
    images = images.double()
    got, got_grads = _logits_and_grads(model, images, model)
    expected, expected_grads = _logits_and_grads(model, images, lambda x: model.head(reference_features(model, x)))
    assert torch.allclose(got, expected, atol=1e-10, rtol=0)
    for g, e in zip(got_grads, expected_grads):
        assert g.abs().max() > 0 and torch.allclose(g, e, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_survives_save_and_load(tiny_vit, images, name, tmp_path):
    model = _model(tiny_vit, **VARIANTS[name]).float().eval()
    with torch.no_grad():
        expected = model(images)
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=model.backbone).eval()
    assert loaded.prompt_config == model.prompt_config
    with torch.no_grad():
        assert torch.equal(loaded(images), expected)


def test_shared_prompts_are_one_parameter_set(tiny_vit):
    shared, separate = _model(tiny_vit, shared=True), _model(tiny_vit)
    assert shared.prompts.tokens.shape[0] == 1 and separate.prompts.tokens.shape[0] == len(separate.prompt_blocks)


def test_concat_channel_starts_as_the_pretrained_model(tiny_vit, images):
    """New patch-embedding weights start at zero: before training the prompt channels change nothing."""
    torch.manual_seed(0)
    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=2, mode="shallow", location="concat-channel"),
                        num_classes=4)
    plain = PromptedViT(model.backbone, PromptConfig(num_tokens=0), num_classes=4)
    plain.head.load_state_dict(model.head.state_dict())
    with torch.no_grad():
        assert torch.allclose(model(images), plain(images), atol=1e-6, rtol=0)


def test_cls_init_sets_each_prompt_to_its_class_mean_cls_token(tiny_vit):
    torch.manual_seed(1)
    images, labels = torch.randn(12, 3, 32, 32), torch.arange(12) % 3
    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=3, init="cls", layers=[0, 2]), num_classes=3).eval()
    model.init_prompts_from_classes([(images[:5], labels[:5]), (images[5:], labels[5:])])  # batches add up
    with torch.no_grad():
        x = model.embed(images)
        outputs = []
        for block in model.backbone.blocks[:3]:
            x = block(x)
            outputs.append(x[:, 0])
    for row, block in enumerate((0, 2)):
        expected = torch.stack([outputs[block][labels == c].mean(0) for c in range(3)])
        assert torch.allclose(model.prompts.tokens[row], expected, atol=1e-5)


def test_cls_init_needs_one_prompt_per_class(tiny_vit):
    with pytest.raises(ValueError, match="num_tokens must equal the number of classes"):
        PromptedViT(tiny_vit(), PromptConfig(num_tokens=4, init="cls"), num_classes=3)
    with pytest.raises(ValueError, match="number of classes"):  # build_model turns it into the user's error
        build_model("vpt-deep", tiny_vit(), PromptConfig(num_tokens=4, init="cls"), num_classes=3)


@pytest.mark.parametrize("fields, message", [
    (dict(location="concat-channel"), "mode='shallow'"),
    (dict(location="concat-channel", mode="shallow", layers=[2]), "layers unset"),
    (dict(location="prepend-pixel", project=8), "pixel space"),
    (dict(location="add", pooling="prompt-pool"), "prompts that are tokens"),
    (dict(num_tokens=0, pooling="prompt-pool"), "num_tokens > 0"),
    (dict(mode="shallow", shared=True), "mode='deep'"),
    (dict(location="add", init="cls"), "location='prepend'"),
    (dict(pooling="mean"), "pooling must be one of"),
    (dict(shared="yes"), "shared must be true or false"),
])
def test_combinations_that_make_no_sense_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        PromptConfig(**{"num_tokens": 3, **fields})
