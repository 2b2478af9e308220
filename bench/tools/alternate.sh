#!/usr/bin/env bash
# Alternates wrk runs over servers that are already running, round by round,
# and reports each run's req/s and the server's CPU per request (user and
# system, from /proc/<pid>/stat of every process listening on its port).
# CPU per request is what a proxy costs, whatever the load generator and the
# host's noise allowed in that round.
#
# usage: ROUNDS=10 DURATION=5s bench/tools/alternate.sh name=PORT[/path] [...]
# e.g.   bench/tools/alternate.sh nginx=18081 before=18082 after=18084
# A request header for one server comes from HEADER_<name>, e.g.
# HEADER_after="X-API-Key: tg_live_…" (the full-stack scenarios need a key).
# Start each server pinned away from CPU 0 (taskset -c 1), the upstream and
# this script on CPU 0, as bench/run.sh does at N=1. Only 127.0.0.1 is
# targeted; each wrk run is bounded by DURATION and a timeout.
set -euo pipefail
ROUNDS=${ROUNDS:-10}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
pids_on() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u; }
cpu_ticks() { # user and system ticks summed over pids
    local u=0 s=0
    for p in "$@"; do read -r pu ps < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + pu)); s=$((s + ps)); done
    echo "$u $s"
}
printf 'round\tserver\treq/s\tuser_us\tsys_us\tcpu_us\n'
for r in $(seq 1 "$ROUNDS"); do
    for spec in "$@"; do
        name=${spec%%=*}; target=${spec#*=}; port=${target%%/*}
        path=/; [[ $target == */* ]] && path=/${target#*/}
        hvar="HEADER_${name//[^A-Za-z0-9_]/_}"; hdr=()
        [[ -n ${!hvar:-} ]] && hdr=(-H "${!hvar}")
        mapfile -t pids < <(pids_on "$port")
        [[ ${#pids[@]} -gt 0 ]] || { echo "nothing listens on $port" >&2; exit 1; }
        timeout 30 taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d1s "${hdr[@]+"${hdr[@]}"}" "http://127.0.0.1:$port$path" >/dev/null 2>&1 || true
        read -r u0 s0 < <(cpu_ticks "${pids[@]}")
        out=$(timeout 120 nice -n -10 taskset -c 0 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" "${hdr[@]+"${hdr[@]}"}" "http://127.0.0.1:$port$path" 2>&1)
        read -r u1 s1 < <(cpu_ticks "${pids[@]}")
        n=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
        if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then echo "errors on $name: $(grep -E 'Non-2xx|Socket errors' <<<"$out")" >&2; fi
        tick=$(getconf CLK_TCK)
        awk -v r="$r" -v name="$name" -v rps="$rps" -v n="$n" -v du=$((u1 - u0)) -v ds=$((s1 - s0)) -v t="$tick" \
            'BEGIN { u = du / t * 1e6 / n; s = ds / t * 1e6 / n; printf "%d\t%s\t%s\t%.2f\t%.2f\t%.2f\n", r, name, rps, u, s, u + s }'
    done
done
