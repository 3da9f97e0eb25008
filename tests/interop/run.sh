#!/usr/bin/env bash
# Interop with real peers: bittensor-wallet (PyPI) for keys and Epistula,
# bittensor-drand (PyPI) for commit-reveal timelock commits and reveal rounds, and
# LIEF (PyPI) for Authenticode hashes, in a venv (.venv-interop); builds the
# Rust drivers and runs tests/interop/test_interop.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-interop
if ! "$venv/bin/python" -c 'import bittensor_wallet' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'bittensor-wallet==4.1.1'
fi
# bittensor-drand: the reference commit-reveal client (timelock and reveal rounds).
if ! "$venv/bin/python" -c 'import bittensor_drand' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'bittensor-drand==2.0.0'
fi
# LIEF: an Authenticode implementation to compare `tvm image measure --kernel` with.
if ! "$venv/bin/python" -c 'import lief' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'lief==1.0.0'
fi
# A real signed kernel (Debian's cloud kernel, with its certificate table),
# where apt can fetch it; without it the PE launchers alone are compared.
kernel_dir="$venv/kernel"
if [ -z "${TVM_INTEROP_KERNEL:-}" ] && command -v apt-get >/dev/null 2>&1; then
  if ! ls "$kernel_dir"/boot/vmlinuz-* >/dev/null 2>&1; then
    mkdir -p "$kernel_dir"
    (
      cd "$kernel_dir"
      apt-get download linux-image-cloud-amd64 >/dev/null 2>&1 &&
        pkg=$(dpkg-deb -f linux-image-cloud-amd64_*.deb Depends | grep -o 'linux-image-[0-9][^ ,]*cloud-amd64' | head -n 1) &&
        apt-get download "$pkg" >/dev/null 2>&1 &&
        dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './boot/vmlinuz-*' &&
        rm -f ./*.deb
    ) || echo "interop: no Debian kernel fetched; comparing the PE launchers only"
  fi
  k=$(ls "$kernel_dir"/boot/vmlinuz-* 2>/dev/null | head -n 1 || true)
  if [ -n "$k" ]; then export TVM_INTEROP_KERNEL="$k"; fi
fi
cargo build --quiet -p tvm --bin tvm
export TVM_BIN=target/debug/tvm
cargo build --quiet -p tvm-protocol --example interop
"$venv/bin/python" tests/interop/test_interop.py target/debug/examples/interop
cargo build --quiet -p tvm-chain --example drand_interop
"$venv/bin/python" tests/interop/test_drand.py target/debug/examples/drand_interop
