"""The default protocol: choose on val (RUN/selection), then train the final model on train + val to the chosen
epoch (RUN itself); the linear probe's L2 by cross-validation. And the selection-only and `final` options."""
import pytest
import torch
from conftest import killed_in_epoch, train_config, without_timings
from safetensors.torch import load_file

from vptune import RunDir, train
from vptune.training import loop
from vptune.training.linear_probe import WEIGHT_DECAYS, choose_probe_cv, stratified_folds

# the workspace's image folder: 3 classes x 10 images, no split folders: 15% val and 15% test carved per class
IMAGES, VAL, TEST = 30, 6, 6


def refit_config(ws, out, **overrides):
    """Choose on val, then refit. The workspace's 18 training images are cross-fitted by default (at most twice the
    tiny ViT's 64 features), where the default would train a fixed schedule instead (`final`): --no-final."""
    return train_config(ws, out, **{"refit": True, "final": False, **overrides})


@pytest.fixture
def seen(monkeypatch):
    """(run folder name, epoch, images in the training set) of every epoch trained."""
    calls, real_epoch = [], loop.train_epoch

    def counting(fit, dataset, epoch):
        calls.append((fit.run.path.name, epoch, len(dataset)))
        return real_epoch(fit, dataset, epoch)

    monkeypatch.setattr(loop, "train_epoch", counting)
    return calls


@pytest.fixture
def best_at_second_epoch(monkeypatch):
    """Val top-1 0.5, 0.9, 0.4 in epochs 1, 2, 3: the selection run chooses epoch 2 of 3."""
    real_validate = loop.validate

    def scripted(fit, dataset):
        return {**real_validate(fit, dataset), "top1": (0.5, 0.9, 0.4)[len(fit.run.read_metrics())]}

    monkeypatch.setattr(loop, "validate", scripted)


def test_without_a_val_split_the_final_model_trains_on_every_training_image(workspace, tmp_path, seen):
    summary = train(refit_config(workspace, tmp_path / "run"), quiet=True)
    selection = [n for run, _, n in seen if run == "selection"]
    final = [n for run, _, n in seen if run == "run"]
    assert selection == [IMAGES - VAL - TEST] * 2  # choosing: train only, val held out
    assert final and set(final) == {IMAGES - TEST}  # the final model: train + val, every image but the test split
    assert summary["train_images"] == IMAGES - TEST and summary["refit"] is True
    assert summary["selection"]["train_images"] == IMAGES - VAL - TEST
    assert summary["test_images"] == TEST and summary["test_top1"] is not None
    run = RunDir(tmp_path / "run")
    assert run.selection.is_dir() and RunDir(run.selection).summary.is_file()
    assert (run.best / "prompt.safetensors").is_file()  # what eval, predict and serve use: the refit model


def test_the_refit_trains_to_the_epoch_chosen_on_val_on_the_same_schedule(workspace, tmp_path, seen,
                                                                          best_at_second_epoch):
    summary = train(refit_config(workspace, tmp_path / "run", epochs=3), quiet=True)
    run, selection = RunDir(tmp_path / "run"), RunDir(tmp_path / "run" / "selection")
    assert selection.read_summary()["best_epoch"] == 2 == summary["best_epoch"]
    assert [(r, e) for r, e, _ in seen] == [("selection", 0), ("selection", 1), ("selection", 2), ("run", 0),
                                           ("run", 1)]
    assert summary["best_val_top1"] == 0.9 and summary["epochs"] == 3
    # the 3-epoch schedule stopped after epoch 2, halfway down its cosine, as in the selection run at that epoch
    # (a 2-epoch schedule would end at lr 0)
    refit_lr, selection_lr = run.read_metrics()[-1]["lr"], selection.read_metrics()[1]["lr"]
    assert refit_lr == pytest.approx(selection_lr, rel=1e-9) and refit_lr > 0


@pytest.mark.parametrize("stage", ["selection", "run"])
def test_a_run_killed_in_either_stage_resumes_to_the_same_result(workspace, tmp_path, monkeypatch, stage,
                                                                  best_at_second_epoch):
    whole = RunDir(tmp_path / "whole")
    train(refit_config(workspace, whole.path, epochs=3), quiet=True)
    cut = RunDir(tmp_path / "run")
    with killed_in_epoch(monkeypatch, lambda fit, epoch: fit.run.path.name == stage and epoch == 1):  # its 2nd
        train(refit_config(workspace, cut.path, epochs=3), quiet=True)
    train(refit_config(workspace, cut.path, epochs=3), resume=True, quiet=True)
    for a, b in ((cut, whole), (RunDir(cut.selection), RunDir(whole.selection))):
        assert without_timings(a.read_metrics()) == without_timings(b.read_metrics())
        resumed, uninterrupted = (load_file(str(r.best / "prompt.safetensors")) for r in (a, b))
        assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    assert cut.read_summary()["test_top1"] == whole.read_summary()["test_top1"]


def test_selection_only_and_final_keep_their_one_stage(workspace, tmp_path, seen):
    train(refit_config(workspace, tmp_path / "select", refit=False), quiet=True)
    train(refit_config(workspace, tmp_path / "final", final=True), quiet=True)
    assert not RunDir(tmp_path / "select").selection.exists() and not RunDir(tmp_path / "final").selection.exists()
    assert {(r, n) for r, _, n in seen} == {("select", IMAGES - VAL - TEST), ("final", IMAGES - TEST)}
    assert "selection" not in RunDir(tmp_path / "select").read_summary()


