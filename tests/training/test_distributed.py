"""Training under torchrun (DDP, gloo on CPU) gives what one process gives with the same global batch and seed."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import train_args
from safetensors.torch import load_file

from vptune.cli import main
from vptune.training.linear_probe import one_thread

TORCHRUN = Path(sys.executable).with_name("torchrun")


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one_process(*args: str) -> None:
    """`vptune ARGS` as one process, in this one (a child's start costs seconds), on one thread as each rank is."""
    with one_thread():
        assert main(list(args)) == 0


def torchrun(*args: str, processes: int = 2) -> list[str]:
    launcher = [str(TORCHRUN)] if TORCHRUN.exists() else [sys.executable, "-m", "torch.distributed.run"]
    return [*launcher, "--standalone", f"--nproc-per-node={processes}", "-m", "vptune", *args]


def read_run(folder: Path) -> tuple[dict, list[dict], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    summary = json.loads((folder / "summary.json").read_text())
    metrics = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return summary, metrics, load_file(str(folder / "best" / "prompt.safetensors")), \
        load_file(str(folder / "last" / "prompt.safetensors"))


@pytest.mark.skipif(not shutil.which("true"), reason="needs a POSIX shell environment")
def test_two_processes_train_exactly_what_one_does(workspace, tmp_path):
    # 17 training images in global batches of 8: the last global batch holds 1 image, so one rank has none that
    # step; the 5 val and 5 test images do not divide by 2 either
    flags = ["--subset", "17", "--epochs", "3", "--no-cross-fit"]  # a learned head (cross-fit: below)
    one_process(*train_args(workspace, tmp_path / "one", *flags))
    two = run(torchrun(*train_args(workspace, tmp_path / "two", *flags)), tmp_path)

    one_summary, one_metrics, one_best, one_last = read_run(tmp_path / "one")
    two_summary, two_metrics, two_best, two_last = read_run(tmp_path / "two")
    for name in one_last:
        torch.testing.assert_close(two_last[name], one_last[name], atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(two_best[name], one_best[name], atol=1e-5, rtol=0, msg=name)
    assert two_summary["test_top1"] == one_summary["test_top1"]
    assert two_summary["best_epoch"] == one_summary["best_epoch"]
    assert len(two_metrics) == len(one_metrics) == 3
    for a, b in zip(one_metrics, two_metrics):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-5 and a["val_top1"] == b["val_top1"]
    assert "Traceback" not in two.stderr

    # resume under torchrun: one more epoch on each, still the same
    one_process("train", "--resume", str(tmp_path / "one"), "--epochs", "4", "--quiet")
    run(torchrun("train", "--resume", str(tmp_path / "two"), "--epochs", "4", "--quiet"), tmp_path)
    _, _, _, one_last = read_run(tmp_path / "one")
    _, _, _, two_last = read_run(tmp_path / "two")
    for name in one_last:
        torch.testing.assert_close(two_last[name], one_last[name], atol=1e-5, rtol=0, msg=name)


def test_a_global_batch_the_processes_do_not_divide_is_refused(workspace, tmp_path):
    done = subprocess.run(torchrun(*train_args(workspace, tmp_path / "run", "--batch-size", "7"), processes=2),
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "--batch-size 7 is the global batch and must divide by the 2 processes" in done.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not shutil.which("true"), reason="needs a POSIX shell environment")
def test_two_processes_select_and_refit_exactly_as_one_does(workspace, tmp_path):
    # after train_args' --no-refit: the two stages, with the default's cross-fit on 17 images (--no-final: the
    # default there is one stage on train + val)
    flags = ["--subset", "17", "--epochs", "2", "--refit", "--no-final"]
    one_process(*train_args(workspace, tmp_path / "one", *flags))
    two = run(torchrun(*train_args(workspace, tmp_path / "two", *flags)), tmp_path)
    for stage in ("", "selection"):
        one_summary, _, one_best, _ = read_run(tmp_path / "one" / stage)
        two_summary, _, two_best, _ = read_run(tmp_path / "two" / stage)
        for name in one_best:
            torch.testing.assert_close(two_best[name], one_best[name], atol=1e-5, rtol=0, msg=f"{stage} {name}")
        assert two_summary["test_top1"] == one_summary["test_top1"]
        assert two_summary["train_images"] == one_summary["train_images"]
        assert two_summary["cross_fit"] is one_summary["cross_fit"] is True  # the same probes fitted on every rank
    assert "Traceback" not in two.stderr
