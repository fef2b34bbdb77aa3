#!/usr/bin/env bash
# benchmarks/gpu_check.sh: the prepared GPU check (issue 26). One call runs, on a CUDA machine, in
# about 8 minutes in all: versions first; the fullgraph compile check of every preset
# (benchmarks/compile_check.py); the benchmark on the Llama-3.2-1B shape (2k/8k/16k tokens, eager and
# compiled static-cache decoding at batch 1 and 32, time-boxed); one command of each kind on a tiny
# model (train, generate, every eval task, analyze, report, select, export, fetch's offline listing); `difflora demo --quick`
# and `difflora demo`. Each step runs under `timeout` with its own log and the next step runs whatever
# happened; a summary (step, rc, seconds) ends the output and $OUT/summary.txt.
#
# HOW TO RUN
#   With the device tool, from the repository root (the run's command, about 10 minutes of the limit):
#       run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)
#   The image has its own CUDA torch (2.11 seen) and python 3.12 but transformers 5.17 and no `datasets`;
#   carry the pure-Python wheels in .whl (make them once here, where the registry is reachable:
#       bash benchmarks/gpu_check.sh --download-wheels      # transformers 5.23.0, peft 0.21.2, datasets 5.2.0, dill, multiprocess
#   ) and the script installs them with `pip install --no-index --no-deps --target` into a folder of its
#   own, put first on PYTHONPATH; difflora itself runs from the source tree (PYTHONPATH=src), nothing is
#   installed into the image. Without .whl it uses what the image has.
#   Anywhere else with a CUDA torch: `bash benchmarks/gpu_check.sh` from the repository root.
#   On a CPU, to prove every command is well formed (tiny sizes, minutes): `bash benchmarks/gpu_check.sh --cpu-dry-run`.
#
# OUTPUT: everything goes to ${OUT:-gpu_check_out}/ (the device tool's $OUT; at most 8 files come back
# from there): summary.txt, versions.log, compile_check.log, bench.log, the benchmark's JSON and PNG,
# and logs.tar.gz (every step's log and the small result files: JSON, Markdown, PNG, HTML).
# Working files go to ${WORK:-a new /tmp/gpu_check.XXXXXX}.
#
# SETTINGS (environment): BUDGET_S (seconds for all steps, default 480; a step gets at most what is
# left and one that would get under 15 s is skipped), STEPS (space-separated subset of the step names
# below, in this order), T_<step> (that step's timeout, e.g. T_bench=300), PYTHON (default python3),
# BENCH_ARGS (replaces the benchmark's default arguments), COMPILE_CHECK_ARGS (likewise).
# Steps, most informative first: versions compile_check bench tiny_setup train generate eval_nih eval_icl
# eval_degeneration eval_lm_eval analyze report select export fetch demo_quick demo_full.
# demo_full gets what is left of the budget (a full demo may need a call of its own:
# STEPS="versions demo_full" BUDGET_S=560 bash benchmarks/gpu_check.sh); eval_lm_eval runs only where
# lm_eval imports (not in the image; its dependencies are not all wheels).

set -u -o pipefail

ALL_STEPS="versions compile_check bench tiny_setup train generate eval_nih eval_icl eval_degeneration eval_lm_eval analyze report select export fetch demo_quick demo_full"
WHEELS="transformers==5.23.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19"

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
REPO=$PWD
PY=${PYTHON:-python3}
MODE=gpu
case "${1:-}" in
    "") ;;
    --cpu-dry-run) MODE=cpu ;;
    --download-wheels)
        dir=${WHEEL_DIR:-.whl}
        mkdir -p "$dir"
        # shellcheck disable=SC2086  # WHEELS is a list of requirements
        exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d "$dir" $WHEELS ;;
    -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option '$1' (use --cpu-dry-run, --download-wheels or --help)" >&2; exit 2 ;;
esac

OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${WORK:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
mkdir -p "$WORK/logs" || exit 2
LOGS=$WORK/logs
if [ "$MODE" = cpu ]; then DEVICE=cpu; BUDGET_S=${BUDGET_S:-1500}; else DEVICE=cuda; BUDGET_S=${BUDGET_S:-480}; fi
STEPS=${STEPS:-$ALL_STEPS}
START=$SECONDS

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MPLBACKEND=Agg
export DIFFLORA_CACHE=${DIFFLORA_CACHE:-$WORK/cache}

# --- Python packages: carried wheels first, then the source tree ------------------------------------
SITE=""
if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=$WORK/site
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
        >"$LOGS/wheels.log" 2>&1; then
        echo "gpu_check: installing .whl failed (see $LOGS/wheels.log); going on with the image's packages"
        SITE=""
    fi
fi
export PYTHONPATH="$REPO/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"
DL=("$PY" -m difflora.cli.main)

# --- the step runner ---------------------------------------------------------------------------------
declare -a ROWS=()
FAILED=0

wanted() { case " $STEPS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

record() {  # record NAME RC SECONDS NOTE
    ROWS+=("$(printf '%-18s %-5s %6s  %s' "$1" "$2" "$3" "$4")")
    case "$2" in 0 | SKIP) ;; *) FAILED=$((FAILED + 1)) ;; esac
}

