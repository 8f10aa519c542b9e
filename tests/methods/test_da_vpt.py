"""DA-VPT (Ren et al., CVPR 2025): VPT-deep plus a Proxy Anchor loss (Kim et al., CVPR 2020) at the last prompted
block, its prompt tokens the class proxies, on the [CLS] token and the mean image token entering that block.

The references: Proxy Anchor written from its paper's equation with explicit loops, and the tokens entering the
block computed by running timm's blocks by hand."""
import math

import pytest
import torch
from conftest import make_tiny_vit, train_config

from vptune import ConfigError, MultiTaskModel, PromptConfig, build_model, get_method, load_task, train
from vptune.methods.da_vpt import ALPHA, DELTA, proxy_anchor_loss


def reference_proxy_anchor(features, labels, proxies):
    """Kim et al. 2020, eq. 4, one proxy and one sample at a time (class c's proxy: row c mod P)."""
    cos = lambda a, b: float((a @ b / (a.norm() * b.norm())).detach())  # noqa: E731
    pos_total, with_positives, neg_total = 0.0, 0, 0.0
    for j, proxy in enumerate(proxies):
        pos = [math.exp(-ALPHA * (cos(x, proxy) - DELTA)) for x, y in zip(features, labels) if y % len(proxies) == j]
        neg = [math.exp(ALPHA * (cos(x, proxy) + DELTA)) for x, y in zip(features, labels) if y % len(proxies) != j]
        if pos:
            pos_total, with_positives = pos_total + math.log(1 + sum(pos)), with_positives + 1
        neg_total += math.log(1 + sum(neg))
    return pos_total / with_positives + neg_total / len(proxies)


def test_proxy_anchor_is_its_papers_equation():
    torch.manual_seed(0)
    features, proxies = torch.randn(6, 8, dtype=torch.float64) * 0.1, torch.randn(4, 8, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 5, 5, 2])  # class 5 shares proxy 1; proxy 3 has no positive
    assert proxy_anchor_loss(features, labels, proxies).item() == pytest.approx(
        reference_proxy_anchor(features, labels, proxies), rel=1e-6)


def tokens_entering_last_block(model, x):
    """The real tokens (no prompt slots) entering the last block of a VPT-deep model, by hand."""
    bb, p = model.backbone, model.prompt_config.num_tokens
    h = bb.norm_pre(bb._pos_embed(bb.patch_embed(x)))
    for i, block in enumerate(bb.blocks):
        prompts = model.prompts.tokens[i].expand(len(h), -1, -1)
        h = torch.cat([h[:, :1], prompts, h[:, 1 + p:] if i else h[:, 1:]], dim=1)
        if i == len(bb.blocks) - 1:
            return torch.cat([h[:, :1], h[:, 1 + p:]], dim=1)
        h = block(h)


@pytest.mark.parametrize("path", ["tokens", "prefix"])
def test_the_loss_guides_the_last_blocks_prompts_with_the_tokens_entering_it(path):
    torch.manual_seed(0)
    model = build_model(get_method("da-vpt", metric_weight=0.5), make_tiny_vit(depth=3), PromptConfig(num_tokens=3),
                        num_classes=4).double()
    model.path = path
    with torch.no_grad():
        model.prompts.tokens.normal_(0, 1)
    x, labels = torch.randn(5, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 1])
    model.train()
    model(x)
    loss = model.method.training_loss(model, labels)
    entering = tokens_entering_last_block(model, x)
    proxies = model.prompts.tokens[-1]
    expected = 0.5 * (reference_proxy_anchor(entering[:, 1:].mean(1), labels, proxies)
                      + reference_proxy_anchor(entering[:, 0], labels, proxies))
    assert loss.item() == pytest.approx(expected, rel=1e-9)
    loss.backward()
    assert all(model.prompts.tokens.grad[i].abs().sum() > 0 for i in range(3))  # every block's prompt is guided
    assert model.method.training_loss(model, labels) is None  # read once per forward
    model.eval()
    model(x)
    assert model.method.training_loss(model, labels) is None  # nothing kept at inference


def test_da_vpt_trains_through_the_loop_and_serves_as_vpt_deep(workspace, tmp_path):
    settings = dict(epochs=1, num_tokens=3)
    plain = train(train_config(workspace, tmp_path / "deep", **settings), quiet=True)
    unguided = train(train_config(workspace, tmp_path / "zero", method="da-vpt", metric_weight=0.0, **settings),
                     quiet=True)
    guided = train(train_config(workspace, tmp_path / "da", method="da-vpt", **settings), quiet=True)
    deep, zero, da = (load_task(tmp_path / name / "best") for name in ("deep", "zero", "da"))
    assert torch.equal(zero.prompts.tokens, deep.prompts.tokens) and unguided["test_top1"] == plain["test_top1"]
    assert not torch.equal(da.prompts.tokens, deep.prompts.tokens)  # the metric loss moved the prompts
    assert guided["trainable_parameters"] == plain["trainable_parameters"]  # a loss, not parameters
    multi = MultiTaskModel(deep.backbone, {"da": tmp_path / "da" / "best", "deep": tmp_path / "deep" / "best"})
    assert all(multi._in_shared_pass(task) for task in multi.tasks.values())
    images, names = torch.randn(4, 3, 32, 32), ["da", "deep", "da", "deep"]
    alone = {"da": da, "deep": load_task(tmp_path / "deep" / "best", backbone=deep.backbone)}
    with torch.no_grad():
        for j, (out, name) in enumerate(zip(multi(images, names), names)):
            torch.testing.assert_close(out, alone[name](images[j:j + 1])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("settings, match", [
    (dict(metric_weight=-1.0), "metric_weight must be a number >= 0"),
    (dict(metric_weight=float("nan")), "metric_weight must be a number >= 0"),
    (dict(prompt_location="add"), "da-vpt's proxies are prompt tokens"),
])
def test_bad_da_vpt_settings_are_one_line_errors(workspace, tmp_path, settings, match):
    with pytest.raises(ConfigError, match=match) as err:
        train_config(workspace, tmp_path / "run", method="da-vpt", **settings).resolved()
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
