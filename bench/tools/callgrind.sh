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
# Function names need a binary valgrind can read: Debian's valgrind 3.19
# finds no symbols in one linked by rust-lld (rustc's default linker on
# x86_64 Linux since 1.90), so build the profiled binary with
#   RUSTFLAGS="-C link-arg=-fuse-ld=bfd" CARGO_TARGET_DIR=/tmp/bfd-target \
#     cargo build --release -p tollgate
# (its own target directory, so the usual one is not rebuilt). The totals
# are the same either way.
set -euo pipefail
BIN=$1; CFG=$2; OUT=${3:-/tmp/tollgate-callgrind.out}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="$(mktemp -d)"
trap 'kill "$(cat "$DATA/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$DATA"' EXIT
rm -f "$OUT" "$OUT".*
HEADER=$(CPU=0-1 WRAP="valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file=$OUT" \
  "$HERE/serve.sh" "$BIN" "$CFG" 18092 18093 "$DATA" | tail -n 1)
PID=$(cat "$DATA/pid")
BENCH_PATH="$(sed -n 's/^# bench-path: *//p' "$CFG" | head -n 1)"
BENCH_PATH="${BENCH_PATH:-/}"
python3 "$HERE/load.py" 18092 500 8 "$HEADER" "$BENCH_PATH" >/dev/null
callgrind_control -z "$PID" >/dev/null 2>&1
ok=$(python3 "$HERE/load.py" 18092 3000 8 "$HEADER" "$BENCH_PATH")
callgrind_control -d "$PID" >/dev/null 2>&1
sleep 1
total=$(callgrind_annotate "$OUT.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "answered 200: $ok of 3000; instructions: $total; per request: $((total / 3000)); file: $OUT.1"
