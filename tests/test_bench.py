"""`vptune bench` in --quick mode on a tiny model: it runs, and its CSV/JSON parse with consistent ratios.

No timing asserts: speed depends on the machine and its load. docs/performance.md has the real figures.
"""
import csv
import json
import math

import pytest

from vptune import bench

FIGURES = ("train_step_s", "train_peak_mb", "infer_ips", "infer_b1_ips")
COLUMNS = ["model", "mode", "prompts", "path", "train_batch", "infer_batch", *FIGURES,
           *(f"{f}_vs_{base}" for base in ("ref", "floor") for f in FIGURES)]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--quick", "--device", "cpu", "--prompts", "3", "--warmup", "0", "--out", str(out),
            "--paths", "floor,tokens,prefix,prefix-ckpt"]
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
    _, data, _ = outputs
    rows = data["rows"]
    floor = next(r for r in rows if r["path"] == "floor")
    for r in rows:
        ref = None if r["path"] == "floor" else next(
            x for x in rows if (x["mode"], x["prompts"], x["path"]) == (r["mode"], r["prompts"], "tokens"))
        for base, name in ((ref, "ref"), (floor, "floor")):
            for f in FIGURES:
                ratio = r[f"{f}_vs_{name}"]
                if base is None or r[f] is None or not base[f]:
                    assert ratio is None
                else:
                    assert math.isclose(ratio, r[f] / base[f], rel_tol=1e-9)
        if r["path"] == "tokens":
            assert r["train_step_s_vs_ref"] == 1.0


def test_markdown_table_lists_every_row(outputs):
    rows, _, md = outputs
    table_lines = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert len(table_lines) == len(rows)


def test_bad_paths_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--quick", "--paths", "prefix"])  # no reference and no floor to divide by
