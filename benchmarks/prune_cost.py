"""What pruning saves: the same grid searched without a pruner and with Hyperband, side by side in one process.

digits at 56 px on the default backbone (a quarter of the 112 px cost, so both searches fit in minutes on two
CPU cores), VPT-deep defaults, 6 epochs, lr x head lr = 4 x 2 grid. Writes docs/recipe/prune_cost.json: for each
pruner, trial-epochs run, wall time, and the setting it picks with its val top-1.

    python benchmarks/prune_cost.py [OUT.json]
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from vptune import TrainConfig
from vptune.experiments import SweepConfig, run_sweep

SPACE = {"lr": [1e-3, 3e-3, 1e-2, 3e-2], "head_lr": [1e-3, 1e-2]}


def main(out: Path) -> None:
    results = {"space": SPACE, "data": "digits", "img_size": 56, "epochs": 6}
    for pruner in ("none", "hyperband"):
        with tempfile.TemporaryDirectory(prefix=f"vptune-prune-{pruner}-") as folder:
            base = TrainConfig(data="digits", img_size=56, epochs=6, output=folder)
            started = time.perf_counter()
            found = run_sweep(SweepConfig(base=base, output=folder, space=SPACE, pruner=pruner, seeds=()))
            results[pruner] = {"wall_seconds": time.perf_counter() - started, "trial_epochs": found["trial_epochs"],
                               "trials": found["trials"], "best_params": found["best_params"],
                               "best_val_top1": found["best_val_top1"]}
            print(pruner, json.dumps(results[pruner]), flush=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/recipe/prune_cost.json"))
