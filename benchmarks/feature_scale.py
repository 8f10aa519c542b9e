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

import argparse

import torch
from timm.data import resolve_model_data_config
from torch.utils.data import DataLoader

from vptune import create_backbone, load_data

MOMENTUM, BATCH = 0.9, 32


@torch.no_grad()
def features(fn, dataset, batch_size: int = 64) -> torch.Tensor:
    """fn(images) for every item of `dataset`, in order, as one float64 tensor."""
    return torch.cat([fn(images).double() for images, _ in DataLoader(dataset, batch_size=batch_size)])


def top_eigenvalue(x: torch.Tensor) -> float:
    return torch.linalg.eigvalsh(x.T @ x / len(x))[-1].item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", nargs="+", help="built-in data set names or data paths")
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--weights", default=None, help="local weights for the backbone (offline use of a timm ViT)")
    parser.add_argument("--img-size", type=int, default=112)
    args = parser.parse_args()
    backbone = create_backbone(args.backbone, img_size=args.img_size, weights=args.weights)
    config = resolve_model_data_config(backbone)
    print("| task | mean norm | norm of the mean | lambda_max | centred | standardised | SGD head lr bound (base): "
          "raw / standardised |")
    print("|---|---|---|---|---|---|---|")
    for task in args.tasks:
        splits = load_data(task, img_size=args.img_size, mean=config["mean"], std=config["std"])
        x = features(backbone, splits.train)  # the backbone's output: its final normed [CLS]
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False).clamp_min(1e-12)  # a constant dimension stays 0 after centring
        raw, centred, standard = (top_eigenvalue(v) for v in (x, x - mean, (x - mean) / std))
        bound = [2 * (1 + MOMENTUM) / (0.5 * lam) * 256 / BATCH for lam in (raw, standard)]
        print(f"| {task} | {x.norm(dim=1).mean():.1f} | {mean.norm():.1f} | {raw:.0f} | {centred:.0f} | "
              f"{standard:.1f} | {bound[0]:.3f} / {bound[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
