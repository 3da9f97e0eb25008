#!/usr/bin/env bash
# The inference proxy under load, side by side in one run: the upstream
# directly, tvm-agent (Epistula verification + proxy) and nginx as a reverse
# proxy to the same upstream. nginx is installed when missing and apt-get is
# there; otherwise its row is left out. Settings: PROXY_BENCH_CONNS (32; at
# most 64, the agent's per-address connection cap), PROXY_BENCH_SECS (5), PROXY_BENCH_POOL (90000). Two runs: an upstream that
# answers at once (the proxy's CPU cost is all there is: its worst case) and
# one that takes 20 ms per completion (still faster than any real model).
# Each runs every target twice: as fast as it answers (closed loop), then
# paced at PROXY_BENCH_RATE (1000) requests per second (open loop).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # policy-rc.d-less hosts would start the packaged service: RUNLEVEL=1 keeps it down.
    if ! RUNLEVEL=1 $sudo apt-get install -y -q nginx >/dev/null 2>&1; then
      $sudo apt-get update -q >/dev/null 2>&1 || true
      RUNLEVEL=1 $sudo apt-get install -y -q nginx >/dev/null 2>&1 \
        || echo "nginx could not be installed: running without it" >&2
    fi
  else
    echo "no nginx and no apt-get: running without nginx" >&2
  fi
fi
export PATH="$PATH:/usr/sbin"
PROXY_BENCH_UPSTREAM_MS=0 cargo bench -p tvm-agent --bench proxy "$@"
PROXY_BENCH_UPSTREAM_MS=20 PROXY_BENCH_CONNS=${PROXY_BENCH_CONNS:-64} PROXY_BENCH_POOL=${PROXY_BENCH_POOL:-40000} \
  cargo bench -p tvm-agent --bench proxy "$@"
