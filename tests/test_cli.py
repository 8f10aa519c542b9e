"""`vptune` end to end on a tiny random ViT and a generated image folder: train -> eval -> predict -> info, flags
and config files, one-line errors for the user's mistakes and tracebacks for bugs."""
import json
import re
import subprocess
import sys

import pytest
from conftest import train_args

from vptune import ConfigError, RunDir
from vptune.cli import main


def test_cli_train_eval_predict_info(workspace, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    assert main(train_args(workspace, run.path)) == 0
    assert {p.name for p in run.path.iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json", "best", "last",
                                                    "state.pt"}
    assert len(run.read_metrics()) == 2
    summary = run.read_summary()
    assert 0.0 <= summary["test_top1"] <= 1.0 and summary["trainable_parameters"] > 0

    assert main(["eval", str(run.path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "red" in out
    assert (run.eval / "test_confusion.png").stat().st_size > 1000
    assert json.loads((run.eval / "test_metrics.json").read_text())["num_images"] == 6

    image = workspace / "images" / "red" / "0.png"
    assert main(["predict", str(run.path), str(image), "--top-k", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result[0]["image"] == str(image) and len(result[0]["top"]) == 2
    assert abs(sum(g["probability"] for g in result[0]["top"])) <= 1.0 + 1e-6

    assert main(["info", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "% of the backbone" in out and "prompt.safetensors" in out and '"name": "vpt-deep"' in out


@pytest.mark.parametrize("flags", [["--method", "e2vpt", "--kv-tokens", "2"], ["--method", "vfpt"],
                                   ["--method", "gated-vpt"], ["--method", "da-vpt", "--metric-weight", "0.1"],
                                   ["--method", "e2vpt", "--prune-tokens", "0.5", "--prune-segments", "0.25"]],
                         ids=["e2vpt", "vfpt", "gated-vpt", "da-vpt", "e2vpt-pruned"])
def test_each_follow_up_method_trains_predicts_and_describes_itself_through_the_cli(workspace, tmp_path, capsys,
                                                                                    flags):
    run = RunDir(tmp_path / "run")
    assert main(train_args(workspace, run.path, "--epochs", "1", "--num-tokens", "4", *flags)) == 0
    image = workspace / "images" / "green" / "1.png"
    capsys.readouterr()
    assert main(["predict", str(run.path), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["image"] == str(image)
    assert main(["info", str(run.path)]) == 0
    described = capsys.readouterr().out
    assert f'"name": "{flags[1]}"' in described
    if "--prune-tokens" in flags:  # the pruned task holds 2 of the 4 tokens a block
        assert '"num_tokens": 2' in described and (run.path / "unpruned" / "best").is_dir()


def test_config_file_and_flags_flags_win(workspace, tmp_path):
    settings = tmp_path / "settings.yaml"
    settings.write_text("epochs: 1\nnum-tokens: 7\nmethod: vpt-shallow\nprompt_layers: '1'\n")
    run = RunDir(tmp_path / "run")
    assert main(train_args(workspace, run.path, "--config", str(settings), "--method", "vpt-deep")) == 0
    recorded = json.loads((run.best / "task.json").read_text())
    assert recorded["method"]["name"] == "vpt-deep"  # the flag beat the file
    assert recorded["prompt"]["num_tokens"] == 4  # train_args passes --num-tokens 4, beating the file's 7
    assert recorded["prompt"]["layers"] == [1]  # from the file


def test_prompt_layers_as_indices_work_in_yaml_as_on_the_command_line(workspace, tmp_path):
    """Bug: `prompt_layers: "0,1,5"` in a --config file was refused while `--prompt-layers 0,1,5` worked."""
    settings = tmp_path / "settings.yaml"
    settings.write_text('prompt_layers: "0,2,5"\nprompt_init: zeros\nepochs: 1\n')
    from_file, from_flags = RunDir(tmp_path / "file"), RunDir(tmp_path / "flags")
    assert main(train_args(workspace, from_file.path, "--config", str(settings))) == 0
    assert main(train_args(workspace, from_flags.path, "--prompt-layers", "0,2,5", "--prompt-init", "zeros",
                           "--epochs", "1")) == 0
    for run in (from_file, from_flags):
        prompt = json.loads((run.best / "task.json").read_text())["prompt"]
        assert prompt["layers"] == [0, 2, 5] and prompt["init"] == "zeros"


@pytest.mark.parametrize("extra, message", [
    (["--method", "prefix-magic"], "unknown method 'prefix-magic'"),
    (["--method", "partial-k"], "unknown method 'partial-k'"),  # the help's placeholder, not a method
    (["--method", "partial-0"], "K >= 1"),
    (["--method", "partial-9"], "K must be in 1..6"),
    (["--num-tokens", "-3"], "PromptConfig.num_tokens"),
    (["--prompt-location", "middle"], "prompt_location must be one of prepend, add, prepend-pixel"),
    (["--lr", "0"], "lr must be a positive number"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number"),
    (["--data", "/no/such/folder"], "/no/such/folder"),
    (["--backbone", "no_such_vit"], "unknown backbone 'no_such_vit'"),
    (["--device", "banana"], "device must be auto, cpu, cuda, cuda:N or mps, got 'banana'"),
    (["--prompt-layers", "last 99"], "K must be in 1..6"),
    (["--prompt-layers", "0,0"], "lists a block twice"),
    (["--pooling", "prompt-pool", "--prompt-location", "add"], "pooling='prompt-pool' reads the prompts' outputs"),
    (["--prompt-location", "concat-channel"], "use mode='shallow'"),
    (["--prompt-init", "cls"], "num_tokens must equal the number of classes (3)"),
])
def test_bad_flags_give_a_one_line_error(workspace, tmp_path, capsys, extra, message):
    assert main(train_args(workspace, tmp_path / "run", *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("vptune: error:") and message in err and "Traceback" not in err


@pytest.mark.parametrize("text, message", [
    ("epochz: 3\n", "unknown setting(s) ['epochz']"),
    ("num_workers: two\n", "num_workers must be auto or a whole number from 0 to"),
    ("skip_bad: 'no'\n", "skip_bad must be true or false"),
    ("epochs: [1\n", "is not valid YAML"),
    ("data: !!python/object/apply:os.system ['echo hi']\n", "is not valid YAML"),
    ("epochs: 1\nlr: 0.1\nepochs: 2\n", "line 3: epochs is set twice; keep one"),  # YAML keeps the last silently
    ("? [epochs, lr]\n: 1\n", "is not valid YAML"),  # a list as a key
])
def test_bad_config_files_are_named(workspace, tmp_path, capsys, text, message):
    settings = tmp_path / "s.yaml"
    settings.write_text(text)
    assert main(train_args(workspace, tmp_path / "run", "--config", str(settings))) == 1
    err = capsys.readouterr().err
    assert message in err and str(settings) in err and "Traceback" not in err


def test_refuses_to_overwrite_without_flag(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep me")
    assert main(train_args(workspace, run)) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (run / "precious.txt").read_text() == "keep me"


def test_a_bug_shows_its_traceback_not_a_one_line_error(workspace, tmp_path, monkeypatch):
    """Bug: every TypeError / RuntimeError was printed as a user error, hiding the project's own bugs."""
    from vptune.training import loop

    def broken(*args, **kwargs):
        raise TypeError("a bug inside vptune")

    monkeypatch.setattr(loop, "train_epoch", broken)
    with pytest.raises(TypeError, match="a bug inside vptune"):
        main(train_args(workspace, tmp_path / "run"))


def test_debug_shows_the_traceback_of_a_user_error_too(workspace, tmp_path, capsys, monkeypatch):
    assert main(train_args(workspace, tmp_path / "a", "--lr", "0", "--debug")) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("VPTUNE_DEBUG", "1")
    assert main(train_args(workspace, tmp_path / "b", "--lr", "0")) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "vptune: error: lr must be a positive number" in err


def test_info_on_a_backbone_names_the_automatic_prompt_length_and_its_share(capsys):
    assert main(["info", "test_vit"]) == 0  # 160 px, patch 16: 100 patches ask for 16 prompts a block, but 16 x 6
    # blocks x width 64 would be 2.0% of the 306,240 parameters: the 1% cap allows 7 (0.88%)
    assert "--num-tokens auto at 160 px is p = 7 (0.88% of the backbone)" in capsys.readouterr().out


def test_python_dash_m_runs_the_command_line_and_bugs_exit_with_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "vptune", "info", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("vptune: error:") and "is neither a task" in done.stderr


@pytest.mark.parametrize("args", [["--help"], ["info", "test_vit"]])  # argparse's exit, and a command's return
def test_output_into_a_closed_pipe_ends_quietly(args):
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head -1` does once it has its line; here before the first write, so no race
    try:
        done = subprocess.run([sys.executable, "-m", "vptune", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode in (0, 141) and done.stderr == ""  # no traceback, no "Exception ignored" from the exit


def test_train_help_lists_every_registered_method(capsys):
    from vptune.methods import REGISTRY

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in REGISTRY) and "--cache-stem" in out and "--prompt-init" in out


@pytest.mark.parametrize("top_k", ["0", "-1"])
def test_predict_refuses_a_top_k_below_one(workspace, tmp_path, capsys, top_k):
    from vptune import PromptConfig, PromptedViT, save_task
    from conftest import make_tiny_vit

    save_task(PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=1), num_classes=3), tmp_path / "task")
    image = workspace / "images" / "red" / "0.png"
    assert main(["predict", str(tmp_path / "task"), str(image), "--top-k", top_k]) == 1
    assert "--top-k must be a positive integer" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "info", "eval"])
def test_a_file_given_as_the_task_is_named_as_a_file(workspace, tmp_path, capsys, command):
    from vptune import PromptConfig, PromptedViT, save_task
    from conftest import make_tiny_vit

    save_task(PromptedViT(make_tiny_vit(), PromptConfig(num_tokens=1), num_classes=3), tmp_path / "task")
    image = workspace / "images" / "red" / "0.png"
    args = {"predict": [str(tmp_path / "task" / "task.json"), str(image)], "info": [str(image)],
            "eval": [str(tmp_path / "task" / "task.json")]}[command]
    assert main([command, *args]) == 1
    assert "is a file; give the task's folder (the one holding task.json)" in capsys.readouterr().err


def test_resume_refuses_flags_that_would_change_the_run_and_takes_more_epochs(workspace, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    assert main(train_args(workspace, run.path)) == 0
    config, state = run.config.read_text(), run.state.read_bytes()

    assert main(["train", "--resume", str(run.path), "--lr", "99", "--epochs", "3", "--data", "digits"]) == 1
    err = capsys.readouterr().err
    assert "--data, --lr would change it" in err and "only --epochs, --device" in err
    assert main(["train", "--resume", str(run.path), "--epochs", "1"]) == 1
    assert "already finished 2 epochs" in capsys.readouterr().err
    assert run.config.read_text() == config and run.state.read_bytes() == state  # nothing touched

    assert main(["train", "--resume", str(run.path), "--epochs", "3", "--quiet"]) == 0
    assert [row["epoch"] for row in run.read_metrics()] == [1, 2, 3]
    assert "epochs: 3" in run.config.read_text()


def test_info_on_a_mistyped_path_names_the_path(capsys):
    assert main(["info", "runs/no-such-task"]) == 1
    assert "runs/no-such-task: no such task directory" in capsys.readouterr().err


@pytest.mark.parametrize("key", ["", "  "])
def test_serve_refuses_an_empty_api_key(key):
    from vptune import ConfigError
    from vptune.inference.server import ServeSettings

    with pytest.raises(ConfigError, match="--api-key is empty, which would serve without authentication"):
        ServeSettings(api_key=key).validate()


@pytest.mark.parametrize("settings, message", [
    (dict(max_upload_mb=0), "--max-upload-mb must be a number > 0, got 0"),  # every upload would be a 413
    (dict(max_upload_mb=float("inf")), "--max-upload-mb must be a number > 0, got inf"),
    (dict(max_wait_ms=float("nan")), "--max-wait-ms must be a number >= 0, got nan"),
])
def test_serve_refuses_limits_that_would_refuse_every_request_or_none(settings, message):
    from vptune.inference.server import ServeSettings

    with pytest.raises(ConfigError, match=re.escape(message)):
        ServeSettings(**settings).validate()


@pytest.fixture(scope="module")
def trained_run(workspace, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("trained") / "run")
    assert main(train_args(workspace, run.path, "--epochs", "1")) == 0
    return run


def test_eval_scores_data_with_some_of_the_tasks_classes_by_name(trained_run, workspace, tmp_path, capsys):
    import shutil

    from vptune import Predictor

    data = tmp_path / "two-classes"  # the task has blue, green, red; this set red and blue only
    for split, files in (("train", slice(0, 6)), ("test", slice(6, 10))):
        for name in ("red", "blue"):
            (data / split / name).mkdir(parents=True)
            for f in sorted((workspace / "images" / name).glob("*.png"))[files]:
                shutil.copy(f, data / split / name / f.name)
    for f in sorted((data / "train" / "blue").glob("*.png"))[1:]:
        f.unlink()  # one train image: too few for a val split too, which is a data warning
    assert main(["eval", str(trained_run.path), "--data", str(data)]) == 0
    out, err = capsys.readouterr()
    warning = [line for line in err.splitlines() if "warning" in line]
    assert warning[0].startswith("vptune: warning: ") and len(warning) == 1  # one plain line, no source line
    metrics = json.loads((trained_run.path / "eval" / "test_metrics.json").read_text())
    tests = sorted((data / "test").rglob("*.png"))
    guesses = [r["top"][0]["class"] for r in Predictor.from_task(trained_run.path).predict_files(tests, top_k=1)]
    assert metrics["top1"] == pytest.approx(sum(g == f.parent.name for g, f in zip(guesses, tests)) / len(tests))
    assert [sum(row) for row in metrics["confusion"]] == [4, 0, 4]  # blue, green (none), red
    assert re.search(r"^green +- +0$", out, re.MULTILINE)


def test_evaluate_in_python_refuses_a_split_by_name(trained_run):
    from vptune import evaluate

    with pytest.raises(ConfigError, match="--split must be one of test, val, train, trainval, got 'tset'"):
        evaluate(trained_run.path, split="tset")


@pytest.mark.parametrize("edit, expected", [
    (lambda meta: meta["prompt"].update(layers=[0, 99]), "99"),
    (lambda meta: meta.update(method={"name": "banana"}), "banana"),
    (lambda meta: meta["prompt"].update(num_tokens=-3), "num_tokens"),
    (lambda meta: meta["prompt"].update(num_tokens=10**8), "'prompts.tokens' has shape"),
])
def test_info_refuses_an_edited_task_json_as_predict_does(trained_run, tmp_path, capsys, edit, expected):
    import shutil

    task = tmp_path / "task"
    shutil.copytree(trained_run.best, task)
    meta = json.loads((task / "task.json").read_text())
    edit(meta)
    (task / "task.json").write_text(json.dumps(meta))
    for command in (["info", str(task)], ["predict", str(task), str(trained_run.path / "config.yaml")]):
        assert main(command) == 1, command
        error = capsys.readouterr().err
        assert error.startswith("vptune: error:") and expected in error, (command, error)


def _copy_run(run, tmp_path):
    import shutil

    shutil.copytree(run.path, tmp_path / "copy")
    return tmp_path / "copy"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("args, message", [
    (["train", "--resume", "{missing}"], "cannot resume {missing}: no such folder; give the --output of an earlier"),
    (["train", "--resume", "{file}"], "--resume {file} is a file; give a folder"),
    (["train", "--data", "{images}", "--output", "{file}"], "--output {file} is a file; give a folder"),
])
def test_a_run_folder_that_is_missing_or_a_file_is_one_line(workspace, tmp_path, capsys, args, message):
    paths = {"missing": tmp_path / "gone", "file": tmp_path / "notes.txt", "images": workspace / "images"}
    paths["file"].write_text("keep")
    assert main([a.format(**paths) for a in args]) == 1
    assert message.format(**paths) in capsys.readouterr().err
    assert paths["file"].read_text() == "keep" and not paths["missing"].exists()


def test_a_resume_runs_on_the_device_it_is_given(trained_run, tmp_path, capsys):
    """Once a resume ran on the CPU whatever --device said; now --device cuda here is the one-line error."""
    copy = _copy_run(trained_run, tmp_path)
    assert main(["train", "--resume", str(copy), "--device", "cuda", "--epochs", "2", "--quiet"]) == 1
    assert "CUDA" in capsys.readouterr().err
    assert "device: cpu" in (copy / "config.yaml").read_text()  # nothing recorded that did not run


@pytest.mark.parametrize("text, expected", [
    ("epochs: [1, 2\n", "is not readable YAML"),
    ("- just\n- a list\n", "holds a list"),
    ("epochs: banana\n", "epochs"),
])
def test_a_damaged_config_yaml_on_resume_is_one_line_naming_it(trained_run, tmp_path, capsys, text, expected):
    copy = _copy_run(trained_run, tmp_path)
    (copy / "config.yaml").write_text(text)
    assert main(["train", "--resume", str(copy), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("vptune: error:") and str(copy / "config.yaml") in error and expected in error, error


@pytest.mark.parametrize("size, expected", [("7", "smaller than"), ("100000", "img_size must be 1..4096")])
def test_an_impossible_image_size_is_one_line_with_or_without_weights(workspace, tmp_path, capsys, size, expected):
    args = [a if a != "32" else size for a in train_args(workspace, tmp_path / "run")]  # with --weights
    assert main(args) == 1
    error = capsys.readouterr().err
    assert expected in error and "Traceback" not in error, error
    assert not (tmp_path / "run").exists()


def test_a_full_disk_when_eval_writes_its_plot_is_one_line(trained_run, tmp_path, capsys, monkeypatch):
    import errno

    from matplotlib.figure import Figure

    copy = _copy_run(trained_run, tmp_path)

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    assert main(["eval", str(copy), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert "test_confusion.png: the disk is full" in error and "Traceback" not in error, error
    assert not [p for p in (copy / "eval").iterdir() if p.name.endswith(".tmp")]


def test_device_auto_is_the_default_and_records_the_device_chosen(workspace, tmp_path, capsys):
    """No GPU here: auto picks the CPU, config.yaml says so; eval and predict take --device too."""
    import torch

    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("a GPU is present: auto would pick it")
    run = RunDir(tmp_path / "run")
    assert main(train_args(workspace, run.path, "--epochs", "1")) == 0
    assert run.read_config()["device"] == "cpu"
    assert main(["eval", str(run.path), "--device", "auto", "--quiet"]) == 0
    image = str(workspace / "images" / "red" / "0.png")
    assert main(["predict", str(run.path), image, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run.path), image, "--device", "cuda"]) == 1
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "predict", "serve"])
def test_a_device_this_machine_lacks_is_one_line_for_inference(trained_run, workspace, capsys, monkeypatch, command):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without CUDA, whichever this is
    argv = {"eval": ["eval", str(trained_run.path)],
            "predict": ["predict", str(trained_run.path), str(workspace / "images" / "red" / "0.png")],
            "serve": ["serve", "--task", f"t={trained_run.path}", "--port", "0"]}[command]
    assert main([*argv, "--device", "cuda"]) == 1
    error = capsys.readouterr().err
    assert error.splitlines() == ["vptune: error: device 'cuda': this machine has no CUDA GPU that torch can use; "
                                  "use --device cpu"], error


@pytest.mark.parametrize("command", ["eval", "predict", "serve"])
def test_an_unknown_precision_is_refused_naming_the_allowed_ones(trained_run, capsys, command):
    argv = {"eval": ["eval", str(trained_run.path)], "predict": ["predict", str(trained_run.path), "x.png"],
            "serve": ["serve", "--task", f"t={trained_run.path}"]}[command]
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--precision", "fp64"])
    error = capsys.readouterr().err
    assert exit.value.code == 2 and "--precision: invalid choice: 'fp64'" in error, error
    assert all(name in error for name in ("auto", "fp32", "bf16", "fp16"))


def test_eval_and_predict_take_precision_and_compile_and_log_them(trained_run, workspace, capsys, monkeypatch):
    import importlib

    evaluate_module = importlib.import_module("vptune.inference.evaluate")  # the package's `evaluate` is the function
    predictor_module = importlib.import_module("vptune.inference.predictor")

    compiled = []  # what reached maybe_compile (compiling itself has its own test: tests/inference/test_runtime.py)

    def record(fn, enabled):
        compiled.append(enabled)
        return fn

    monkeypatch.setattr(evaluate_module, "maybe_compile", record)
    monkeypatch.setattr(predictor_module, "maybe_compile", record)
    image = str(workspace / "images" / "red" / "0.png")
    for argv in (["eval", str(trained_run.path)], ["predict", str(trained_run.path), image, "--json"]):
        assert main([*argv, "--device", "cpu", "--precision", "bf16", "--compile"]) == 0
        assert f"{argv[0]}: device cpu, precision bf16, compiled" in capsys.readouterr().err.splitlines()
    assert compiled == [True, True]


def test_a_user_error_quoting_a_multi_line_message_prints_one_line(monkeypatch, capsys):
    import vptune.inference

    def describe(target):  # as when a message quotes another library's (PyYAML's spans lines, with a caret)
        raise ConfigError(f"{target}: not valid YAML: while parsing\n  in line 2, column 1:\n    ^")

    monkeypatch.setattr(vptune.inference, "describe", describe)
    assert main(["info", "task.yaml"]) == 1
    assert capsys.readouterr().err == "vptune: error: task.yaml: not valid YAML: while parsing in line 2, column 1: ^\n"


def test_version_names_vptune_and_the_libraries_its_numbers_depend_on(capsys):
    import timm
    import torch

    import vptune

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(
        f"vptune {vptune.__version__} (torch {torch.__version__}, timm {timm.__version__}, python ")


@pytest.mark.parametrize("command, args, target, said", [
    ("info", ["task"], ("vptune.inference", "describe"), "vptune: interrupted\n"),
    ("ablate", ["init"], ("vptune.experiments.ablate", "run_ablation"), "finished runs are in OUT/runs.jsonl"),
])
def test_ctrl_c_says_what_the_command_kept(monkeypatch, capsys, command, args, target, said):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(target[0]), target[1], interrupted)
    assert main([command, *args]) == 130
    err = capsys.readouterr().err
    assert said in err and (command == "train" or "vptune train --resume" not in err)  # not train's hint


@pytest.mark.parametrize("method, flags, named", [
    ("linear", ["--num-tokens", "5"], "--num-tokens"),
    ("lora", ["--prompt-init", "xavier", "--prompt-location", "add"], "--prompt-location, --prompt-init"),
    ("vpt-deep", ["--lora-rank", "4"], "--lora-rank"),
])
def test_a_flag_the_method_does_not_read_is_named_in_a_warning(workspace, tmp_path, capsys, method, flags, named):
    assert main(train_args(workspace, tmp_path / "run", "--epochs", "1", "--method", method, *flags)) == 0
    assert f"vptune: warning: --method {method} does not read {named}, so the run is the same" in \
        capsys.readouterr().err


def test_head_flags_cross_fit_overrides_are_named_in_a_warning(workspace, tmp_path, capsys):
    args = train_args(workspace, tmp_path / "run", "--epochs", "1", "--cross-fit", "--head-lr", "0.1", "--head-init",
                      "random")
    assert main(args) == 0
    assert "warning: --cross-fit sets the head to a fitted probe at every step, so the run is the same without " \
           "--head-init and --head-lr" in capsys.readouterr().err


def test_settings_the_method_reads_raise_no_warning(workspace, tmp_path, capsys):
    assert main(train_args(workspace, tmp_path / "run", "--epochs", "1", "--method", "vpt-shallow")) == 0
    assert "does not read" not in capsys.readouterr().err


def test_an_eva_backbone_by_name_with_local_weights_trains_evaluates_predicts_and_describes(workspace, tmp_path,
                                                                                        capsys):
    """As a user of DINOv3 / EVA-02 / PE would: a timm Eva name and its weights file, every command."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "eva02.safetensors"
    save_file(timm.create_model("eva02_tiny_patch14_224", pretrained=False, num_classes=0, img_size=28).state_dict(),
              str(weights))
    run = tmp_path / "run"
    assert main(["train", "--data", str(workspace / "images"), "--output", str(run), "--backbone",
                 "eva02_tiny_patch14_224", "--weights", str(weights), "--img-size", "28", "--epochs", "1",
                 "--num-tokens", "2", "--quiet"]) == 0
    task = json.loads((run / "best" / "task.json").read_text())
    assert task["backbone"]["family"] == "eva" and task["backbone"]["depth"] == 12
    assert main(["eval", str(run), "--quiet"]) == 0
    image = next((workspace / "images" / "red").iterdir())
    assert main(["predict", str(run), str(image), "--top-k", "2", "--json"]) == 0
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count('"probability"') == 2  # the image's top 2 classes
    assert "eva02_tiny_patch14_224 (eva family)" in out


def test_a_swin_backbone_trains_evaluates_predicts_and_serves_info_from_the_command_line(workspace, tmp_path,
                                                                                         capsys):
    """A timm Swin by name with local weights (offline), at an image size other than its default: no [CLS], so the
    head reads the mean of the final tokens without being told; prompts of each stage's width."""
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "swin.safetensors"
    backbone = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=32)
    save_file(backbone.state_dict(), str(weights))
    run = tmp_path / "run"
    assert main(["train", "--data", str(workspace / "images"), "--output", str(run), "--backbone",
                 "swin_tiny_patch4_window7_224", "--weights", str(weights), "--img-size", "32", "--epochs", "1",
                 "--num-tokens", "2", "--no-refit", "--quiet"]) == 0
    task = json.loads((run / "best" / "task.json").read_text())
    assert task["backbone"]["family"] == "swin" and task["backbone"]["depth"] == 12
    assert task["prompt"]["pooling"] == "image-pool" and task["prompt"]["merge"] == "drop"
    assert main(["eval", str(run), "--quiet"]) == 0
    image = next((workspace / "images" / "red").iterdir())
    assert main(["predict", str(run), str(image), "--top-k", "2", "--json"]) == 0
    assert main(["info", str(run)]) == 0
    out = capsys.readouterr().out
    assert out.count('"probability"') == 2
    assert "swin_tiny_patch4_window7_224 (swin family)" in out
    # 2 prompts at each of 12 blocks of widths 96 (2 blocks), 192 (2), 384 (6), 768 (2); a head on 768 features
    assert re.search(r"prompts +8,832\b", out) and re.search(r"head +2,307\b", out)
