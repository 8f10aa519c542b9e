#!/usr/bin/env bash
# The runs behind docs/results.md's segmentation section and docs/performance.md's segmentation figures.
#
# 1. `vptune ablate segmentation` on the two built-in segmentation tasks (pasted-animals, surface-defects) at 112 px,
#    8 epochs, the paper's protocol (the best val epoch's model, no refit), seed by seed so that partial results
#    stay balanced. Cost on the 2-core development machine (measured: a VPT-deep step at batch 32 takes 2.0 s with
#    the linear head, 3.5 s with SETR-PUP's at 96 channels, docs/performance.md): about 4 min a linear-head run, 8
#    for full fine-tuning, 7 for a PUP run; a seed of both tasks about 75 min, the three seeds about 4 hours.
#    Resumable: rerun it and only what is missing runs.
# 2. `vptune bench --heads linear,pup` at 224 and 448 px (ViT-S/14; p = 10 and 50; floor, reference and fast
#    path): training step, peak memory, inference img/s, and what each head costs over the frozen backbone. A
#    timing: run it with nothing else on the machine (an hour or more: a PUP step at 448 px computes its
#    convolutions on maps up to 256 x 256).
#
#   bash docs/segmentation-run.sh             # both
#   STEP=ablate bash docs/segmentation-run.sh # or STEP=bench
set -euo pipefail
cd "$(dirname "$0")/.."
VPTUNE="${VPTUNE:-.venv/bin/vptune}"
if [ "${STEP:-ablate}" = ablate ]; then
  so_far=""
  for seed in ${SEEDS:-0 1 2}; do
    so_far="${so_far:+$so_far,}$seed"
    $VPTUNE ablate segmentation --tasks pasted-animals,surface-defects --seeds "$so_far" --epochs 8 --img-size 112 \
      --out docs/results --quiet
  done
fi
if [ "${STEP:-bench}" = bench ]; then
  for size in 224 448; do
    $VPTUNE bench --models vit-s14 --heads linear,pup --img-size "$size" --prompts 10,50 --modes deep \
      --paths floor,tokens,prefix --repeats 2 --out "docs/bench/segmentation-$size"
  done
fi
