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

from vptune import TrainConfig, train

# (method, base lr of prompts, base lr of head); lr None = the method has no prompts. Base rates are scaled by
# batch / 256 (x 1/8 at batch 32).
GRID = [
    ("linear", None, 0.02), ("linear", None, 0.08), ("linear", None, 0.3),
    ("vpt-deep", 0.5, 0.02), ("vpt-deep", 0.5, 0.08), ("vpt-deep", 2.0, 0.02),
    ("vpt-shallow", 2.0, 0.02),
]

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["animal-mnist"])
    parser.add_argument("--methods", nargs="+", default=sorted({m for m, _, _ in GRID}))
    parser.add_argument("--skip", type=int, default=0, help="skip the first N runs of the grid (to continue a sweep)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="lr_sweep.jsonl")
    args = parser.parse_args()
    runs = [(data, seed, *run) for data, seed, run in itertools.product(args.data, args.seeds, GRID)
            if run[0] in args.methods]
    for data, seed, method, lr, head_lr in runs[args.skip:]:
        with tempfile.TemporaryDirectory() as out:
            # the recipe this sweep was for (docs/lr-sweep.md): SGD on a raw, randomly initialised head
            cfg = TrainConfig(data=data, output=f"{out}/run", method=method, img_size=args.img_size,
                              epochs=args.epochs, lr=lr, head_lr=head_lr, seed=seed, device=args.device,
                              optimizer="sgd", head_norm=False, head_init="random")
            summary = train(cfg, quiet=True)
        row = {"data": data, "method": method, "seed": seed, "lr": lr, "head_lr": head_lr,
               "best_val_top1": summary["best_val_top1"], "test_top1": summary["test_top1"]}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
