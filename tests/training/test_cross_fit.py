"""--cross-fit: each step's head is the probe fitted without that step's batch (so its images' loss is a held-out
loss), the head an epoch ends with is the probe on every training image's features, and a killed run resumes to
the same result."""
import pytest
import torch
from conftest import killed_in_epoch, train_config, without_timings
from safetensors.torch import load_file

from vptune import ConfigError, RunDir, load_task, train
from vptune.training import loop, steps
from vptune.training.batches import precompute_rows
from vptune.training.cross_fit import Snapshot, batch_heads, held_out_loss
from vptune.training.linear_probe import choose_probe_cv, fit_logistic_regression


def toy_snapshot(seed=0):
    """30 images of 3 classes in 6 dimensions, classes apart along the first three."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(30) % 3
    features = torch.randn(30, 6, generator=generator, dtype=torch.float64) + 2.0 * torch.eye(3, 6)[labels]
    probe, _ = choose_probe_cv(features, labels, 3, seed=0)
    return Snapshot(features, labels, probe)


def test_a_batchs_head_is_the_probe_on_the_other_images_and_never_sees_the_batch():
    state = toy_snapshot()
    batches = [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    heads = batch_heads(state, batches, 3)
    others = torch.arange(10, 30)
    alone = fit_logistic_regression(state.features[others], state.labels[others], 3, state.probe.weight_decay)
    torch.testing.assert_close(heads[0].logits(state.features), alone.logits(state.features), atol=1e-4, rtol=0)
    # whatever the batch's own images are, its head is the same
    changed = Snapshot(state.features.clone(), state.labels.clone(), state.probe)
    changed.labels[:10] = (changed.labels[:10] + 1) % 3
    changed.features[:10] = torch.randn(10, 6, dtype=torch.float64)
    again = batch_heads(changed, batches[:1], 3)[0]
    torch.testing.assert_close(again.logits(state.features), heads[0].logits(state.features), atol=1e-4, rtol=0)
    assert not torch.allclose(heads[1].logits(state.features), heads[0].logits(state.features), atol=1e-2)


def test_the_head_a_run_saves_is_the_probe_on_its_final_training_features(workspace, tmp_path, monkeypatch):
    datasets, real_epoch = [], loop.train_epoch

    def recording(fit, dataset, epoch):
        datasets.append(dataset)
        return real_epoch(fit, dataset, epoch)

    monkeypatch.setattr(loop, "train_epoch", recording)
    cfg = train_config(workspace, tmp_path / "run", cross_fit=True, epochs=2)
    train(cfg, quiet=True)
    model = load_task(RunDir(tmp_path / "run").best).eval()  # its features, and the head saved with them
    features, labels = precompute_rows(model.forward_features, datasets[-1], cfg.resolved(), True).tensors
    probe, _ = choose_probe_cv(features, labels, model.num_classes, seed=cfg.seed)
    with torch.no_grad():
        saved = model.classify(features.float())
    torch.testing.assert_close(saved.double(), probe.logits(features), atol=1e-3, rtol=0)


def test_a_cross_fit_run_killed_in_its_second_epoch_resumes_to_the_same_result(workspace, tmp_path, monkeypatch):
    whole = RunDir(tmp_path / "whole")
    train(train_config(workspace, whole.path, cross_fit=True, epochs=3), quiet=True)
    cut = RunDir(tmp_path / "cut")
    with killed_in_epoch(monkeypatch, lambda fit, epoch: epoch == 1):
        train(train_config(workspace, cut.path, cross_fit=True, epochs=3), quiet=True)
    train(train_config(workspace, cut.path, cross_fit=True, epochs=3), resume=True, quiet=True)
    assert without_timings(cut.read_metrics()) == without_timings(whole.read_metrics())
    resumed, uninterrupted = (load_file(str(r.best / "prompt.safetensors")) for r in (cut, whole))
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)


def test_the_optimizer_never_moves_the_head_whose_values_each_step_sets(workspace, tmp_path, monkeypatch):
    """The head a step uses is the one its batch's probe set; the update after it (AdamW's decay and moments, and
    --clip-grad's norm) is the prompts' alone."""
    real_step, moved = steps.optimizer_step, []

    def watched(fit, loss):
        head = [p.detach().clone() for p in fit.model.head.parameters()]
        done = real_step(fit, loss)
        moved.append(any(not torch.equal(a, b) for a, b in zip(head, fit.model.head.parameters())))
        return done

    monkeypatch.setattr(steps, "optimizer_step", watched)
    train(train_config(workspace, tmp_path / "run", cross_fit=True, epochs=1, clip_grad=1e-3), quiet=True)
    assert moved and not any(moved)


@pytest.mark.parametrize("settings, message", [
    (dict(method="linear"), "method linear is the probe itself: leave out --cross-fit"),
    (dict(data="pasted-animals"), "which a segmentation task has not: leave out --cross-fit"),
])
def test_what_cross_fit_cannot_do_is_refused_before_anything_is_written(workspace, tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        train(train_config(workspace, tmp_path / "run", cross_fit=True, **settings), quiet=True)
    assert not (tmp_path / "run").exists()


def test_the_held_out_loss_an_epoch_starts_at_is_each_batch_heads_loss_on_its_own_images():
    state = toy_snapshot()
    state.labels[:] = state.labels[torch.randperm(30, generator=torch.Generator().manual_seed(1))]  # labels as noise
    state = Snapshot(state.features, state.labels, choose_probe_cv(state.features, state.labels, 3, seed=0)[0])
    batches = [list(range(0, 10)), list(range(10, 20)), list(range(20, 30))]
    heads = batch_heads(state, batches, 3)
    by_hand = sum(torch.nn.functional.cross_entropy(head.logits(state.features[batch]), state.labels[batch],
                                                    reduction="sum").item() for head, batch in zip(heads, batches))
    assert held_out_loss(state, batches, heads) == pytest.approx(by_hand / 30, rel=1e-12)


@pytest.mark.parametrize("loss, start, diverged", [(3.79, None, True), (3.79, 3.5, False), (3.5, 1.0, False),
                                                    (7.5, 3.5, True), (3.7, 1.0, True)])
def test_a_cross_fitted_epoch_diverges_only_past_twice_the_held_out_loss_it_started_at(tmp_path, loss, start,
                                                                                      diverged):
    """Counting discs, 6 classes, seed 1: the probe's held-out loss began over 2 ln 6 = 3.58 and the guard stopped a
    run that had not diverged. The bar is twice the larger of ln(classes) and that start."""
    from types import SimpleNamespace

    from vptune import TrainingError

    fit = SimpleNamespace(model=SimpleNamespace(num_classes=6), run=RunDir(tmp_path / "run"),
                          cfg=SimpleNamespace(lr=0.01, head_lr=0.01))
    if not diverged:
        steps._check_not_diverged(fit, loss, 0, start)
        return
    what = "the held-out loss the epoch started at" if start is not None and start > 1.8 else "that of a uniform guess"
    with pytest.raises(TrainingError, match=f"over 2 times {what}"):
        steps._check_not_diverged(fit, loss, 0, start)


# ------------------------------------------------------------------------------------ the default: when it applies
@pytest.mark.parametrize("num_train, width, batch, on", [
    (128, 64, 8, True),    # 2 x 64 features: the probe can fit most labellings of them
    (129, 64, 8, False),   # past that, the probe's training loss is informative on its own
    (9, 64, 8, True),      # two batches: each has images outside it to fit its head on
    (8, 64, 8, False),     # one batch: none
])
def test_the_default_cross_fits_up_to_twice_as_many_training_images_as_features(num_train, width, batch, on):
    from vptune import TrainConfig

    cfg = TrainConfig(batch_size=batch).resolved()
    assert cfg.cross_fit is None  # decided when the training set is known
    assert loop.with_cross_fit(cfg, num_train, width).cross_fit is on
    for chosen in (True, False):  # a choice of one's own stands
        if chosen and num_train <= batch:
            continue
        given = TrainConfig(batch_size=batch, cross_fit=chosen).resolved()
        assert loop.with_cross_fit(given, num_train, width).cross_fit is chosen


@pytest.mark.parametrize("settings", [dict(method="linear"), dict(method="full"), dict(method="lora"),
                                      dict(head_init="random"), dict(head_init="calibrated-probe"),
                                      dict(head_lr=0.5), dict(data="pasted-animals")])
def test_the_default_is_off_where_no_probe_started_head_on_a_frozen_backbone_trains(settings):
    from vptune import TrainConfig

    assert TrainConfig(**settings).resolved().cross_fit is False
    assert TrainConfig().resolved().resolved().cross_fit is None  # resolving twice (start and resume) agrees


def test_a_default_run_on_few_images_cross_fits_both_stages_and_records_it(workspace, tmp_path):
    """The workspace's tiny ViT is 64 wide and trains on 18 images: the default cross-fits. The choice is made once,
    on the training split, so the refit on train + val trains as the selection run did; config.yaml keeps the
    default (resolved again, the same way, on resume)."""
    import json

    import yaml

    run = RunDir(tmp_path / "run")
    train(train_config(workspace, run.path, refit=True, final=False, epochs=1), quiet=True)
    selection = RunDir(run.selection)
    assert yaml.safe_load(run.config.read_text())["cross_fit"] is None
    assert yaml.safe_load(selection.config.read_text())["cross_fit"] is True
    assert json.loads(run.summary.read_text())["cross_fit"] is True
    assert json.loads(selection.summary.read_text())["cross_fit"] is True


def test_cross_fit_on_one_batch_of_images_is_refused_naming_the_batch_size(workspace, tmp_path):
    with pytest.raises(ConfigError, match=r"18 training images make one batch of --batch-size 32; lower "
                                          r"--batch-size \(to 9 or less\), or leave out --cross-fit"):
        train(train_config(workspace, tmp_path / "run", cross_fit=True, batch_size=32), quiet=True)
    assert not (tmp_path / "run").exists()
    train(train_config(workspace, tmp_path / "run", batch_size=32, epochs=1), quiet=True)  # the default: off
    assert RunDir(tmp_path / "run").summary.is_file()


def test_cross_fit_on_a_single_training_image_names_only_the_fix_that_can_help():
    """One image is one batch whatever --batch-size is: the error must not suggest lowering it."""
    from vptune import TrainConfig

    cfg = TrainConfig(batch_size=1, cross_fit=True).resolved()
    with pytest.raises(ConfigError, match=r"1 training images make one batch of --batch-size 1; leave out "
                                          r"--cross-fit$"):
        loop.with_cross_fit(cfg, 1, 64)


def test_a_run_whose_config_predates_cross_fit_resumes_without_it(workspace, tmp_path):
    """A config.yaml without the setting was written before it existed: its head was learned, and a resume must not
    switch to cross-fitting (which the default would do on these 18 images)."""
    import json

    import yaml

    run = RunDir(tmp_path / "run")
    train(train_config(workspace, run.path, cross_fit=False, epochs=1), quiet=True)
    settings = yaml.safe_load(run.config.read_text())
    del settings["cross_fit"]
    run.config.write_text(yaml.safe_dump(settings))
    train(train_config(workspace, run.path, epochs=2), resume=True, quiet=True, changes={"epochs": 2})
    assert len(run.read_metrics()) == 2
    assert json.loads(run.summary.read_text())["cross_fit"] is False
