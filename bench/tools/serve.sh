#!/usr/bin/env bash
# Starts one Tollgate for a bench scenario in the background and returns
# once it serves the scenario's bench path: the scenario's .env applied, its
# .setup.sh hook run (keys loaded through the admin API), as bench/run.sh
# does. Prints the request header the hook gave (empty when none) as its
# last line; the server's pid is in DATA/pid and its log in DATA/log.
#
# usage: bench/tools/serve.sh TOLLGATE_BIN CONFIG PROXY_PORT ADMIN_PORT DATA
# e.g.   CPU=1 KEYS=200 APPS=2 bench/tools/serve.sh target/release/tollgate \
#          bench/scenarios/full-stack-redis.yaml 18082 18083 /tmp/tg-a
# CPU (default 1) pins it with taskset; WRAP prefixes the command (callgrind.sh
# runs it under valgrind that way). Only 127.0.0.1 is used.
set -euo pipefail
BIN=$1; CFG=$2; PORT=$3; ADMIN=$4; DATA=$5
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOKEN=bench-token-0123456789abcdef
mkdir -p "$DATA"
if [ -f "${CFG%.yaml}.env" ]; then
  while IFS= read -r line; do
    case "$line" in ''|'#'*) ;; *) export "${line?}" ;; esac
  done <"${CFG%.yaml}.env"
fi
# shellcheck disable=SC2086 # WRAP is a command line
TOLLGATE_WORKER_THREADS=${TOLLGATE_WORKER_THREADS:-1} TOLLGATE_DATA_DIR="$DATA" \
TOLLGATE_PROXY_LISTEN=127.0.0.1:$PORT TOLLGATE_ADMIN_LISTEN=127.0.0.1:$ADMIN \
TOLLGATE_ADMIN_TOKEN=$TOKEN RUST_LOG=${RUST_LOG:-warn} \
  taskset -c "${CPU:-1}" ${WRAP:-} "$BIN" serve --config "$CFG" >"$DATA/log" 2>&1 &
echo $! >"$DATA/pid"
for _ in $(seq 1 300); do curl -s -o /dev/null "127.0.0.1:$ADMIN/readyz" && break; sleep 0.2; done
BENCH_PATH="$(sed -n 's/^# bench-path: *//p' "$CFG" | head -n 1)"
BENCH_PATH="${BENCH_PATH:-/}"
HEADER=""
HOOK="${CFG%.yaml}.setup.sh"
if [ -f "$HOOK" ]; then
  HEADER=$(TOLLGATE_ADMIN_URL=http://127.0.0.1:$ADMIN TOLLGATE_PROXY_URL=http://127.0.0.1:$PORT \
    TOLLGATE_ADMIN_TOKEN=$TOKEN BENCH_PATH="$BENCH_PATH" bash "$HOOK" | tail -n 1)
fi
for _ in $(seq 1 300); do
  curl -sf -o /dev/null ${HEADER:+-H "$HEADER"} "127.0.0.1:$PORT$BENCH_PATH" && break
  sleep 0.2
done
echo "$HEADER"
