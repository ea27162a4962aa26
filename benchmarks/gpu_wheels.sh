#!/usr/bin/env bash
# Fill .gpu-wheels/ (ignored by git) with the pure-Python wheels benchmarks/gpu.sh installs on a device
# machine that has no network, so the GPU runs the peft and transformers versions our tests run with here.
#
#   PYTHON=.venv/bin/python bash benchmarks/gpu_wheels.sh          # peft and transformers as installed for PYTHON
#   bash benchmarks/gpu_wheels.sh peft==0.21.2 transformers==5.23.0  # or name the versions
#
# --no-deps: the device's image already holds what these need (seen there, 2026-11: huggingface_hub
# 1.33, tokenizers 0.23.2, safetensors 0.8.0, accelerate 1.15.0, which satisfy transformers 5.24's and
# peft 0.21's requirements). Name a further pure-Python package here if a new version needs one; a
# compiled one (e.g. tokenizers) needs an x86-64 cp312 wheel instead (pip download --only-binary=:all:
# --python-version 3.12 --platform manylinux_2_28_x86_64 ...).
# The folder is replaced as a whole, so it never holds two versions of a package.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
DEST=.gpu-wheels

specs=("$@")
if [ ${#specs[@]} -eq 0 ]; then
  if ! out=$("$PY" -c 'from importlib.metadata import version
for name in ("peft", "transformers"):
    print(f"{name}=={version(name)}")' 2>&1); then
    echo "gpu_wheels.sh: $PY has no peft/transformers to read the versions from: set PYTHON=.venv/bin/python or name them (peft==X transformers==Y)" >&2
    exit 2
  fi
  mapfile -t specs <<<"$out"
fi

rm -rf "$DEST.tmp"
mkdir "$DEST.tmp"
# the device's python is 3.12; pure-Python wheels (py3-none-any) fit any
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$DEST.tmp" "${specs[@]}"
for wheel in "$DEST.tmp"/*.whl; do
  case $wheel in
    *-none-any.whl) ;;
    *) echo "gpu_wheels.sh: $wheel is not pure Python: it would not install on the device's x86-64 Python 3.12 unless built for it" >&2
       rm -rf "$DEST.tmp"; exit 1 ;;
  esac
done
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
ls -l "$DEST"
du -sh "$DEST"
echo "carry it: run(command=\"bash benchmarks/gpu.sh\", carry=[\"$DEST\"], timeout_s=570)"
