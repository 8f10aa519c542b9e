"""Training loop, methods and the command line, end to end on a tiny random ViT and a generated image folder."""
import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from vptune import PromptConfig
from vptune.cli import main
from vptune.methods import build_model
from vptune.train import TrainConfig, TrainingError, train, warmup_cosine

COLOURS = {"red": (210, 40, 40), "green": (40, 210, 40), "blue": (40, 40, 210)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A 3-class image folder (noisy solid colours) and a tiny ViT's weights file: what an offline user has."""
    root = tmp_path_factory.mktemp("ws")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (36, 36, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    save_file(vit.state_dict(), str(root / "tiny.safetensors"))
    return root


def config(ws, output, **overrides):
    settings = dict(data=str(ws / "images"), output=str(output), backbone="test_vit",
                    weights=str(ws / "tiny.safetensors"), img_size=32, epochs=2, batch_size=8, num_tokens=4)
    settings.update(overrides)
    return TrainConfig(**settings)


def cli_args(ws, output, *extra):
    return ["train", "--data", str(ws / "images"), "--output", str(output), "--backbone", "test_vit",
            "--weights", str(ws / "tiny.safetensors"), "--img-size", "32", "--epochs", "2", "--batch-size", "8",
            "--num-tokens", "4", "--quiet", *extra]


def without_timings(rows):
    return [{k: v for k, v in row.items() if k not in ("seconds", "img_per_s")} for row in rows]


def read_metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# -------------------------------------------------------------------------------------------------- CLI
def test_cli_train_eval_predict_info(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(cli_args(workspace, run)) == 0
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json", "best", "last",
                                               "state.pt"}
    assert len(read_metrics(run)) == 2
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["test_top1"] <= 1.0 and summary["trainable_parameters"] > 0

    assert main(["eval", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "red" in out
    assert (run / "eval" / "test_confusion.png").stat().st_size > 1000
    assert json.loads((run / "eval" / "test_metrics.json").read_text())["num_images"] == 6

    image = workspace / "images" / "red" / "0.png"
    assert main(["predict", str(run), str(image), "--top-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["image"] == str(image) and len(result[0]["top"]) == 2
    assert abs(sum(g["probability"] for g in result[0]["top"])) <= 1.0 + 1e-6

    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert "% of the backbone" in out and "prompt.safetensors" in out


def test_config_file_and_flags_flags_win(workspace, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("epochs: 1\nnum-tokens: 7\nmethod: vpt-shallow\n")
    run = tmp_path / "run"
    assert main(cli_args(workspace, run, "--config", str(settings), "--method", "vpt-deep")) == 0
    recorded = json.loads((run / "best" / "task.json").read_text())
    assert recorded["method"] == "vpt-deep"  # the flag beat the file
    assert recorded["prompt"]["num_tokens"] == 4  # cli_args passes --num-tokens 4, beating the file's 7


@pytest.mark.parametrize("extra, message", [
    (["--method", "prefix-magic"], "unknown method 'prefix-magic'"),
    (["--num-tokens", "-3"], "PromptConfig.num_tokens"),
    (["--prompt-location", "middle"], "PromptConfig.location"),
    (["--lr", "0"], "lr must be a positive number"),
    (["--data", "/no/such/folder"], "/no/such/folder"),
])
def test_bad_flags_give_a_one_line_error(workspace, tmp_path, capsys, extra, message):
    assert main(cli_args(workspace, tmp_path / "run", *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("vptune: error:") and message in err


def test_bad_config_key_is_named(workspace, tmp_path, capsys):
    settings = tmp_path / "s.yaml"
    settings.write_text("epochz: 3\n")
    assert main(cli_args(workspace, tmp_path / "run", "--config", str(settings))) == 1
    assert "unknown setting(s) ['epochz']" in capsys.readouterr().err


def test_refuses_to_overwrite_without_flag(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    assert main(cli_args(workspace, run)) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "keep me"


# ------------------------------------------------------------------------------------- determinism, resume
def test_same_seed_same_metrics(workspace, tmp_path):
    first = read_metrics(_trained(workspace, tmp_path / "a"))
    second = read_metrics(_trained(workspace, tmp_path / "b"))
    assert without_timings(first) == without_timings(second)


def _trained(ws, out, **overrides):
    train(config(ws, out, **overrides), quiet=True)
    return out


def test_frozen_blocks_before_the_first_prompt_are_run_once_with_the_same_results(workspace, tmp_path, capsys):
    runs = {}
    for cache in ("auto", "off"):
        runs[cache] = tmp_path / cache
        train(config(workspace, runs[cache], prompt_layers="last 2", prompt_dropout=0.2, cache_frozen=cache))
        log = capsys.readouterr().out
        assert ("computing the 4 frozen blocks before the first prompt once per image" in log) == (cache == "auto")
    cached, uncached = (read_metrics(runs[c]) for c in ("auto", "off"))
    for a, b in zip(cached, uncached):
        assert a["val_top1"] == b["val_top1"] and a["train_top1"] == b["train_top1"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    prompts = [load_file(str(runs[c] / "last" / "prompt.safetensors")) for c in ("auto", "off")]
    assert all(torch.allclose(prompts[0][k], prompts[1][k], atol=1e-5) for k in prompts[0])


def test_gradient_checkpointing_flag_trains_to_the_same_prompts(workspace, tmp_path):
    plain, recomputed = tmp_path / "plain", tmp_path / "recomputed"
    assert main(cli_args(workspace, plain)) == 0
    assert main(cli_args(workspace, recomputed, "--grad-checkpointing")) == 0
    assert "grad_checkpointing: true" in (recomputed / "config.yaml").read_text()
    assert without_timings(read_metrics(plain)) == without_timings(read_metrics(recomputed))
    prompts = [load_file(str(run / "last" / "prompt.safetensors")) for run in (plain, recomputed)]
    assert all(torch.equal(prompts[0][k], prompts[1][k]) for k in prompts[0])


def test_random_augmentation_turns_the_frozen_block_cache_off(workspace, tmp_path, capsys):
    train(config(workspace, tmp_path / "run", prompt_layers="last 2", recipe="fgvc", epochs=1))
    assert "not caching the 4 frozen blocks before the first prompt: recipe 'fgvc' augments at random" in \
        capsys.readouterr().out


def test_resume_ends_where_an_uninterrupted_run_ends(workspace, tmp_path, monkeypatch):
    whole = _trained(workspace, tmp_path / "whole", epochs=3, prompt_dropout=0.2)

    import vptune.train as loop
    real_epoch = loop._train_epoch

    def interrupted(*args, **kwargs):
        if args[6] == 2:  # the third epoch
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config(workspace, tmp_path / "cut", epochs=3, prompt_dropout=0.2), quiet=True)
    monkeypatch.setattr(loop, "_train_epoch", real_epoch)
    assert len(read_metrics(tmp_path / "cut")) == 2
    assert main(["train", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0

    assert without_timings(read_metrics(tmp_path / "cut")) == without_timings(read_metrics(whole))
    resumed, uninterrupted = (load_file(str(d / "last" / "prompt.safetensors")) for d in (tmp_path / "cut", whole))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(workspace, tmp_path, monkeypatch):
    run = tmp_path / "run"
    import vptune.train as loop
    real_epoch = loop._train_epoch

    def poisoned(forward, model, *args, **kwargs):
        if args[4] == 1:  # second epoch: the head starts returning NaN
            with torch.no_grad():
                model.head.weight.fill_(float("nan"))
        return real_epoch(forward, model, *args, **kwargs)

    monkeypatch.setattr(loop, "_train_epoch", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at epoch 2.*last good checkpoint"):
        train(config(workspace, run), quiet=True)
    good = load_file(str(run / "last" / "prompt.safetensors"))
    assert torch.isfinite(good["head.weight"]).all()


def test_warmup_cosine_schedule_never_wastes_a_step():
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)


# ----------------------------------------------------------------------------------------------- methods
EXPECTED_TRAINABLE = {
    "vpt-deep": lambda n: n.startswith(("prompts.", "head.")),
    "vpt-shallow": lambda n: n.startswith(("prompts.", "head.")),
    "linear": lambda n: n.startswith("head."),
    "bias": lambda n: n.startswith("head.") or n.endswith(".bias"),
    "partial-1": lambda n: n.startswith(("head.", "backbone.blocks.5.", "backbone.norm.")),
    "full": lambda n: True,
    "lora": lambda n: n.startswith("head.") or "lora_" in n,
}


@pytest.mark.parametrize("method", EXPECTED_TRAINABLE)
def test_each_method_changes_only_its_own_parameters(workspace, method):
    torch.manual_seed(0)
    backbone = timm.create_model("test_vit", pretrained=False, num_classes=0, img_size=32)
    model = build_model(method, backbone, PromptConfig(num_tokens=3), num_classes=3).train()
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


@pytest.mark.parametrize("method", ["linear", "bias", "lora", "vpt-shallow"])
def test_every_method_trains_end_to_end_and_reloads(workspace, tmp_path, method):
    from vptune.serve import Predictor

    run = _trained(workspace, tmp_path / method, method=method, epochs=1)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["method"] == method and summary["test_top1"] is not None
    predictor = Predictor.from_task(run)
    assert len(predictor.predict_files([workspace / "images" / "blue" / "1.png"], top_k=3)[0]["top"]) == 3


def test_demo_smoke(tmp_path, capsys):
    """The main job's pipeline, small: default backbone at 112 px, digits, 64 images, one epoch per method."""
    assert main(["demo", "--smoke", "--output", str(tmp_path / "demo"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["method"] for r in rows] == ["linear", "vpt-shallow", "vpt-deep"]
    assert rows[2]["trainable_parameters"] == 12 * 10 * 384 + 384 * 10 + 10
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 1000
    assert "| vpt-deep |" in capsys.readouterr().out
