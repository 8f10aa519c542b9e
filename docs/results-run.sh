#!/usr/bin/env bash
# The runs behind docs/results.md, cheapest claim first: the cells every claim rests on (VPT-deep, VPT-shallow, the
# linear probe; prepend against add; first k against last k) for seeds 0 and 1, full fine-tuning's first seed (claim
# 5 has no answer without it), the claim cells' third seed and full fine-tuning's (`ablate claims`: the same runs,
# one verdict a claim in docs/results/claims.md), then the secondary sets (location, pooling, init, length) and
# the other baselines that train the backbone (bias, partial-1, LoRA: about 10 minutes a run here, seed 0 only). Every seed of
# a step covers all four tasks before the next seed starts, so that partial results stay balanced. Resumable:
# rerun it and only what is missing runs (a run cut short resumes from its last epoch). One torch thread by
# default: the 2-core machine keeps a core for other work; nothing here is a timing.
#
#   bash docs/results-run.sh            # needs: pip install scikit-image (for the hold-out task), once
set -euo pipefail
cd "$(dirname "$0")/.."
VPTUNE="${VPTUNE:-.venv/bin/vptune}"
[ -f runs/holdout/defects/labels.csv ] || .venv/bin/python benchmarks/holdout_tasks.py runs/holdout
TASKS="digits,animal-mnist,fashion-mnist,$PWD/runs/holdout/defects/labels.csv"
COMMON=(--tasks "$TASKS" --epochs 5 --img-size 112 --test-subset 2000 --out docs/results --quiet)
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # OMP_NUM_THREADS=2 bash docs/results-run.sh when nothing else runs
step() { $VPTUNE ablate "$@" "${COMMON[@]}"; }
# each step names every seed so far: finished runs are skipped, and its tables cover all of them
claim_cells() {
  step methods --seeds "$1" --cells linear,vpt-shallow,vpt-deep
  step location --seeds "$1" --cells "prepend shallow,add shallow,add deep"
  step depth --seeds "$1"
}
claim_cells 0
claim_cells 0,1
step methods --seeds 0 --cells full
claim_cells 0,1,2
step claims --seeds 0,1,2
so_far=""
for seed in ${SEEDS:-0 1 2}; do
  so_far="${so_far:+$so_far,}$seed"
  # the paper's ablations before the baselines that train the backbone: they are claims, those are context
  for set in location pooling init length; do step "$set" --seeds "$so_far"; done
  # bias, partial-1 and LoRA (about 10 minutes a run) are context, not a claim: seed 0 only (the methods table
  # already holds three seeds of linear, full, VPT-shallow and VPT-deep)
  step methods --seeds 0

  step claims --seeds 0,1,2 --report
done
