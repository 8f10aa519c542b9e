"""The main job's pipeline, small."""
import json

from vptune.cli import main


def test_demo_smoke(tmp_path, capsys):
    """Default backbone at 112 px, animal-mnist (no extra needed), 64 images, one epoch per method."""
    assert main(["demo", "--smoke", "--output", str(tmp_path / "demo"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [r["method"] for r in rows] == ["linear", "vpt-shallow", "vpt-deep"]
    assert rows[2]["trainable_parameters"] == 12 * 10 * 384 + 384 * 10 + 10
    assert (tmp_path / "demo" / "curves.png").stat().st_size > 1000
    assert "![learning curves](curves.png)" in (tmp_path / "demo" / "results.md").read_text()  # the page shows it
    assert "| vpt-deep |" in capsys.readouterr().out


def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["demo", "--smoke", "--output", str(tmp_path / "mine"), "--quiet"]) == 1
    assert "not a previous demo's output" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_demo_refuses_a_data_name_it_does_not_know_before_fetching(tmp_path, capsys):
    assert main(["demo", "--data", "foo", "--output", str(tmp_path / "demo")]) == 1
    assert "one of fashion-mnist, animal-mnist, digits" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()


def test_bad_demo_flags_stop_before_the_previous_demo_is_replaced(tmp_path, capsys):
    previous = tmp_path / "demo"
    previous.mkdir()
    (previous / "results.json").write_text("[]")  # an earlier demo's output, which a good run would replace
    for epochs, message in (("0", "epochs must be a positive integer, got 0"),
                            ("-2", "epochs must be a positive integer, got -2")):
        assert main(["demo", "--epochs", epochs, "--output", str(previous)]) == 1
        assert message in capsys.readouterr().err
        assert (previous / "results.json").read_text() == "[]"
    blocker = tmp_path / "a-file"
    blocker.write_text("keep")
    assert main(["demo", "--output", str(blocker)]) == 1
    assert "--output" in capsys.readouterr().err and blocker.read_text() == "keep"


def test_segmentation_demo_smoke(tmp_path, capsys):
    """`--segmentation`: the linear head, VPT-shallow and VPT-deep on pasted-animals, by mIoU (16 images a split)."""
    assert main(["demo", "--segmentation", "--smoke", "--output", str(tmp_path / "demo"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert [(r["method"], r["task"]) for r in rows] == [(m, "segmentation") for m in ("linear", "vpt-shallow",
                                                                                        "vpt-deep")]
    classes = 11  # ground and animal-mnist's ten
    assert rows[0]["trainable_parameters"] == 2 * 384 + 384 * classes + classes  # BatchNorm and a 1 x 1 conv
    assert all(0 <= r["test_miou"] <= 1 and r["test_images"] == 16 for r in rows)
    table = (tmp_path / "demo" / "results.md").read_text()
    assert "| linear head | " in table and "test mIoU" in table and "![learning curves](curves.png)" in table
    assert "| vpt-deep |" in capsys.readouterr().out


def test_segmentation_demo_refuses_a_classification_data_set(tmp_path, capsys):
    assert main(["demo", "--segmentation", "--data", "digits", "--output", str(tmp_path / "demo")]) == 1
    assert "one of pasted-animals, surface-defects" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
