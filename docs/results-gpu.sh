#!/usr/bin/env bash
# The GPU column of docs/results.md: the cells the paper's main claims rest on (`vptune ablate claims`) at the
# paper's 224 px, on a CUDA machine at vptune's GPU defaults (bf16 autocast, data loader workers), one seed on
# every task before the next. Resumable like docs/results-run.sh: rerun it and only what is missing runs.
#
#   bash docs/results-gpu.sh [OUT] [TASKS]      # OUT defaults to runs/ablate-gpu; extra flags: EXTRA="--compile"
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-runs/ablate-gpu}"
TASKS="${2:-digits,animal-mnist,fashion-mnist,$PWD/runs/holdout/defects/labels.csv}"
VPTUNE="${VPTUNE:-vptune}"
for seeds in 0 0,1 0,1,2; do
  # shellcheck disable=SC2086  # VPTUNE and EXTRA may hold several words
  $VPTUNE ablate claims --tasks "$TASKS" --seeds "$seeds" --epochs 5 --img-size "${IMG_SIZE:-224}" \
    --test-subset 2000 --device "${DEVICE:-cuda}" --out "$OUT" --quiet ${EXTRA:-}
done
