"""`vptune sweep` on Optuna, on a tiny ViT and image folder: outputs, pruning, and resume after a kill."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY_VIT, train_config

optuna = pytest.importorskip("optuna")

from vptune.experiments import SweepConfig, run_sweep, sweep_config  # noqa: E402
from vptune.experiments.sweep import JOURNAL  # noqa: E402


def study_of(folder):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / JOURNAL)))
    return optuna.load_study(study_name="vptune", storage=storage)


def test_grid_sweep_writes_its_table_and_retrains_the_best(workspace, tmp_path):
    out = tmp_path / "sweep"
    config = SweepConfig(base=train_config(workspace, out, epochs=2), output=str(out),
                         space={"lr": [0.05, 5.0]}, pruner="none", seeds=(0, 1))
    results = run_sweep(config)
    trials = (out / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + 2 and all(",COMPLETE," in row for row in trials[1:])
    values = {t.params["lr"]: t.value for t in study_of(out).trials}
    assert results["best_val_top1"] == max(values.values()) and results["trial_epochs"] == 4
    assert set(results["retrained"]["test_top1"]) == {0, 1}
    assert (out / "final" / "seed-1" / "summary.json").is_file() and (out / "sweep.png").stat().st_size > 1000
    assert "retrained on train + val" in (out / "results.md").read_text()


def test_the_pruner_stops_a_hopeless_trial_before_its_last_epoch(workspace, tmp_path):
    out = tmp_path / "sweep"
    # SGD and a random head: a trial whose lrs are ~0 stays at chance (a head started at the probe would not)
    base = train_config(workspace, out, epochs=4, optimizer="sgd", head_norm=False, head_init="random")
    config = SweepConfig(base=base, output=str(out), space={"lr": ["log", 1e-9, 10.0], "head_lr": ["log", 1e-9, 1.0]},
                         sampler="tpe", trials=4, pruner="halving", seeds=())
    out.mkdir()
    study = optuna.create_study(study_name="vptune", direction="maximize",
                                storage=optuna.storages.JournalStorage(
                                    optuna.storages.journal.JournalFileBackend(str(out / JOURNAL))))
    for _ in range(3):
        study.enqueue_trial({"lr": 5.0, "head_lr": 0.5})
    study.enqueue_trial({"lr": 1e-9, "head_lr": 1e-9})  # learns nothing: val stays where it starts
    run_sweep(config)
    hopeless = study_of(out).trials[3]
    assert hopeless.state == optuna.trial.TrialState.PRUNED
    assert hopeless.user_attrs["epochs"] < base.epochs


def test_a_killed_sweep_resumes_without_repeating_finished_trials(workspace, tmp_path):
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "vptune", "sweep", "--data", str(workspace / "images"), "--output", str(out),
            "--backbone", TINY_VIT, "--weights", str(workspace / "tiny.safetensors"), "--img-size", "32",
            "--epochs", "3", "--batch-size", "8", "--num-tokens", "2", "--lr", "0.01,0.1,1,10",
            "--pruner", "none", "--seeds", "none", "--quiet"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (out / "trials" / "0002" / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # in the middle of the third trial
    process.wait()
    before = {t.number: (t.state, t.value, t.params["lr"]) for t in study_of(out).trials}
    finished = {n for n, (state, _, _) in before.items() if state == optuna.trial.TrialState.COMPLETE}
    assert len(finished) == 2 and before[2][0] == optuna.trial.TrialState.RUNNING

    config = sweep_config(None, dict(data=str(workspace / "images"), output=str(out), backbone=TINY_VIT,
                                     weights=str(workspace / "tiny.safetensors"), img_size=32, epochs=3,
                                     batch_size=8),
                          dict(lr="0.01,0.1,1,10", num_tokens="2", pruner="none", seeds="none"))
    results = run_sweep(config)
    after = study_of(out).trials
    for n in finished:  # finished trials are kept as they were, and never run again
        assert (after[n].state, after[n].value, after[n].params["lr"]) == before[n]
    complete = [t.params["lr"] for t in after if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == [0.01, 0.1, 1.0, 10.0]  # every grid point once
    assert after[2].state == optuna.trial.TrialState.FAIL and results["trials"]["COMPLETE"] == 4
    assert results["best_val_top1"] == max(t.value for t in after if t.value is not None)


def test_bad_sweep_settings_are_named(workspace, tmp_path):
    from vptune import ConfigError

    base = train_config(workspace, tmp_path / "s")
    with pytest.raises(ConfigError, match="cannot search"):
        SweepConfig(base=base, space={"epochs": [1, 2]}).validate()
    with pytest.raises(ConfigError, match="ranges"):
        SweepConfig(base=base, space={"lr": ["log", 1e-3, 1.0]}).validate()
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        SweepConfig(base=base, space={"lr": [0.1, -1.0]}).validate()
    with pytest.raises(ConfigError, match="log:LOW:HIGH"):
        sweep_config(None, {}, {"lr": "log:1"})
    for section, message in (("sweep:\n  lr: [0.1, 1]\n", "values to search (lr) go under `sweep: space:`"),
                             ("sweep:\n  output: elsewhere\n", "training settings (output) go at the top level"),
                             ("sweep:\n  study: 5\n", "--study must be a non-empty name, got 5")):
        config = tmp_path / "sweep.yaml"
        config.write_text(f"data: digits\n{section}")
        with pytest.raises(ConfigError, match=re.escape(message)):  # `output` was a TypeError
            sweep_config(config, {}, {})
    for seeds, message in (("0,-1", "whole numbers from 0 to"), ("0,1,0", "more than once"),
                           (3, re.escape("seeds 3 is one number, not a list of seeds; give the seeds to retrain with "
                                         "as a list, e.g. seeds: [0, 1, 2] in YAML or --seeds 0,1,2"))):
        with pytest.raises(ConfigError, match=message):  # before the search, not at its retrain
            sweep_config(None, {"output": str(tmp_path / "s")}, {"seeds": seeds})


def test_lr_auto_searches_then_trains_with_the_winner(workspace, tmp_path, capsys):
    from conftest import train_args

    from vptune import RunDir
    from vptune.cli import main
    from vptune.experiments.sweep import AUTO_LR_FACTORS

    run = RunDir(tmp_path / "run")
    assert main(train_args(workspace, run.path, "--lr", "auto")) == 0
    trials = (run.path / "lr-search" / "trials.csv").read_text().splitlines()
    assert len(trials) == 1 + len(AUTO_LR_FACTORS)
    chosen = json.loads((run.path / "lr-search" / "results.json").read_text())["best_params"]["lr"]
    assert run.read_config()["lr"] == chosen and run.read_summary()["test_top1"] is not None
    # a run directory in the way is refused before the search, not after it
    assert main(train_args(workspace, run.path, "--lr", "auto")) == 1
    assert "already exists" in capsys.readouterr().err


def test_lr_auto_is_not_a_number_for_train_itself(workspace, tmp_path):
    from vptune import ConfigError, train

    with pytest.raises(ConfigError, match="train_with_lr_search"):
        train(train_config(workspace, tmp_path / "run", lr="auto"))


def test_two_local_workers_share_one_study(workspace, tmp_path):
    out = tmp_path / "sweep"
    config = SweepConfig(base=train_config(workspace, out, epochs=1), output=str(out), pruner="none", seeds=(),
                         space={"lr": [0.01, 0.1, 1.0, 10.0]}, workers=2)
    run_sweep(config)
    trials = study_of(out).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.params["lr"] for t in done} == {0.01, 0.1, 1.0, 10.0}
    assert len({t.user_attrs["worker"]["pid"] for t in done}) == 2 and os.getpid() not in \
        {t.user_attrs["worker"]["pid"] for t in done}


def test_a_sweep_writes_only_into_its_own_folders(workspace, tmp_path):
    """Not into the data folder (its trials would look like a class), not into a folder of the user's, not into a
    folder another sweep is using; a wrong --trials is refused before anything runs."""
    import socket

    from vptune import ConfigError, TrainingError

    def config(out, **kwargs):
        return SweepConfig(base=train_config(workspace, out, epochs=1), output=str(out), space={"lr": [0.05]},
                           pruner="none", seeds=(), **kwargs)

    inside = workspace / "images" / "sweep"
    with pytest.raises(ConfigError, match="inside the data folder"):
        run_sweep(config(inside))
    assert not inside.exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a sweep folder"):
        run_sweep(config(mine))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "sweep.json").write_text("{}")
    (busy / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(TrainingError, match="in use by another vptune run"):
        run_sweep(config(busy))
    with pytest.raises(ConfigError, match="--trials must be a positive integer"):
        run_sweep(config(tmp_path / "zero", trials=0))


@pytest.mark.parametrize("url, expected", [
    ("notaurl", "is not a database URL"),
    ("nosuchdb://host/db", "SQLAlchemy knows no such database"),
    ("postgresql://user:secret@localhost/db", "needs the database driver 'psycopg"),
])
def test_a_bad_storage_url_is_one_line_before_anything_runs(workspace, tmp_path, url, expected):
    from vptune import ConfigError

    pytest.importorskip("sqlalchemy")
    if "postgresql" in url:
        from sqlalchemy.engine import make_url

        try:
            make_url(url).get_dialect().import_dbapi()
            pytest.skip("the PostgreSQL driver SQLAlchemy uses is installed here")
        except ImportError:
            pass
    out = tmp_path / "sweep"
    config = SweepConfig(base=train_config(workspace, out, epochs=1), output=str(out), space={"lr": [0.05]},
                         storage=url, seeds=())
    with pytest.raises(ConfigError, match=expected) as caught:
        run_sweep(config)
    assert "secret" not in str(caught.value)
    if "postgresql" in url:  # SQLAlchemy 2.1 asks for psycopg (3), 2.0 for psycopg2: the package of the one it asks
        assert "pip install 'psycopg[binary]'" in str(caught.value) or "pip install 'psycopg2-binary'" in \
            str(caught.value)
    assert not out.exists()


def test_storage_that_cannot_be_written_is_one_line(workspace, tmp_path):
    """A journal or SQLite file that cannot be opened for writing (here a folder in its place: root, as on CI,
    writes through read-only permissions), never a traceback."""
    from vptune import ConfigError
    from vptune.errors import WriteError
    from vptune.experiments.sweep import MARKER

    def config(out, **kwargs):
        return SweepConfig(base=train_config(workspace, out, epochs=1), output=str(out), space={"lr": [0.05]},
                           seeds=(), **kwargs)

    out = tmp_path / "sweep"
    (out / JOURNAL).mkdir(parents=True)
    (out / MARKER).write_text("{}")
    with pytest.raises(WriteError, match=f"cannot write the sweep's study journal in {out}"):
        run_sweep(config(out))
    database = tmp_path / "study.db"
    database.mkdir()
    with pytest.raises(ConfigError, match=r"--storage sqlite:///.*cannot open the study there"):
        run_sweep(config(tmp_path / "other", storage=f"sqlite:///{database}"))
    assert not (tmp_path / "other").exists()  # refused, and the folder the sweep made is gone again
    inside = tmp_path / "new" / "study.db"  # a SQLite file inside the output folder, which does not exist yet
    run_sweep(config(tmp_path / "new", storage=f"sqlite:///{inside}"))
    assert inside.is_file() and (tmp_path / "new" / MARKER).is_file()


def test_seeds_as_one_number_in_yaml_asks_for_a_list(tmp_path):
    from vptune import ConfigError

    config = tmp_path / "sweep.yaml"
    config.write_text("data: digits\nsweep:\n  seeds: 5\n")
    with pytest.raises(ConfigError, match=re.escape("sweep: seeds 5 is one number, not a list of seeds")):
        sweep_config(config, {"output": str(tmp_path / "s")}, {})


def test_a_sweep_with_missing_data_is_one_line_before_any_trial(workspace, tmp_path, capsys):
    from vptune.cli import main

    out = tmp_path / "sweep"
    assert main(["sweep", "--data", str(tmp_path / "nope"), "--output", str(out), "--backbone", TINY_VIT,
                 "--weights", str(workspace / "tiny.safetensors"), "--img-size", "32", "--epochs", "1",
                 "--lr", "0.01,0.1", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "no such file or folder" in error and "Traceback" not in error and "Trial" not in error, error
    assert not out.exists()


def test_lr_auto_overwrite_into_a_folder_that_is_not_a_run_is_refused_before_the_search(workspace, tmp_path,
                                                                                         capsys):
    from conftest import train_args

    from vptune.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("services: {}\n")  # a docker-compose project, say
    assert main(train_args(workspace, mine, "--lr", "auto", "--overwrite")) == 1
    assert "is not a vptune run directory" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["config.yaml"]