step() {  # step NAME DEFAULT_TIMEOUT COMMAND...: run it under timeout, its output to LOGS/NAME.log
    local name=$1 limit=$2 var="T_$1"
    shift 2
    wanted "$name" || return 0
    limit=${!var:-$limit}
    local left=$((BUDGET_S - (SECONDS - START)))
    if ((left < 15)); then
        record "$name" SKIP 0 "time budget spent (BUDGET_S=$BUDGET_S)"
        echo "==> $name: skipped, time budget spent"
        return 0
    fi
    ((limit > left)) && limit=$left
    local log=$LOGS/$name.log t0=$SECONDS rc note=""
    echo "==> $name (timeout ${limit}s): $*"
    printf '$ %s\n' "$*" >"$log"
    timeout --kill-after=15 "$limit" "$@" >>"$log" 2>&1
    rc=$?
    case $rc in 124 | 137) note="timed out after ${limit}s" ;; 0) ;; *) note="failed: $(grep -v '^\s*$' "$log" | tail -n 1 | cut -c1-120)" ;; esac
    record "$name" "$rc" "$((SECONDS - t0))" "$note"
    tail -n "${TAIL_LINES:-3}" "$log" | cut -c1-200 | sed 's/^/    /'
}

skip() {  # skip NAME REASON
    wanted "$1" || return 0
    record "$1" SKIP 0 "$2"
    echo "==> $1: skipped ($2)"
}

# --- 1. versions --------------------------------------------------------------------------------------
cat >"$WORK/versions.py" <<'EOF'
import datetime, importlib, os, platform, sys
import torch
print("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
print("python", sys.version.split()[0], sys.executable, platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(),
      "cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("gpu", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
          "memory GiB", round(p.total_memory / 2**30, 1), "SMs", p.multi_processor_count)
for name in ("transformers", "peft", "accelerate", "datasets", "tokenizers", "safetensors", "triton", "lm_eval"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), os.path.dirname(module.__file__))
    except Exception as exc:
        print(name, "NOT IMPORTABLE:", type(exc).__name__, exc)
import difflora
print("difflora", difflora.__file__)
EOF
cat >"$WORK/versions.sh" <<EOF
echo "gpu_check mode $MODE, device $DEVICE, budget ${BUDGET_S}s, work $WORK, out $OUT, wheels: ${SITE:-none}"
git -C "$REPO" rev-parse HEAD 2>/dev/null || echo "commit: unknown (no .git here)"
git -C "$REPO" status --short 2>/dev/null | head -n 40
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
"$PY" "$WORK/versions.py"
EOF
if wanted versions; then
    step versions 60 bash "$WORK/versions.sh"
    cat "$LOGS/versions.log"
fi

# --- 2. fullgraph compile check -----------------------------------------------------------------------
if [ "$MODE" = cpu ]; then
    default_cc="--device cpu --presets lora-8 difflora-64 --checks train decode"
else
    default_cc="--device cuda --inductor difflora-64"
fi
# shellcheck disable=SC2086  # word splitting of the argument list is meant
step compile_check 120 "$PY" benchmarks/compile_check.py ${COMPILE_CHECK_ARGS:-$default_cc}

# --- 3. the benchmark ---------------------------------------------------------------------------------
if [ "$MODE" = cpu ]; then
    default_bench="--quick --device cpu --threads 1 --configs lora-8 difflora-64 --compiled-decode --compile-backend eager --decode-batch 1 2"
    bench_budget=120
else
    # every configuration's training step (2k/8k/16k) and eager decoding at batch 1 and 32; compiled decoding
    # (one inductor compile per configuration and batch size) for LoRA and two DiffLoRA presets, as far as the
    # time budget goes (what is left out is printed as skipped)
    default_bench="--device cuda --shape llama-1b --lengths 2048 8192 16384 --decode-batch 1 32 --repeats 2 --memory-steps 1 --decode-tokens 32 --compiled-configs lora-8 difflora-64 difflora-shared-kv"
    bench_budget=200
fi
T_bench=${T_bench:-$((bench_budget + 40))}
# shellcheck disable=SC2086
step bench "$T_bench" "$PY" benchmarks/run.py ${BENCH_ARGS:-$default_bench} --time-budget "$bench_budget" --out "$WORK/bench"

# --- 4. one command of each kind on a tiny model -------------------------------------------------------
TINY=$WORK/tiny
ADAPTER=$WORK/train-difflora-64
step tiny_setup 60 "$PY" -m difflora.train.tiny "$TINY"
TINY_SET=(--set "model=$TINY/base" --set "data.train=$TINY/train.jsonl")
step train 90 "${DL[@]}" train configs/tiny/difflora-64.yaml "${TINY_SET[@]}" --set "output_dir=$ADAPTER" \
    --set training.max_steps=20 --set training.save_steps=10 --quiet --device "$DEVICE"
