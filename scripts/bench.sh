#!/usr/bin/env bash
# Benchmarks kaprobe against the tools people use today (hping3, nping, scapy, the kernel's own
# keepalive), side by side in one lab run:
#   1. time to verdict on one alive connection: kaprobe probe vs hping3 -A, nping --tcp
#      --flags ack and a scapy sr1() script (median, p95, answers recognised)
#   2. one probe on each of 1,000 and 10,000 connections: kaprobe sweep vs scapy sr() in one
#      batch vs a shell loop of hping3 (timed over 100, extrapolated)
#   3. CPU (user+sys) per probe for each
#   4. dead-peer detection with time=1s intvl=1s probes=3: kaprobe vs SO_KEEPALIVE, error
#      against the ideal 4 s
# Prints a markdown report and writes it to $BENCH_OUT (default /tmp/readme-bench.md).
# Needs root. Installs hping3, nmap (nping) and nftables from Debian if missing, and scapy
# from PyPI into a venv ($BENCH_VENV, default /tmp/kaprobe-bench-venv, reused).
#
# Knobs (environment): RUNS (part 1, default 30), SIZES ("1000 10000"), SWEEP_RUNS (5),
# SCAPY_RUNS (per size, "3,2"), HPING_N (100), DEAD_RUNS (5), BENCH_WAIT_QUIET (seconds to
# wait, checking every 30 s, for fuzzers to finish before measuring; default 0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-30}
SIZES=${SIZES:-"1000 10000"}
SWEEP_RUNS=${SWEEP_RUNS:-5}
SCAPY_RUNS=${SCAPY_RUNS:-3,2}
HPING_N=${HPING_N:-100}
DEAD_RUNS=${DEAD_RUNS:-5}
VENV=${BENCH_VENV:-/tmp/kaprobe-bench-venv}
OUT=${BENCH_OUT:-/tmp/readme-bench.md}
WAIT_QUIET=${BENCH_WAIT_QUIET:-0}
FUZZ_PATTERN='fuzz/target|fuzz/artifacts|cargo[ -]fuzz|libfuzzer'

