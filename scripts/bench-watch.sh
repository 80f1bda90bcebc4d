#!/usr/bin/env bash
# Steady-state cost of `kaprobe watch` (results in scripts/bench/RESULTS.md): N idle, alive connections (default 10,000)
# watched with `--time 60s` for DURATION seconds (default 600). Reports kaprobe's average CPU
# use in % of one core (user+sys from /proc/PID/stat: the kernel's work in its netlink dumps
# and sends counts too), over the whole run and per minute, and its RSS 5 s after the start,
# after the first probe round (2 minutes: every connection has been probed once) and at the
# end [targets: under 1 % on average; RSS flat from the first round on]. At the end SIGTERM,
# and the summary must show N connections and no dead one.
#
#   scripts/bench-watch.sh                       # 10,000 connections, 600 s
#   N=2000 DURATION=180 scripts/bench-watch.sh   # shorter (180 s at least)
#   METRICS=1 scripts/bench-watch.sh             # with --metrics on A's loopback, scraped
#                                                # every 15 s as Prometheus would
#   WATCH_ARGS='--rescan 10s' scripts/bench-watch.sh   # more watch options
# Needs root; builds the release binary and examples/hold first. Not part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-watch: run as root" >&2; exit 1; }
N=${N:-10000}
DURATION=${DURATION:-600}
METRICS=${METRICS:-0}
[ "$N" -ge 1 ] && [ "$N" -le 60000 ] || { echo "bench-watch: N from 1 to 60000" >&2; exit 2; }
[ "$DURATION" -ge 180 ] || { echo "bench-watch: DURATION of at least 180 (seconds)" >&2; exit 2; }

cargo build --release --quiet
cargo build --release --quiet --example hold
KP=$PWD/target/release/kaprobe
HOLD=$PWD/target/release/examples/hold
NAME=kpbw$$
OUT=/tmp/$NAME
pids=()
kp=
cleanup() {
    [ -n "$kp" ] && kill "$kp" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/lab.sh down "$NAME" >/dev/null 2>&1 || true
    rm -rf "$OUT" "$OUT.hold"
}
trap cleanup EXIT INT TERM
mkdir -p "$OUT"
scripts/lab.sh up direct "$NAME" >/dev/null
rm -f "$OUT.hold"; mkfifo "$OUT.hold"
# A process may hold at most `ulimit -Hn` descriptors (20,000 on these machines): one
# listening port and one connecting holder per 5,000 connections.
chunks=$(( (N + 4999) / 5000 ))
for i in $(seq 0 $((chunks - 1))); do
    ip netns exec "$NAME-b" "$HOLD" listen "198.51.100.2:$((9000 + i))" < "$OUT.hold" > /dev/null 2>&1 &
    pids+=($!)
done
exec {keep}> "$OUT.hold"   # the holders' stdin stays open until the script ends
sleep 0.3
left=$N
for i in $(seq 0 $((chunks - 1))); do
    chunk=$(( left < 5000 ? left : 5000 )); left=$(( left - chunk ))
    ip netns exec "$NAME-a" "$HOLD" connect 198.18.0.2 "198.51.100.2:$((9000 + i))" "$chunk" $((20000 + i * 5000)) \
        < "$OUT.hold" > "$OUT/hold.$i" 2>&1 &
    pids+=($!)
done
for i in $(seq 0 $((chunks - 1))); do
    for _ in $(seq 600); do grep -q ready "$OUT/hold.$i" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$OUT/hold.$i" || { echo "bench-watch: connections did not come up: $(cat "$OUT/hold.$i")" >&2; exit 1; }
done

read -r -a extra <<< "${WATCH_ARGS:-}"
[ "$METRICS" = 1 ] && extra+=(--metrics 127.0.0.1:9479)
"$KP" --netns "$NAME-a" --json watch --remote 198.51.100.2 --time 60s "${extra[@]}" \
    > "$OUT/watch.out" 2> "$OUT/watch.err" &
kp=$!
if [ "$METRICS" = 1 ]; then
    ( while sleep 15; do ip netns exec "$NAME-a" curl -sf -o /dev/null http://127.0.0.1:9479/metrics || true; done ) &
    pids+=($!)
fi

HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$kp/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$kp/status"; }
alive() { kill -0 "$kp" 2>/dev/null || { echo "bench-watch: watch ended early:" >&2; cat "$OUT/watch.err" >&2; exit 1; }; }

echo "## kaprobe watch: $N idle connections, --time 60s, ${DURATION} s$([ "$METRICS" = 1 ] && echo ', --metrics scraped every 15 s')"
echo
echo "| minute | CPU % of one core | RSS (MiB) | state lines so far |"
echo "|---|---|---|---|"
t0=$(date +%s.%N)
sleep 5; alive
rss_start=$(rss_kb)
rss_round=
prev_ticks=0; prev_t=$t0
for m in $(seq 1 $(( DURATION / 60 ))); do
    end=$(python3 -c "print($t0 + $m * 60)")
    sleep "$(python3 -c "import time; print(max(0.0, $end - time.time()))")"
    alive
    now=$(date +%s.%N); t=$(ticks); rss=$(rss_kb)
    python3 -c "
import sys
dt_ticks, dt = $t - $prev_ticks, $now - $prev_t
print(f'| {$m} | {100.0 * dt_ticks / $HZ / dt:.2f} | {$rss / 1024:.1f} | $(grep -c '"state"' "$OUT/watch.out" || true) |')"
    prev_ticks=$t; prev_t=$now
    if [ "$m" = 2 ]; then rss_round=$rss; fi
done
rest=$(( DURATION % 60 ))
[ "$rest" -gt 0 ] && sleep "$rest"
alive
t_end=$(date +%s.%N); ticks_end=$(ticks); rss_end=$(rss_kb)
kill -TERM "$kp"
for _ in $(seq 100); do kill -0 "$kp" 2>/dev/null || break; sleep 0.1; done
wait "$kp" || true
kp=
summary=$(grep '"summary"' "$OUT/watch.out" || true)
echo
python3 - "$summary" <<PY
import json, sys
cpu = 100.0 * $ticks_end / $HZ / ($t_end - $t0)
s = json.loads(sys.argv[1]) if sys.argv[1] else {}
rounds, conns, dead = s.get("rounds"), s.get("connections"), s.get("dead")
print(f"average CPU {cpu:.2f} % of one core over {$t_end - $t0:.0f} s (start-up included)")
print(f"RSS {$rss_start / 1024:.1f} MiB at 5 s, {$rss_round / 1024:.1f} MiB after the first round (2 min), {$rss_end / 1024:.1f} MiB at the end")
print(f"summary: {conns} connections, {rounds} probe rounds, {dead} went dead")
ok = cpu < 1.0 and conns == $N and dead == 0 and $rss_end <= $rss_round * 1.05 + 1024
print("targets (< 1 % CPU; RSS at the end within 5 % + 1 MiB of the first round's; no dead):", "met" if ok else "NOT met")
PY
