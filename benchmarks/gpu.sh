#!/usr/bin/env bash
# The GPU check: versions, the layer/model tests on the GPU, then the bf16 speed rows.
#
#   bash benchmarks/gpu.sh             # from anywhere; on a GPU machine, or a CPU smoke run where torch sees none
#   bash benchmarks/gpu.sh --cpu       # the CPU smoke run even where a GPU exists (tiny sizes, ~1 minute)
#   bash benchmarks/gpu.sh --dry-run   # print the plan (device, steps, commands, time caps) and run nothing
#   bash benchmarks/gpu.sh --cuda ...  # the GPU plan even where torch sees no GPU (with --dry-run: to read it)
#   bash benchmarks/gpu.sh --profile   # instead of tests and speed: benchmarks/profile_step.py's tables (where
#                                      # a step's host and device time go, per row) -> $OUT/profile.txt (~1-2 min;
#                                      # a second call after the first, if device time is left)
#
# Steps, each capped with `timeout` so one slow step cannot eat the rest (caps add up to 9 minutes):
#   1. carried wheels: if .gpu-wheels/ holds wheels whose versions differ from the machine's packages
#      (peft, transformers: the versions this repository's tests run with), install them with
#      `pip install --no-deps --no-index --target` into a scratch folder put on PYTHONPATH;
#   2. versions: python, torch (+CUDA), transformers, peft, accelerate, the device's name, nvidia-smi;
#   3. tests: LINCHAIN_TEST_DEVICE=cuda python -m pytest -m device tests (the layer/model checks marked
#      `device`: fp32/bf16/fp16, dropout, mixed batches, checkpointing), JUnit XML + log;
#   4. speed: benchmarks/speed.py --device cuda --dtype bf16 on random Llama-3.2-1B and Llama-3-8B shapes,
#      eager, then torch.compile'd rows (step time does not depend on the weights, and a device call
#      carries at most 64 MiB, so no pretrained LLM travels). On CPU: one tiny fp32 run instead.
# linchain is imported from src/ (PYTHONPATH), not installed: `pip install -e .` needs setuptools from
# the network, which the device machine does not have.
#
# Through the device tool (the machine has its own torch/transformers/peft and no network):
#   1. here, whenever the pinned versions change:  PYTHON=.venv/bin/python bash benchmarks/gpu_wheels.sh
#      (fills .gpu-wheels/, ignored by git: pure-Python wheels of peft and transformers, ~13 MB);
#   2. run(command="bash benchmarks/gpu.sh", carry=[".gpu-wheels"], timeout_s=570)
#      (the steps' caps add up to 540 s; a call also spends a minute or more starting the machine);
#   3. the results come back from $OUT, at most 8 files, so this writes 5: versions.txt, tests.log,
#      tests.xml, speed.json (every speed run merged, keyed by run name), speed.log.
#   Record the card and the results in BENCHMARKS.md ("GPU").
# Exit status: 0 when every step passed (no test marked `device`, or test modules that need a package
# the machine lacks, are reported, not failed), 1 otherwise.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DRY=0 MODE=auto PROFILE=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY=1 ;;
    --profile) PROFILE=1 ;;
    --cpu) MODE=cpu ;;
    --cuda) MODE=cuda ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu.sh: unknown argument '$arg' (valid: --cpu, --cuda, --profile, --dry-run, --help)" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-$ROOT/gpu-results}
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
WHEELS=${GPU_WHEELS:-$ROOT/.gpu-wheels}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
SITE=$SCRATCH/site

if [ "$MODE" = auto ]; then
  if [ "$DRY" = 1 ] && ! "$PY" -c "import torch" 2>/dev/null; then MODE=cpu
  elif "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then MODE=cuda
  else MODE=cpu
  fi
fi

# time caps (s); the speed runs of this mode as "name|cap (s)|speed.py arguments"
T_WHEELS=30 T_VERSIONS=30 T_TESTS=90
if [ "$MODE" = cuda ]; then
  SPEED_RUNS=(
    # Llama-3.2-1B shapes (1.2B parameters), batch 8 x 512 tokens, r=16, dropout 0.05: the fused path
    # (linchain-k*), the reference path (linchain-k3-reference), PEFT LoRA, the floor; merged inference
    "llama-1b|130|--model llama-1b --batch 8 --seq-len 512 --repeats 5 --no-full-ft --rows linchain-k0 linchain-k1 linchain-k3 linchain-k3-bias linchain-k3-reference"
    # Llama-3-8B layer shapes, 8 of its 32 layers (every row shares one frozen base), 4 x 512
    "llama3-8b-8layers|110|--model llama3-8b --layers 8 --batch 4 --seq-len 512 --repeats 5 --no-full-ft --no-inference --rows linchain-k3 linchain-k3-bias linchain-k3-reference"
    # torch.compile (inductor) twins of the floor, PEFT LoRA and k=3, at 1B shapes cut to 4 layers (compile time)
    "llama-1b-4layers-compiled|150|--model llama-1b --layers 4 --batch 8 --seq-len 512 --repeats 5 --no-full-ft --no-inference --compile --rows linchain-k3"
  )
  SPEED_COMMON="--device cuda --dtype bf16"
