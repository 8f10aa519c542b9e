"""The baseline a user would fit on their own: scikit-learn's logistic regression on the frozen backbone's final
[CLS] features of ALL the training images (train + the val vptune would carve), its C chosen by stratified 5-fold
cross-validation, scored on the test split. VPT's default has to beat this, not only vptune's own probe.

    python benchmarks/sklearn_probe.py DATA [DATA ...] [--img-size 112] [--backbone NAME --weights FILE] [--out F]

Prints one markdown row per task; with --out, appends the rows as JSON lines (resumable records for docs/).
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import DataLoader

from vptune import PromptConfig, PromptedModel, create_backbone, load_data
from vptune.backbones import DEFAULT_BACKBONE
from vptune.data import collate

CS = np.logspace(-4, 4, 17)  # inverse L2 strengths tried


@torch.no_grad()
def features(model: PromptedModel, dataset) -> tuple[np.ndarray, np.ndarray]:
    outputs, labels = [], []
    for images, batch_labels in DataLoader(dataset, batch_size=64, collate_fn=collate):
        outputs.append(model.forward_features(images))
        labels.append(batch_labels)
    return torch.cat(outputs).double().numpy(), torch.cat(labels).numpy()


def probe(data: str, model: PromptedModel, img_size: int) -> dict:
    config = model.data_config
    splits = load_data(data, img_size=img_size, mean=tuple(config["mean"]), std=tuple(config["std"]))
    started = time.perf_counter()
    train_x, train_y = features(model, splits.trainval)  # every labelled training image
    test_x, test_y = features(model, splits.test)
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    fit = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=CS, cv=folds, scoring="accuracy", max_iter=10_000,
                                                               tol=1e-6))
    with warnings.catch_warnings():  # scikit-learn's notices of future defaults; the settings here are explicit
        warnings.simplefilter("ignore", FutureWarning)
        fit.fit(train_x, train_y)
    name = Path(data).parent.name if Path(data).name == "labels.csv" else data  # holdout_tasks.py's layout
    return {"task": name, "img_size": img_size, "train_images": len(train_y), "test_images": len(test_y),
            "C": float(fit[-1].C_[0]), "test_top1": float(fit.score(test_x, test_y)),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="built-in names or data paths")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--out", type=Path, help="append the rows to this JSON-lines file")
    args = parser.parse_args()
    backbone = create_backbone(args.backbone, img_size=args.img_size, weights=args.weights)
    model = PromptedModel(backbone, PromptConfig(num_tokens=0), num_classes=2).eval()
    print("| task | images (train + val) | C (5-fold CV) | test top-1 |")
    print("|---|---|---|---|")
    for data in args.data:
        row = probe(data, model, args.img_size)
        print(f"| {data} | {row['train_images']} | {row['C']:.3g} | {row['test_top1']:.4f} |", flush=True)
        if args.out:
            with args.out.open("a") as file:
                file.write(json.dumps({**row, "backbone": args.backbone}) + "\n")


if __name__ == "__main__":
    main()
