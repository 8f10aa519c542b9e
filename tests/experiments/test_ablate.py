"""`vptune ablate`: every named set runs end to end on the tiny task, a killed ablation continues without repeating
a run and ends with the same tables, and the reports are written and parse."""
import csv
import json
import shutil

import pytest
from conftest import TINY_VIT
from PIL import Image

from vptune.cli import main
from vptune.errors import ConfigError
from vptune.experiments import ablate
from vptune.experiments.ablate import SETS, AblateConfig, read_runs, run_ablation
from vptune.experiments.recipes import RECIPES


def _config(ws, out, set_name, **kwargs):
    common = dict(backbone=TINY_VIT, weights=str(ws / "tiny.safetensors"), img_size=32, epochs=1, batch_size=8,
                  num_tokens=2)
    extra = kwargs.pop("common", {})
    config = AblateConfig(set=set_name, tasks=(str(ws / "images"),), seeds=kwargs.pop("seeds", (0,)), out=str(out),
                          common=common, **kwargs)
    varied = {key for cell in config.cells() for key in cell.settings}  # the set's own (it refuses them as common)
    config.common = {**{k: v for k, v in common.items() if k not in varied}, **extra}
    return config


def _table(out, set_name):
    """The set's Markdown table without its last line (the wall time, which differs between runs)."""
    return (out / f"{set_name}.md").read_text().rsplit("\n\n", 1)[0]


