#!/usr/bin/env bash
# Bounded: `kaprobe sweep` over 100,000 matching connections neither floods nor runs out of
# memory. Reports wall time, peak RSS and the packet rate kaprobe caused on the wire
# (two packets per connection: the challenge ACK its SYN triggers, and the probe) against
# the --rate cap, for the default cap and for --rate 20000. Needs root; ~2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-bounded: run as root" >&2; exit 1; }
[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
N=${N:-100000}
cargo build --release --quiet
cargo build --release --quiet --example hold
KP=$PWD/target/release/kaprobe
HOLD=$PWD/target/release/examples/hold
NAME=kpbd$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/lab.sh down "$NAME" >/dev/null 2>&1 || true
    rm -f "/tmp/$NAME.hold" /tmp/"$NAME".*.out
}
trap cleanup EXIT INT TERM
scripts/lab.sh up routed "$NAME" >/dev/null
rm -f "/tmp/$NAME.hold"; mkfifo "/tmp/$NAME.hold"
# A process holds at most 20,000 descriptors here: 15,000 connections per holder, one
# listening port per 15,000, and a second local address when ports run out.
ip -n "$NAME-a" addr add 198.18.0.3/24 dev eth0
chunks=$(( (N + 14999) / 15000 ))
for i in $(seq 0 $((chunks - 1))); do
    ip netns exec "$NAME-b" "$HOLD" listen "198.51.100.2:$((9100 + i))" < "/tmp/$NAME.hold" > /dev/null 2>&1 &
    pids+=($!)
done
exec {keep}> "/tmp/$NAME.hold"
sleep 0.3
left=$N
for i in $(seq 0 $((chunks - 1))); do
    chunk=$(( left < 15000 ? left : 15000 )); left=$(( left - chunk ))
    ip=198.18.0.$(( 2 + i % 2 )); first=$(( 10000 + (i / 2) * 15000 ))
    ip netns exec "$NAME-a" "$HOLD" connect "$ip" "198.51.100.2:$((9100 + i))" "$chunk" "$first" < "/tmp/$NAME.hold" > "/tmp/$NAME.$i.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do grep -q ready "/tmp/$NAME.$i.out" && break; grep -q hold: "/tmp/$NAME.$i.out" && { cat "/tmp/$NAME.$i.out"; exit 1; }; sleep 0.1; done
done
echo "$(ip netns exec "$NAME-a" ss -Htn state established | wc -l) established connections in A"
for rate in default 20000; do
    sleep 1
    extra=(); [ "$rate" = default ] || extra=(--rate "$rate")
    /usr/bin/time -f "%e %M" -o /tmp/$NAME.time "$KP" --netns "$NAME-a" --json sweep --remote 198.51.100.2 --probes 1 "${extra[@]}" > /tmp/$NAME.out || true
    python3 - "$rate" "$(tail -n 1 /tmp/$NAME.time)" "$(grep '"summary"' /tmp/$NAME.out)" <<'PY'
import json, sys
rate, (wall, rss), s = sys.argv[1], sys.argv[2].split(), json.loads(sys.argv[3])
n, el = s["connections"], s["elapsed_ms"] / 1000
cap = 50000 if rate == "default" else int(rate)
pps = 2 * n / el
print(f"--rate {rate}: {n} connections, {s['alive']} alive, {s['dead']} dead in {el:.2f} s "
      f"(wall {wall} s), peak RSS {int(rss)/1024:.0f} MiB, {pps:,.0f} packets/s on the wire "
      f"(cap {cap:,} + a burst of {cap//10:,}) -> {'within the cap' if pps <= cap * 1.1 + cap/10/el else 'OVER the cap'}")
PY
done
