#!/usr/bin/env bash
# Issue 27, "Know the base first": the real base's own needle retrieval (MK-2, MK-3, MV), many-shot ICL and
# degeneration at several lengths, before any fine-tuning, to choose the study's lengths where the base is
# neither at 0 nor at 1. Each step is one `difflora eval` command; a step whose summary exists is skipped,
# so an interrupted profile resumes where it stopped.
#
#   difflora fetch smollm2-135m-instruct          # once
#   bash benchmarks/real_base_profile.sh [BASE] [OUT]   # default: smollm2-135m-instruct, docs/results/smollm2-base
set -euo pipefail
BASE=${1:-smollm2-135m-instruct}
OUT=${2:-docs/results/smollm2-base}
export HF_HUB_OFFLINE=1
common=(--model "base=$BASE" --device cpu --seed 4242 --quiet)

step() {  # step NAME SUMMARY_FILE difflora-args...
    local name=$1 summary=$2; shift 2
    if [ -f "$OUT/$name/$summary" ]; then echo "== $name: done before, skipped"; return; fi
    echo "== $name: started $(date -u +%H:%M:%S)"
    local t0=$SECONDS
    difflora "$@" "${common[@]}" --out "$OUT/$name"
    echo "== $name: $((SECONDS - t0)) s"
}

# Ordered so that the cells the study's choice depends on come first (each step costs a few minutes on
# 2 cores: MK-2 prefill runs at about 1.2 s per sample at 512 tokens, 2.3 s at 1024, 6 s at 2048); the long
# contexts get few samples: they only need to show whether the base still retrieves there.
step nih-mk2 nih_summary.json eval nih --tasks mk2 --lengths 256 512 1024 2048 --samples 20 --batch-size 4
step nih-mk3-mv nih_summary.json eval nih --tasks mk3 mv --lengths 256 512 1024 2048 --samples 10 --batch-size 4
step icl icl_summary.json eval icl --shots 4 8 16 32 --samples 30 --batch-size 4
step degeneration degeneration_summary.json eval degeneration --batch-size 8
step nih-4096 nih_summary.json eval nih --tasks mk2 mk3 mv --lengths 4096 --samples 4 --batch-size 2
step nih-8192 nih_summary.json eval nih --tasks mk2 mv --lengths 8192 --samples 2 --batch-size 1
echo "== profile finished $(date -u +%H:%M:%S)"
python benchmarks/real_base_summary.py "$OUT"
