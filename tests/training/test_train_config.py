"""TrainConfig: flags are generated from its fields; YAML + overrides are a library function."""
import dataclasses

import pytest
import torch

import vptune
from vptune import ConfigError, TrainConfig, load_train_config
from vptune.cli import build_parser


def test_every_setting_has_help_and_a_flag():
    parser = build_parser()
    train = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("train"))
    flags = {opt for action in train._actions for opt in action.option_strings}
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata["help"], field.name
        flag = field.name.replace("_", "-")
        assert f"--{flag}" in flags or f"--no-{flag}" in flags, field.name


def test_yaml_then_overrides(tmp_path):
    (tmp_path / "s.yaml").write_text("epochs: 3\nmethod: linear\nprompt-layers: 0,1\n")
    cfg = load_train_config(tmp_path / "s.yaml", epochs=5)
    assert (cfg.epochs, cfg.method) == (5, "linear")
    assert cfg.prompt_config().layers == [0, 1]
    with pytest.raises(ConfigError, match="num_tokens auto is set from the backbone"):  # only training knows it
        dataclasses.replace(cfg, num_tokens="auto").prompt_config()


def test_resolved_fills_the_methods_defaults():
    vpt = TrainConfig(method="vpt-deep").resolved()
    adamw = TrainConfig(method="lora").resolved()
    assert vpt.optimizer == "adamw" and vpt.lr == vptune.get_method("vpt-deep").default_lr
    assert vpt.head_norm is True and vpt.head_init == "probe"
    assert TrainConfig(method="vpt-deep", optimizer="sgd", head_norm=False).resolved().head_norm is False
    assert adamw.optimizer == "adamw" and adamw.lr == vptune.get_method("lora").default_lr
    assert TrainConfig(method="linear", head_lr=0.5).resolved().head_lr == 0.5


@pytest.mark.parametrize("method", ["full", "bias", "partial-2", "lora", "vpt-shallow"])
def test_every_method_trained_by_gradient_steps_has_vpt_deeps_head(method):
    """Methods differ only in what else trains: the head (standardised input, started at the probe, its lr) is one."""
    head = ("head_norm", "head_init", "head_lr")
    vpt = TrainConfig(method="vpt-deep").resolved()
    assert [getattr(TrainConfig(method=method).resolved(), k) for k in head] == [getattr(vpt, k) for k in head]


@pytest.mark.parametrize("settings, message", [
    (dict(epochs=2.5), "epochs must be an integer"),
    (dict(momentum=float("nan")), "momentum must be a finite number"),
    (dict(warmup_epochs=float("nan")), "warmup_epochs must be a finite number"),
    (dict(subset=-1), "subset must be a positive number"),
    (dict(prompt_init="ones"), "prompt_init must be one of xavier, patches, cls, zeros, normal"),
    (dict(cache_stem="yes"), "cache_stem must be one of auto, off"),
    (dict(prompt_layers=[0, "x"]), "prompt_layers must be"),
    (dict(seed=-1), "seed must be a whole number from 0 to 4294967295"),  # numpy's splits refuse it later
    (dict(seed=2**64), "seed must be a whole number from 0 to 4294967295"),  # torch overflowed on it
    (dict(num_tokens="many"), "num_tokens must be a whole number >= 0 or 'auto', got 'many'"),
    (dict(num_tokens=-1), "num_tokens must be an integer >= 0"),
    (dict(num_tokens=2.5), "num_tokens must be an integer or text"),
])
def test_bad_values_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings).resolved()


def test_the_largest_seed_derives_every_random_stream_without_overflow():
    from vptune.training.config import MAX_SEED
    from vptune.training.distributed import SINGLE, EpochItems, GlobalBatchSampler

    TrainConfig(seed=MAX_SEED).resolved()
    sampler = GlobalBatchSampler(10, 4, seed=MAX_SEED, world=SINGLE)
    sampler.set_epoch(99)
    assert sorted(i for batch in sampler.batches for i in batch) == list(range(10))
    items = EpochItems(torch.utils.data.TensorDataset(torch.arange(3)), seed=MAX_SEED)
    assert items[(99, 2)][0].item() == 2  # its seed, (seed * 1,000,003 + 100) * 10,000,019 + 2, is over 2**64
