#!/usr/bin/env bash
# User-space instructions per request of a Tollgate binary under callgrind:
# 500 requests of warm-up, counters zeroed, then exactly 3,000 requests over
# 8 keep-alive connections (load.py), counters dumped. Repeatable to within
# 0.2% for the same binary and config, however busy the machine is.
#
# usage: bench/tools/callgrind.sh TOLLGATE_BIN CONFIG [OUT]
# Needs valgrind, python3 and an upstream for CONFIG (bench/run.sh's nginx on
# 127.0.0.1:18080, for the bench scenarios). Tollgate listens on 18092/18093.
# Extra settings through the environment, e.g. TOLLGATE_ANALYTICS=off.
# A scenario's `# bench-path:` line and its .setup.sh hook (keys loaded
# through the admin API; KEYS and APPS make the ring smaller, which keeps
# the hook quick under valgrind) are used as bench/run.sh uses them.
# OUT.1 is the callgrind file of the measured requests; read it with
# callgrind_annotate or bench/tools/cgsum.py.
set -euo pipefail
BIN=$1; CFG=$2; OUT=${3:-/tmp/tollgate-callgrind.out}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$DATA"' EXIT
rm -f "$OUT" "$OUT".*
# The scenario's own settings (NAME.env, KEY=VALUE lines), as bench/run.sh applies them.
if [ -f "${CFG%.yaml}.env" ]; then
  while IFS= read -r line; do
    case "$line" in ''|'#'*) ;; *) export "${line?}" ;; esac
  done <"${CFG%.yaml}.env"
fi
TOLLGATE_WORKER_THREADS=1 TOLLGATE_DATA_DIR="$DATA" \
TOLLGATE_PROXY_LISTEN=127.0.0.1:18092 TOLLGATE_ADMIN_LISTEN=127.0.0.1:18093 \
TOLLGATE_ADMIN_TOKEN=callgrind-token-0123456789 RUST_LOG=warn \
  valgrind --tool=callgrind --compress-strings=no --compress-pos=no \
  --callgrind-out-file="$OUT" "$BIN" serve --config "$CFG" >"$DATA/log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do curl -s -o /dev/null localhost:18093/readyz && break; sleep 0.2; done
BENCH_PATH="$(sed -n 's/^# bench-path: *//p' "$CFG" | head -n 1)"
BENCH_PATH="${BENCH_PATH:-/}"
HEADER=""
HOOK="${CFG%.yaml}.setup.sh"
if [ -f "$HOOK" ]; then
  HEADER=$(TOLLGATE_ADMIN_URL=http://127.0.0.1:18093 TOLLGATE_PROXY_URL=http://127.0.0.1:18092 \
    TOLLGATE_ADMIN_TOKEN=callgrind-token-0123456789 BENCH_PATH="$BENCH_PATH" bash "$HOOK" | tail -n 1)
fi
for _ in $(seq 1 300); do curl -sf -o /dev/null ${HEADER:+-H "$HEADER"} "localhost:18092$BENCH_PATH" && break; sleep 0.2; done
python3 "$HERE/load.py" 18092 500 8 "$HEADER" "$BENCH_PATH" >/dev/null
callgrind_control -z "$PID" >/dev/null 2>&1
ok=$(python3 "$HERE/load.py" 18092 3000 8 "$HEADER" "$BENCH_PATH")
callgrind_control -d "$PID" >/dev/null 2>&1
sleep 1
total=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "answered 200: $ok of 3000; instructions: $total; per request: $((total / 3000)); file: $OUT.1"
