#!/usr/bin/env bash
# Speed/memory benchmark on a lent GPU: bf16, randomly initialised Llama models of real shapes
# (step time does not depend on the weights; a device call carries at most 64 MiB, so no
# pretrained LLM travels). Writes JSON and logs under $OUT (default ./gpu-results).
# Budget: about 8 minutes in all; each run is capped with `timeout` so one slow run cannot eat the rest.
#
#   bash benchmarks/gpu.sh            # on the device machine, from the repository root
#
# NOTE: prepared but not yet run (the session that wrote it had no device); see BENCHMARKS.md.
set -u
OUT="${OUT:-./gpu-results}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
# the device machine may lack the package: install it from the working tree (no internet needed)
"$PY" -c "import linchain" 2>/dev/null || "$PY" -m pip install -q --no-deps -e . >"$OUT/pip.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
"$PY" -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__, torch.cuda.get_device_name())" >>"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

run() {  # name, time limit (s), speed.py arguments...
  local name=$1 limit=$2; shift 2
  echo "=== $name: speed.py $*"
  timeout "$limit" "$PY" benchmarks/speed.py --device cuda --dtype bf16 --json "$OUT/$name.json" "$@" 2>&1 | tee "$OUT/$name.log" | tail -45
}
# Llama-3.2-1B shapes (1.2B parameters), batch 8 x 512 tokens, r=16, dropout 0.05
run llama-1b 210 --model llama-1b --batch 8 --seq-len 512 --repeats 7
# Llama-3-8B layer shapes, 8 of its 32 layers (every row shares one frozen base; full FT gets its own copy)
run llama3-8b-8layers 210 --model llama3-8b --layers 8 --batch 4 --seq-len 512 --repeats 7
# the same 8B shapes without dropout (the cost of the adapter's matmuls alone)
run llama3-8b-8layers-nodrop 90 --model llama3-8b --layers 8 --batch 4 --seq-len 512 --repeats 5 --dropout 0 --no-full-ft --no-inference
ls -la "$OUT"
