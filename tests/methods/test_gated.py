"""Gated prompt tuning (Yoo et al., ICML 2023): VPT-shallow whose prompt slots leave block i as
g_i * block_i(prompts) + (1 - g_i) * prompts, g_i = sigmoid(a learned logit).

The reference runs timm's own blocks on [CLS, prompts, patches] and applies that equation by hand."""
import pytest
import torch
from conftest import assert_paths_agree, make_tiny_vit

from vptune import MultiTaskModel, PromptConfig, build_model, load_task, save_task


def gated_model(backbone, path="prefix", **prompt):
    torch.manual_seed(0)
    model = build_model("gated-vpt", backbone, PromptConfig(num_tokens=4, **prompt), num_classes=3).double()
    model.path = path
    with torch.no_grad():
        model.prompts.tokens.normal_(0, 1)
        model.prompts.gate_logits.normal_(0, 1.5)  # gates well inside (0, 1), each its own
    return model


def reference_features(model, x):
    bb, p = model.backbone, model.prompt_config.num_tokens
    first = model.prompt_blocks[0]
    h = bb.norm_pre(bb._pos_embed(bb.patch_embed(x)))
    for i, block in enumerate(bb.blocks):
        if i == first:
            h = torch.cat([h[:, :1], model.prompts.tokens[0].expand(len(h), -1, -1), h[:, 1:]], dim=1)
        entered = h[:, 1:1 + p]
        h = block(h)
        if i >= first:
            gate = torch.sigmoid(model.prompts.gate_logits[i - first])
            h = torch.cat([h[:, :1], gate * h[:, 1:1 + p] + (1 - gate) * entered, h[:, 1 + p:]], dim=1)
    return bb.fc_norm(bb.norm(h[:, 0]))


@pytest.mark.parametrize("layers", [None, [1]])
def test_tokens_path_equals_the_gated_equation(layers):
    model = gated_model(make_tiny_vit(depth=4).double(), path="tokens", layers=layers)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), reference_features(model, x), atol=1e-10, rtol=0)
    assert model.prompts.gate_logits.shape == (4 - (layers or [0])[0],)


def test_fast_path_equals_tokens_path_in_logits_and_gradients_of_prompts_and_gates():
    backbone = make_tiny_vit(depth=4).double()
    build = lambda path: gated_model(backbone, path=path)  # noqa: E731
    _, _, gates = assert_paths_agree(build, torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 2, 1]))
    assert gates[:-1].abs().min() > 0  # every gate but the last block's (its output is unread) learns


def test_closed_gates_carry_the_prompts_through_unchanged_and_open_gates_are_vpt_shallow():
    backbone = make_tiny_vit(depth=4).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    gated = gated_model(backbone)
    shallow = build_model("vpt-shallow", backbone, PromptConfig(num_tokens=4), num_classes=3).double()
    shallow.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "prompts.gate_logits"})
    with torch.no_grad():
        gated.prompts.gate_logits.fill_(100.0)  # g = 1: every block's output, as VPT-shallow
        torch.testing.assert_close(gated(x), shallow(x), atol=1e-10, rtol=0)
        gated.prompts.gate_logits.fill_(-100.0)  # g = 0: every block sees the learned prompts themselves
        deep_shared = build_model("vpt-deep", backbone, PromptConfig(num_tokens=4, shared=True), 3).double()
        deep_shared.load_state_dict({k: v for k, v in gated.state_dict().items() if k != "prompts.gate_logits"})
        torch.testing.assert_close(gated(x), deep_shared(x), atol=1e-10, rtol=0)


def test_a_gated_task_is_served_beside_a_vpt_deep_task(tmp_path):
    backbone = make_tiny_vit(depth=4)
    dirs = {"gated": save_task(gated_model(backbone).float(), tmp_path / "gated"),
            "deep": save_task(build_model("vpt-deep", backbone, PromptConfig(num_tokens=3), 3), tmp_path / "deep")}
    multi = MultiTaskModel(backbone, dirs)
    images = torch.randn(4, 3, 32, 32)
    names = ["gated", "deep", "gated", "deep"]
    for j, (out, name) in enumerate(zip(multi(images, names), names)):
        with torch.no_grad():
            torch.testing.assert_close(out, load_task(dirs[name], backbone=backbone)(images[j:j + 1])[0],
                                       atol=1e-5, rtol=0)


def test_gates_need_shallow_token_prompts():
    with pytest.raises(ValueError, match="gated .* needs mode='shallow'"):
        PromptConfig(gated=True, mode="deep")