say() { echo "bench: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "run as root (sudo $0)"; exit 1; }

# ------------------------------------------------------------------ peers and build
need=()
command -v hping3 >/dev/null || need+=(hping3)
command -v nping >/dev/null || need+=(nmap)
command -v nft >/dev/null || need+=(nftables)
if [ "${#need[@]}" -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "${need[@]}" >/dev/null
fi
HPING3=$(command -v hping3)
NPING=$(command -v nping)
if ! "$VENV/bin/python" -c 'import scapy' 2>/dev/null; then
    say "creating $VENV with scapy"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$VENV"
    fi
    timeout 600 "$VENV/bin/pip" install -q --disable-pip-version-check scapy
    # Byte-compile once, so that every timed scapy run imports from .pyc, as it would on a
    # machine where it has run before.
    "$VENV/bin/python" -m compileall -q "$VENV/lib" >/dev/null || true
fi
PY=$VENV/bin/python

say "building"
timeout 900 cargo build --release --quiet
timeout 900 cargo build --release --quiet --example hold
KP=$ROOT/target/release/kaprobe
HOLD=$ROOT/target/release/examples/hold
B=$ROOT/scripts/bench

# ------------------------------------------------------------------ wait for a quiet machine
if [ "$WAIT_QUIET" -gt 0 ]; then
    waited=0
    while pgrep -f "$FUZZ_PATTERN" >/dev/null && [ "$waited" -lt "$WAIT_QUIET" ]; do
        [ "$waited" = 0 ] && say "fuzzers running; waiting (up to ${WAIT_QUIET}s) for them to finish"
        sleep 30
        waited=$((waited + 30))
    done
fi

# ------------------------------------------------------------------ lab and cleanup
NAME=kpbench$$
DNAME=kpbenchd$$
TMP=$(mktemp -d /tmp/kpbench.XXXXXX)
FIFO=$TMP/hold.fifo
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/lab.sh down "$NAME" >/dev/null 2>&1 || true
    scripts/lab.sh down "$DNAME" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkfifo "$FIFO"
exec {HOLD_FD}<>"$FIFO"   # keeps the holders' stdin open until this script exits

# hold_connect DPORT COUNT FIRST_LOCAL_PORT: COUNT connections from A to B:DPORT, held open.
hold_connect() {
    local out=$TMP/connect.$1.out
    ip netns exec "$NAME-a" "$HOLD" connect 198.18.0.2 "198.51.100.2:$1" "$2" "$3" <"$FIFO" >"$out" &
    pids+=($!)
    disown  # lab.sh down kills it: no "Killed" notice from the shell
    local _
    for _ in $(seq 1200); do grep -q ready "$out" 2>/dev/null && return; sleep 0.1; done
    say "connections to port $1 did not come up"; exit 1
}

# phase LIMIT_S CMD...: runs CMD under a time limit, in the background, so that a signal to
# this script runs the cleanup at once (bash runs traps only between commands, or in `wait`).
phase() {
    local limit=$1
    shift
    timeout "$limit" "$@" &
    local p=$!
    pids+=("$p")
    wait "$p"
}

# fuzz_mark: notes how many fuzzer processes run now (reported with the results).
fuzz_marks=()
fuzz_mark() { fuzz_marks+=("$(pgrep -fc "$FUZZ_PATTERN" || true)"); }

cpu_busy() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }
load_start=$(cut -d' ' -f1 /proc/loadavg)
read -r busy0 total0 < <(cpu_busy)
t_start=$(date +%s)

scripts/lab.sh up direct "$NAME" >/dev/null
ip netns exec "$NAME-b" "$HOLD" listen 198.51.100.2:9000 198.51.100.2:9001 198.51.100.2:9002 \
    <"$FIFO" >"$TMP/listen.out" &
pids+=($!)
disown
sleep 0.3
hold_connect 9000 4 40000

fuzz_mark
say "1/4 time to verdict, one alive connection ($RUNS runs per tool)"
phase 240 ip netns exec "$NAME-a" "$PY" "$B/single.py" --kaprobe "$KP" --hping3 "$HPING3" \
    --nping "$NPING" --python "$PY" --remote 198.51.100.2:9000 \
    --locals 198.18.0.2:40000,198.18.0.2:40001,198.18.0.2:40002,198.18.0.2:40003 \
    --runs "$RUNS" --tmp "$TMP" --out "$TMP/single.json" >&2

fuzz_mark
say "2/4 many connections ($SIZES)"
sets=()
port=9001
first=20000
for n in $SIZES; do
    [ "$port" -le 9002 ] || { say "at most two SIZES"; exit 2; }
    hold_connect "$port" "$n" "$first"
    sets+=(--set "$n=198.51.100.2:$port")
    port=$((port + 1))
    first=$((first + n))
done
phase 420 ip netns exec "$NAME-a" "$PY" "$B/many.py" --kaprobe "$KP" --hping3 "$HPING3" \
    --python "$PY" "${sets[@]}" --sweep-runs "$SWEEP_RUNS" --scapy-runs "$SCAPY_RUNS" \
    --hping-n "$HPING_N" --tmp "$TMP" --out "$TMP/many.json" >&2
scripts/lab.sh down "$NAME" >/dev/null

fuzz_mark
say "4/4 dead-peer detection ($DEAD_RUNS runs, ~5 s each)"
scripts/lab.sh up direct "$DNAME" >/dev/null
ip netns exec "$DNAME-b" "$PY" "$B/dead.py" serve 198.51.100.2:9100 >"$TMP/echo.out" 2>&1 &
pids+=($!)
disown
for _ in $(seq 100); do grep -q ready "$TMP/echo.out" 2>/dev/null && break; sleep 0.1; done
phase 120 ip netns exec "$DNAME-a" "$PY" "$B/dead.py" client --kaprobe "$KP" --lab "$DNAME" \
    --labsh "$ROOT/scripts/lab.sh" --remote 198.51.100.2:9100 --local-ip 198.18.0.2 \
    --runs "$DEAD_RUNS" --out "$TMP/dead.json" >&2

# ------------------------------------------------------------------ report
read -r busy1 total1 < <(cpu_busy)
fuzz_mark
load_end=$(cut -d' ' -f1 /proc/loadavg)
busy_pct=$(( (busy1 - busy0) * 100 / (total1 - total0 > 0 ? total1 - total0 : 1) ))
took=$(( $(date +%s) - t_start ))
cpu_model=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
hping_v=$("$HPING3" --version 2>&1 | head -1 | sed 's/ (\$Id.*//')
nping_v=$("$NPING" --version 2>&1 | grep -o 'Nping version [0-9.]*' | head -1)
"$PY" -c '
import json, sys
kv = dict(a.split("=", 1) for a in sys.argv[2:])
kv["scapy"] = __import__("scapy").VERSION
kv["python"] = sys.version.split()[0]
json.dump(kv, open(sys.argv[1], "w"))
' "$TMP/env.json" \
    "command=sudo scripts/bench.sh" \
    "budget=$(( (took + 59) / 60 )) min here" \
    "date=$(date -u +%Y-%m-%d)" \
    "kernel=$(uname -r)" \
    "cpus=$(nproc)" \
    "cpu_model=$cpu_model" \
    "load=machine load: loadavg $load_start at the start, $load_end at the end; CPU busy ${busy_pct}% over the run (both cores, this benchmark included); fuzzer processes at the start of parts 1, 2, 4 and at the end: $(IFS=/; echo "${fuzz_marks[*]}")" \
    "kaprobe=$(git describe --always --dirty 2>/dev/null || echo '?')" \
    "hping3=$hping_v" \
    "nping=$nping_v"
"$PY" "$B/report.py" --dir "$TMP" --env "$TMP/env.json" --out "$OUT"
say "report written to $OUT (${took}s of measurements)"
