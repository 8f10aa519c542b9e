"""--num-tokens auto trains the length the backbone asks for (model/length.py), in both stages and after a resume;
a method that trains no prompt takes it too."""
import json

import torch
import yaml
from conftest import killed_in_epoch, train_config, without_timings
from safetensors.torch import load_file

from vptune import RunDir, train

# the workspace's tiny ViT (patch 16) at 96 px: 36 patch tokens, so 10 x 36 / 64 = 5.6 prompts, 6; its 300k
# parameters would allow 7 (1% of them over 6 blocks of width 64): the share decides
SIZE, LENGTH = 96, 6


def _prompt_length(task_dir) -> int:
    return json.loads((task_dir / "task.json").read_text())["prompt"]["num_tokens"]


def test_an_automatic_length_is_the_backbones_in_both_stages(workspace, tmp_path, vptune_log):
    run = RunDir(tmp_path / "run")
    train(train_config(workspace, run.path, num_tokens="auto", img_size=SIZE, refit=True, final=False, epochs=1),
          quiet=True)
    selection = RunDir(run.selection)
    assert _prompt_length(run.best) == _prompt_length(selection.best) == LENGTH
    assert load_file(str(run.best / "prompt.safetensors"))["prompts.tokens"].shape[1] == LENGTH  # (blocks, p, width)
    assert yaml.safe_load(run.config.read_text())["num_tokens"] == "auto"  # set again, the same way, on resume
    assert any(f"prompt length: p = {LENGTH}" in record.getMessage() for record in vptune_log)


def test_an_automatic_length_killed_in_its_second_epoch_resumes_to_the_same_result(workspace, tmp_path,
                                                                                      monkeypatch):
    settings = dict(num_tokens="auto", img_size=SIZE, epochs=2)
    whole, cut = RunDir(tmp_path / "whole"), RunDir(tmp_path / "cut")
    train(train_config(workspace, whole.path, **settings), quiet=True)
    with killed_in_epoch(monkeypatch, lambda fit, epoch: epoch == 1):
        train(train_config(workspace, cut.path, **settings), quiet=True)
    train(train_config(workspace, cut.path, **settings), resume=True, quiet=True)
    assert without_timings(cut.read_metrics()) == without_timings(whole.read_metrics())
    resumed, uninterrupted = (load_file(str(r.best / "prompt.safetensors")) for r in (cut, whole))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_prompts_started_at_the_class_means_are_one_a_class(workspace, tmp_path):
    run = RunDir(tmp_path / "run")
    train(train_config(workspace, run.path, num_tokens="auto", prompt_init="cls", epochs=1), quiet=True)
    assert _prompt_length(run.best) == 3  # the workspace's three colours


def test_a_method_without_prompts_takes_an_automatic_length(workspace, tmp_path):
    probe = RunDir(tmp_path / "probe")
    train(train_config(workspace, probe.path, num_tokens="auto", method="linear"), quiet=True)
    assert _prompt_length(probe.best) == 0
