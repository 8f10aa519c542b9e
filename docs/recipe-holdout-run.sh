#!/usr/bin/env bash
# The runs behind docs/recipe.md's "Hold-out tasks nobody tuned for" (issue: VPT must win on data nobody tuned for):
# vptune's defaults (linear probe; VPT-deep as it trains on so few images, cross-fitted on train + val for the whole
# schedule; the same with the epoch chosen on val and refitted, the default before; and without cross-fit) against
# the baseline a user fits on their own (scikit-learn's logistic regression on ALL the training images' frozen
# features, C by 5-fold cross-validation), on the hold-out tasks no recipe was chosen on (benchmarks/holdout_tasks.py --untuned:
# counting, shapes, gratings), three seeds, 112 px first, then 224 px (the default size). Each seed covers every
# task before the next seed starts. Resumable: rerun it and only what is missing runs (a run cut short resumes
# from its last epoch); the scikit-learn rows are computed once per task and size. One torch thread by default (the 2-core
# machine keeps a core for other work): nothing here is a timing.
#
#   bash docs/recipe-holdout-run.sh          # SIZES="112" for the first size only
#   CELLS=cross-fit SIZES=112 bash docs/recipe-holdout-run.sh   # a candidate recipe (a cell of `ablate recipes`)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
VPTUNE="${VPTUNE:-.venv/bin/vptune}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
[ -f runs/holdout/gratings/labels.csv ] || "$PY" benchmarks/holdout_tasks.py runs/holdout --untuned
TASKS=()
for name in counting shapes gratings; do TASKS+=("$PWD/runs/holdout/$name/labels.csv"); done
OUT=docs/recipe/holdout
mkdir -p "$OUT"
for size in ${SIZES:-112 224}; do
  sklearn="$OUT/sklearn-$size.jsonl"
  for task in "${TASKS[@]}"; do
    name="$(basename "$(dirname "$task")")"
    grep -qs "\"task\": \"$name\"" "$sklearn" || "$PY" benchmarks/sklearn_probe.py "$task" --img-size "$size" \
      --out "$sklearn"
  done
  so_far=""
  for seed in 0 1 2; do
    so_far="${so_far:+$so_far,}$seed"
    "$VPTUNE" ablate recipes --cells "${CELLS:-linear,defaults,cross-fit,cross-fit-fixed}" --refit --tasks "$(IFS=,; echo "${TASKS[*]}")" \
      --seeds "$so_far" --img-size "$size" --out "$OUT/$size" --quiet
  done
done