def test_on_few_images_the_default_trains_the_whole_schedule_on_train_and_val_without_choosing(workspace, tmp_path,
                                                                                             seen):
    summary = train(train_config(workspace, tmp_path / "run", refit=True, epochs=3), quiet=True)
    assert summary["cross_fit"] is True  # 18 training images <= 2 x 64 features
    assert seen == [("run", epoch, IMAGES - TEST) for epoch in range(3)]  # every epoch, every image but the test
    assert summary["final"] is True and summary["refit"] is False and summary["train_images"] == IMAGES - TEST
    assert summary["best_epoch"] == 3 and not RunDir(tmp_path / "run").selection.exists()
    assert summary["test_top1"] is not None


@pytest.mark.parametrize("flags, stages", [(dict(final=False), {"selection", "run"}),
                                           (dict(cross_fit=False), {"selection", "run"}),
                                           (dict(refit=False), {"run"})])
def test_the_fixed_schedule_is_only_the_default_of_a_cross_fitted_refit(workspace, tmp_path, seen, flags, stages):
    summary = train(train_config(workspace, tmp_path / "run", **{"refit": True, **flags}), quiet=True)
    assert summary["final"] is False and {run for run, _, _ in seen} == stages
    final_images = IMAGES - TEST if "selection" in stages else IMAGES - VAL - TEST  # a refit's, or train's alone
    assert {n for run, _, n in seen if run == "run"} == {final_images}


def test_a_fixed_schedule_run_may_train_on_with_more_epochs(workspace, tmp_path):
    train(train_config(workspace, tmp_path / "run", refit=True), quiet=True)
    resumed = train(train_config(workspace, tmp_path / "run", refit=True), resume=True, quiet=True,
                    changes={"epochs": 3})
    assert resumed["final"] is True and resumed["best_epoch"] == 3


def test_a_run_from_before_refit_resumes_as_the_selection_run_it_was(workspace, tmp_path, monkeypatch):
    cut = RunDir(tmp_path / "old")
    with killed_in_epoch(monkeypatch, lambda fit, epoch: epoch == 1):
        train(refit_config(workspace, cut.path, refit=False), quiet=True)
    text = cut.config.read_text()
    cut.config.write_text("\n".join(line for line in text.splitlines() if not line.startswith("refit:")) + "\n")
    summary = train(train_config(workspace, cut.path), resume=True, quiet=True)
    assert not cut.selection.exists() and summary["refit"] is False and len(cut.read_metrics()) == 2


def test_the_linear_probe_chooses_its_l2_by_cross_validation_and_fits_every_image(workspace, tmp_path):
    refit = train(refit_config(workspace, tmp_path / "cv", method="linear"), quiet=True)
    on_val = train(refit_config(workspace, tmp_path / "val", method="linear", refit=False), quiet=True)
    assert refit["train_images"] == IMAGES - TEST and on_val["train_images"] == IMAGES - VAL - TEST
    rows = RunDir(tmp_path / "cv").read_metrics()
    assert len(rows) == len(WEIGHT_DECAYS) and all("cv_top1" in row and row["folds"] == 5 for row in rows)
    assert not RunDir(tmp_path / "cv").selection.exists()  # one fit: nothing to resume between stages


# ------------------------------------------------------------------------------- cross-validation
def test_folds_are_stratified_disjoint_and_cover_every_image():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    folds = stratified_folds(labels, 5, seed=0)
    together = torch.cat(folds).sort().values
    assert torch.equal(together, torch.arange(len(labels)))
    for fold in folds:
        counts = torch.bincount(labels[fold], minlength=3)
        assert counts[0] == 2 and counts[1] in (1, 2) and counts[2] <= 1


def test_cross_validation_picks_the_l2_scikit_learn_picks_on_the_same_folds():
    """The same folds, standardisation and grid, fitted by scikit-learn's L-BFGS to a tolerance set here: both
    score every strength alike and choose the same one."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(90) % 3
    centres = torch.randn(3, 12, generator=generator) * 0.6
    features = (centres[labels] + torch.randn(90, 12, generator=generator) * 1.5 + 5).double()  # noisy: L2 matters
    fit, rows = choose_probe_cv(features, labels, 3, folds=5, seed=0)
    theirs = {}
    for weight_decay in WEIGHT_DECAYS:
        scores = []
        for held in stratified_folds(labels, 5, seed=0):
            keep = torch.ones(90, dtype=torch.bool)
            keep[held] = False
            n = int(keep.sum())
            model = make_pipeline(StandardScaler(), LogisticRegression(C=1 / (n * weight_decay), tol=1e-10,
                                                                       max_iter=100_000))
            model.fit(features[keep].numpy(), labels[keep].numpy())
            scores.append(model.score(features[held].numpy(), labels[held].numpy()))
        theirs[weight_decay] = sum(scores) / len(scores)
    ours = {row["weight_decay"]: row["cv_top1"] for row in rows}
    assert all(abs(ours[w] - theirs[w]) < 1e-9 for w in WEIGHT_DECAYS), (ours, theirs)
    assert len(set(ours.values())) > 2, "the toy problem must separate the strengths"
    chosen = max(WEIGHT_DECAYS, key=lambda w: (theirs[w], w))
    assert fit.weight_decay == chosen


def test_a_refit_run_refuses_to_train_on_with_more_epochs(workspace, tmp_path):
    from vptune import ConfigError

    train(refit_config(workspace, tmp_path / "run", epochs=1), quiet=True)
    with pytest.raises(ConfigError, match="--epochs 3: this run refits to the epoch its selection run chose"):
        train(refit_config(workspace, tmp_path / "run"), resume=True, quiet=True, changes={"epochs": 3})
