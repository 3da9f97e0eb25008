#!/usr/bin/env bash
# Epistula verification, side by side in one run: tvm-protocol (criterion) and
# the field's tool, bittensor-wallet's Keypair.verify, on the same vector A.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/interop/run.sh >/dev/null  # builds the venv with bittensor-wallet
cargo bench --quiet -p tvm-protocol --bench epistula -- --warm-up-time 1 --measurement-time 3 \
  2>&1 | grep -E '^epistula/|thrpt' | sed 's/^ */  /'
.venv-interop/bin/python - <<'PY'
import sys
sys.path.insert(0, "tests/interop")
from test_interop import python_verify_rate
print(f"bittensor-wallet Keypair.verify (vector A)\n  thrpt: {python_verify_rate():.0f} verifications/s")
PY
