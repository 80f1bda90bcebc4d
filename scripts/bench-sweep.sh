#!/usr/bin/env bash
# Benchmark `kaprobe sweep` in the lab (targets in brackets; results in scripts/bench/RESULTS.md):
#   1. 1k / 10k / 30k idle alive connections, --probes 1: wall time and peak RSS
#      [10k: < 0.5 s, < 30 MB; growth linear or better]
#   2. 10k connections, half to a blackholed port, --probes 2 --intvl 500ms
#      [exactly 5000 dead and 5000 alive, < 1.5 s]
#   1b. `list` over the same connections [well under a second for 10,000]
#   3. CPU time of 100-connection sweeps with and without >= 1 Gbit/s of unrelated TCP
#      traffic (iperf3) through the same namespace [equal within 20 %]
# Needs root. Installs iperf3 and GNU time from Debian if missing. SIZES overrides part 1;
# SOURCE=kernel|local|... passes --seq-source (default: kaprobe's own default); SKIP_IPERF=1
# leaves out part 3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-sweep: run as root" >&2; exit 1; }
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
[ -x /usr/bin/time ] || need+=(time)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
SIZES=${SIZES:-"1000 10000 30000"}
source_args=()
[ -n "${SOURCE:-}" ] && source_args=(--seq-source "$SOURCE")

cargo build --release --quiet
cargo build --release --quiet --example hold
KP=$PWD/target/release/kaprobe
HOLD=$PWD/target/release/examples/hold
labs=()
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for l in "${labs[@]}"; do scripts/lab.sh down "$l" >/dev/null 2>&1 || true; rm -f "/tmp/$l.hold"; done
}
trap cleanup EXIT INT TERM

# new_lab NAME: routed lab with holders listening on B:9000..9003, one process per port
# (a process may hold at most `ulimit -Hn` descriptors, 20,000 on these machines).
new_lab() {
    scripts/lab.sh up routed "$1" >/dev/null
    labs+=("$1")
    rm -f "/tmp/$1.hold"; mkfifo "/tmp/$1.hold"
    for port in 9000 9001 9002 9003; do
        ip netns exec "$1-b" "$HOLD" listen "198.51.100.2:$port" < "/tmp/$1.hold" > /dev/null &
        pids+=($!)
    done
    exec {fd}> "/tmp/$1.hold"   # keeps the holders' stdin open
    sleep 0.2
}

# connect NAME COUNT PORT FIRST_LOCAL_PORT: COUNT connections from A, held open.
connect() {
    local out=/tmp/$1.$3.$4.out
    ip netns exec "$1-a" "$HOLD" connect 198.18.0.2 "198.51.100.2:$3" "$2" "$4" < "/tmp/$1.hold" > "$out" &
    pids+=($!)
    for _ in $(seq 600); do grep -q ready "$out" 2>/dev/null && return; sleep 0.1; done
    echo "bench-sweep: connections did not come up" >&2; exit 1
}

# measure NAME ARGS...: prints "wall_s rss_kb summary-json"
measure() {
    local name=$1; shift
    sleep 0.6  # the local sockets' challenge-ACK rate limit (500 ms)
    /usr/bin/time -f "%e %M" -o /tmp/kpbench.time "$KP" --netns "$name-a" --json sweep "${source_args[@]}" "$@" > /tmp/kpbench.out || true
    echo "$(tail -n 1 /tmp/kpbench.time) $(grep '"summary"' /tmp/kpbench.out)"
}

echo "## sweep: all alive, --probes 1 (median of 3 runs)"
echo
echo "| connections | wall (s) | kaprobe elapsed (ms) | peak RSS (MiB) | alive | list wall (s) |"
echo "|---|---|---|---|---|---|"
for n in $SIZES; do
    name=kpsw$$n$n
    name=${name:0:18}
    new_lab "$name"
    # At most 15,000 per holder process (descriptor limit), alternating ports 9000 and 9002.
    left=$n; first=20000; port=9000
    while [ "$left" -gt 0 ]; do
        chunk=$(( left < 15000 ? left : 15000 ))
        connect "$name" "$chunk" "$port" "$first"
        left=$(( left - chunk )); first=$(( first + chunk )); port=$(( port == 9000 ? 9002 : 9000 ))
    done
    runs=()
    for _ in 1 2 3; do runs+=("$(measure "$name" --remote 198.51.100.2 --probes 1)"); done
    # `list` of the same connections, owners and timers included: best of 3.
    list_wall=$(for _ in 1 2 3; do
        /usr/bin/time -f "%e" -o /tmp/kpbench.list "$KP" --netns "$name-a" list --remote 198.51.100.2 > /dev/null
        tail -n 1 /tmp/kpbench.list
    done | sort -n | head -n 1)
    printf '%s\n' "${runs[@]}" | python3 -c '
