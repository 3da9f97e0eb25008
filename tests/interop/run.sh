#!/usr/bin/env bash
# Interop with the real Python peer: installs bittensor-wallet from PyPI into a
# venv (.venv-interop), builds the Rust driver, runs tests/interop/test_interop.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-interop
if ! "$venv/bin/python" -c 'import bittensor_wallet' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'bittensor-wallet==4.1.1'
fi
cargo build --quiet -p tvm-protocol --example interop
"$venv/bin/python" tests/interop/test_interop.py target/debug/examples/interop
