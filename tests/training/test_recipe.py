"""The default recipe's pieces: the head's input standardised with the initial features' statistics, and the head
started at the converged linear probe on them."""
import torch
from conftest import train_config
from torch.utils.data import TensorDataset

from vptune import PromptConfig, build_model, load_task, save_task
from vptune.training import warm_start
from vptune.training.linear_probe import choose_probe, standardisation


def test_the_head_starts_at_the_probe_on_the_initial_features(workspace, tmp_path, tiny_vit):
    cfg = train_config(workspace, tmp_path / "run").resolved()
    assert cfg.head_norm and cfg.head_init == "probe"  # the VPT defaults
    torch.manual_seed(0)
    model = build_model("vpt-deep", tiny_vit(), PromptConfig(num_tokens=3), num_classes=3, head_norm=True)
    images = torch.randn(48, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(48) % 3
    train_set, val_set = TensorDataset(images[:36], labels[:36]), TensorDataset(images[36:], labels[36:])
    warm_start.init_head(model, model.forward_features, train_set, val_set, cfg, quiet=True)

    with torch.no_grad():
        features = model.eval().forward_features(images)
    mean, std = standardisation(features[:36])
    assert torch.allclose(model.head_norm.mean, mean.float(), atol=1e-5)
    assert torch.allclose(model.head_norm.std, std.float(), atol=1e-5)
    fit, _ = choose_probe((features[:36], labels[:36]), (features[36:], labels[36:]), 3)
    with torch.no_grad():
        assert torch.allclose(model.classify(features), fit.logits(features).float(), atol=1e-4)


def test_a_standardised_head_is_saved_and_reloaded(tmp_path, tiny_vit, images):
    backbone = tiny_vit()
    model = build_model("vpt-deep", backbone, PromptConfig(num_tokens=2), num_classes=4, head_norm=True).eval()
    model.head_norm.set_(torch.randn(24), torch.rand(24) + 0.5)
    save_task(model, tmp_path / "task")
    loaded = load_task(tmp_path / "task", backbone=backbone).eval()
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    assert torch.equal(loaded.head_norm.std, model.head_norm.std)


def test_vpt_prompts_start_as_patch_tokens_where_they_are_tokens(workspace, tmp_path):
    resolved = {name: train_config(workspace, tmp_path, **settings).resolved().prompt_init for name, settings in {
        "deep": {}, "shallow": {"method": "vpt-shallow"}, "add": {"prompt_location": "add"},
        "projected": {"prompt_project": 8}, "chosen": {"prompt_init": "zeros"}, "lora": {"method": "lora"}}.items()}
    assert resolved == {"deep": "patches", "shallow": "patches", "add": "xavier", "projected": "xavier",
                        "chosen": "zeros", "lora": "xavier"}
