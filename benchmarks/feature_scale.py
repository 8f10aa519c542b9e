"""Why the original recipe diverges on some tasks: the scale of the frozen backbone's [CLS] features per task.

For plain SGD with momentum b on a linear head with softmax cross-entropy, the loss curvature along a direction
of the features is at most about 1/2 x the second moment of the features along it, so the head is stable only
for lr < 2 (1 + b) / (0.5 * lambda_max), lambda_max the top eigenvalue of E[x x^T] (uncentred). A feature
offset (a large mean vector) puts almost all of lambda_max in one direction; standardising the features
removes it. Prints, per task: mean |x|, |mean x|, lambda_max uncentred, centred, and after standardising, and
the SGD head lr bound each gives (at batch 32, scaled like vptune's lr: base = effective * 256 / 32).

    python benchmarks/feature_scale.py digits animal-mnist fashion-mnist /path/to/labels.csv
"""
from __future__ import annotations

import sys

import torch
from timm.data import resolve_model_data_config

from vptune import create_backbone, load_data
from vptune.training.linear_probe import standardisation
from vptune.training.stem_cache import precompute

MOMENTUM, BATCH = 0.9, 32


def top_eigenvalue(x: torch.Tensor) -> float:
    return torch.linalg.eigvalsh(x.T @ x / len(x))[-1].item()


def main(tasks: list[str]) -> None:
    backbone = create_backbone(img_size=112)
    config = resolve_model_data_config(backbone)
    print("| task | mean norm | norm of the mean | lambda_max | centred | standardised | SGD head lr bound (base): "
          "raw / standardised |")
    print("|---|---|---|---|---|---|---|")
    for task in tasks:
        splits = load_data(task, img_size=112, mean=config["mean"], std=config["std"])
        x = precompute(backbone, splits.train, batch_size=64, device=torch.device("cpu")).tensors[0].double()
        mean, std = standardisation(x)
        raw, centred, standard = (top_eigenvalue(v) for v in (x, x - mean, (x - mean) / std))
        bound = [2 * (1 + MOMENTUM) / (0.5 * lam) * 256 / BATCH for lam in (raw, standard)]
        print(f"| {task} | {x.norm(dim=1).mean():.1f} | {mean.norm():.1f} | {raw:.0f} | {centred:.0f} | "
              f"{standard:.1f} | {bound[0]:.3f} / {bound[1]:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
