"""`vptune bench` in --quick mode on a tiny model: it runs, and its CSV/JSON parse with consistent ratios.

No timing asserts: speed depends on the machine and its load. docs/performance.md has the real figures.
"""
import csv
import re
import functools
import json
import math
import shlex
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vptune import bench
from vptune.cli import bench_settings, build_parser, main

FIGURES = ("train_step_s", "train_peak_mb", "infer_ips", "infer_b1_ips")
BASES = ("ref", "floor", "fp32_eager", "vpt_deep")
COLUMNS = ["model", "mode", "prompts", "path", "precision", "compiled", "head", "img_size", "train_batch",
           "infer_batch", *FIGURES,
           *(f"{f}_vs_{base}" for base in BASES for f in FIGURES), "compile_s", "compile_failed"]
GPU_SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_bench.sh"


def run_bench(out, *argv):
    assert main(["bench", "--quick", "--device", "cpu", "--prompts", "3", "--warmup", "0", "--out", str(out), *argv]) == 0
    with open(out / "bench.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    return csv_rows, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Two precisions, every path, CPU memory in its subprocess and the data loader: the whole report."""
    out, images = tmp_path_factory.mktemp("bench"), tmp_path_factory.mktemp("images")
    for label in ("a", "b"):
        (images / label).mkdir()
        for i in range(6):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(images / label / f"{i}.png")
    return run_bench(out, "--paths", "floor,tokens,prefix,prefix-ckpt", "--precisions", "fp32,bf16",
                     "--loader", str(images))


@pytest.fixture(scope="module")
def compiled_outputs(tmp_path_factory):
    """--compile with two precisions. torch.compile's capture (dynamo) runs for real, but hands the captured
    graphs to its "eager" backend: inductor's C++ code generation takes minutes per config on a CPU."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
        return run_bench(tmp_path_factory.mktemp("compiled"), "--paths", "floor,tokens", "--modes", "deep",
                         "--precisions", "fp32,bf16", "--compile", "--no-memory", "--repeats", "1")


def _number(value):
    return None if value in ("", None) else float(value)


def _key(row):
    return row["mode"], str(row["prompts"]), row["path"], row["precision"]


def test_csv_has_a_row_for_every_path_and_precision(outputs):
    rows, _, _ = outputs
    assert list(rows[0]) == COLUMNS
    floors = [("", "0", "floor", precision) for precision in ("fp32", "bf16")]
    assert [_key(r) for r in rows] == floors + [(mode, "3", path, precision) for mode in ("deep", "shallow")
                                                for path in ("tokens", "prefix", "prefix-ckpt")
                                                for precision in ("fp32", "bf16")]
    for r in rows:
        assert r["compiled"] == "False" and r["compile_s"] == ""
        assert _number(r["train_step_s"]) > 0 and _number(r["train_peak_mb"]) >= 0
        if r["path"].endswith("-ckpt"):  # no gradients at inference: checkpointing is not measured there
            assert r["infer_ips"] == "" and r["infer_b1_ips"] == ""
        else:
            assert _number(r["infer_ips"]) > 0 and _number(r["infer_b1_ips"]) > 0


def test_every_ratio_is_filled_and_sane(outputs):
    """Time and throughput ratios to the reference, the floor and fp32 eager: present, positive, finite."""
    rows, _, _ = outputs
    for r in rows:
        figures = ["train_step_s"] if r["path"].endswith("-ckpt") else ["train_step_s", "infer_ips", "infer_b1_ips"]
        bases = BASES[1:3] if r["path"] == "floor" else BASES[:3]  # no --methods: no x vpt-deep
        assert r["train_step_s_vs_vpt_deep"] == ""
        for f in figures:
            for base in bases:
                ratio = _number(r[f"{f}_vs_{base}"])
                assert ratio is not None and 0 < ratio < math.inf, (r["path"], r["precision"], f, base)
        memory = _number(r["train_peak_mb_vs_floor"])  # a tiny model's floor may need no memory at all: None
        assert memory is None or 0 <= memory < math.inf
        if r["precision"] == "fp32":  # the fp32 eager row is its own base
            assert _number(r["train_step_s_vs_fp32_eager"]) == 1.0


def test_json_matches_csv_and_records_the_machine(outputs):
    csv_rows, data, _ = outputs
    assert {"cpu", "cores", "torch", "device", "device_name", "precisions"} <= set(data["machine"])
    assert data["machine"]["device_name"] == data["machine"]["cpu"]  # on the CPU, the device is the CPU model
    assert data["machine"]["precisions"] == ["fp32", "bf16"]
    assert data["settings"]["quick"] and data["settings"]["device"] == "cpu"
    assert len(data["rows"]) == len(csv_rows)
    for j, c in zip(data["rows"], csv_rows):
        assert list(j) == COLUMNS
        assert j["precision"] == c["precision"] and str(j["compiled"]) == c["compiled"]
        for f in FIGURES:
            assert _number(c[f]) == pytest.approx(j[f]) if j[f] is not None else c[f] == ""
    assert {r["precision"] for r in data["rows"]} == {"fp32", "bf16"}


def test_ratios_are_consistent_with_the_raw_figures(outputs):
    """Each ratio is the median, over the rounds that measured both, of the row's value over the base's."""
    _, data, _ = outputs
    rows = data["rows"]
    fields = ("mode", "prompts", "path", "precision", "compiled")
    samples = {(s["group"], *(s[k] for k in fields), s["figure"]): s["values"] for s in data["samples"]}

    def paired(row, base, figure):
        ratios = [x / b for (g, *config, f), values in samples.items()
                  if (*config, f) == (*(row[k] for k in fields), figure)
                  for x, b in zip(values, samples.get((g, *base, figure), [])) if b]
        return statistics.median(ratios) if ratios else None

    for r in rows:
        same_variant = (r["precision"], r["compiled"])
        for f in FIGURES:
            values = [v for (_, *config, fig), vs in samples.items()
                      if (*config, fig) == (*(r[k] for k in fields), f) for v in vs]
            assert r[f] == (statistics.median(values) if values else None)
            assert r[f"{f}_vs_floor"] == paired(r, ("", 0, "floor", *same_variant), f)
            ref = None if r["path"] == "floor" else paired(r, (r["mode"], r["prompts"], "tokens", *same_variant), f)
            assert r[f"{f}_vs_ref"] == ref
            assert r[f"{f}_vs_fp32_eager"] == paired(r, (r["mode"], r["prompts"], r["path"], "fp32", False), f)
        if r["path"] == "tokens":
            assert r["train_step_s_vs_ref"] == 1.0 and r["infer_ips_vs_ref"] == 1.0
        if r["path"] == "floor":
            assert r["train_step_s_vs_floor"] == 1.0
        if r["path"] == "prefix":  # memory is measured once per config: its ratios are plain quotients
            tokens = next(x for x in rows if _key(x) == (r["mode"], str(r["prompts"]), "tokens", r["precision"]))
            if tokens["train_peak_mb"]:
                assert math.isclose(r["train_peak_mb_vs_ref"], r["train_peak_mb"] / tokens["train_peak_mb"])


def test_cpu_memory_is_measured_for_each_precision(outputs):
    """The memory subprocess gets each config's precision: every bf16 row has its own figure."""
    _, data, _ = outputs
    bf16 = [r for r in data["rows"] if r["precision"] == "bf16"]
    assert bf16 and all(r["train_peak_mb"] is not None for r in bf16)


def test_loader_is_set_beside_the_model_training_speed(outputs):
    _, data, md = outputs
    [loader] = data["loader"]
    assert loader["img_size"] == 32 and loader["batch"] == data["settings"]["train_batch"]
    assert loader["images"] == 8  # the 70% training share of 2 classes x 6 images
    assert loader["img_per_s"] > 0
    assert loader["num_workers"] == 0 and not loader["pin_memory"]  # auto on the CPU: as training, no workers
    [line] = bench.loader_lines(loader, data["rows"])
    assert line in md
    fast = max((r for r in data["rows"] if r["path"] == "prefix"), key=lambda r: 1 / r["train_step_s"])
    model_ips = fast["train_batch"] / fast["train_step_s"]
    assert f"{loader['img_per_s']:.0f} img/s vs tiny training {model_ips:.0f} img/s (fast path" in line
    verdict = "the model limits" if loader["img_per_s"] >= model_ips else "the data loader limits"
    assert verdict in line


def test_markdown_table_lists_every_row_with_precision_and_compile_columns(outputs):
    rows, _, md = outputs
    table_lines = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert len(table_lines) == len(rows)
    head = next(line for line in md.splitlines() if line.startswith("| model"))
    assert "| precision | compiled |" in head and head.count("x fp32 eager") == len(FIGURES)
    assert all(" | bf16 | no |" in line for line in table_lines if "bf16" in line)


def test_one_variant_has_no_fp32_eager_column():
    rows = [{"model": "m", "mode": "", "prompts": 0, "path": "floor", "precision": "fp32", "compiled": False,
             "compile_failed": False, "infer_batch": 4, **{f: 1.0 for f in FIGURES},
             **{f"{f}_vs_{b}": 1.0 for f in FIGURES for b in BASES}}]
    assert "x fp32 eager" not in bench.table(rows) and "x floor" in bench.table(rows)


def test_compiled_variants_are_measured_beside_eager(compiled_outputs):
    rows, data, md = compiled_outputs
    keys = {(r["path"], r["precision"], r["compiled"]) for r in rows}
    assert keys == {(path, precision, compiled) for path in ("floor", "tokens") for precision in ("fp32", "bf16")
                    for compiled in ("False", "True")}
    for r in rows:
        for f in ("train_step_s", "infer_ips", "infer_b1_ips"):
            assert 0 < _number(r[f"{f}_vs_fp32_eager"]) < math.inf
            assert 0 < _number(r[f"{f}_vs_floor"]) < math.inf
        if r["compiled"] == "True":  # its untimed first calls are reported as compile time
            assert _number(r["compile_s"]) > 0 and r["compile_failed"] == "False"
    assert data["machine"]["compile"] is True
    assert sum(" | yes |" in line for line in md.splitlines()) == 4


def test_a_compile_failure_is_reported_not_hidden(tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", refuse)
    rows, _, md = run_bench(tmp_path, "--paths", "floor,tokens", "--modes", "deep", "--compile", "--no-memory",
                            "--repeats", "1")
    compiled = [r for r in rows if r["compiled"] == "True"]
    assert compiled and all(r["compile_failed"] == "True" for r in compiled)
    assert all(_number(r["train_step_s"]) > 0 for r in compiled)  # measured eagerly all the same
    assert "failed: eager" in md
    assert "torch.compile failed for floor fp32 compiled" in capsys.readouterr().err


def refused(argv, capsys) -> str:
    """The one-line error `vptune bench ARGV` ends with (exit code 1)."""
    assert main(["bench", *argv]) == 1
    message = capsys.readouterr().err
    assert message.startswith("vptune: error: ") and message.count("\n") == 1, message
    return message


def test_a_windowed_backbone_without_a_class_token_is_measured_on_every_path(tmp_path):
    """Swin: the head reads the mean of the final tokens; the fast path shares prompt K/V across windows."""
    rows, _, _ = run_bench(tmp_path, "--models", "tiny-swin", "--no-memory", "--paths", "floor,tokens,prefix")
    assert {(r["mode"], r["path"]) for r in rows} >= {("deep", "tokens"), ("deep", "prefix"), ("shallow", "prefix")}
    assert all(float(r["train_step_s"]) > 0 and float(r["infer_ips"]) > 0 for r in rows)


def test_methods_are_measured_beside_vpt_deep_in_the_same_rounds(tmp_path):
    """`--methods`: each follow-up method's figures also as a ratio to VPT-deep at the same p and path."""
    rows, _, md = run_bench(tmp_path, "--methods", "e2vpt,vfpt,gated-vpt", "--no-memory", "--paths",
                            "floor,tokens,prefix")
    modes = {r["mode"] for r in rows}
    assert modes == {"", "deep", "e2vpt", "vfpt", "gated-vpt"}
    for r in rows:
        ratio = r["train_step_s_vs_vpt_deep"]
        assert (ratio != "") == (r["mode"] not in ("", "deep")), r
    deep = next(r for r in rows if r["mode"] == "deep" and r["path"] == "prefix")
    e2vpt = next(r for r in rows if r["mode"] == "e2vpt" and r["path"] == "prefix")
    assert float(e2vpt["infer_ips_vs_vpt_deep"]) > 0 and float(deep["infer_ips"]) > 0
    assert "x vpt-deep" in md


def test_segmentation_heads_are_measured_each_against_its_own_floor(tmp_path):
    """`--heads`: segmenters (per-pixel loss on masks), each head's floor the head on the frozen backbone; at the
    --img-size given."""
    rows, data, md = run_bench(tmp_path, "--heads", "linear,pup", "--img-size", "48", "--no-memory", "--paths",
                               "floor,tokens,prefix", "--modes", "deep")
    assert {(r["head"], r["path"]) for r in rows} == {(h, p) for h in ("linear", "pup")
                                                      for p in ("floor", "tokens", "prefix")}
    assert all(r["img_size"] == "48" and float(r["train_step_s"]) > 0 for r in rows)
    samples = data["samples"]
    for head in ("linear", "pup"):  # x floor: paired with the floor of the same head, round by round
        prefix = next(r for r in rows if r["head"] == head and r["path"] == "prefix")
        ratios = [v / b for s in samples if s["head"] == head and s["path"] == "prefix" and s["figure"] == "infer_ips"
                  for f in samples if f["head"] == head and f["path"] == "floor" and f["figure"] == "infer_ips"
                  and f["group"] == s["group"] for v, b in zip(s["values"], f["values"])]
        assert float(prefix["infer_ips_vs_floor"]) == pytest.approx(statistics.median(ratios), rel=1e-3)
    assert "| p | path | head | precision |" in md and "| prefix | pup | fp32 |" in md


def test_bad_paths_are_refused(capsys):
    assert "--paths must include floor and tokens" in refused(["--quick", "--paths", "prefix"], capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_device_this_machine_lacks_is_one_line_naming_it(tmp_path, capsys):
    assert "'cuda'" in refused(["--quick", "--device", "cuda", "--out", str(tmp_path / "out")], capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, named", [("--precisions", "fp32,fp64", "fp32, bf16, fp16"),
                                                  ("--device", "tpu", "auto, cpu, cuda"),
                                                  ("--num-workers", "many", "auto or a whole number"),
                                                  # each of these was a traceback, or a bench that ran anyway
                                                  ("--models", "no_such_vit", "aliases (vit-s14, vit-b16, dinov3-s16, tiny, swin-t"),
                                                  ("--models", "resnet18", "of a family vptune prompts (vit"),
                                                  ("--prompts", "4,-1", "prompt lengths >= 1"),
                                                  ("--methods", "e2vpt,bogus", "comma list from e2vpt, vfpt"),
                                                  ("--batch", "0", "--batch must be a whole number >= 1"),
                                                  ("--repeats", "0", "--repeats must be a whole number >= 1"),
                                                  ("--threads", "0", "--threads must be a whole number >= 1"),
                                                  ("--warmup", "-1", "--warmup must be a whole number >= 0"),
                                                  ("--heads", "linear,fpn", "comma list from linear, pup"),
                                                  ("--img-size", "0", "--img-size must be a whole number >= 1"),
                                                  ("--img-size", "8", "smaller than its patch (16 px)")])
def test_bad_settings_are_refused_naming_what_is_allowed(option, value, named, capsys):
    message = refused(["--quick", option, value], capsys)
    assert named in message and value.split(",")[-1] in message


def test_a_segmentation_head_on_a_feature_map_under_two_by_two_is_refused_before_any_timing(capsys):
    assert "1 x 1 feature map" in refused(["--quick", "--heads", "linear", "--img-size", "16"], capsys)


def test_a_list_flag_with_a_word_for_a_number_is_an_argparse_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--prompts", "4,many"])
    assert "--prompts: takes a comma list of int values, got '4,many'" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused_before_any_timing(tmp_path, capsys):
    blocker = tmp_path / "bench.txt"
    blocker.write_text("keep")
    message = refused(["--quick", "--out", str(blocker)], capsys)
    assert "--out" in message and "is a file" in message
    assert blocker.read_text() == "keep"


def parse_args(argv):
    return bench_settings(build_parser().parse_args(["bench", *argv])).resolved()


def test_device_auto_resolves_to_what_this_machine_has():
    args = parse_args(["--quick"])
    assert args.device == ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
                           else "cpu")
    if args.device == "cpu":
        assert args.precisions == ["fp32"] and args.num_workers == 0 and args.train_batch == 2


def test_bad_loader_data_stops_before_any_timing(tmp_path, capsys):
    out = tmp_path / "out"
    message = refused(["--quick", "--loader", str(tmp_path / "missing"), "--out", str(out)], capsys)
    assert re.search(r"--loader .*missing.* does not exist", message)
    assert not out.exists()


def test_gpu_script_is_valid_bash_and_its_bench_options_parse(tmp_path):
    """The GPU session's script (not run here): bash accepts it, and every bench run it would start parses
    (on this machine's CPU: the script names --device cuda, which a CPU-only machine refuses)."""
    subprocess.run(["bash", "-n", str(GPU_SCRIPT)], check=True)
    dry = subprocess.run(["bash", str(GPU_SCRIPT), str(tmp_path / "gpu")], check=True, capture_output=True,
                         text=True, env={"DRY_RUN": "1", "PATH": "/usr/bin:/bin"}).stdout.splitlines()
    runs = [shlex.split(line) for line in dry if line.startswith("bench ")]
    assert len(runs) >= 2 and any("--compile" in argv for argv in runs)
    for argv in runs:
        argv = ["cpu" if word == "cuda" else word for word in argv[1:]]
        args = parse_args(argv)
        assert args.precisions == ["fp32", "bf16"] and args.paths == ["floor", "tokens", "prefix"]
        assert set(args.models) <= {"vit-b16", "vit-s14"} and args.batch in (64, 256)
        assert args.train_batch == args.batch and str(args.out).startswith(str(tmp_path / "gpu"))


def test_the_python_api_runs_the_same_bench_as_the_command_line(tmp_path):
    settings = bench.BenchSettings(quick=True, device="cpu", prompts=[3], modes=["deep"], paths=["floor", "tokens"],
                                   warmup=0, memory=False, out=tmp_path / "py")
    rows = bench.run_bench(settings)
    assert {(r["path"], r["prompts"]) for r in rows} == {("floor", 0), ("tokens", 3)}
    assert (tmp_path / "py" / "bench.csv").is_file() and settings.models is None  # the caller's settings unchanged


def test_help_lists_the_settings(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "--help"])
    assert stop.value.code == 0 and "--precisions" in capsys.readouterr().out
