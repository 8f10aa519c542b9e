"""E2VPT's prompt pruning (Han et al., ICCV 2023): a mask variable rho multiplies each prompt token (and each
segment of its width); its importance is E |dL/d rho|; the lowest-scoring tokens of every block, then segments of
the kept tokens, are pruned, and the kept prompts are rewound to their initial values and trained again.

The references: the importance by autograd on explicit mask variables, and a pruned model against the unpruned one
with the pruned tokens hidden from every query (attention written out by hand) and the pruned segments zeroed."""
import json

import pytest
import torch
from conftest import killed_in_epoch, make_tiny_vit, train_config

from vptune import ConfigError, MultiTaskModel, PromptConfig, build_model, get_method, load_task, train
from vptune.model import PruningPlan, plan_pruning, prompt_importance, prune_prompts
from vptune.model.prompts import segment_sizes


def e2vpt_model(backbone, num_tokens=4, kv_tokens=2):
    torch.manual_seed(0)
    model = build_model(get_method("e2vpt", kv_tokens=kv_tokens), backbone, PromptConfig(num_tokens=num_tokens),
                        num_classes=3).double()
    with torch.no_grad():
        model.prompts.tokens.normal_(0, 1)
        model.prompts.kv.normal_(0, 1)
    return model


def masked_reference(model, x, hidden, zeroed):
    """The unpruned model's features with prompt slot j of block i hidden from every query where hidden[i, j], and
    its width's dimensions set to zero where zeroed[i, j] (one ViT block's attention written out by hand)."""
    bb, p = model.backbone, model.prompt_config.num_tokens
    h = bb.norm_pre(bb._pos_embed(bb.patch_embed(x)))
    for i, block in enumerate(bb.blocks):
        prompts = (model.prompts.tokens[i] * ~zeroed[i]).expand(len(h), -1, -1)
        h = torch.cat([h[:, :1], prompts, h[:, 1 + p:] if i else h[:, 1:]], dim=1)
        keys_hidden = torch.zeros(h.shape[1], dtype=torch.bool)
        keys_hidden[1:1 + p] = hidden[i]
        attn, (batch, n, width), heads = block.attn, h.shape, block.attn.num_heads
        q, k, v = attn.qkv(block.norm1(h)).chunk(3, dim=-1)
        learned_k, learned_v = model.prompts.kv[i].chunk(2, dim=-1)
        k = torch.cat([k, learned_k.expand(batch, -1, -1)], dim=1)
        v = torch.cat([v, learned_v.expand(batch, -1, -1)], dim=1)
        keys_hidden = torch.cat([keys_hidden, torch.zeros(len(learned_k), dtype=torch.bool)])
        split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
        logits = split(q) @ split(k).transpose(-1, -2) * (width // heads) ** -0.5
        weights = logits.masked_fill(keys_hidden, float("-inf")).softmax(dim=-1)
        h = h + block.ls1(attn.proj((weights @ split(v)).transpose(1, 2).reshape(batch, n, width)))
        h = h + block.ls2(block.mlp(block.norm2(h)))
    return bb.fc_norm(bb.norm(h[:, 0]))


def test_importance_is_the_mean_absolute_gradient_of_the_loss_by_each_mask_variable():
    model = e2vpt_model(make_tiny_vit(depth=3).double())
    batches = [(torch.randn(3, 3, 32, 32, dtype=torch.float64), torch.tensor([0, 1, 2])) for _ in range(2)]
    loss = torch.nn.functional.cross_entropy
    tokens, scores = model.prompts.tokens, prompt_importance(model, batches, loss, segments=5)
    sizes = segment_sizes(tokens.shape[-1], 5)
    rho = torch.ones(*tokens.shape[:2], 5, dtype=torch.float64, requires_grad=True)  # one per segment
    expected_tokens, expected_segments = 0, 0
    for x, y in batches:
        masked = tokens * rho.repeat_interleave(torch.tensor(sizes), dim=-1)
        out = torch.func.functional_call(model, {"prompts.tokens": masked}, (x,))
        (grad,) = torch.autograd.grad(loss(out, y), rho)
        expected_segments = expected_segments + grad.abs() / 2
        expected_tokens = expected_tokens + grad.sum(-1).abs() / 2  # a token's rho scales all its segments at once
    torch.testing.assert_close(scores[0], expected_tokens, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(scores[1], expected_segments, atol=1e-12, rtol=1e-9)
    assert scores[0].min() > 0


def test_the_plan_keeps_each_blocks_highest_scores_and_then_its_kept_tokens_best_segments():
    tokens = torch.tensor([[0.5, 0.1, 0.9, 0.3], [0.2, 0.2, 0.0, 0.7]])  # 2 blocks x 4 tokens
    segments = torch.stack([torch.full((2, 4), 10.0), torch.rand(2, 4)], dim=-1)  # every segment 1 scores lower
    plan = plan_pruning(tokens, segments, prune_tokens=0.5, prune_segments=0.5)
    assert plan.keep == [[0, 2], [0, 3]]  # block 1: a tie of 0.2 goes to the earlier token
    assert plan.segment_mask == [[[1, 0], [1, 0]], [[1, 0], [1, 0]]]
    segments[0, 0] = 0.0  # within a block, the lowest segments of its kept tokens go, whichever token holds them
    assert plan_pruning(tokens, segments, 0.5, 0.5).segment_mask[0] == [[0, 0], [1, 1]]
    assert plan_pruning(tokens, None, 0.25, 0.0) == PruningPlan([[0, 2, 3], [0, 1, 3]])
    with pytest.raises(ValueError, match="leaves none"):
        plan_pruning(tokens, None, 0.9, 0.0)


@pytest.mark.parametrize("path", ["tokens", "prefix"])
def test_a_pruned_model_is_the_unpruned_one_with_pruned_tokens_hidden_and_segments_zeroed(path):
    full = e2vpt_model(make_tiny_vit(depth=3).double())
    pruned = e2vpt_model(full.backbone)
    plan = PruningPlan(keep=[[0, 2], [1, 3], [0, 1]],
                       segment_mask=[[[1, 0, 1], [1, 1, 1]], [[0, 0, 1], [1, 1, 0]], [[1, 1, 1], [1, 1, 1]]])
    prune_prompts(pruned, plan)
    pruned.path = path
    assert pruned.prompts.tokens.shape == (3, 2, full.embed_dim) and pruned.prompt_config.num_tokens == 2
    hidden = torch.ones(3, 4, dtype=torch.bool)
    zeroed = torch.zeros(3, 4, full.embed_dim, dtype=torch.bool)
    for i, (keep, mask) in enumerate(zip(plan.keep, plan.segment_mask)):
        hidden[i, keep] = False
        for j, segments in zip(keep, mask):
            zeroed[i, j] = ~torch.tensor(segments, dtype=torch.bool).repeat_interleave(torch.tensor(
                segment_sizes(full.embed_dim, 3)))
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(pruned.forward_features(x), masked_reference(full, x, hidden, zeroed),
                                   atol=1e-10, rtol=0)
    assert (pruned.prompts.tokens[1, 0] == 0).sum() == sum(segment_sizes(full.embed_dim, 3)[:2])  # stored as zeros
    loss = pruned(x).sum()
    loss.backward()
    assert (pruned.prompts.tokens.grad[1, 0, :8] == 0).all()  # a pruned segment stays at zero


def test_a_pruned_run_rewinds_trains_saves_a_smaller_task_and_serves_beside_vpt_deep(workspace, tmp_path, monkeypatch):
    from vptune.training import loop

    started = []  # the prompts each run starts from (after the data init, before pruning)
    real_init = loop.init_prompts_from_patches

    def recorded(model, *args):
        real_init(model, *args)
        if model.prompts.kv is not None:  # the E2VPT runs
            started.append((model.prompts.tokens.detach().clone(), model.prompts.kv.detach().clone()))

    monkeypatch.setattr(loop, "init_prompts_from_patches", recorded)
    cfg = train_config(workspace, tmp_path / "run", method="e2vpt", kv_tokens=2, prune_tokens=0.5,
                       prune_segments=0.25, epochs=1)
    summary = train(cfg, quiet=True)
    (first_tokens, first_kv), (again_tokens, again_kv) = started
    assert torch.equal(first_tokens, again_tokens) and torch.equal(first_kv, again_kv)  # rewound, then pruned

    plan = PruningPlan.from_dict(json.loads((tmp_path / "run" / "pruning.json").read_text()))
    task = load_task(tmp_path / "run" / "best")
    assert task.prompt_config.num_tokens == 2 and plan.length == 2
    assert summary["pruning"]["tokens_kept"] == 2
    assert summary["pruning"]["segments_pruned"] == len(plan.keep) * 2 * 16 // 4  # blocks x tokens x 16 x 0.25
    assert summary["trainable_parameters"] < summary["pruning"]["unpruned_trainable_parameters"]
    assert summary["checkpoint_bytes"] < summary["pruning"]["unpruned_checkpoint_bytes"]
    mask = task.prompts.width_mask()
    assert mask.sum() < mask.numel() and (task.prompts.tokens[mask == 0] == 0).all()

    deep = train(train_config(workspace, tmp_path / "deep", epochs=1), quiet=True)
    assert deep["test_top1"] is not None
    multi = MultiTaskModel(task.backbone, {"pruned": tmp_path / "run" / "best", "deep": tmp_path / "deep" / "best"})
    images, names = torch.randn(4, 3, 32, 32), ["pruned", "deep", "deep", "pruned"]
    alone = {"pruned": task, "deep": load_task(tmp_path / "deep" / "best", backbone=task.backbone)}
    with torch.no_grad():
        for j, (out, name) in enumerate(zip(multi(images, names), names)):
            torch.testing.assert_close(out, alone[name](images[j:j + 1])[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("stage", ["unpruned", "run"])
def test_a_pruning_run_killed_in_either_run_resumes_to_the_same_result(workspace, tmp_path, monkeypatch, stage):
    settings = dict(method="e2vpt", kv_tokens=2, prune_tokens=0.5, epochs=2)
    whole = train(train_config(workspace, tmp_path / "whole", **settings), quiet=True)
    with killed_in_epoch(monkeypatch, lambda fit, epoch: fit.run.path.name == stage and epoch == 1):
        train(train_config(workspace, tmp_path / "run", **settings), quiet=True)
    resumed = train(train_config(workspace, tmp_path / "run", **settings), resume=True, quiet=True)
    assert resumed["test_top1"] == whole["test_top1"] and resumed["pruning"] == whole["pruning"]
    a, b = (load_task(tmp_path / name / "best") for name in ("whole", "run"))
    assert torch.equal(a.prompts.tokens, b.prompts.tokens) and torch.equal(a.head.weight, b.head.weight)


@pytest.mark.parametrize("settings, match", [
    (dict(prune_tokens=1.0), "prune_tokens must be a number from 0"),
    (dict(prune_segments=-0.1), "prune_segments must be a number from 0"),
    (dict(prune_tokens=0.5, num_tokens=1), "prunes every prompt token"),
])
def test_bad_pruning_settings_are_one_line_errors(workspace, tmp_path, settings, match):
    with pytest.raises(ConfigError, match=match) as err:
        train_config(workspace, tmp_path / "run", method="e2vpt", **settings).resolved()
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()
