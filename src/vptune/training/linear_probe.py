"""The linear probe, done the way linear evaluation is done: multinomial logistic regression on frozen features.

Features are standardised with the training set's mean and standard deviation (the affine-free normalisation MAE
puts before its probe: the default backbone's [CLS] has a norm near 48 and a few dimensions far larger than the
rest), the regression is fitted to convergence with L-BFGS in float64, and its L2 strength is chosen from a grid:
on val (`choose_probe`), or by k-fold cross-validation over every labelled image (`choose_probe_cv`). `load_into` puts the result into a model's head: folded into a plain `nn.Linear` on raw features, or
kept standardised when the model has a `head_norm`.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from ..model import FeatureNorm, PromptedModel

# L2 strengths tried, as lambda in mean cross-entropy + lambda / 2 * ||W||^2 on standardised features
# (scikit-learn's C = 1 / (n * lambda)): from practically none to strong enough that train accuracy drops.
# On digits the weakest wins (1e-6 already fits 800 images exactly; weaker changes nothing measurable).
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
MAX_ITERATIONS = 1000
# L-BFGS stops when the largest gradient entry or the last change falls below these. Tighter ones (1e-9, 1e-12)
# cost twice the iterations and chose the same strength with the same val accuracy on all three built-ins.
TOLERANCE_GRAD, TOLERANCE_CHANGE = 1e-7, 1e-10


@dataclass
class ProbeFit:
    """One fitted probe: logits = weight @ (x - mean) / std + bias, and how it did on its training features."""

    weight_decay: float
    mean: torch.Tensor     # (dim,) the standardisation
    std: torch.Tensor
    weight: torch.Tensor   # (classes, dim), on standardised features
    bias: torch.Tensor     # (classes,)
    train_loss: float
    train_top1: float
    iterations: int
    seconds: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return ((features.double() - self.mean) / self.std) @ self.weight.T + self.bias

    def accuracy_and_loss(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        logits = self.logits(features)
        return (logits.argmax(1) == labels).double().mean().item(), F.cross_entropy(logits, labels).item()

    def objective(self, features: torch.Tensor, labels: torch.Tensor) -> float:
        """What the fit minimises: mean cross-entropy + weight_decay / 2 * ||W||^2."""
        return (F.cross_entropy(self.logits(features), labels) + 0.5 * self.weight_decay * self.weight.pow(2).sum()).item()

    @torch.no_grad()
    def load_into(self, model: PromptedModel) -> None:
        """Set the model's head (and its FeatureNorm, if it has one) to this probe."""
        if isinstance(model.head_norm, FeatureNorm):
            model.head_norm.set_(self.mean.float(), self.std.float())
            weight, bias = self.weight, self.bias
        else:  # W (x - m) / s + b  ==  (W / s) x + (b - (W / s) m)
            weight = self.weight / self.std
            bias = self.bias - weight @ self.mean
        model.head.weight.copy_(weight.float())
        model.head.bias.copy_(bias.float())


