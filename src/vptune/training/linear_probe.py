"""The linear probe, done the way linear evaluation is done: multinomial logistic regression on frozen features.

Features are standardised with the training set's mean and standard deviation (the affine-free normalisation MAE
puts before its probe: the default backbone's [CLS] has a norm near 48 and a few dimensions far larger than the
rest), the regression is fitted to convergence with L-BFGS in float64, and its L2 strength is chosen on val from
a grid. `load_into` puts the result into a model's head: folded into a plain `nn.Linear` on raw features, or
kept standardised when the model has a `head_norm`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model import FeatureNorm, PromptedViT

# L2 strengths tried, as lambda in mean cross-entropy + lambda / 2 * ||W||^2 on standardised features
# (scikit-learn's C = 1 / (n * lambda)): from practically none to strong enough that train accuracy drops.
# On digits the weakest wins (1e-6 already fits 800 images exactly; weaker changes nothing measurable).
WEIGHT_DECAYS = (1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
MAX_ITERATIONS = 1000


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

    @torch.no_grad()
    def load_into(self, model: PromptedViT) -> None:
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


def fit_logistic_regression(features: torch.Tensor, labels: torch.Tensor, num_classes: int, weight_decay: float,
                            *, max_iterations: int = MAX_ITERATIONS) -> ProbeFit:
    """Minimise mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalised) on standardised features."""
    started = time.perf_counter()
    mean, std = standardisation(features)
    x = (features.double() - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iterations, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    fit = ProbeFit(weight_decay, mean, std, weight.detach(), bias.detach(), 0.0, 0.0,
                   optimizer.state[weight]["n_iter"], 0.0)
    fit.train_top1, fit.train_loss = fit.accuracy_and_loss(features, labels)
    fit.seconds = time.perf_counter() - started
    return fit


def choose_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 num_classes: int) -> tuple[ProbeFit, list[dict]]:
    """Fit every strength of `WEIGHT_DECAYS` on train; keep the best on val (among equals the strongest
    regularisation, the safer bet on unseen images). Returns it and one row per strength."""
    rows, fits = [], []
    for weight_decay in WEIGHT_DECAYS:
        fit = fit_logistic_regression(*train, num_classes, weight_decay)
        val_top1, val_loss = fit.accuracy_and_loss(*val)
        rows.append({"weight_decay": weight_decay, "train_loss": fit.train_loss, "train_top1": fit.train_top1,
                     "val_loss": val_loss, "val_top1": val_top1, "iterations": fit.iterations,
                     "seconds": fit.seconds})
        fits.append(fit)
    chosen = max(range(len(rows)), key=lambda i: (rows[i]["val_top1"], rows[i]["weight_decay"]))
    return fits[chosen], rows