# segmentation's set: tests/training/test_segmentation_training.py
@pytest.mark.parametrize("set_name", [name for name, s in SETS.items() if s.metric == "top1"])
def test_every_set_runs_and_writes_its_reports(workspace, tmp_path, monkeypatch, set_name):
    for name, settings in RECIPES.items():  # 250 steps on 24 images would take half a minute; still more steps
        if "min_steps" in settings:         # than one epoch has (min_steps itself: tests/training/test_loop.py)
            monkeypatch.setitem(RECIPES, name, {**settings, "min_steps": 12})
    config = _config(workspace, tmp_path / "out", set_name)
    rows = run_ablation(config)
    cells = config.cells()
    assert len(rows) == len(cells) and all(r["failure"] is None for r in rows)
    assert all(r["test_top1"] is not None and 0 <= r["test_top1"] <= 1 for r in rows)
    with open(tmp_path / "out" / f"{set_name}.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["cell"] for r in table] == [c.name for c in cells]
    markdown = (tmp_path / "out" / f"{set_name}.md").read_text()
    body = {line.split(" | ")[0][2:]: line.split(" | ")[1:-2] for line in markdown.splitlines()
            if line.startswith("| ") and not line.startswith(("| cell", "| a - b"))}
    assert all(body[cell.name][0].lstrip("*")[:2] in ("0.", "1.") for cell in cells)  # a mean for every cell
    best = max(r["test_top1"] for r in rows)
    assert [body[c.name][0].startswith(f"**{best:.4f}**") for c in cells].count(True) >= 1  # the best in bold
    assert sum(body[c.name][0].startswith("**") for c in cells) == sum(r["test_top1"] == best for r in rows)
    with Image.open(tmp_path / "out" / f"{set_name}.png") as image:
        assert image.format == "PNG" and image.width > 100
    assert not (tmp_path / "out" / "work").exists()  # each run's folder goes once its row is written


def test_a_killed_ablation_continues_without_repeating_a_run(workspace, tmp_path, monkeypatch):
    whole = _config(workspace, tmp_path / "whole", "length", seeds=(0, 1))
    run_ablation(whole)

    trained = []
    original = ablate._run_one

    def counting(config, out, cell, task, seed):
        if len(trained) == 3 and config.out.endswith("killed") and not getattr(counting, "resumed", False):
            raise KeyboardInterrupt  # the process is stopped between two runs
        trained.append((cell.name, seed))
        return original(config, out, cell, task, seed)

    monkeypatch.setattr(ablate, "_run_one", counting)
    killed = _config(workspace, tmp_path / "killed", "length", seeds=(0, 1))
    with pytest.raises(KeyboardInterrupt):
        run_ablation(killed)
    assert len(read_runs(tmp_path / "killed")) == 3
    counting.resumed = True
    run_ablation(killed)
    assert len(trained) == len(set(trained)) == 2 * len(killed.cells())  # each run once, over both invocations
    assert _table(tmp_path / "killed", "length") == _table(tmp_path / "whole", "length")
    run_ablation(_config(workspace, tmp_path / "killed", "length", seeds=(1,)))  # a later step names fewer seeds:
    assert len(trained) == 2 * len(killed.cells())  # it trains nothing
    assert _table(tmp_path / "killed", "length") == _table(tmp_path / "whole", "length")  # and keeps seed 0's runs


def test_an_ablation_moved_with_its_data_or_recorded_with_absolute_paths_trains_nothing_again(workspace, tmp_path,
                                                                                               monkeypatch):
    shutil.copytree(workspace / "images", tmp_path / "first" / "data")
    first = _config(workspace, tmp_path / "first" / "out", "pooling", only=("cls",))
    first.tasks = (str(tmp_path / "first" / "data"),)
    run_ablation(first)
    shutil.copytree(tmp_path / "first", tmp_path / "moved")  # a clone elsewhere: data and OUT together

    trained = []
    monkeypatch.setattr(ablate, "_run_one", lambda *args: trained.append(args) or pytest.fail("trained again"))
    moved = _config(workspace, tmp_path / "moved" / "out", "pooling", only=("cls",))
    moved.tasks = (str(tmp_path / "moved" / "data"),)
    assert [row["test_top1"] for row in run_ablation(moved)] == [r["test_top1"] for r in read_runs(tmp_path / "first" / "out")]

    cell = first.cells()[0]  # a runs file written when keys held the absolute path is still read as done
    runs = tmp_path / "first" / "out" / "runs.jsonl"
    row = json.loads(runs.read_text())
    legacy = ablate.run_key(first, cell, first.tasks[0], 0, portable=False)
    assert legacy != row["key"]
    runs.write_text(json.dumps({**row, "key": legacy}) + "\n")
    assert len(run_ablation(first)) == 1 and not trained
    assert "1/1 done" in ablate.plan(first)


def test_a_run_under_way_resumes_from_its_last_epoch(workspace, tmp_path, monkeypatch):
    """A run killed after its first epoch leaves its run folder; the next ablate continues it (vptune train
    --resume semantics) instead of starting it again."""
    from vptune.training import loop

    config = _config(workspace, tmp_path / "out", "length", common=dict(epochs=2), only=("p=1",))
    saved, restored = [], []
    save_epoch, restore = loop.save_epoch, loop.restore

    def save_then_die(fit, epoch, *args):
        save_epoch(fit, epoch, *args)
        saved.append(epoch)
        if len(saved) == 1:
            raise KeyboardInterrupt  # killed once epoch 1 is on disk

    monkeypatch.setattr(loop, "save_epoch", save_then_die)
    monkeypatch.setattr(loop, "restore", lambda fit: restored.append(1) or restore(fit))
    with pytest.raises(KeyboardInterrupt):
        run_ablation(config)
    run_ablation(config)
    assert saved == [0, 1] and restored == [1]  # epoch 1 was not trained again
    row, = read_runs(tmp_path / "out")
    assert [r["epoch"] for r in row["curve"]] == [1, 2]


def test_a_runs_file_cut_mid_line_is_read_and_the_run_redone(workspace, tmp_path):
    config = _config(workspace, tmp_path / "out", "pooling", only=("cls", "image-pool"))
    run_ablation(config)
    runs = tmp_path / "out" / "runs.jsonl"
    lines = runs.read_text().splitlines()
    runs.write_text(lines[0] + "\n" + lines[1][:40])  # killed while the second line was written
    rows = run_ablation(config)
    assert len(rows) == 2 and len(read_runs(tmp_path / "out")) == 2
    assert json.loads(runs.read_text().splitlines()[-1])["cell"] == "image-pool"


def test_an_edited_row_of_the_runs_file_is_named_and_nothing_is_rewritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    row = {"key": "k1", "set": "pooling", "cell": "cls", "task": "t", "seed": 0, "settings": {},
           "test_top1": 0.5, "trainable_percent": 0.2, "wall_seconds": 3.0}
    text = json.dumps(row) + "\n" + json.dumps({**row, "key": "k2", "test_top1": "0.9"}) + "\n"
    (out / "runs.jsonl").write_text(text)
    with pytest.raises(ConfigError, match=r"runs\.jsonl line 2: field\(s\) \['test_top1'\] missing or of the wrong"):
        read_runs(out)
    assert (out / "runs.jsonl").read_text() == text


def test_a_folder_that_is_not_an_ablation_is_refused_and_left_alone(workspace, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not an ablation folder"):
        run_ablation(_config(workspace, mine, "init"))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match="not an ablation folder"):  # --plan says so too, before any run
        ablate.plan(_config(workspace, mine, "init"))


def test_an_out_inside_a_tasks_image_folder_is_refused_before_anything_is_written(workspace, capsys):
    out = workspace / "images" / "ablation"  # its plots would be read as one more class by the next run
    assert main(["ablate", "init", "--backbone", TINY_VIT, "--weights", str(workspace / "tiny.safetensors"),
                 "--img-size", "32", "--tasks", str(workspace / "images"), "--out", str(out)]) == 1
    assert "choose an --out outside" in capsys.readouterr().err and not out.exists()


def test_an_out_that_cannot_be_made_names_the_out_flag(workspace, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    assert main(["ablate", "init", "--backbone", TINY_VIT, "--weights", str(workspace / "tiny.safetensors"),
                 "--img-size", "32", "--tasks", str(workspace / "images"), "--out", str(blocker / "out")]) == 1
    assert "choose another --out," in capsys.readouterr().err  # ablate's flag, not train's --output
    assert blocker.read_text() == "keep me"


@pytest.mark.parametrize("args, message", [
    (["ablate", "depth", "--seeds", "0,x"], "--seeds: 'x' is not an integer"),
    (["ablate", "depth", "--tasks", "digits,,x"], "--tasks 'digits,,x': an empty item"),
    (["ablate", "pooling", "--cells", "cls,mean"], "--cells: ['mean'] are not cells of 'pooling'"),
    (["ablate", "length", "--epochs", "0"], "epochs must be a positive integer"),
    # a flag that the set's cells set themselves would be silently overridden in some runs or all of them
    (["ablate", "length", "--num-tokens", "50"], "--num-tokens: `ablate length` varies num_tokens"),
    (["ablate", "depth", "--prompt-layers", "first 2"], "--prompt-layers: `ablate depth` varies prompt_layers"),
    (["ablate", "methods", "--method", "vpt-deep"], "leave --method out"),
    # a run named twice would be trained twice over
    (["ablate", "depth", "--seeds", "0,1,0"], "--seeds: 0 given more than once"),
    (["ablate", "pooling", "--cells", "cls,cls"], "--cells: cls given more than once"),
    (["ablate", "pooling", "--cells", ""], "--cells '': an empty item"),  # not "every cell"
    (["ablate", "depth", "--seeds", "0,4294967296"], "--seeds needs whole numbers from 0 to 4294967295"),
    # the common flags are checked before the set builds the backbone (depth's k follow its blocks)
    (["ablate", "depth", "--img-size", "-5"], "img_size must be 1..4096 pixels, got -5"),
])
def test_bad_flags_are_one_line_errors(workspace, tmp_path, capsys, args, message):
    defaults = {"--backbone": TINY_VIT, "--weights": str(workspace / "tiny.safetensors"), "--img-size": "32",
                "--out": str(tmp_path / "out"), "--tasks": str(workspace / "images")}
    flags = [part for flag, value in defaults.items() if flag not in args for part in (flag, value)]
    assert main([*args, *flags]) in (1, 2)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was created


def test_tasks_may_be_given_again_and_a_path_with_a_comma_is_taken_whole(workspace, tmp_path, capsys):
    comma = tmp_path / "shapes, v2"
    shutil.copytree(workspace / "images", comma)
    assert main(["ablate", "pooling", "--plan", "--tasks", str(workspace / "images"), "--tasks", str(comma),
                 "--seeds", "0", "--backbone", TINY_VIT, "--weights", str(workspace / "tiny.safetensors"),
                 "--img-size", "32", "--out", str(tmp_path / "out")]) == 0
    assert "(4 cells x 2 tasks x 1 seeds)" in capsys.readouterr().out


def test_the_followups_plan_lists_each_method_with_its_settings(workspace, tmp_path, capsys):
    assert main(["ablate", "followups", "--plan", "--tasks", str(workspace / "images"), "--seeds", "0,1",
                 "--backbone", TINY_VIT, "--weights", str(workspace / "tiny.safetensors"), "--img-size", "32",
                 "--out", str(tmp_path / "out")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:] if line.startswith("  ")}
    assert list(lines) == ["linear", "vpt-shallow", "vpt-deep", "e2vpt", "vfpt", "gated-vpt", "e2vpt-pruned", "da-vpt"]
    assert "prune_tokens=0.5, prune_segments=0.25" in lines["e2vpt-pruned"]
    assert all(line.endswith("0/2 done") for line in lines.values()) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("diffs, expected", [
    ([0.02, 0.03, 0.01, 0.02], "a ahead"),
    ([-0.02, -0.03, -0.01, -0.02], "b ahead"),
    ([0.05, -0.04, 0.01, -0.01], "within noise"),
    ([0.02, 0.03], "too few runs"),
])
def test_the_paired_verdict_rule(diffs, expected):
    from vptune.experiments.ablate_report import paired, verdict

    rows = [{"cell": cell, "task": "t", "seed": seed, "score": 0.5 + (d if cell == "a" else 0.0)}
            for seed, d in enumerate(diffs) for cell in ("a", "b")]
    assert verdict(paired(rows, "a", "b")) == expected


def _rows(values):
    """Runs of a fake task, labelled as `set_rows` labels them: {(cell, seed): test score or None for a failed run}."""
    return [{"cell": cell, "task": "t", "seed": seed, "score": top1} for (cell, seed), top1 in values.items()]


def test_a_claim_on_several_pairs_counts_each_run_once():
    from vptune.experiments.ablate_report import pooled

    rows = _rows({("f1", 0): 0.80, ("l1", 0): 0.70, ("f3", 0): 0.90, ("l3", 0): 0.92,   # seed 0: +10, -2 -> +4
                  ("f1", 1): 0.60, ("l1", 1): 0.50, ("f3", 1): 0.70, ("l3", 1): 0.60,   # seed 1: +10, +10 -> +10
                  ("f1", 2): 0.60, ("l1", 2): 0.50, ("f3", 2): 0.70,                    # seed 2: l3 not run yet
                  ("f1", 3): 0.60, ("l1", 3): 0.50, ("f3", 3): None, ("l3", 3): 0.60})  # seed 3: f3 diverged
    c = pooled(rows, [("f1", "l1"), ("f3", "l3")], "a", "b")
    assert c["runs"] == 2 and c["seeds"] == [0, 1] and c["failed"] == 1
    assert c["mean"] == pytest.approx(0.07) and c["std"] == pytest.approx(0.06 / 2 ** 0.5)
    assert (c["wins"], c["losses"]) == (2, 0)


@pytest.mark.parametrize("diffs, matches, expected", [
    ([0.02, 0.03, 0.01, 0.02], False, "holds"),
    ([0.02, 0.03, 0.01, 0.02], True, "holds"),
    ([0.05, -0.04, 0.01, -0.01], False, "not shown: within noise"),
    ([0.05, -0.04, 0.01, -0.01], True, "holds: level"),
    ([0.03, -0.04, -0.01, -0.02], True, "holds as level (within noise), though behind on average, on 1 of 1 tasks"),
    ([-0.02, -0.03, -0.01, -0.02], True, "does not hold: the reverse is ahead"),
])
def test_a_claim_holds_by_the_verdict_rule(diffs, matches, expected):
    from vptune.experiments.ablate_report import claim_verdict, pooled

    rows = _rows({(cell, seed): 0.5 + (d if cell == "x" else 0.0) for seed, d in enumerate(diffs) for cell in "xy"})
    assert claim_verdict(pooled(rows, [("x", "y")], "a", "b"), matches) == expected


def test_the_table_shows_the_cells_run_and_names_the_rest_on_one_line(workspace, tmp_path):
    from vptune.experiments.ablate_report import to_markdown

    config = _config(workspace, tmp_path / "out", "recipes")
    task = config.tasks[0]
    rows = [{"cell": cell, "task": task, "seed": 0, "score": score, "wall_seconds": 60.0}
            for cell, score in (("linear", 0.5), ("cross-fit", 0.75))]
    markdown = to_markdown(config, SETS["recipes"], rows, [cell.name for cell in config.cells()], figure=False)
    table = [line.split(" | ")[0][2:] for line in markdown.splitlines()
             if line.startswith("| ") and not line.startswith("| cell")]
    assert table == ["linear", "cross-fit"]  # in the set's order
    not_run = [cell.name for cell in config.cells() if cell.name not in table]
    assert f"Not run (yet): {', '.join(not_run)}." in markdown.splitlines()


def test_report_decides_the_claims_from_runs_other_sets_made_and_trains_nothing(workspace, tmp_path, capsys):
    out = tmp_path / "out"
    run_ablation(_config(workspace, out, "methods", only=("linear", "vpt-shallow", "vpt-deep")))
    runs = (out / "runs.jsonl").read_text()
    flags = ["--tasks", str(workspace / "images"), "--seeds", "0", "--backbone", TINY_VIT, "--weights",
             str(workspace / "tiny.safetensors"), "--img-size", "32", "--epochs", "1", "--batch-size", "8",
             "--num-tokens", "2", "--out", str(out)]
    assert main(["ablate", "claims", "--report", *flags]) == 0
    assert (out / "runs.jsonl").read_text() == runs  # nothing trained
    claims = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in (out / "claims.md").read_text().splitlines()
              if line.startswith("| ") and " - " in line.split(" | ")[1]}
    deep_shallow = claims["VPT-deep beats VPT-shallow"]
    assert deep_shallow[1] == "1 (0)" and deep_shallow[-1] == "**too few runs** |"  # one task, one seed
    assert claims["VPT-deep matches or beats full fine-tuning"][-1] == "no runs yet |"
    with Image.open(out / "claims.png") as image:
        assert image.format == "PNG"

    mine = tmp_path / "mine"
    mine.mkdir()
    assert main(["ablate", "claims", "--report", *flags[:-1], str(mine)]) == 1
    assert "is not an ablation folder" in capsys.readouterr().err and not any(mine.iterdir())
    with pytest.raises(SystemExit):
        main(["ablate", "claims", "--report", "--plan", *flags])


def test_a_cell_beats_the_default_only_when_it_wins_every_planned_run():
    from vptune.experiments.ablate_report import beats_default

    rows = _rows({("p=10", 0): 0.80, ("p=10", 1): 0.70,
                  ("p=50", 0): 0.81, ("p=50", 1): 0.71,   # won both
                  ("p=5", 0): 0.90, ("p=5", 1): 0.70,     # tied one
                  ("p=100", 0): 0.90})                    # won the only one it has run
    cells = ["p=5", "p=10", "p=50", "p=100"]
    assert beats_default(rows, "p=10", cells, planned=2).endswith("in every one of the 2 runs (each task and seed): "
                                                                  "p=50.")
    assert beats_default(rows, "p=10", cells, planned=3).endswith(": none.")


def test_a_cells_trainable_share_that_differs_by_task_is_shown_as_its_range(tmp_path):
    from vptune.experiments.ablate_report import to_markdown

    config = AblateConfig(set="init", tasks=("ten-classes", "three-classes"), seeds=(0,), out=str(tmp_path))
    rows = [{"cell": "xavier", "task": task, "seed": 0, "score": 0.9, "trainable_percent": share,
             "wall_seconds": 60.0} for task, share in (("ten-classes", 0.2316), ("three-classes", 0.0694))]
    table = to_markdown(config, SETS["init"], rows, ["xavier"])  # p = the classes: the share follows the task
    row = next(line for line in table.splitlines() if line.startswith("| xavier"))
    assert row.endswith("| 0.069-0.232% |")


def test_the_written_table_shows_the_plot_written_beside_it(tmp_path):
    from vptune.experiments.ablate_report import write_reports

    config = AblateConfig(set="init", tasks=("digits",), seeds=(0,), out=str(tmp_path))
    assert "](init.png)" not in (write_reports(config, SETS["init"], [])[1]).read_text()  # no runs: no plot
    rows = [{"cell": "xavier", "task": "digits", "seed": 0, "score": 0.9, "trainable_percent": 0.1,
             "wall_seconds": 60.0}]
    write_reports(config, SETS["init"], rows, figure=False)  # mid-set, before any plot: no link to a missing file
    assert "](init.png)" not in (tmp_path / "init.md").read_text() and not (tmp_path / "init.png").exists()
    write_reports(config, SETS["init"], rows)
    markdown = (tmp_path / "init.md").read_text()
    assert "![vptune ablate init](init.png)" in markdown  # relative: beside init.md
    assert (tmp_path / "init.png").is_file()
    write_reports(config, SETS["init"], rows * 2, figure=False)  # mid-set again: the earlier plot stays linked
    assert "![vptune ablate init](init.png)" in (tmp_path / "init.md").read_text()


def test_with_refit_a_row_keeps_the_selection_curve_and_a_killed_first_stage_resumes(workspace, tmp_path,
                                                                                       monkeypatch):
    """`--refit` (not the set's default): the row holds the curve the epoch was chosen on; a kill in the selection
    stage continues that stage instead of starting the run again."""
    from conftest import killed_in_epoch

    from vptune.rundir import RunDir

    config = _config(workspace, tmp_path / "out", "recipes", common=dict(epochs=2, refit=True), only=("defaults",))
    with killed_in_epoch(monkeypatch, lambda fit, epoch: fit.run.path.name == "selection" and epoch == 1):
        run_ablation(config)
    [work] = list((tmp_path / "out" / "work").iterdir())
    assert len(RunDir(work / "selection").read_metrics()) == 1
    resumed, real_train = [], ablate.train

    def train(cfg, **kwargs):
        resumed.append(kwargs.get("resume", False))
        return real_train(cfg, **kwargs)

    monkeypatch.setattr(ablate, "train", train)
    run_ablation(config)
    assert resumed == [True]
    [row] = read_runs(tmp_path / "out")
    assert [r["epoch"] for r in row["selection_curve"]] == [1, 2] and row["selection_curve"][0]["val_top1"] is not None
    assert len(row["curve"]) == row["best_epoch"] and row["train_images"] == 24  # train + carved val of 30 images


def test_on_a_swin_backbone_the_sets_leave_out_what_the_family_cannot_run():
    """No "add" location and no [CLS] on Swin: those cells leave the sets (and their claims with them); depth counts
    blocks across the stages."""
    from conftest import make_tiny_swin
    from vptune.model import adapter_for

    def config(name, **kwargs):
        made = AblateConfig(name, **kwargs)
        made._adapter = adapter_for(make_tiny_swin())  # what `adapter` would build from the backbone flags
        return made

    claims = config("claims")
    assert not {"add shallow", "add deep"} & {cell.name for cell in claims.cells()}
    assert claims.left_out() == ["add shallow (no add location on swin backbones)",
                                 "add deep (no add location on swin backbones)"]
    assert {cell.name for cell in config("depth").cells()} >= {"first 3", "last 3", "first 6"}  # 6 blocks
    assert [cell.name for cell in config("pooling").cells()] == ["image-pool", "prompt-pool", "global-pool"]
    assert [cell.name for cell in config("init").cells()] == ["xavier", "patches"]
    with pytest.raises(ConfigError, match=r"--cells: add deep \(no add location on swin backbones\)"):
        config("claims", only=("add deep",)).validate()


def test_the_runs_docs_results_holds_keep_their_keys():
    """A setting added to TrainConfig must not change the key of a run recorded before it (KEY_SINCE), or every
    set would train its finished runs again: the follow-ups set's first seed on the built-ins, as docs/results.md
    ran it, is found in the committed rows."""
    from pathlib import Path

    from vptune.experiments.ablate import FOLLOWUPS, Cell, read_runs, recorded_key

    out = Path(__file__).parents[2] / "docs" / "results"
    done = {row["key"] for row in read_runs(out)}
    config = AblateConfig(set="followups", out=str(out), seeds=(0,), common={  # cpu: the precision the rows ran in
        "epochs": 5, "img_size": 112, "test_subset": 2000, "device": "cpu"})
    missing = [(name, task) for name, settings in FOLLOWUPS.items() for task in config.tasks
               if recorded_key(done, config, Cell(name, settings), task, 0) not in done]
    assert not missing