def standardisation(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation (a constant dimension gets std 1, so it stays 0)."""
    features = features.double()
    std = features.std(dim=0, unbiased=False)
    return features.mean(dim=0), torch.where(std > 1e-12, std, torch.ones_like(std))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: a probe's products (1,000 x 384 by 384 x 10) are far too small to split, and
    a team of threads spends more time waking up than computing, worst on cores another job is using."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                            *, max_iterations: int = MAX_ITERATIONS, start: ProbeFit | None = None) -> ProbeFit:
    """Minimise mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalised) on standardised features.

    start: a fit on the same features to start from (a warm start, see `choose_probe`), else zeros. The problem
    is strictly convex, so the optimum is the same from any start; only the number of iterations changes.
    """
    started = time.perf_counter()
    mean, std = standardisation(features)
    x = (features.double() - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64) if start is None else start.weight.clone()
    bias = torch.zeros(num_classes, dtype=torch.float64) if start is None else start.bias.clone()
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iterations, history_size=20,
                                  tolerance_grad=TOLERANCE_GRAD,
                                  tolerance_change=TOLERANCE_CHANGE, line_search_fn="strong_wolfe")

    x_t = x.T.contiguous()  # (dim, n): the faster layout for the (classes, dim) @ (dim, n) product
    one_hot = F.one_hot(labels, num_classes).double()

    def objective() -> torch.Tensor:
        """The loss, with its gradient written by hand (softmax - one-hot): half the cost of autograd here."""
        log_p = torch.log_softmax(torch.addmm(bias[:, None], weight, x_t).T, dim=1)  # (n, classes)
        residual = (log_p.exp() - one_hot) / len(labels)
        weight.grad = torch.addmm(weight, residual.T, x, beta=weight_decay)
        bias.grad = residual.sum(0)
        return -(log_p * one_hot).sum() / len(labels) + 0.5 * weight_decay * weight.pow(2).sum()

    optimizer.step(objective)
    fit = ProbeFit(weight_decay, mean, std, weight.detach(), bias.detach(), 0.0, 0.0,
                   optimizer.state[weight]["n_iter"], 0.0)
    fit.train_top1, fit.train_loss = fit.accuracy_and_loss(features, labels)
    fit.seconds = time.perf_counter() - started
    return fit


def regularisation_path(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[float, ProbeFit]:
    """A fit at every strength of `WEIGHT_DECAYS`, from the strongest to the weakest, each starting from the previous
    optimum: the strong ones converge in a few iterations, and each next optimum is close to the last, so the whole
    grid costs about as much as one cold fit at a weak strength."""
    fits: dict[float, ProbeFit] = {}
    with one_thread():
        previous = None
        for weight_decay in sorted(WEIGHT_DECAYS, reverse=True):
            previous = fits[weight_decay] = fit_logistic_regression(features, labels, num_classes, weight_decay,
                                                                    start=previous)
    return fits


# What a strength is chosen for: held-out top-1 (the probe as a classifier), or held-out log-loss (a head start
# no surer of itself than it is on images it did not see: "calibrated-probe", warm_start.py)
CHOICES = ("top1", "loss")


def _best(rows: list[dict], prefix: str, choose_for: str) -> float:
    """The strength with the best held-out score (`prefix`_top1 highest, or `prefix`_loss lowest); among equals the
    strongest regularisation, the safer bet on unseen images."""
    if choose_for == "loss":
        return min(rows, key=lambda row: (row[f"{prefix}_loss"], -row["weight_decay"]))["weight_decay"]
    return max(rows, key=lambda row: (row[f"{prefix}_top1"], row["weight_decay"]))["weight_decay"]


def choose_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int, choose_for: str = "top1") -> tuple[ProbeFit, list[dict]]:
    """Fit every strength of `WEIGHT_DECAYS` on train; keep the best on val (top-1, or log-loss: `CHOICES`).
    Returns it and one row per strength, in `WEIGHT_DECAYS`' order."""
    fits = regularisation_path(*train, num_classes)
    rows = []
    for weight_decay in WEIGHT_DECAYS:
        fit = fits[weight_decay]
        val_top1, val_loss = fit.accuracy_and_loss(*val)
        rows.append({"weight_decay": weight_decay, "train_loss": fit.train_loss, "train_top1": fit.train_top1,
                     "val_loss": val_loss, "val_top1": val_top1, "iterations": fit.iterations,
                     "seconds": fit.seconds})
    return fits[_best(rows, "val", choose_for)], rows


CV_FOLDS = 5


def stratified_folds(labels: torch.Tensor, folds: int, seed: int = 0) -> list[torch.Tensor]:
    """Positions of each of `folds` parts, every class dealt round the parts in a seeded order (so each part holds
    its share of every class that has enough images, and small classes do not all land in the first part)."""
    generator = torch.Generator().manual_seed(seed)
    part = torch.empty(len(labels), dtype=torch.long)
    dealt = 0
    for cls in labels.unique():
        members = (labels == cls).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        part[members] = (torch.arange(len(members)) + dealt) % folds
        dealt += len(members)
    return [(part == k).nonzero().flatten() for k in range(folds)]


def choose_probe_cv(features: torch.Tensor, labels: torch.Tensor, num_classes: int, folds: int = CV_FOLDS,
                    seed: int = 0, choose_for: str = "top1") -> tuple[ProbeFit, list[dict]]:
    """The L2 strength by stratified k-fold cross-validation (the mean of the folds' held-out top-1), then the
    probe at that strength fitted on all of `features`: what scikit-learn's LogisticRegressionCV does. On small
    data it is steadier than one small val split, and the final probe sees every image. Returns the fit and one
    row per strength (its mean held-out top-1 and loss), in `WEIGHT_DECAYS`' order."""
    parts = stratified_folds(labels, max(2, min(folds, len(labels))), seed)
    scores: dict[float, list[tuple[float, float]]] = {weight_decay: [] for weight_decay in WEIGHT_DECAYS}
    for held in parts:
        keep = torch.ones(len(labels), dtype=torch.bool)
        keep[held] = False
        for weight_decay, fit in regularisation_path(features[keep], labels[keep], num_classes).items():
            scores[weight_decay].append(fit.accuracy_and_loss(features[held], labels[held]))
    rows = [{"weight_decay": weight_decay, "cv_top1": sum(a for a, _ in scores[weight_decay]) / len(parts),
             "cv_loss": sum(loss for _, loss in scores[weight_decay]) / len(parts), "folds": len(parts)}
            for weight_decay in WEIGHT_DECAYS]
    with one_thread():
        return fit_logistic_regression(features, labels, num_classes, _best(rows, "cv", choose_for)), rows
