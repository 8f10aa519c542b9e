"""Property-based attack on the command line (hypothesis): every command, driven through `vptune.cli.main` with
generated flag values and with damaged run files, ends with exit code 0, 1 or 2 and never a traceback (an
exception out of `main` fails the test, as it would print one)."""
import shutil
import tempfile
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import TINY_VIT, train_args  # noqa: E402

from vptune import RunDir  # noqa: E402
from vptune.cli import main  # noqa: E402

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# what careless or hostile users type as a flag's value
HOSTILE = ["", " ", "0", "-1", "1", "2", "3", "7", "1.5", "1e999", "-1e999", "nan", "inf", "100000", "10**8",
           "banana", "none", "null", "true", "auto", "all", "first 2", "last 99", "0,0", "1,", ",", "log:1",
           "log:1:0", "cuda", "cuda:7", "mps", "cpu:0", "notaurl", "sqlite:///", "/", ".", "..", "/dev/null",
           "~", "a=b", "x" * 300, "\u00e9\u00e8", "\x00", "bf16", "fp16", "fp64", "half"]
values = st.sampled_from(HOSTILE) | st.text(max_size=8) | st.integers(-10**9, 10**9).map(str) \
    | st.floats(allow_nan=True).map(str)

TRAIN_FLAGS = ["--epochs", "--batch-size", "--lr", "--head-lr", "--img-size", "--num-tokens", "--prompt-layers",
               "--device", "--method", "--prompt-location", "--prompt-init", "--pooling", "--max-pixels",
               "--test-subset", "--weight-decay", "--seed", "--data", "--output", "--backbone", "--weights",
               "--precision", "--num-workers"]
COMMANDS = {
    "train": TRAIN_FLAGS,
    "eval": ["--batch-size", "--split", "--device", "--precision", "--data", "TASK"],
    "predict": ["--top-k", "--max-pixels", "--device", "--precision", "TASK", "IMAGE"],
    "info": ["TARGET"],
    "sweep": ["--trials", "--storage", "--lr", "--workers", "--sampler", "--pruner", "--seeds", "--epochs"],
    "serve": ["--port", "--host", "--max-batch", "--max-pending", "--max-upload-mb", "--max-pixels", "--top-k",
              "--max-wait-ms", "--api-key", "--device", "--precision", "--task"],
    "ablate": ["SET", "--tasks", "--seeds", "--cells", "--epochs"],
}  # demo: a valid value would run the real backbone for minutes; its --data check has its own test


@pytest.fixture(scope="module")
def trained(workspace, tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("cli-properties") / "run")
    assert main(train_args(workspace, run.path, "--epochs", "1")) == 0
    return run


@pytest.fixture
def no_serving(monkeypatch):
    """A serve whose settings are all valid would serve forever: it stops once it would start serving."""
    uvicorn = pytest.importorskip("uvicorn")
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)


def _argv(command: str, flag: str, value: str, workspace: Path, trained: RunDir, folder: Path) -> list[str]:
    image = str(workspace / "images" / "red" / "0.png")
    tiny = ["--backbone", TINY_VIT, "--weights", str(workspace / "tiny.safetensors"), "--img-size", "32"]
    base = {
        "train": train_args(workspace, folder / "run", "--epochs", "1"),
        "eval": ["eval", str(trained.path), "--quiet"],
        "predict": ["predict", str(trained.path), image],
        "info": ["info", str(trained.path)],
        "sweep": ["sweep", "--data", str(workspace / "images"), "--output", str(folder / "sweep"), *tiny,
                  "--epochs", "1", "--lr", "0.01", "--seeds", "none", "--quiet"],
        "serve": ["serve", "--task", f"t={trained.path}", "--port", "0"],
        "ablate": ["ablate", "methods", "--tasks", str(workspace / "images"), "--seeds", "0", "--cells", "linear",
                   "--out", str(folder / "ablate"), *tiny, "--epochs", "1", "--quiet"],
    }[command]
    positional = {"TASK": str(trained.path), "IMAGE": image, "TARGET": str(trained.path), "SET": "methods"}
    if flag in positional:  # the positional's value replaced where it stands
        return [value if arg == positional[flag] else arg for arg in base]
    if flag in base:
        at = base.index(flag)
        return base[:at + 1] + [value] + base[at + 2:]
    return base + [flag, value]


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit:  # argparse's usage errors
        return exit.code


@SETTINGS
@given(data=st.data())
def test_every_command_with_any_flag_value_exits_0_1_or_2(workspace, trained, no_serving, capsys, data):
    command = data.draw(st.sampled_from(sorted(COMMANDS)), label="command")
    flag = data.draw(st.sampled_from(COMMANDS[command]), label="flag")
    value = data.draw(values, label="value")
    if "\x00" in value and command == "serve":
        value = value.replace("\x00", "")  # argv itself cannot hold NUL
    with tempfile.TemporaryDirectory() as folder:
        argv = _argv(command, flag, value, workspace, trained, Path(folder))
        code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    if code == 1:
        assert err.strip().splitlines()[-1].startswith("vptune: error:"), (argv, err)


RUN_FILES = ["config.yaml", "metrics.jsonl", "state.pt", ".lock", "best/task.json", "best/prompt.safetensors",
             "last/task.json", "last/prompt.safetensors", "summary.json"]
damage = st.one_of(st.just(b""), st.binary(max_size=64), st.sampled_from(
    [b"{", b"[]", b"null", b"epochs: [1,", b'{"pid": "x"}', b"\xff\xfe", b"- a\n- b\n", b"epochs: banana\n"]))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(RUN_FILES), blob=damage, how=st.sampled_from(["replace", "truncate", "delete"]),
       command=st.sampled_from(["resume", "eval", "predict", "info"]))
def test_a_damaged_run_file_is_one_line_for_every_command(workspace, trained, capsys, name, blob, how, command):
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        shutil.copytree(trained.path, run)
        target = run / name
        if how == "delete":
            target.unlink(missing_ok=True)
        elif how == "truncate" and target.is_file():
            target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
        else:
            target.write_bytes(blob)
        argv = {"resume": ["train", "--resume", str(run), "--epochs", "2", "--quiet"],
                "eval": ["eval", str(run), "--quiet"],
                "predict": ["predict", str(run), str(workspace / "images" / "red" / "0.png")],
                "info": ["info", str(run)]}[command]
        code = _exit_code(argv)
    err = capsys.readouterr().err
    assert code in (0, 1), (argv, name, how, blob, err)
    assert "Traceback" not in err, (argv, name, err)