step generate 60 "${DL[@]}" generate "$ADAPTER" --prompt "What is 2 plus 3?" --max-new-tokens 16 --device "$DEVICE"
MODELS=(--model "base=$TINY/base" --model "difflora=$ADAPTER")
EVAL=$WORK/eval
step eval_nih 60 "${DL[@]}" eval nih "${MODELS[@]}" --tasks mk2 --lengths 512 768 --samples 2 --max-new-tokens 12 \
    --out "$EVAL" --quiet --device "$DEVICE"
step eval_icl 60 "${DL[@]}" eval icl "${MODELS[@]}" --shots 2 4 --samples 3 --out "$EVAL" --quiet --device "$DEVICE"
step eval_degeneration 60 "${DL[@]}" eval degeneration "${MODELS[@]}" --max-new-tokens 8 --out "$EVAL" --quiet \
    --device "$DEVICE"
if wanted eval_lm_eval && "$PY" -c "import lm_eval" >/dev/null 2>&1; then
    mkdir -p "$WORK/lm_tasks"
    printf '%s\n' '{"question": "What is 1 plus 2?", "choices": ["3", "4"], "answer": 0}' \
        '{"question": "What is 3 plus 4?", "choices": ["7", "8"], "answer": 0}' >"$WORK/lm_tasks/qa.jsonl"
    cat >"$WORK/lm_tasks/tiny_qa.yaml" <<EOF
task: tiny_qa
dataset_path: json
dataset_kwargs:
  data_files:
    test: $WORK/lm_tasks/qa.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{question}}\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
EOF
    step eval_lm_eval 90 "${DL[@]}" eval lm-eval "${MODELS[@]}" --tasks tiny_qa --include-path "$WORK/lm_tasks" \
        --out "$EVAL" --quiet --device "$DEVICE"
else
    skip eval_lm_eval "lm_eval is not importable here"
fi
step analyze 60 "${DL[@]}" analyze attention "${MODELS[@]}" --length 512 --prompts 1 --out "$EVAL" --quiet \
    --device "$DEVICE"
step report 60 "${DL[@]}" report "$EVAL"
step select 90 "${DL[@]}" select configs/tiny/lora-8.yaml "${TINY_SET[@]}" --search-steps 5 --out "$WORK/select" \
    --quiet --device "$DEVICE"
step export 60 "${DL[@]}" export "$ADAPTER" "$WORK/export" --device "$DEVICE"
step fetch 30 "${DL[@]}" fetch  # without a name: lists the real bases offline (fetching one needs the network)

# --- 5. the demo --------------------------------------------------------------------------------------
if [ "$MODE" = cpu ]; then
    step demo_quick 600 "${DL[@]}" demo --quick --models lora-8 difflora-64 --tasks loss --out "$WORK/demo-quick" \
        --device cpu --threads 1
    skip demo_full "--cpu-dry-run: the full demo takes about 8 minutes on 2 cores; run it on the GPU"
else
    step demo_quick 120 "${DL[@]}" demo --quick --out "$WORK/demo-quick" --device cuda
    step demo_full 3600 "${DL[@]}" demo --out "$WORK/demo" --device cuda
fi

# --- summary and files ---------------------------------------------------------------------------------
for name in versions compile_check bench; do
    [ -f "$LOGS/$name.log" ] && cp "$LOGS/$name.log" "$OUT/$name.log"
done
find "$WORK/bench" -maxdepth 1 \( -name '*.json' -o -name '*.png' \) -exec cp {} "$OUT/" \; 2>/dev/null
(cd "$WORK" && find . \( -path ./site -o -path ./cache -o -path ./tiny/base \) -prune -o -type f \
    \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' -o -name '*.html' \
    -o -name '*.yaml' -o -name '*.txt' \) -size -4M -print0 | tar -czf "$OUT/logs.tar.gz" --null -T -) ||
    echo "gpu_check: could not write $OUT/logs.tar.gz"

if [ -f "$LOGS/compile_check.log" ]; then
    echo
    echo "=== compile check (failures and total; all lines in compile_check.log)"
    grep -E "FAIL|compile check:" "$LOGS/compile_check.log" | cut -c1-220
fi
if [ -f "$LOGS/bench.log" ]; then
    echo
    echo "=== benchmark tables (all in bench.log and the JSON)"
    sed -n '/^difflora benchmark:/,$p' "$LOGS/bench.log" | grep -v "^wrote " | cut -c1-240
fi
{
    echo
    echo "=== gpu_check summary: mode $MODE, $((SECONDS - START)) s of BUDGET_S=$BUDGET_S, $FAILED step(s) failed"
    printf '%-18s %-5s %6s  %s\n' step rc s note
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.txt"
[ "$FAILED" -eq 0 ]
