"""The method registry: each method trains exactly its own parameters, and every method trains end to end."""
import pytest
import torch
from conftest import make_tiny_vit, train_config

from vptune import ConfigError, Predictor, PromptConfig, RunDir, build_model, get_method, train
from vptune.methods import REGISTRY, Method, method_from_dict

EXPECTED_TRAINABLE = {
    "vpt-deep": lambda n: n.startswith(("prompts.", "head.")),
    "vpt-shallow": lambda n: n.startswith(("prompts.", "head.")),
    "linear": lambda n: n.startswith("head."),
    "bias": lambda n: n.startswith("head.") or n.endswith(".bias"),
    "partial-1": lambda n: n.startswith(("head.", "backbone.blocks.5.", "backbone.norm.")),
    "full": lambda n: True,
    "lora": lambda n: n.startswith("head.") or "lora_" in n,
    "vfpt": lambda n: n.startswith(("prompts.", "head.")),
    "gated-vpt": lambda n: n.startswith(("prompts.", "head.")),
    "e2vpt": lambda n: n.startswith(("prompts.", "head.")),
    "da-vpt": lambda n: n.startswith(("prompts.", "head.")),
}


@pytest.mark.parametrize("method", EXPECTED_TRAINABLE)
def test_each_method_changes_only_its_own_parameters(method):
    model = build_model(method, make_tiny_vit(sharp=False), PromptConfig(num_tokens=3), num_classes=3).train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    for _ in range(2):  # LoRA's B starts at zero: A only moves from the second step on
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n in before if EXPECTED_TRAINABLE[method](n)}
    assert changed and changed <= expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected


def test_every_registered_method_is_covered_and_round_trips_through_task_json():
    assert {get_method(name).name for name in EXPECTED_TRAINABLE} == set(REGISTRY)
    for name in EXPECTED_TRAINABLE:
        method = get_method(name, lora_rank=4)
        assert isinstance(method, Method) and method.label == name
        assert method_from_dict(method.to_dict()) == method


@pytest.mark.parametrize("name", ["partial-k", "partial-K", "partial-", "partial-0", "vpt", "LoRA"])
def test_names_that_are_not_methods_are_refused(name):
    with pytest.raises(ConfigError):
        get_method(name)


def test_partial_k_training_trains_the_last_k_blocks_not_the_head_alone(workspace, tmp_path):
    """Bug: `--method partial-k` (the literal placeholder) was accepted and silently trained the head only."""
    with pytest.raises(ConfigError, match="unknown method 'partial-k'"):
        train(train_config(workspace, tmp_path / "bad", method="partial-k"), quiet=True)
    assert not (tmp_path / "bad").exists()
    train(train_config(workspace, tmp_path / "good", method="partial-2", epochs=1), quiet=True)
    task = RunDir.find_task(tmp_path / "good")
    from safetensors.torch import load_file

    tuned = load_file(str(task / "prompt.safetensors"))
    assert {k.split(".")[2] for k in tuned if k.startswith("backbone.blocks.")} == {"4", "5"}


@pytest.mark.parametrize("method", ["linear", "bias", "lora", "vpt-shallow", "vfpt", "gated-vpt", "e2vpt"])
def test_every_method_trains_end_to_end_and_reloads(workspace, tmp_path, method):
    summary = train(train_config(workspace, tmp_path / method, method=method, epochs=1), quiet=True)
    assert summary["method"] == method and summary["test_top1"] is not None
    predictor = Predictor.from_task(tmp_path / method)
    assert len(predictor.predict_files([workspace / "images" / "blue" / "1.png"], top_k=3)[0]["top"]) == 3
