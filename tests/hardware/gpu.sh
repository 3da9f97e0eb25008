#!/usr/bin/env bash
# On a machine with a real NVIDIA GPU (typically not in CC mode and not in a
# TEE): what the agent's NVML (and NSCQ) path finds, and why it refuses to
# give evidence; then what `tvm check` says of the host. Never part of CI.
#   tests/hardware/gpu.sh            # prints everything; exit 0 when it ran
set -uo pipefail
cd "$(dirname "$0")/../.."

echo "== nvidia-smi =="
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=index,name,pci.device_id,driver_version,vbios_version --format=csv
  nvidia-smi conf-compute -f 2>&1 | head -n 5 || true
else
  echo "nvidia-smi: not installed"
fi

echo "== build =="
# The production agent (no SIMULATED backend) and the host tool.
cargo build --release --quiet --no-default-features -p tvm-agent --bin tvm-agent || exit 2
cargo build --release --quiet -p tvm --bin tvm || exit 2

echo "== tvm-agent gpu-probe =="
target/release/tvm-agent gpu-probe
echo "tvm-agent gpu-probe exit status: $? (0: it would give evidence; 1: it refuses, reason above)"

echo "== tvm check (host) =="
for node in hopper blackwell; do
  echo "-- --node-type $node"
  target/release/tvm check --node-type "$node"
  echo "tvm check exit status: $?"
done
exit 0
