"""What pruning saves: the same grid searched without a pruner and with Hyperband, side by side in one process.

digits at 56 px on the default backbone (a quarter of the 112 px cost, so both searches fit in minutes on two
CPU cores), VPT-deep defaults, 6 epochs, lr x head lr = 4 x 2 grid. Writes docs/recipe/prune_cost.json: for each
pruner, trial-epochs run, wall time, and the setting it picks with its val top-1.

    python benchmarks/prune_cost.py [OUT.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vptune import TrainConfig
from vptune.experiments import SweepConfig, run_sweep

SPACE = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "head_lr": [1e-3, 1e-2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/recipe/prune_cost.json"))
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--weights", default=None, help="local weights for the backbone (offline use of a timm ViT)")
    parser.add_argument("--img-size", type=int, default=56)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--subset", type=int, default=None, help="at most N images per split (a quick check)")
    parser.add_argument("--lrs", default=",".join(map(str, SPACE["lr"])), help="the grid's lr values")
    parser.add_argument("--head-lrs", default=",".join(map(str, SPACE["head_lr"])), help="the grid's head lr values")
    args = parser.parse_args()
    space = {"lr": [float(v) for v in args.lrs.split(",")], "head_lr": [float(v) for v in args.head_lrs.split(",")]}
    results = {"space": space, "data": "digits", "img_size": args.img_size, "epochs": args.epochs}
    for pruner in ("none", "hyperband"):
        with tempfile.TemporaryDirectory(prefix=f"vptune-prune-{pruner}-") as folder:
            base = TrainConfig(data="digits", backbone=args.backbone, weights=args.weights, img_size=args.img_size,
                               epochs=args.epochs, subset=args.subset, output=folder)
            started = time.perf_counter()
            found = run_sweep(SweepConfig(base=base, output=folder, space=space, pruner=pruner, seeds=()))
            results[pruner] = {"wall_seconds": time.perf_counter() - started, "trial_epochs": found["trial_epochs"],
                               "trials": found["trials"], "best_params": found["best_params"],
                               "best_val_top1": found["best_val_top1"]}
            print(pruner, json.dumps(results[pruner]), flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