else
  SPEED_RUNS=("tiny-cpu|90|--model tiny --batch 2 --seq-len 8 --repeats 1")
  SPEED_COMMON="--device cpu --dtype fp32"
fi

total=$((T_WHEELS + T_VERSIONS + T_TESTS))
for run in "${SPEED_RUNS[@]}"; do IFS='|' read -r _ cap _ <<<"$run"; total=$((total + cap)); done

if [ "$DRY" = 1 ] && [ "$PROFILE" = 1 ]; then
  echo "gpu.sh --profile plan: device $MODE, python $PY; wheels, versions, then benchmarks/profile_step.py (cap 150s) -> $OUT/profile.txt, $OUT/profile.log"
  exit 0
fi
if [ "$DRY" = 1 ]; then
  echo "gpu.sh plan: device $MODE, python $PY, PYTHONPATH=$PYTHONPATH, results in $OUT"
  echo "1. [cap ${T_WHEELS}s] wheels from $WHEELS whose versions differ from the installed ones -> pip install --no-deps --no-index --target (a scratch folder) on PYTHONPATH"
  echo "2. [cap ${T_VERSIONS}s] versions -> $OUT/versions.txt"
  echo "3. [cap ${T_TESTS}s] LINCHAIN_TEST_DEVICE=$MODE $PY -m pytest -q -m device --junitxml $OUT/tests.xml tests -> $OUT/tests.log"
  n=4
  for run in "${SPEED_RUNS[@]}"; do
    IFS='|' read -r name cap args <<<"$run"
    echo "$n. [cap ${cap}s] speed $name: $PY benchmarks/speed.py $SPEED_COMMON $args -> $OUT/speed.json, $OUT/speed.log"
    n=$((n + 1))
  done
  echo "time caps: ${total} s in all"
  exit 0
fi

mkdir -p "$OUT"
failed=()

# 1. carried wheels, only those that differ from what the machine has
note="carried wheels: none"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  mapfile -t differ < <("$PY" - "$WHEELS"/*.whl 2>"$SCRATCH/changes.txt" <<'EOF'
import os, sys
from importlib.metadata import PackageNotFoundError, version
for wheel in sys.argv[1:]:
    name, wanted = os.path.basename(wheel).split("-")[:2]
    try:
        have = version(name)
    except PackageNotFoundError:
        have = None
    if have != wanted:
        print(wheel)
        print(f"{name} {have} -> {wanted}", file=sys.stderr)
EOF
  )
  if [ ${#differ[@]} -gt 0 ]; then
    # after src/, before the rest and site-packages: the carried versions win over the machine's
    with_site="$ROOT/src:$SITE${PYTHONPATH#"$ROOT/src"}"
    if timeout -k 5 "$T_WHEELS" "$PY" -m pip install -q --no-deps --no-index --no-compile --no-cache-dir \
         --disable-pip-version-check --target "$SITE" "${differ[@]}" >"$SCRATCH/pip.log" 2>&1 \
       && PYTHONPATH="$with_site" "$PY" -c "import transformers, peft, linchain" >>"$SCRATCH/pip.log" 2>&1; then
      export PYTHONPATH="$with_site"
      note="carried wheels installed ($(paste -sd, "$SCRATCH/changes.txt")): $(printf '%s ' "${differ[@]##*/}")"
    else
      note="carried wheels FAILED to install or import (the machine's own versions are used): $(tail -3 "$SCRATCH/pip.log" | tr '\n' ' ')"
      failed+=(wheels)
    fi
  else
    note="carried wheels: the machine already has these versions"
  fi
fi

# 2. versions
{
  timeout -k 5 "$T_VERSIONS" "$PY" - <<'EOF'
import platform, sys
import torch
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "cuda", torch.version.cuda, "| cuda available:", torch.cuda.is_available())
for name in ("transformers", "peft", "accelerate", "linchain"):
    try:
        module = __import__(name)
        print(name, getattr(module, "__version__", "?"), module.__file__)
    except Exception as err:
        print(name, "FAILED to import:", type(err).__name__, err)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({platform.processor() or platform.machine()})")
# the wheels travel without their dependencies: say whether the machine's packages meet their requirements
from importlib.metadata import PackageNotFoundError, requires, version
from packaging.requirements import Requirement
unmet = []
for name in ("transformers", "peft"):
    for line in requires(name) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            have = None
        if have is None or not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{name} needs {req} (have {have})")
print("requirements of transformers, peft:", "; ".join(unmet) if unmet else "all met")
EOF
  echo "$note"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1; fi
  date -u
} >"$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt"

