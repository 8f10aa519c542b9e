"""Faults a real process meets: SIGKILL in the middle of an epoch, then --resume."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import train_args, train_config, without_timings
from safetensors.torch import load_file

from vptune import RunDir, TrainingError, load_task, train
from vptune.cli import main
from vptune.training.linear_probe import one_thread


def every_file_loads(run: RunDir) -> None:
    """What a reader could pick up right after the kill: each file is whole (temp files are never read)."""
    yaml.safe_load(run.config.read_text())
    [json.loads(line) for line in run.metrics.read_text().splitlines()]
    torch.load(run.state, weights_only=True)
    for task in (run.best, run.last):
        load_task(task, backbone=None)


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(workspace, tmp_path):
    """The uninterrupted run and the resume run in this process (a child's start costs seconds), the killed one in
    a child; all on one thread, so their numbers can be compared bit for bit."""
    flags = ["--epochs", "4", "--batch-size", "2"]  # small batches: an epoch is long enough to be cut in two
    with one_thread():
        assert main(train_args(workspace, tmp_path / "whole", *flags)) == 0

    cut = RunDir(tmp_path / "cut")
    process = subprocess.Popen([sys.executable, "-m", "vptune", *train_args(workspace, cut.path, *flags)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (cut.metrics.is_file() and cut.metrics.read_text().count("\n") >= 1) and process.poll() is None:
        assert time.monotonic() < deadline, "no epoch finished in 120 s"
        time.sleep(0.01)
    time.sleep(0.1)  # into the second epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(cut.read_metrics())
    assert 1 <= finished < 4, "the kill should land before the last epoch"
    every_file_loads(cut)

    with one_thread():
        assert main(["train", "--resume", str(cut.path), "--quiet"]) == 0
    whole = RunDir(tmp_path / "whole")
    assert without_timings(cut.read_metrics()) == without_timings(whole.read_metrics())
    for task in ("best", "last"):
        a, b = (load_file(str(getattr(run, task) / "prompt.safetensors")) for run in (cut, whole))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), task
    assert json.loads(cut.summary.read_text())["test_top1"] == json.loads(whole.summary.read_text())["test_top1"]
    assert not list(cut.path.rglob("*.tmp")), "temp files of the killed writes are cleared on resume"


def test_a_corrupt_or_foreign_state_file_is_a_clear_error(workspace, tmp_path):
    run = RunDir(tmp_path / "run")
    train(train_config(workspace, run.path, epochs=1), quiet=True)
    good = run.state.read_bytes()
    for bad, reason in ((good[:len(good) // 2], "not a readable vptune training state"),
                        (None, "lacks"),
                        (b"\x80\x04cos\nsystem\n", "not a readable vptune training state")):
        if bad is None:
            torch.save({"something": torch.zeros(1)}, run.state)  # a real torch file, not ours
        else:
            run.state.write_bytes(bad)
        with pytest.raises(TrainingError, match=f"cannot resume from .*state.pt: .*{reason}") as caught:
            train(train_config(workspace, run.path), resume=True, quiet=True)
        # one line, and never torch's advice to load it with weights_only=False (which would run the pickled code)
        assert "\n" not in str(caught.value) and "Re-running" not in str(caught.value)
