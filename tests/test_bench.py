"""`vptune bench` in --quick mode on a tiny model: it runs, and its CSV/JSON parse with consistent ratios.

No timing asserts: speed depends on the machine and its load. docs/performance.md has the real figures.
"""
import csv
import json
import math
import statistics

import numpy as np
import pytest
from PIL import Image

from vptune import bench

FIGURES = ("train_step_s", "train_peak_mb", "infer_ips", "infer_b1_ips")
COLUMNS = ["model", "mode", "prompts", "path", "train_batch", "infer_batch", *FIGURES,
           *(f"{f}_vs_{base}" for base in ("ref", "floor") for f in FIGURES)]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out, images = tmp_path_factory.mktemp("bench"), tmp_path_factory.mktemp("images")
    for label in ("a", "b"):
        (images / label).mkdir()
        for i in range(6):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(images / label / f"{i}.png")
    argv = ["--quick", "--device", "cpu", "--prompts", "3", "--warmup", "0", "--out", str(out),
            "--paths", "floor,tokens,prefix,prefix-ckpt", "--loader", str(images)]
    assert bench.main(argv) == 0
    with open(out / "bench.csv", newline="") as f:
        csv_rows = list(csv.DictReader(f))
    return csv_rows, json.loads((out / "bench.json").read_text()), (out / "bench.md").read_text()


def _number(value):
    return None if value in ("", None) else float(value)


def test_csv_has_the_expected_columns_and_rows(outputs):
    rows, _, _ = outputs
    assert list(rows[0]) == COLUMNS
    keys = [(r["mode"], r["prompts"], r["path"]) for r in rows]
    assert keys == [("", "0", "floor")] + [(mode, "3", path) for mode in ("deep", "shallow")
                                            for path in ("tokens", "prefix", "prefix-ckpt")]
    for r in rows:
        assert _number(r["train_step_s"]) > 0 and _number(r["train_peak_mb"]) >= 0
        if r["path"].endswith("-ckpt"):  # no gradients at inference: checkpointing is not measured there
            assert r["infer_ips"] == "" and r["infer_b1_ips"] == ""
        else:
            assert _number(r["infer_ips"]) > 0 and _number(r["infer_b1_ips"]) > 0


def test_json_matches_csv_and_records_the_machine(outputs):
    csv_rows, data, _ = outputs
    assert {"cpu", "cores", "torch", "device"} <= set(data["machine"])
    assert data["settings"]["quick"] and data["settings"]["device"] == "cpu"
    assert len(data["rows"]) == len(csv_rows)
    for j, c in zip(data["rows"], csv_rows):
        assert list(j) == COLUMNS
        for f in FIGURES:
            assert _number(c[f]) == pytest.approx(j[f]) if j[f] is not None else c[f] == ""


def test_ratios_are_consistent_with_the_raw_figures(outputs):
    """Each ratio is the median, over the rounds that measured both, of the row's value over the base's."""
    _, data, _ = outputs
    rows = data["rows"]
    samples = {(s["group"], s["mode"], s["prompts"], s["path"], s["figure"]): s["values"] for s in data["samples"]}

    def paired(row, base_mode, base_prompts, base_path, figure):
        ratios = [x / b for (g, mode, p, path, f), values in samples.items()
                  if (mode, p, path, f) == (row["mode"], row["prompts"], row["path"], figure)
                  for x, b in zip(values, samples.get((g, base_mode, base_prompts, base_path, figure), [])) if b]
        return statistics.median(ratios) if ratios else None

    for r in rows:
        for f in FIGURES:
            values = [v for (_, mode, p, path, fig), vs in samples.items()
                      if (mode, p, path, fig) == (r["mode"], r["prompts"], r["path"], f) for v in vs]
            assert r[f] == (statistics.median(values) if values else None)
            assert r[f"{f}_vs_floor"] == paired(r, "", 0, "floor", f)
            ref = None if r["path"] == "floor" else paired(r, r["mode"], r["prompts"], "tokens", f)
            assert r[f"{f}_vs_ref"] == ref
        if r["path"] == "tokens":
            assert r["train_step_s_vs_ref"] == 1.0 and r["infer_ips_vs_ref"] == 1.0
        if r["path"] == "floor":
            assert r["train_step_s_vs_floor"] == 1.0
        if r["path"] == "prefix":  # memory is measured once per config: its ratios are plain quotients
            tokens = next(x for x in rows
                          if (x["mode"], x["prompts"], x["path"]) == (r["mode"], r["prompts"], "tokens"))
            if tokens["train_peak_mb"]:
                assert math.isclose(r["train_peak_mb_vs_ref"], r["train_peak_mb"] / tokens["train_peak_mb"])


def test_loader_alone_is_timed_on_the_training_split(outputs):
    _, data, md = outputs
    [loader] = data["loader"]
    assert loader["img_size"] == 32 and loader["batch"] == data["settings"]["train_batch"]
    assert loader["images"] == 8  # the 70% training share of 2 classes x 6 images
    assert loader["img_per_s"] > 0
    assert bench.loader_line(loader) in md


def test_markdown_table_lists_every_row(outputs):
    rows, _, md = outputs
    table_lines = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert len(table_lines) == len(rows)


def test_bad_paths_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--paths", "prefix"])  # no reference and no floor to divide by


def test_bad_loader_data_stops_before_any_timing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"--loader .*missing.* does not exist"):
        bench.main(["--quick", "--loader", str(tmp_path / "missing"), "--out", str(out)])
    assert not out.exists()