# --profile: the profiler's tables instead of tests and speed rows
if [ "$PROFILE" = 1 ]; then
  if [ "$MODE" = cuda ]; then
    PROFILE_ARGS="--model llama-1b --layers 4 --device cuda --dtype bf16 --batch 8 --seq-len 512"
  else
    PROFILE_ARGS="--model tiny --device cpu --dtype fp32 --batch 2 --seq-len 16"
  fi
  echo "=== profile on $MODE: benchmarks/profile_step.py $PROFILE_ARGS (cap 150s)"
  # shellcheck disable=SC2086
  timeout -k 10 150 "$PY" benchmarks/profile_step.py $PROFILE_ARGS --out "$OUT/profile.txt" >"$OUT/profile.log" 2>&1
  rc=$?
  grep '^#' "$OUT/profile.log" | head -20
  [ $rc = 0 ] || { echo "profile FAILED (rc $rc); see profile.log"; tail -5 "$OUT/profile.log"; exit 1; }
  exit 0
fi

# 3. the layer/model tests on the device. Collection imports every test module; a module that needs a
# package this machine lacks (e.g. `datasets` for the Trainer tests) must not stop the others:
# --continue-on-collection-errors, and the JUnit XML tells such modules from failed tests.
echo "=== tests on $MODE: pytest -m device (cap ${T_TESTS}s)"
LINCHAIN_TEST_DEVICE=$MODE timeout -k 10 "$T_TESTS" "$PY" -m pytest -q -m device -p no:cacheprovider \
  --continue-on-collection-errors --junitxml "$OUT/tests.xml" tests >"$OUT/tests.log" 2>&1
rc=$?
tail -15 "$OUT/tests.log"
if [ $rc = 124 ] || [ $rc = 137 ]; then
  echo "tests stopped at their ${T_TESTS}s cap" | tee -a "$OUT/tests.log"
  failed+=(tests)
else
  summary=$("$PY" - "$OUT/tests.xml" "$MODE" <<'EOF'
import sys
import xml.etree.ElementTree as ET

passed = skipped = 0
bad, unimportable = [], []
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    problem = case.find("failure") if case.find("failure") is not None else case.find("error")
    if problem is None:
        skipped += case.find("skipped") is not None
        passed += case.find("skipped") is None
    elif problem.get("message") == "collection failure" and any(
            s in (problem.text or "") for s in ("ModuleNotFoundError", "Could not import module")):
        unimportable.append(case.get("name"))  # a package missing here, not a test that failed
    else:
        bad.append(f"{case.get('classname')}::{case.get('name')}")
print(f"tests on {sys.argv[2]}: {passed} passed, {len(bad)} failed, {skipped} skipped" + "".join(f"\n  FAILED {b}" for b in bad))
if unimportable:
    print("not run, their modules need a package this machine lacks (tests.log says which):", ", ".join(unimportable))
if passed + skipped + len(bad) == 0:
    print("(no test carries the 'device' marker: nothing ran)")
sys.exit(1 if bad else 0)
EOF
  )
  rc=$?
  echo "$summary" | tee -a "$OUT/tests.log"
  [ $rc = 0 ] || failed+=(tests)
fi

# 4. speed rows: the log goes straight to $OUT, and speed.json is rewritten after every run, so a call
# cut off at its limit still returns what finished
merge_speed() {
  "$PY" - "$OUT/speed.json" "$SCRATCH" "${SPEED_RUNS[@]%%|*}" <<'EOF'
import json, os, sys
out, scratch, names = sys.argv[1], sys.argv[2], sys.argv[3:]
runs = {}
for name in names:
    path = os.path.join(scratch, name + ".json")
    if os.path.exists(path):
        runs[name] = json.load(open(path))
    elif os.path.exists(path + ".failed"):
        runs[name] = {"error": open(path + ".failed").read().strip() + " (see speed.log)"}
with open(out, "w") as f:
    json.dump({"runs": runs}, f, indent=1)
EOF
}
: >"$OUT/speed.log"
for run in "${SPEED_RUNS[@]}"; do
  IFS='|' read -r name cap args <<<"$run"
  echo "=== speed $name: speed.py $SPEED_COMMON $args (cap ${cap}s)" | tee -a "$OUT/speed.log"
  # shellcheck disable=SC2086  # the argument strings are ours, split on spaces on purpose
  timeout -k 10 "$cap" "$PY" benchmarks/speed.py $SPEED_COMMON --json "$SCRATCH/$name.json" $args 2>&1 \
    | tee -a "$OUT/speed.log" | tail -30
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "speed $name: exit status $rc$([ "$rc" = 124 ] && echo " (stopped at its ${cap}s cap)")" \
      | tee -a "$OUT/speed.log" >"$SCRATCH/$name.json.failed"
    cat "$SCRATCH/$name.json.failed"
    failed+=("speed:$name")
  fi
  merge_speed
done

ls -la "$OUT"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu.sh: FAILED: ${failed[*]} (results in $OUT)"
  exit 1
fi
echo "gpu.sh: all steps passed on $MODE (results in $OUT)"
