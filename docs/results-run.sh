#!/usr/bin/env bash
# The runs behind docs/results.md, in the order the paper's claims need them: every set for seed 0 on every task
# first, then seeds 1 and 2, so that partial results stay balanced. Resumable: rerun it and only what is missing
# runs (a run cut short resumes from its last epoch). One torch thread: the 2-core machine keeps a core for other
# work, and nothing here is a timing.
#
#   bash docs/results-run.sh            # needs: pip install scikit-image (for the hold-out task), once
set -euo pipefail
cd "$(dirname "$0")/.."
VPTUNE="${VPTUNE:-.venv/bin/vptune}"
[ -f runs/holdout/defects/labels.csv ] || .venv/bin/python benchmarks/holdout_tasks.py runs/holdout
TASKS="digits,animal-mnist,fashion-mnist,$PWD/runs/holdout/defects/labels.csv"
COMMON=(--tasks "$TASKS" --epochs 5 --img-size 112 --test-subset 2000 --out docs/results --quiet)
export OMP_NUM_THREADS=1
for seed in ${SEEDS:-0 1 2}; do
  for set in ${SETS:-methods depth location length pooling init}; do
    $VPTUNE ablate "$set" --seeds "$seed" "${COMMON[@]}" ${CELLS:+--cells "$CELLS"}
  done
done