import json, statistics, sys
rows = [l.split(" ", 2) for l in sys.stdin.read().splitlines()]
walls = [float(r[0]) for r in rows]; rss = [int(r[1]) for r in rows]
summ = [json.loads(r[2]) for r in rows]
el = statistics.median(s["elapsed_ms"] for s in summ); alive = min(s["alive"] for s in summ)
print(f"| {sys.argv[1]} | {statistics.median(walls):.3f} | {el:.0f} | {max(rss)/1024:.1f} | {alive} | {sys.argv[2]} |")
' "$n" "$list_wall"
    scripts/lab.sh down "$name" >/dev/null
done

echo
echo "## 10,000 connections, 5,000 to a blackholed port, --probes 2 --intvl 500ms"
echo
name=kpswd$$
new_lab "$name"
connect "$name" 5000 9000 20000
connect "$name" 5000 9001 30000
printf 'table inet bh {\n chain input { type filter hook input priority 0; tcp dport 9001 drop; }\n}\n' | ip netns exec "$name-b" nft -f -
r=$(measure "$name" --probes 2 --intvl 500ms)
echo "$r" | python3 -c '
import json, sys
wall, rss, summ = sys.stdin.read().split(" ", 2); s = json.loads(summ)
alive, dead = s["alive"], s["dead"]
verdict = "met" if dead == 5000 and alive == 5000 and float(wall) < 1.5 else "NOT met"
print(f"wall {wall} s, peak RSS {int(rss)/1024:.1f} MiB: {alive} alive, {dead} dead -> target {verdict}")'
scripts/lab.sh down "$name" >/dev/null

[ "${SKIP_IPERF:-0}" = 1 ] && exit 0
echo
echo "## CPU of 20 sweeps over 100 connections, with and without iperf3 traffic"
echo
name=kpswi$$
new_lab "$name"
connect "$name" 100 9000 20000
# CPU seconds (user+sys, from wait4: nanosecond accounting, where GNU time prints hundredths)
# of 20 sweeps of the 100 connections, spaced for the challenge-ACK rate limit.
cpu() {
    python3 - "$KP" "$name-a" <<'PY'
import os, sys, time
kp, ns = sys.argv[1], sys.argv[2]
argv = [kp, "--netns", ns, "sweep", "--remote", "198.51.100.2:9000", "--probes", "1"]
null = os.open(os.devnull, os.O_WRONLY)
total = 0.0
for _ in range(20):
    time.sleep(0.6)
    pid = os.posix_spawn(kp, argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
    _, _, ru = os.wait4(pid, 0)
    total += ru.ru_utime + ru.ru_stime
print(total)
PY
}
quiet=$(cpu)
ip netns exec "$name-b" iperf3 -s -1 -B 198.51.100.2 -p 5201 > /dev/null 2>&1 &
pids+=($!)
sleep 0.3
ip netns exec "$name-a" iperf3 -c 198.51.100.2 -p 5201 -t 25 -J > /tmp/kpbench.iperf 2>/dev/null &
ipid=$!
pids+=($ipid)
sleep 1
busy=$(cpu)
wait "$ipid" || true
gbps=$(python3 -c "import json; print(round(json.load(open('/tmp/kpbench.iperf'))['end']['sum_received']['bits_per_second']/1e9, 2))" 2>/dev/null || echo "?")
python3 -c '
import sys
q, b, g = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ratio = b / q if q else float("inf")
verdict = "met" if 0.8 <= ratio <= 1.2 else "NOT met"
print(f"user+sys for 20 sweeps: {q*1000:.0f} ms quiet, {b*1000:.0f} ms under {g} Gbit/s of iperf3 traffic: ratio {ratio:.2f} -> target {verdict}")
' "$quiet" "$busy" "$gbps"
