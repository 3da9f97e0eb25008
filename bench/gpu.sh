#!/usr/bin/env bash
# NVIDIA GPU appraisal side by side in one run, on the same NV-1 input:
# tvm-verifier (criterion, warm and cold) and NVIDIA's Python local verifier
# (nv-local-gpu-verifier from PyPI, run offline: see bench/lgv_offline.py).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-bench-gpu
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet nv-local-gpu-verifier==2.7.3
fi
cargo bench --quiet -p tvm-verifier --bench gpu -- --warm-up-time 1 --measurement-time 4 \
  2>&1 | grep -E '^gpu/|time:' | sed 's/^ */  /'
"$venv/bin/python" bench/lgv_offline.py . 30
