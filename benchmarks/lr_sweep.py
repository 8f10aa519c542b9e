"""Learning-rate sweep behind vptune's default learning rates (README, "Choosing the defaults").

Runs `vptune.train` over a grid of (data, method, lr, head_lr) with the demo's settings (default backbone at
112 px, VTAB-1k protocol, 8 epochs) and prints best-val and test top-1 per run, best first per (data, method).

    python benchmarks/lr_sweep.py --device cuda --out sweep.jsonl
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile

from vptune.train import TrainConfig, train

GRID = {
    "linear": {"lr": [None], "head_lr": [0.02, 0.08, 0.3]},
    "vpt-deep": {"lr": [0.5, 2.0, 8.0], "head_lr": [0.02]},
    "vpt-shallow": {"lr": [2.0, 8.0], "head_lr": [0.02]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["animal-mnist"])
    parser.add_argument("--methods", nargs="+", default=list(GRID))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="lr_sweep.jsonl")
    args = parser.parse_args()
    results = []
    for data, method, seed in itertools.product(args.data, args.methods, args.seeds):
        for lr, head_lr in itertools.product(GRID[method]["lr"], GRID[method]["head_lr"]):
            with tempfile.TemporaryDirectory() as out:
                cfg = TrainConfig(data=data, output=f"{out}/run", method=method, img_size=args.img_size,
                                  epochs=args.epochs, lr=lr, head_lr=head_lr, seed=seed, device=args.device)
                summary = train(cfg, quiet=True)
            row = {"data": data, "method": method, "seed": seed, "lr": lr, "head_lr": head_lr,
                   "best_val_top1": summary["best_val_top1"], "test_top1": summary["test_top1"]}
            print(json.dumps(row), flush=True)
            results.append(row)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
