"""Every script in benchmarks/ runs: each once, at its smallest (timm's `test_vit` at 32 px, a handful of images or
trials), in a subprocess as a user would start it. Their numbers are not checked, only that they end well and
print their table; scripts that call the library drifted from its API unnoticed before."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"
TINY = ["--backbone", "test_vit", "--img-size", "32"]  # and --weights: the workspace's file

# script -> (its arguments, with {tmp} and {weights} filled in; a line its output starts with; a module it needs)
SMOKE = {
    "bench_vpt.py": (["--quick", "--device", "cpu", "--prompts", "3", "--warmup", "0", "--paths", "floor,tokens",
                      "--modes", "deep", "--no-memory", "--repeats", "1", "--out", "{tmp}"], "| model | mode |", None),
    "feature_scale.py": (["digits", *TINY, "--weights", "{weights}"], "| task | mean norm |", None),
    "prompt_init.py": (["--data", "digits", "--images", "48", *TINY, "--weights", "{weights}"],
                       "| data | no prompt | xavier | patches |", None),
    "prune_cost.py": (["{tmp}/prune.json", *TINY, "--weights", "{weights}", "--epochs", "1", "--subset", "20",
                       "--lrs", "0.01", "--head-lrs", "0.01"], "none {", "optuna"),
    "serve_bench.py": ([*TINY, "--weights", "{weights}", "--num-tokens", "2", "--batch", "4", "--repeats", "1",
                        "--clients", "2", "--requests", "8", "--rounds", "1"], "| tasks in the batch |", None),
    "holdout_tasks.py": (["{tmp}"], "{tmp}/textures/labels.csv", "skimage"),
}


def test_every_script_has_a_smoke_run():
    scripts = {path.name for path in BENCHMARKS.iterdir() if path.suffix in (".py", ".sh")}
    assert scripts == {*SMOKE, "gpu_bench.sh"}


def test_the_gpu_script_is_valid_bash():  # it needs a GPU; tests/test_bench.py also dry-runs its bench options
    subprocess.run(["bash", "-n", str(BENCHMARKS / "gpu_bench.sh")], check=True)


@pytest.mark.parametrize("script", list(SMOKE))
def test_script_runs_and_prints_its_table(script, workspace, tmp_path):
    args, first, needs = SMOKE[script]
    if needs:
        pytest.importorskip(needs)
    fill = {"{tmp}": str(tmp_path), "{weights}": str(workspace / "tiny.safetensors")}
    for key, value in fill.items():
        args, first = [a.replace(key, value) for a in args], first.replace(key, value)
    env = {**os.environ, "VPTUNE_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # few cores, shared
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(line.startswith(first) for line in done.stdout.splitlines()), done.stdout[-3000:]
