#!/usr/bin/env bash
# Tollgate benchmark: Tollgate against nginx proxy_pass, in one run, on this machine.
#
#   bench/run.sh                   # quick look: ROUNDS=1, DURATION=10s
#   ROUNDS=3 bench/run.sh          # figures for bench/RESULTS.md
#   NO_TOLLGATE=1 bench/run.sh     # nginx baseline only (no Tollgate build)
#
# See bench/README.md for what is measured and every knob. Everything listens
# on 127.0.0.1 only; every load run is bounded in time and in count.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"

# ---------------------------------------------------------------- knobs

DURATION="${DURATION:-10s}"          # each throughput measurement (wrk -d)
WARMUP="${WARMUP:-2s}"               # wrk warm-up before each throughput measurement
ROUNDS="${ROUNDS:-1}"                # alternating rounds; the report shows medians
CONNECTIONS="${CONNECTIONS:-32}"     # wrk -c (throughput) and oha -c for oha's own max
LAT_CONNECTIONS="${LAT_CONNECTIONS:-32}" # oha -c / wrk2 -c for the fixed-rate latency runs
WRK_THREADS="${WRK_THREADS:-1}"      # wrk -t
WORKERS="${WORKERS:-1 2}"            # worker counts to measure (nginx worker_processes, Tollgate threads)
LAT_DURATION="${LAT_DURATION:-10s}"  # each fixed-rate latency measurement
LAT_WARMUP="${LAT_WARMUP:-2s}"       # fixed-rate warm-up before each latency measurement
RATE="${RATE:-}"                     # one fixed rate in req/s instead of RATE_FRACTIONS
RATE_FRACTIONS="${RATE_FRACTIONS:-0.25 0.5 0.75}" # fixed rates = these x nginx's max (capped, see oha_max)
LATENCY_TOOL="${LATENCY_TOOL:-auto}" # auto | oha | wrk2 | none
NO_TOLLGATE="${NO_TOLLGATE:-0}"      # 1: measure only upstream direct and nginx proxy_pass
SCENARIOS="${SCENARIOS:-}"           # comma-separated scenario names to run; default: all
TOLLGATE_BIN="${TOLLGATE_BIN:-}"     # use this binary instead of building one
READY_TIMEOUT="${READY_TIMEOUT:-30}" # seconds to wait for a server to come up
SETUP_TIMEOUT="${SETUP_TIMEOUT:-600}" # seconds a scenario's setup hook may take
BENCH_NICE="${BENCH_NICE:--10}"      # nice value for servers and load generators (root only)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tollgate-target}"

UPSTREAM_PORT=18080
NGINX_PORT=18081
TOLLGATE_PORT=18082
TOLLGATE_ADMIN_PORT=18083
ADMIN_TOKEN=bench-admin-token-0123456789 # Tollgate requires at least 16 characters

# ---------------------------------------------------------------- scenarios
#
# Each Tollgate scenario is a config file in bench/scenarios/, and beside it,
# if it needs them: NAME.env (extra settings for Tollgate, KEY=VALUE lines),
# NAME.setup.sh (run once Tollgate is ready; prints request headers, e.g. an
# API key it created through the admin API) and, in the config file, a
# "# bench-path: /some/path" line for the path the load goes to (default /).
# The load generators send the same path and headers to nginx, so both see
# the same requests. Each scenario runs once per worker count, with nginx
# measured in alternation beside it.
#
# The default set builds the stack up one layer at a time, from the proxy
# alone to everything on (issue 6); the extra ones isolate single costs and
# run only when named in SCENARIOS.
tollgate_scenarios() {
    run_tollgate_scenario "pass-through" "$BENCH_DIR/scenarios/passthrough.yaml"
    run_tollgate_scenario "key auth" "$BENCH_DIR/scenarios/key-auth.yaml"
    run_tollgate_scenario "key auth + rate limit" "$BENCH_DIR/scenarios/key-auth-rate-limit.yaml"
    run_tollgate_scenario "full stack" "$BENCH_DIR/scenarios/full-stack.yaml"
    run_tollgate_scenario "full stack on Redis" "$BENCH_DIR/scenarios/full-stack-redis.yaml"
    run_tollgate_scenario "full stack on synced Redis" "$BENCH_DIR/scenarios/full-stack-redis-synced.yaml"
    # Extra scenarios.
    run_tollgate_scenario "pass-through with analytics" "$BENCH_DIR/scenarios/passthrough-analytics.yaml" extra
    run_tollgate_scenario "rate limit" "$BENCH_DIR/scenarios/rate-limit.yaml" extra
    run_tollgate_scenario "rate limit without fields" "$BENCH_DIR/scenarios/rate-limit-quiet.yaml" extra
    run_tollgate_scenario "rate limit on Redis" "$BENCH_DIR/scenarios/rate-limit-redis.yaml" extra
}

