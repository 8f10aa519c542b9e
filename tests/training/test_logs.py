"""TensorBoard event files: written by default when tensorboard is installed, equal to metrics.jsonl."""
import json

import pytest
from conftest import train_config

from vptune import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def read_scalars(folder):
    events = event_accumulator.EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_training_writes_tensorboard_scalars_that_match_the_metrics(workspace, tmp_path):
    train(train_config(workspace, tmp_path / "run"), quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scalars = read_scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in scalars["val/top1"]] == [1, 2]
    assert [v for _, v in scalars["val/top1"]] == pytest.approx([r["val_top1"] for r in rows])
    assert [v for _, v in scalars["train/loss"]] == pytest.approx([r["train_loss"] for r in rows], rel=1e-6)
    assert {"train/lr", "train/loss_step", "epoch/img_per_s"} <= scalars.keys()
    steps = [step for step, _ in scalars["train/loss_step"]]
    assert steps == list(range(len(steps))) and len(steps) % 2 == 0  # every step of both epochs, once


class Stop(Exception):
    pass


def test_resumed_training_logs_each_step_once(workspace, tmp_path):
    def stop_after_the_first_epoch(row):
        raise Stop

    with pytest.raises(Stop):
        train(train_config(workspace, tmp_path / "run", epochs=2), quiet=True, on_epoch=stop_after_the_first_epoch)
    first = [step for step, _ in read_scalars(tmp_path / "run" / "tensorboard")["train/loss_step"]]
    train(train_config(workspace, tmp_path / "run"), resume=True, quiet=True)
    steps = [step for step, _ in read_scalars(tmp_path / "run" / "tensorboard")["train/loss_step"]]
    assert steps == list(range(2 * len(first)))  # the second epoch's steps follow the first's, each once


def test_tensorboard_can_be_turned_off(workspace, tmp_path):
    train(train_config(workspace, tmp_path / "run", tensorboard=False, epochs=1), quiet=True)
    assert not (tmp_path / "run" / "tensorboard").exists()
