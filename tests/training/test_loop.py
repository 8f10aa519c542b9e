"""The training loop on a tiny random ViT and a generated image folder: determinism, resume, the stem cache,
gradient checkpointing, the NaN guard, the schedule."""
import os
from pathlib import Path

import pytest
import torch
from conftest import train_config, without_timings
from safetensors.torch import load_file

from vptune import ConfigError, RunDir, TrainingError, train
from vptune.training import checkpoint, loop, warmup_cosine


def trained(ws, out, **overrides):
    train(train_config(ws, out, **overrides), quiet=True)
    return RunDir(out)


def test_same_seed_same_metrics(workspace, tmp_path):
    first, second = (trained(workspace, tmp_path / name).read_metrics() for name in "ab")
    assert len(first) == 2 and without_timings(first) == without_timings(second)


def test_the_stem_is_run_once_per_image_with_the_same_results(workspace, tmp_path, caplog):
    runs = {}
    for cache in ("auto", "off"):
        caplog.clear()
        with caplog.at_level("INFO", logger="vptune"):
            runs[cache] = trained(workspace, tmp_path / cache, prompt_layers="last 2", prompt_dropout=0.2,
                                  cache_stem=cache)
        said = "computing the stem (4 frozen blocks before the first prompt) once per image" in caplog.text
        assert said == (cache == "auto")
    cached, uncached = (runs[c].read_metrics() for c in ("auto", "off"))
    for a, b in zip(cached, uncached):
        assert a["val_top1"] == b["val_top1"] and a["train_top1"] == b["train_top1"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    prompts = [load_file(str(runs[c].last / "prompt.safetensors")) for c in ("auto", "off")]
    assert all(torch.allclose(prompts[0][k], prompts[1][k], atol=1e-5) for k in prompts[0])


def test_random_augmentation_turns_the_stem_cache_off(workspace, tmp_path, caplog):
    with caplog.at_level("INFO", logger="vptune"):
        trained(workspace, tmp_path / "run", prompt_layers="last 2", recipe="fgvc", epochs=1)
    assert "not caching the stem (4 frozen blocks before the first prompt): recipe 'fgvc' augments at random" \
        in caplog.text


def test_old_config_files_with_cache_frozen_still_load(tmp_path):
    from vptune.training import load_train_config

    (tmp_path / "old.yaml").write_text("cache_frozen: 'off'\n")
    assert load_train_config(tmp_path / "old.yaml").cache_stem == "off"


def test_resume_ends_where_an_uninterrupted_run_ends(workspace, tmp_path, monkeypatch):
    whole = trained(workspace, tmp_path / "whole", epochs=3, prompt_dropout=0.2)
    real_epoch = loop.train_epoch

    def interrupted(fit, dataset, epoch):
        if epoch == 2:  # the third epoch
            raise KeyboardInterrupt
        return real_epoch(fit, dataset, epoch)

    monkeypatch.setattr(loop, "train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trained(workspace, tmp_path / "cut", epochs=3, prompt_dropout=0.2)
    monkeypatch.setattr(loop, "train_epoch", real_epoch)
    cut = RunDir(tmp_path / "cut")
    assert len(cut.read_metrics()) == 2
    train(train_config(workspace, cut.path), resume=True, quiet=True)

    assert without_timings(cut.read_metrics()) == without_timings(whole.read_metrics())
    resumed, uninterrupted = (load_file(str(run.last / "prompt.safetensors")) for run in (cut, whole))
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(workspace, tmp_path, monkeypatch):
    real_epoch = loop.train_epoch

    def poisoned(fit, dataset, epoch):
        if epoch == 1:  # second epoch: the head starts returning NaN
            with torch.no_grad():
                fit.model.head.weight.fill_(float("nan"))
        return real_epoch(fit, dataset, epoch)

    monkeypatch.setattr(loop, "train_epoch", poisoned)
    with pytest.raises(TrainingError, match="loss became nan at epoch 2.*last good checkpoint"):
        trained(workspace, tmp_path / "run", cross_fit=False)  # a learned head (cross-fit sets it each step)
    good = load_file(str(RunDir(tmp_path / "run").last / "prompt.safetensors"))
    assert torch.isfinite(good["head.weight"]).all()


def test_invalid_settings_are_refused_before_an_old_run_is_replaced(workspace, tmp_path):
    old = trained(workspace, tmp_path / "run", epochs=1)
    before = old.metrics.read_text()
    with pytest.raises(Exception, match="lr must be a positive number"):
        train(train_config(workspace, old.path, lr=-1.0), overwrite=True, quiet=True)
    assert old.metrics.read_text() == before


def test_warmup_cosine_schedule_never_wastes_a_step():
    factor = warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(55) == pytest.approx(0.5) and factor(100) == pytest.approx(0.0)


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_the_last_good_epoch(workspace, tmp_path, monkeypatch):
    """The original recipe's failure on a task it was not tuned for: the loss climbs (not to NaN) and train
    accuracy sits at chance. Here an absurd lr from the second epoch on does the same on the tiny model."""
    real_epoch = loop.train_epoch

    def too_fast_from_epoch_2(fit, dataset, epoch):
        if epoch == 1:
            for group in fit.optimizer.param_groups:
                group["lr"] = 1e3
            fit.scheduler.base_lrs = [1e3] * len(fit.scheduler.base_lrs)
        return real_epoch(fit, dataset, epoch)

    monkeypatch.setattr(loop, "train_epoch", too_fast_from_epoch_2)
    with pytest.raises(TrainingError, match=r"training diverged: the loss was .* in epoch 2.*--lr auto"):
        trained(workspace, tmp_path / "run", optimizer="sgd", head_norm=False, head_init="random", epochs=3)
    run = RunDir(tmp_path / "run")
    assert len(run.read_metrics()) == 1 and torch.isfinite(load_file(str(run.last / "prompt.safetensors"))
                                                           ["head.weight"]).all()


def test_killed_between_the_metrics_and_state_writes_a_resumed_run_loses_no_row(workspace, tmp_path, monkeypatch):
    whole = trained(workspace, tmp_path / "whole", epochs=3)
    real_write = checkpoint.atomic_write

    def dies_writing_the_second_state(path, write):
        if path.name == "state.pt" and len(RunDir(path.parent).read_metrics()) == 2:
            raise KeyboardInterrupt  # the kill lands after metrics.jsonl got epoch 2's row, before state.pt
        return real_write(path, write)

    monkeypatch.setattr(checkpoint, "atomic_write", dies_writing_the_second_state)
    with pytest.raises(KeyboardInterrupt):
        trained(workspace, tmp_path / "cut", epochs=3)
    monkeypatch.setattr(checkpoint, "atomic_write", real_write)
    train(train_config(workspace, tmp_path / "cut"), resume=True, quiet=True)
    assert without_timings(RunDir(tmp_path / "cut").read_metrics()) == without_timings(whole.read_metrics())


def test_resuming_a_finished_run_keeps_its_train_time(workspace, tmp_path):
    run = trained(workspace, tmp_path / "run", epochs=2)
    before = run.read_summary()["train_seconds"]
    train(train_config(workspace, run.path), resume=True, quiet=True)
    assert run.read_summary()["train_seconds"] == pytest.approx(before)
    assert before == pytest.approx(sum(row["seconds"] for row in run.read_metrics()))


def test_relative_paths_are_stored_resolved(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace)
    run = trained(workspace, tmp_path / "run", data="images", weights="tiny.safetensors", epochs=1)
    config = run.read_config()
    assert config["data"] == str(workspace / "images") and config["weights"] == str(workspace / "tiny.safetensors")
    monkeypatch.chdir(tmp_path)
    from vptune import evaluate
    assert evaluate(run.path)[0]["num_images"] == 6  # from another folder, through the stored paths


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(workspace, tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    with pytest.raises(TrainingError, match="is not a vptune run directory"):
        train(train_config(workspace, precious), overwrite=True, quiet=True)
    for output in (workspace / "images", workspace / "images" / "new-run"):  # the data set, or a folder in it
        with pytest.raises(ConfigError, match="inside the data folder"):
            train(train_config(workspace, output), overwrite=True, quiet=True)
    assert not (workspace / "images" / "new-run").exists()
    assert (precious / "thesis.txt").read_text() == "years of work"
    assert len(list((workspace / "images" / "red").iterdir())) == 10


def test_a_folder_with_a_config_yaml_of_its_own_is_not_a_run(workspace, tmp_path):
    """A docker-compose project has a config.yaml too: only vptune's marker (or its task checkpoints) make a run."""
    project = tmp_path / "compose"
    project.mkdir()
    (project / "config.yaml").write_text("services:\n  web: {image: nginx}\n")
    (project / "metrics.jsonl").write_text('{"cpu": 1}\n')
    (project / "app.py").write_text("print('mine')")
    with pytest.raises(TrainingError, match="is not a vptune run directory"):
        train(train_config(workspace, project), overwrite=True, quiet=True)
    assert sorted(p.name for p in project.iterdir()) == ["app.py", "config.yaml", "metrics.jsonl"]
    assert (project / "config.yaml").read_text().startswith("services:")


def _gone_pid() -> int:
    import subprocess
    import sys

    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_run_moved_aside_by_a_killed_overwrite_is_put_back(workspace, tmp_path, caplog):
    """Killed between moving the old run aside and deleting it: the next command on the folder restores it."""
    old = trained(workspace, tmp_path / "run", epochs=1)
    files = {p.relative_to(old.path): p.read_bytes() for p in old.path.rglob("*") if p.is_file()}
    aside = old.move_aside()
    aside = aside.rename(aside.with_name(f".run.replaced-{_gone_pid()}"))  # its process died
    old.mark()
    old.write_config({"what": "the new run had only started"})
    train(train_config(workspace, old.path), resume=True, quiet=True)  # resume finds and restores the old run
    assert "the previous run was put back from" in caplog.text
    now = {p.relative_to(old.path): p.read_bytes() for p in old.path.rglob("*") if p.is_file()}
    kept = {path: data for path, data in files.items() if path.name != "summary.json"}  # the resume rewrites it
    assert kept.items() <= now.items() and now[Path("config.yaml")] == files[Path("config.yaml")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_with_output_dot_from_inside_the_run(workspace, tmp_path, monkeypatch):
    old = trained(workspace, tmp_path / "run", epochs=1)
    monkeypatch.chdir(old.path)
    train(train_config(workspace, ".", epochs=2), overwrite=True, quiet=True)
    assert len(RunDir(old.path).read_metrics()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the aside folder was beside it, and is gone


def test_an_overwrite_that_fails_to_start_keeps_the_old_run(workspace, tmp_path):
    from vptune import DataError

    old = trained(workspace, tmp_path / "run", epochs=1)
    files = {p.relative_to(old.path): p.read_bytes() for p in old.path.rglob("*") if p.is_file()}
    empty = tmp_path / "empty-data"  # exists, so the run starts; holds no image, so loading it fails
    empty.mkdir()
    with pytest.raises(DataError):
        train(train_config(workspace, old.path, data=str(empty)), overwrite=True, quiet=True)
    assert {p.relative_to(old.path): p.read_bytes() for p in old.path.rglob("*") if p.is_file()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-data", "run"]  # nothing moved aside is left
    train(train_config(workspace, old.path, epochs=2), overwrite=True, quiet=True)  # a good one replaces it
    assert len(RunDir(old.path).read_metrics()) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty-data", "run"]


def test_bad_data_is_refused_before_the_backbone_is_fetched(workspace, tmp_path, monkeypatch):
    """A hub backbone that cannot be fetched here, and data with a missing image: the user hears about the data
    (the fetch would come first, and on a real machine download hundreds of megabytes before the data error)."""
    from vptune import DataError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a fetch fails at once instead of retrying
    listed = tmp_path / "labels.csv"
    listed.write_text(f"image,label\n{workspace / 'images' / 'red' / '0.png'},red\n{tmp_path / 'gone.png'},blue\n")
    cfg = train_config(workspace, tmp_path / "run", data=str(listed), backbone="vit_tiny_patch16_224", weights=None)
    with pytest.raises(DataError, match="gone.png"):
        train(cfg, quiet=True)


def test_a_second_run_on_the_same_folder_refuses_and_a_dead_holders_lock_is_taken_over(workspace, tmp_path):
    import json
    import socket
    import subprocess
    import sys

    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live holder
    with pytest.raises(TrainingError, match=rf"in use by another vptune run \(pid {os.getpid()}"):
        train(train_config(workspace, run), quiet=True)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))  # its process is gone
    train(train_config(workspace, run, epochs=1), quiet=True)
    assert len(RunDir(run).read_metrics()) == 1 and not lock.exists()


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"pid": "x"}'])
def test_an_empty_or_damaged_lock_is_taken_over_once_it_is_old(workspace, tmp_path, content):
    """A process killed between creating .lock and writing it leaves it empty: it never held a run."""
    from vptune import rundir

    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    lock.write_text(content)
    with pytest.raises(TrainingError, match="in use by another vptune run"):  # just created: maybe being written
        train(train_config(workspace, run, epochs=1), quiet=True)
    old = lock.stat().st_mtime - rundir.UNWRITTEN_LOCK_SECONDS - 1
    os.utime(lock, (old, old))
    train(train_config(workspace, run, epochs=1), quiet=True)
    assert len(RunDir(run).read_metrics()) == 1 and not lock.exists()


def test_a_batch_larger_than_the_training_set_scales_the_lr_by_the_batch_used(workspace, tmp_path):
    """The workspace has 18 training images: batch 512 trains on batches of 18, and the lr is scaled by 18 / 256."""
    from vptune import PromptConfig, build_model
    from conftest import make_tiny_vit

    cfg = train_config(workspace, tmp_path / "run", batch_size=512).resolved()
    model = build_model("vpt-deep", make_tiny_vit(), PromptConfig(num_tokens=2), num_classes=3)
    lrs = {g["name"]: g["lr"] for g in loop.make_optimizer(model, cfg, num_train=18).param_groups}
    assert lrs == {"tuned": cfg.lr * 18 / 256, "head": cfg.head_lr * 18 / 256}


def test_a_concat_channel_step_moves_the_embedding_as_little_as_a_prompt_token_step(workspace, tmp_path):
    """Adam moves each of the new patch-embedding weights by about lr a step; at the prompts' own lr the embedding
    would move by about lr x the fan-in (p x patch area) and runs diverged. Their lr is divided by the fan-in, so
    one step moves any embedding entry by at most about lr x |pixel|, as a prompt token's step moves it by lr."""
    from vptune import PromptConfig, build_model
    from conftest import make_tiny_vit

    torch.manual_seed(0)
    cfg = train_config(workspace, tmp_path / "run", method="vpt-shallow").resolved()
    prompt = PromptConfig(num_tokens=4, mode="shallow", location="concat-channel")
    model = build_model("vpt-shallow", make_tiny_vit(), prompt, num_classes=3)
    optimizer = loop.make_optimizer(model, cfg)
    lr = optimizer.param_groups[0]["lr"]
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 3
    with torch.no_grad():
        before = model.embed(images)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
    with torch.no_grad():
        moved = (model.embed(images) - before).abs().max().item()
    largest_pixel = model.prompts.tokens.abs().max().item()
    assert 0 < moved <= 1.1 * lr * largest_pixel


def test_min_steps_grows_the_epochs_on_few_images_and_leaves_enough_alone(workspace, tmp_path):
    summary = train(train_config(workspace, tmp_path / "few", epochs=2, min_steps=10), quiet=True)
    train_images, batch = summary["data"]["sizes"]["train"], 8
    steps_per_epoch = -(-train_images // batch)
    expected = max(2, -(-10 // steps_per_epoch))
    assert expected > 2 and summary["epochs"] == expected
    assert len(RunDir(tmp_path / "few").read_metrics()) == expected
    assert train(train_config(workspace, tmp_path / "enough", epochs=2, min_steps=1), quiet=True)["epochs"] == 2
    refit = train(train_config(workspace, tmp_path / "refit", epochs=2, min_steps=10, refit=True, final=False),
                  quiet=True)
    assert refit["epochs"] == expected  # from the training split: the refit on train + val keeps that schedule
    with pytest.raises(ConfigError, match="min_steps must be a positive number"):
        train_config(workspace, tmp_path / "bad", min_steps=0).resolved()
