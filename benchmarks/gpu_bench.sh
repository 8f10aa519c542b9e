#!/usr/bin/env bash
# The GPU figures of docs/performance.md, prepared for a session lent a CUDA GPU for about ten minutes.
#
#   benchmarks/gpu_bench.sh [OUT_DIR]    # default: $OUT when set, else runs/gpu-bench
#   DRY_RUN=1 benchmarks/gpu_bench.sh    # print the bench runs, run nothing (tests/test_bench.py parses them)
#
# `vptune bench` on ViT-B/16 (the paper's backbone) and ViT-S/14 (vptune's default backbone's shape), both at
# 224 px, deep prompts p = 10 and 50, batch 64 and 256 (training and inference), fp32 and bf16, paths floor,
# tokens, prefix; then the same compiled (--compile also re-measures eager, side by side). Writes, under OUT_DIR:
# nvidia-smi.txt, one folder per stage (bench.csv, bench.json, bench.md: rewritten after every group, so a
# stage stopped by its time limit keeps what it finished), STAGE.log, stages.txt (exit status and seconds of
# each stage) and summary.md (every stage's bench.md).
#
# Time: BUDGET_S (default 480 s) for the whole script. Eager stages come first, they take about a minute each on
# an H200; the compiled stages share what is left, each stopped at its share: torch.compile (inductor) compiles
# a training and two inference graphs per config, about a minute each for ViT-B/16, so the last stages may be
# cut short or skipped (stages.txt says which). Random weights: nothing is downloaded. Needs torch with CUDA and
# timm importable by $PYTHON (default: .venv/bin/python when present, else python3); runs from the repository
# root with src/ on PYTHONPATH, so vptune itself need not be installed.
set -euo pipefail

cd "$(dirname "$0")/.."
out="${1:-${OUT:-runs/gpu-bench}}"
budget="${BUDGET_S:-480}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
dry="${DRY_RUN:-}"

# Every stage: the grid above on the GPU, 1 warm-up and 2 timed rounds (the default 3 would not fit the budget).
common=(--device cuda --modes deep --paths floor,tokens,prefix --precisions fp32,bf16 --warmup 1 --repeats 2)

# stage NAME SHARE_S BENCH_ARGS...: one bench run into $out/NAME, stopped after SHARE_S or what is left of the
# budget, whichever is less; skipped with under 45 s left (model set-up alone takes some 20 s).
stage() {
  local name=$1 share=$2
  shift 2
  local left=$((budget - SECONDS))
  local limit=$((share < left ? share : left))
  if [[ -n "$dry" ]]; then
    echo "bench ${common[*]} $* --out $out/$name"
    return
  fi
  if ((limit < 45)); then
    echo "$name: skipped, ${left} s of the budget left" | tee -a "$out/stages.txt"
    return
  fi
  echo "$name: up to ${limit} s" >&2
  local start=$SECONDS rc=0
  timeout --kill-after=15 "$limit" "$python" -m vptune bench "${common[@]}" "$@" --out "$out/$name" \
    >"$out/$name.log" 2>&1 || rc=$?
  local note=""
  if ((rc == 124 || rc == 137)); then note=" (stopped at its time limit: groups finished before it are kept)"; fi
  echo "$name: exit ${rc} after $((SECONDS - start)) s$note" | tee -a "$out/stages.txt"
}

if [[ -z "$dry" ]]; then
  mkdir -p "$out"
  : >"$out/stages.txt"
  { nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv; } \
    >"$out/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed (see nvidia-smi.txt)" | tee -a "$out/stages.txt"
fi

# Eager first: fp32 vs bf16 for every model, p and batch, whatever happens to the compiled stages.
stage eager-b256 120 --models vit-b16,vit-s14 --prompts 10,50 --batch 256 --train-batch 256
stage eager-b64 90 --models vit-b16,vit-s14 --prompts 10,50 --batch 64 --train-batch 64
# Compiled beside eager: the paper's backbone at the big batch first (p = 50 first: the reference path's cost
# grows with p, so the paths differ most there), then the default backbone, then batch 64.
stage compiled-b256-vit-b16 240 --models vit-b16 --prompts 50,10 --batch 256 --train-batch 256 --compile
stage compiled-b256-vit-s14 150 --models vit-s14 --prompts 50,10 --batch 256 --train-batch 256 --compile
stage compiled-b64 150 --models vit-b16,vit-s14 --prompts 50,10 --batch 64 --train-batch 64 --compile

if [[ -z "$dry" ]]; then
  for md in "$out"/*/bench.md; do
    [[ -e "$md" ]] || continue
    printf '## %s\n\n' "$(basename "$(dirname "$md")")"
    cat "$md"
    printf '\n'
  done >"$out/summary.md"
  echo "done in ${SECONDS} s: $out/summary.md" >&2
fi