# ---------------------------------------------------------------- helpers

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
    printf '[bench] error: %s\n' "$*" >&2
    exit 1
}

# "10s" / "2m" / "500ms" / "10" -> whole seconds (rounded up, at least 1).
dur_secs() {
    local d="$1"
    case "$d" in
        *ms) echo $(((${d%ms} + 999) / 1000)) ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Servers and load generators run at a raised priority (when root) so that a
# build running beside the benchmark disturbs both sides less. With the
# kernel's autogroup scheduling on, a process's nice value only counts inside
# its session's group, so the group's nice is raised too (and put back on exit).
PRIO=()
if [[ "$(id -u)" -eq 0 && "$BENCH_NICE" != 0 ]]; then PRIO=(nice -n "$BENCH_NICE"); fi
AUTOGROUP_OLD=""
raise_priority() {
    [[ ${#PRIO[@]} -gt 0 && -w /proc/$$/autogroup ]] || return 0
    AUTOGROUP_OLD="$(awk '{ print $3 }' /proc/$$/autogroup 2>/dev/null || true)"
    [[ -n "$AUTOGROUP_OLD" ]] || return 0
    echo "$BENCH_NICE" >"/proc/$$/autogroup" 2>/dev/null || AUTOGROUP_OLD=""
}
restore_priority() {
    [[ -n "$AUTOGROUP_OLD" ]] || return 0
    echo "$AUTOGROUP_OLD" >"/proc/$$/autogroup" 2>/dev/null || true
    AUTOGROUP_OLD=""
}

PIDS=()
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    restore_priority
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=() p
    for p in "${PIDS[@]}"; do [[ "$p" == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "$* missing and apt-get not available; install it by hand"
    local sudo=()
    [[ "$(id -u)" -eq 0 ]] || sudo=(sudo -n)
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        "${sudo[@]}" apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

# ---------------------------------------------------------------- tools

NGINX=""
LAT_TOOL=""
OHA=""
setup_tools() {
    local pkgs=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || pkgs+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || pkgs+=(wrk)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    command -v taskset >/dev/null 2>&1 || pkgs+=(util-linux)
    command -v python3 >/dev/null 2>&1 || pkgs+=(python3)
    [[ ${#pkgs[@]} -eq 0 ]] || apt_install "${pkgs[@]}"
    NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
    [[ -x "$NGINX" ]] || die "nginx not found after install"

    if [[ -x "$HOME/.cargo/bin/oha" ]]; then OHA="$HOME/.cargo/bin/oha"; fi
    if [[ -z "$OHA" ]] && command -v oha >/dev/null 2>&1; then OHA="$(command -v oha)"; fi
    case "$LATENCY_TOOL" in
        none) LAT_TOOL="" ;;
        wrk2)
            command -v wrk2 >/dev/null 2>&1 || die "LATENCY_TOOL=wrk2 but wrk2 is not on PATH"
            LAT_TOOL=wrk2
            ;;
        oha | auto)
            if [[ -z "$OHA" ]]; then
                log "oha not found; cargo install oha --locked (a few minutes, once)"
                if cargo install oha --locked --root "$HOME/.cargo" >"$RUN_DIR/oha-install.log" 2>&1; then
                    OHA="$HOME/.cargo/bin/oha"
                else
                    log "cargo install oha failed (see $RUN_DIR/oha-install.log)"
                fi
            fi
            if [[ -n "$OHA" ]]; then
                LAT_TOOL=oha
            elif [[ "$LATENCY_TOOL" == oha ]]; then
                die "LATENCY_TOOL=oha but oha could not be installed"
            elif command -v wrk2 >/dev/null 2>&1; then
                LAT_TOOL=wrk2
            else
                LAT_TOOL=""
            fi
            ;;
        *) die "LATENCY_TOOL must be auto, oha, wrk2 or none (got '$LATENCY_TOOL')" ;;
    esac
    if [[ "$LATENCY_TOOL" == none ]]; then
        log "LATENCY_TOOL=none: fixed-rate latency skipped"
    elif [[ -z "$LAT_TOOL" ]]; then
        log "no open-loop load generator (oha or wrk2): fixed-rate latency will be SKIPPED"
    fi
    OHA_JSON=(--json)
    if [[ "$LAT_TOOL" == oha ]] && "$OHA" --help 2>&1 | grep -q -- '--output-format'; then
        OHA_JSON=(--output-format json)
    fi
}

build_tollgate() {
    if [[ "$NO_TOLLGATE" == 1 ]]; then
        log "NO_TOLLGATE=1: skipping the Tollgate build and scenarios"
        return
    fi
    if [[ -n "$TOLLGATE_BIN" ]]; then
        [[ -x "$TOLLGATE_BIN" ]] || die "TOLLGATE_BIN=$TOLLGATE_BIN is not an executable"
        return
    fi
    log "cargo build --release -p tollgate (target dir $CARGO_TARGET_DIR)"
    if ! (cd "$REPO_DIR" && cargo build --release -p tollgate); then
        die "building Tollgate failed (cargo build --release -p tollgate). Fix the build, or run NO_TOLLGATE=1 bench/run.sh for the nginx baseline alone."
    fi
    TOLLGATE_BIN="$CARGO_TARGET_DIR/release/tollgate"
    [[ -x "$TOLLGATE_BIN" ]] || die "build succeeded but $TOLLGATE_BIN does not exist"
}

# ---------------------------------------------------------------- CPU placement
#
# N=1 on 2+ cores: the proxy under test (nginx proxy or Tollgate) alone on CPU 1;
# load generator and upstream share CPU 0. N>=2: there are not enough cores to
# separate anything on a 2-core machine, so every process may use every CPU.
set_cpus() {
    local n="$1" ncpu
    ncpu="$(nproc)"
    if [[ "$n" -eq 1 && "$ncpu" -ge 2 ]]; then
        PROXY_CPUS=1
        LOAD_CPUS=0
        UPSTREAM_CPUS=0
    else
        PROXY_CPUS="0-$((ncpu - 1))"
        LOAD_CPUS="$PROXY_CPUS"
        UPSTREAM_CPUS="$PROXY_CPUS"
    fi
}

# A local redis-server (the Redis scenarios' counters) is a backing service
# like the upstream: its threads go where the upstream runs, away from the
# proxy under test, instead of wherever the scheduler puts them.
pin_redis() {
    local pid t
    for pid in $(pgrep -x redis-server || true); do
        for t in /proc/"$pid"/task/*; do
            taskset -cp "$1" "${t##*/}" >/dev/null 2>&1 || true
        done
        log "redis-server (pid $pid) pinned to CPUs $1"
    done
}

# ---------------------------------------------------------------- servers

render() { # render TEMPLATE OUT WORKERS PORT
    sed -e "s|@WORKERS@|$3|g" -e "s|@DIR@|$WORK|g" -e "s|@PORT@|$4|g" \
        -e "s|@UPSTREAM@|127.0.0.1:$UPSTREAM_PORT|g" "$1" >"$2"
}

wait_http() { # wait_http NAME PID URL [curl args...]
    local name="$1" pid="$2" url="$3" i code
    shift 3
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || return 2
        code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" 2>/dev/null || true)"
        [[ "$code" == 200 ]] && return 0
        sleep 0.2
    done
    log "$name: $url did not answer 200 within ${READY_TIMEOUT}s (last status: ${code:-none})"
    return 1
}

start_nginx() { # start_nginx NAME TEMPLATE PORT WORKERS CPUS -> sets LAST_PID
    local name="$1" tmpl="$2" port="$3" n="$4" cpus="$5"
    port_in_use "$port" && die "port 127.0.0.1:$port is already in use; stop what listens there"
    local conf="$WORK/$name.conf"
    render "$tmpl" "$conf" "$n" "$port"
    "$NGINX" -t -q -c "$conf" -p "$WORK" -e "$WORK/$name.error.log" >/dev/null 2>&1 ||
        die "nginx rejected $conf: $("$NGINX" -t -c "$conf" -p "$WORK" -e "$WORK/$name.error.log" 2>&1 | tail -n 3)"
    "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$cpus" "$NGINX" -c "$conf" -p "$WORK" -e "$WORK/$name.error.log" >"$WORK/$name.out" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    wait_http "$name" "$LAST_PID" "http://127.0.0.1:$port/" ||
        die "nginx $name did not start; see $WORK/$name.error.log"
}

TG_PID=""
SCENARIO_HEADERS=()
# start_tollgate TAG CONFIG WORKERS CPUS [headers...]
# Starts Tollgate, waits for /readyz, runs the scenario's setup hook if there is
# one (CONFIG with .setup.sh for .yaml), and waits for a proxied 200. Sets
# TG_PID, and SCENARIO_HEADERS to the given headers plus the hook's output.
start_tollgate() {
    local tag="$1" config="$2" n="$3" cpus="$4"
    shift 4
    SCENARIO_HEADERS=("$@")
    local p
    for p in "$TOLLGATE_PORT" "$TOLLGATE_ADMIN_PORT"; do
        port_in_use "$p" && die "port 127.0.0.1:$p is already in use; stop what listens there"
    done
    local dir="$WORK/tollgate-$tag"
    mkdir -p "$dir/data"
    cp "$config" "$dir/config.yaml"
    # A scenario may set extra settings in <scenario>.env (KEY=VALUE lines).
    local extra=()
    local envfile="${config%.yaml}.env"
    if [[ -f "$envfile" ]]; then
        local kv
        while IFS= read -r kv; do
            [[ -n "$kv" && "$kv" != \#* ]] && extra+=("$kv")
        done <"$envfile"
    fi
    env "${extra[@]+"${extra[@]}"}" \
        TOLLGATE_DATA_DIR="$dir/data" \
        TOLLGATE_PROXY_LISTEN="127.0.0.1:$TOLLGATE_PORT" \
        TOLLGATE_ADMIN_LISTEN="127.0.0.1:$TOLLGATE_ADMIN_PORT" \
        TOLLGATE_WORKER_THREADS="$n" \
        TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" \
        "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$cpus" "$TOLLGATE_BIN" serve --config "$dir/config.yaml" >"$dir/tollgate.log" 2>&1 &
    TG_PID=$!
    PIDS+=("$TG_PID")
    local rc=0
    wait_http "tollgate readyz" "$TG_PID" "http://127.0.0.1:$TOLLGATE_ADMIN_PORT/readyz" || rc=$?
    local hook="${config%.yaml}.setup.sh"
    if [[ $rc -eq 0 && -f "$hook" ]]; then
        # The hook may call the admin API (e.g. to create a key) and prints
        # extra request headers, one per line.
        local line
        if ! TOLLGATE_ADMIN_URL="http://127.0.0.1:$TOLLGATE_ADMIN_PORT" TOLLGATE_ADMIN_TOKEN="$ADMIN_TOKEN" \
            TOLLGATE_PROXY_URL="http://127.0.0.1:$TOLLGATE_PORT" BENCH_PATH="$BENCH_PATH" \
            timeout "$SETUP_TIMEOUT" bash "$hook" >"$dir/setup.out" 2>"$dir/setup.err"; then
            cat "$dir/setup.err" >&2
            die "scenario setup hook $hook failed"
        fi
        while IFS= read -r line; do
            if [[ -n "$line" ]]; then SCENARIO_HEADERS+=("$line"); fi
        done <"$dir/setup.out"
    fi
    if [[ $rc -eq 0 ]]; then
        local hdrs=() h
        for h in "${SCENARIO_HEADERS[@]+"${SCENARIO_HEADERS[@]}"}"; do hdrs+=(-H "$h"); done
        wait_http "tollgate proxy" "$TG_PID" "http://127.0.0.1:$TOLLGATE_PORT$BENCH_PATH" "${hdrs[@]+"${hdrs[@]}"}" || rc=$?
    fi
    if [[ $rc -ne 0 ]]; then
        [[ $rc -eq 2 ]] && log "Tollgate exited during start-up"
        log "last lines of $dir/tollgate.log:"
        tail -n 20 "$dir/tollgate.log" >&2 || true
        die "Tollgate ($tag) did not become ready"
    fi
}

# Sum of user+system CPU ticks of the given pids and their direct children
# (nginx master -> workers). Threads are included in a process's own figure.
cpu_ticks() {
    local pid all=() t=0 v
    for pid in "$@"; do
        all+=("$pid")
        local kids=()
        mapfile -t kids < <(pgrep -P "$pid" 2>/dev/null || true)
        all+=("${kids[@]+"${kids[@]}"}")
    done
    for pid in "${all[@]}"; do
        v="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)"
        t=$((t + ${v:-0}))
    done
    echo "$t"
}
CLK_TCK="$(getconf CLK_TCK 2>/dev/null || echo 100)"

rss_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- measurements

RESULTS=""
# results.tsv columns: workers system scenario kind round v1 v2 v3 errors v4 v5 v6
#   kind thr:  v1 = req/s, v2 = CPU used by the server under test, % of one core,
#              v3 = its CPU-seconds per 10,000 requests
#   kind lat:  v1 = p50 ms, v2 = p99 ms, v3 = achieved req/s, v4 = p99.9 ms,
#              v5 = the rate's fraction of nginx's max, v6 = CPU-seconds per 10,000 requests
#   kind rss:  v1 = idle VmRSS kB, v2 = peak VmHWM kB
#   kind rate: v1 = fixed rate req/s used for latency, v2 = fraction x nginx max,
#              v3 = fraction x oha's own max against the upstream (the cap), v5 = fraction
record() {
    local f=("$@")
    while [[ ${#f[@]} -lt 12 ]]; do f+=(""); done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${f[@]}" >>"$RESULTS"
}

# CPU-seconds per 10,000 requests, from clock ticks and a request count.
cpu_per_10k() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { if (n > 0) printf "%.4f", t / hz / n * 10000 }'; }

# throughput N SYSTEM SCENARIO ROUND URL [headers...]
# MEASURE_PIDS: pids whose CPU use is recorded for the measured run.
MEASURE_PIDS=()
throughput() {
    local n="$1" sys="$2" scen="$3" round="$4" url="$5"
    shift 5
    local hdrs=() h
    for h in "$@"; do hdrs+=(-H "$h"); done
    local out="$WORK/wrk-$n-$sys-${scen// /_}-$round.txt"
    local args=(-t"$WRK_THREADS" -c"$CONNECTIONS" "${hdrs[@]+"${hdrs[@]}"}" "$url")
    timeout $(($(dur_secs "$WARMUP") + 30)) "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" wrk -d"$WARMUP" "${args[@]}" >/dev/null 2>&1 || true
    local t0 t1 s0 s1
    t0="$(cpu_ticks "${MEASURE_PIDS[@]}")"
    s0="$(date +%s%N)"
    timeout $(($(dur_secs "$DURATION") + 30)) "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" wrk -d"$DURATION" "${args[@]}" >"$out" 2>&1 ||
        die "wrk against $url failed: $(tail -n 3 "$out")"
    t1="$(cpu_ticks "${MEASURE_PIDS[@]}")"
    s1="$(date +%s%N)"
    local cpu
    cpu="$(awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" -v ns="$((s1 - s0))" 'BEGIN { printf "%.0f", 100 * t / hz / (ns / 1e9) }')"
    local rps errs total
    rps="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
    total="$(awk '/ requests in / { print $1 }' "$out")"
    errs="$(awk '
        /Non-2xx or 3xx responses:/ { e += $NF }
        /Socket errors:/ { gsub(",", ""); e += $4 + $6 + $8 + $10 }
        END { print e + 0 }' "$out")"
    [[ -n "$rps" && -n "$total" ]] || die "could not read req/s from $out"
    local per10k
    per10k="$(cpu_per_10k "$((t1 - t0))" "$total")"
    record "$n" "$sys" "$scen" thr "$round" "$rps" "$cpu" "$per10k" "$errs"
    log "  N=$n $sys${scen:+ ($scen)} round $round: $rps req/s, server CPU ${cpu}% (${per10k} CPU-s per 10k), errors $errs"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR) print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# oha_max N URL: oha's closed-loop req/s against URL, pinned like the latency runs.
oha_max() {
    local n="$1" url="$2" out="$WORK/oha-max-$1.json"
    timeout $(($(dur_secs "$LAT_WARMUP") + 30)) "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" \
        "$OHA" -z "$LAT_WARMUP" -c "$CONNECTIONS" --no-tui "${OHA_JSON[@]}" "$url" >/dev/null 2>&1 || true
    timeout $(($(dur_secs "$LAT_DURATION") + 30)) "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" \
        "$OHA" -z "$LAT_DURATION" -c "$CONNECTIONS" -w --no-tui "${OHA_JSON[@]}" "$url" >"$out" 2>/dev/null ||
        die "oha against $url failed"
    python3 -B "$BENCH_DIR/report.py" parse-oha "$out" | awk '{ printf "%d\n", $3 }'
}

# latency N SYSTEM SCENARIO ROUND URL RATE FRACTION [headers...]
latency() {
    local n="$1" sys="$2" scen="$3" round="$4" url="$5" rate="$6" frac="$7"
    shift 7
    local hdrs=() h
    for h in "$@"; do hdrs+=(-H "$h"); done
    local out="$WORK/lat-$n-$sys-${scen// /_}-$frac-$round"
    local lim_w lim
    lim_w=$(($(dur_secs "$LAT_WARMUP") + 30))
    lim=$(($(dur_secs "$LAT_DURATION") + 30))
    local parsed t0 t1
    case "$LAT_TOOL" in
        oha)
            local args=(-c "$LAT_CONNECTIONS" -q "$rate" --latency-correction -w --no-tui "${OHA_JSON[@]}"
                "${hdrs[@]+"${hdrs[@]}"}" "$url")
            timeout "$lim_w" "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" "$OHA" -z "$LAT_WARMUP" "${args[@]}" >/dev/null 2>&1 || true
            t0="$(cpu_ticks "${MEASURE_PIDS[@]}")"
            timeout "$lim" "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" "$OHA" -z "$LAT_DURATION" "${args[@]}" >"$out.json" 2>"$out.err" ||
                die "oha against $url failed: $(tail -n 3 "$out.err")"
            t1="$(cpu_ticks "${MEASURE_PIDS[@]}")"
            parsed="$(python3 -B "$BENCH_DIR/report.py" parse-oha "$out.json")" ||
                die "could not parse $out.json"
            ;;
        wrk2)
            local args=(-t"$WRK_THREADS" -c"$LAT_CONNECTIONS" -R"$rate" --latency "${hdrs[@]+"${hdrs[@]}"}" "$url")
            timeout "$lim_w" "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" wrk2 -d"$LAT_WARMUP" "${args[@]}" >/dev/null 2>&1 || true
            t0="$(cpu_ticks "${MEASURE_PIDS[@]}")"
            timeout "$lim" "${PRIO[@]+"${PRIO[@]}"}" taskset -c "$LOAD_CPUS" wrk2 -d"$LAT_DURATION" "${args[@]}" >"$out.txt" 2>&1 ||
                die "wrk2 against $url failed: $(tail -n 3 "$out.txt")"
            t1="$(cpu_ticks "${MEASURE_PIDS[@]}")"
            parsed="$(python3 -B "$BENCH_DIR/report.py" parse-wrk2 "$out.txt")" ||
                die "could not parse $out.txt"
            ;;
        *) return 0 ;;
    esac
    # parsed: p50_ms p99_ms achieved_rps errors p999_ms requests
    local p50 p99 ach errs p999 total per10k
    read -r p50 p99 ach errs p999 total <<<"$parsed"
    per10k="$(cpu_per_10k "$((t1 - t0))" "$total")"
    record "$n" "$sys" "$scen" lat "$round" "$p50" "$p99" "$ach" "$errs" "$p999" "$frac" "$per10k"
    log "  N=$n $sys${scen:+ ($scen)} round $round @ $rate req/s: p50 ${p50} ms, p99 ${p99} ms, p99.9 ${p999} ms, errors $errs"
}

# latency_rounds N SYSTEM_A URL_A PIDS_A SYSTEM_B URL_B PIDS_B SCENARIO [headers...]
# For each fixed rate, ROUNDS rounds alternating system A and system B.
latency_rounds() {
    local n="$1" sys_a="$2" url_a="$3" pids_a="$4" sys_b="$5" url_b="$6" pids_b="$7" scen="$8"
    shift 8
    [[ -n "$LAT_TOOL" ]] || return 0
    local i r
    for i in "${!CUR_RATES[@]}"; do
        for ((r = 1; r <= ROUNDS; r++)); do
            read -r -a MEASURE_PIDS <<<"$pids_a"
            latency "$n" "$sys_a" "$scen" "$r" "$url_a" "${CUR_RATES[$i]}" "${CUR_FRACS[$i]}" "$@"
            read -r -a MEASURE_PIDS <<<"$pids_b"
            latency "$n" "$sys_b" "$scen" "$r" "$url_b" "${CUR_RATES[$i]}" "${CUR_FRACS[$i]}" "$@"
        done
    done
}

# ---------------------------------------------------------------- the run

CUR_N=""
CUR_RATES=()
CUR_FRACS=()
CUR_TAG=0
BENCH_PATH=/

# run_tollgate_scenario NAME CONFIG_FILE [extra]
# Starts Tollgate with CONFIG_FILE (and its .env and .setup.sh, see the top of
# this file) and measures it against nginx proxy_pass, alternating nginx and
# Tollgate for ROUNDS rounds: throughput first, then latency at each fixed
# rate of this worker count. Records Tollgate's idle and peak RSS. An "extra"
# scenario runs only when SCENARIOS names it. Uses CUR_N and CUR_RATES, set
# by the main loop.
run_tollgate_scenario() {
    local name="$1" config="$2" extra="${3:-}"
    [[ -f "$config" ]] || die "scenario '$name': config file $config not found"
    [[ "$NO_TOLLGATE" == 1 ]] && return 0
    if [[ -n "$SCENARIOS" && ",$SCENARIOS," != *",$name,"* ]] || [[ -z "$SCENARIOS" && "$extra" == extra ]]; then
        if [[ -n "$SCENARIOS" ]]; then
            log "scenario '$name' skipped (not in SCENARIOS)"
        else
            log "scenario '$name' skipped (an extra scenario: name it in SCENARIOS to run it)"
        fi
        return 0
    fi
    BENCH_PATH="$(sed -n 's/^# bench-path: *//p' "$config" | head -n 1)"
    BENCH_PATH="${BENCH_PATH:-/}"
    local n="$CUR_N" r
    CUR_TAG=$((CUR_TAG + 1))
    log "N=$n scenario '$name' ($config, path $BENCH_PATH): starting Tollgate on CPUs $PROXY_CPUS"
    start_tollgate "$n-$CUR_TAG" "$config" "$n" "$PROXY_CPUS"
    set -- "${SCENARIO_HEADERS[@]+"${SCENARIO_HEADERS[@]}"}"
    local idle
    idle="$(rss_kb "$TG_PID" VmRSS)"
    local ng_url="http://127.0.0.1:$NGINX_PORT$BENCH_PATH" tg_url="http://127.0.0.1:$TOLLGATE_PORT$BENCH_PATH"
    for ((r = 1; r <= ROUNDS; r++)); do
        MEASURE_PIDS=("$NGINX_PROXY_PID")
        throughput "$n" nginx "$name" "$r" "$ng_url" "$@"
        MEASURE_PIDS=("$TG_PID")
        throughput "$n" tollgate "$name" "$r" "$tg_url" "$@"
    done
    latency_rounds "$n" nginx "$ng_url" "$NGINX_PROXY_PID" tollgate "$tg_url" "$TG_PID" "$name" "$@"
    kill -0 "$TG_PID" 2>/dev/null || die "Tollgate exited during the run; see $WORK/tollgate-$n-$CUR_TAG/tollgate.log"
    local peak
    peak="$(rss_kb "$TG_PID" VmHWM)"
    record "$n" tollgate "$name" rss 0 "$idle" "$peak" "" 0
    log "  N=$n tollgate ($name): idle RSS ${idle} kB, peak RSS ${peak} kB"
    stop_pid "$TG_PID"
    BENCH_PATH=/
}

main() {
    cd "$REPO_DIR"
    [[ "$ROUNDS" =~ ^[1-9][0-9]*$ && "$ROUNDS" -le 20 ]] || die "ROUNDS must be 1..20"
    [[ -z "$RATE" || "$RATE" =~ ^[1-9][0-9]*$ ]] || die "RATE must be a positive integer"
    mkdir -p "$BENCH_DIR/out"
    RUN_DIR="$BENCH_DIR/out/run-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$RUN_DIR/tmp"
    WORK="$RUN_DIR"
    RESULTS="$RUN_DIR/results.tsv"
    : >"$RESULTS"

    setup_tools
    build_tollgate

    # The figures are only as good as the machine is quiet: say so if it is not.
    local load busy
    load="$(cut -d' ' -f1 /proc/loadavg)"
    busy="$(pgrep -x -d' ' 'rustc|cargo|cc1|cc1plus|ld' 2>/dev/null || true)"
    if [[ -n "$busy" ]] || awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
        log "WARNING: the machine is not idle (load average $load${busy:+; compilers running: pids $busy}); figures will be noisy"
    fi

    raise_priority
    local started
    started="$(date +%s)"
    local n r
    for n in $WORKERS; do
        [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "WORKERS must list positive integers (got '$n')"
        CUR_N="$n"
        set_cpus "$n"
        log "N=$n: proxy on CPUs $PROXY_CPUS, load generator on $LOAD_CPUS, upstream on $UPSTREAM_CPUS"
        pin_redis "$UPSTREAM_CPUS"
        start_nginx "upstream-$n" "$BENCH_DIR/nginx/upstream.conf.in" "$UPSTREAM_PORT" "$n" "$UPSTREAM_CPUS"
        local up_pid="$LAST_PID"
        start_nginx "proxy-$n" "$BENCH_DIR/nginx/proxy.conf.in" "$NGINX_PORT" "$n" "$PROXY_CPUS"
        local px_pid="$LAST_PID"
        NGINX_PROXY_PID="$px_pid"

        # Baseline: the upstream alone (the harness ceiling) and nginx proxy_pass,
        # which also fixes the rate for the latency runs.
        for ((r = 1; r <= ROUNDS; r++)); do
            MEASURE_PIDS=("$up_pid")
            throughput "$n" direct "" "$r" "http://127.0.0.1:$UPSTREAM_PORT/"
            MEASURE_PIDS=("$px_pid")
            throughput "$n" nginx "" "$r" "http://127.0.0.1:$NGINX_PORT/"
        done
        # The fixed rates: each fraction of nginx's median max. oha costs more
        # CPU per request than wrk, and with N=1 it shares CPU 0 with the
        # upstream, so a rate is never above the same fraction of what oha +
        # upstream manage with no proxy at all (the report says when it was
        # capped); above that the figures would be oha's own queue.
        CUR_RATES=()
        CUR_FRACS=()
        if [[ -n "$LAT_TOOL" ]]; then
            local nginx_max oha_cap="" f want cap
            nginx_max="$(awk -F'\t' -v n="$n" '$1 == n && $2 == "nginx" && $3 == "" && $4 == "thr" { print $6 }' "$RESULTS" | median)"
            if [[ "$LAT_TOOL" == oha && -z "$RATE" ]]; then
                oha_cap="$(oha_max "$n" "http://127.0.0.1:$UPSTREAM_PORT/")"
                log "N=$n: oha alone against the upstream: $oha_cap req/s"
            fi
            if [[ -n "$RATE" ]]; then
                CUR_RATES=("$RATE")
                CUR_FRACS=("$(awk -v r="$RATE" -v m="$nginx_max" 'BEGIN { printf "%.2f", r / m }')")
                record "$n" "" "" rate 0 "$RATE" "" "" 0 "" "${CUR_FRACS[0]}"
            else
                for f in $RATE_FRACTIONS; do
                    want="$(awk -v m="$nginx_max" -v f="$f" 'BEGIN { printf "%d", m * f }')"
                    cap="$(awk -v c="${oha_cap:-0}" -v f="$f" 'BEGIN { printf "%d", c * f }')"
                    if [[ -n "$oha_cap" && "$cap" -lt "$want" ]]; then
                        log "N=$n: rate at $f x nginx capped at $cap req/s (load generator limit) instead of $want"
                        CUR_RATES+=("$cap")
                    else
                        CUR_RATES+=("$want")
                    fi
                    CUR_FRACS+=("$f")
                    record "$n" "" "" rate 0 "${CUR_RATES[-1]}" "$want" "$cap" 0 "" "$f"
                done
            fi
        fi
        latency_rounds "$n" direct "http://127.0.0.1:$UPSTREAM_PORT/" "$up_pid" nginx "http://127.0.0.1:$NGINX_PORT/" "$px_pid" ""

        tollgate_scenarios

        stop_pid "$px_pid"
        stop_pid "$up_pid"
    done

    restore_priority
    local meta="$RUN_DIR/meta.env"
    {
        echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "nproc=$(nproc)"
        echo "kernel=$(uname -r)"
        echo "cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        echo "nginx=$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')"
        echo "tollgate=$([[ "$NO_TOLLGATE" == 1 ]] && echo none || "$TOLLGATE_BIN" --version 2>/dev/null | head -n 1 | sed "s/^tollgate //" || echo unknown)"
        echo "commit=$(git -C "$REPO_DIR" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO_DIR" diff --quiet HEAD 2>/dev/null || echo '+dirty')"
        echo "duration=$DURATION"
        echo "warmup=$WARMUP"
        echo "rounds=$ROUNDS"
        echo "connections=$CONNECTIONS"
        echo "lat_connections=$LAT_CONNECTIONS"
        echo "wrk_threads=$WRK_THREADS"
        echo "lat_tool=${LAT_TOOL:-none}"
        echo "lat_duration=$LAT_DURATION"
        echo "rate_fractions=${RATE:+fixed $RATE req/s}${RATE:-$RATE_FRACTIONS}"
        echo "elapsed=$(($(date +%s) - started))s"
    } >"$meta"

    python3 -B "$BENCH_DIR/report.py" report "$RESULTS" "$meta" >"$RUN_DIR/results.md"
    cp "$RUN_DIR/results.md" "$BENCH_DIR/out/latest.md"
    echo
    cat "$RUN_DIR/results.md"
    echo
    log "report: $RUN_DIR/results.md (copied to bench/out/latest.md)"

    local errors
    errors="$(awk -F'\t' '{ e += $9 } END { print e + 0 }' "$RESULTS")"
    if [[ "$errors" -ne 0 ]]; then
        log "FAILED: $errors non-2xx responses or socket errors; the figures are not valid"
        exit 3
    fi
}

# One line, so that editing this file while it runs cannot feed bash new commands.
main "$@"; exit $?
