#!/usr/bin/env bash
# Soak: `kaprobe watch` under connection churn (issue 19; results in scripts/bench/RESULTS.md).
#
# A direct lab: BASE idle connections held open for the whole run (examples/hold), and RATE
# new connections per second from A to B (default 1,000), each closed by its client after
# LIFETIME seconds (default 12: probed at least once with the default T=5), for DURATION
# seconds (default 600). `kaprobe watch --remote 198.51.100.2 --time T --metrics
# 127.0.0.1:9479` runs inside A (its metrics port on A's own loopback), scraped once a
# minute as Prometheus would. Prints a per-minute table of kaprobe's CPU (% of one core,
# utime+stime), RSS, open descriptors, the connections it watches and its verdicts so far;
# then counts false verdicts: any state other than alive (dead, reset, unreachable, ...) for
# a connection its client had not closed by then (a connection closed by its client may end
# in any state: not a false verdict). Targets: RSS flat after the first minute, no false
# verdict.
#
#   scripts/soak-watch-churn.sh                    # 600 s at 1,000 connections/s
#   DURATION=60 scripts/soak-watch-churn.sh        # a short check
#   RATE=500 LIFETIME=20 T=10 BASE=2000 BIN=/path/kaprobe WATCH_ARGS='...' scripts/soak-watch-churn.sh
# Needs root and python3. Everything lives in the lab's namespaces, deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "soak-watch-churn: run as root" >&2; exit 1; }
DURATION=${DURATION:-600}
RATE=${RATE:-1000}
LIFETIME=${LIFETIME:-12}
T=${T:-5}
BASE=${BASE:-1000}
die() { echo "soak-watch-churn: $*" >&2; exit 1; }
for v in DURATION RATE LIFETIME T BASE; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v: a whole number"
done
[ "$DURATION" -ge 60 ] || die "DURATION of at least 60 (seconds)"
[ "$RATE" -ge 1 ] && [ "$RATE" -le 5000 ] || die "RATE from 1 to 5000"
[ "$BASE" -le 20000 ] || die "BASE at most 20000"
LIMIT=${LIMIT:-$(( DURATION + 180 ))}
# The server and the churn client each hold about RATE × LIFETIME connections: under the
# hard descriptor limit (20,000 on these machines, which cannot be raised here).
ulimit -Sn "$(ulimit -Hn)"
[ $(( RATE * (LIFETIME + 2) + 256 )) -le "$(ulimit -Hn)" ] ||
    die "RATE × LIFETIME connections open at once do not fit the descriptor limit ($(ulimit -Hn))"

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/kaprobe
fi
# This tree's holder (it switches the kernel's keepalive), whichever kaprobe is measured.
HOLD=$PWD/target/release/examples/hold
[ -x "$HOLD" ] || cargo build --release --quiet --example hold
NAME=kpsc$$
NAME=${NAME:0:12}
OUT=/tmp/$NAME
pids=()
kp=
guard=
cleanup() {
    [ -n "$guard" ] && kill "$guard" 2>/dev/null || true
    [ -n "$kp" ] && kill -KILL "$kp" 2>/dev/null || true
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/lab.sh down "$NAME" >/dev/null 2>&1 || true
    rm -rf "$OUT" "$OUT.hold"
}
trap cleanup EXIT
trap 'exit 124' TERM INT
( sleep "$LIMIT" && echo "soak-watch-churn: time limit of $LIMIT s reached" >&2 && kill -TERM $$ ) &
guard=$!
nap() { sleep "$1" & wait $!; }

mkdir -p "$OUT"
scripts/lab.sh up direct "$NAME" >/dev/null
A=$NAME-a B=$NAME-b
ip netns exec "$B" sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
# Four local addresses for the churn and the whole port range, so that the 4-tuples of
# connections in TIME_WAIT (60 s at the client, which closes first) never run out.
ip netns exec "$A" sysctl -q -w net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1
for i in 0 1 2 3; do ip -n "$A" addr add "198.18.0.$(( 20 + i ))/24" dev eth0; done

# B: the base's holder on 9000, and a server on 9100 that closes each connection when its
# client does.
rm -f "$OUT.hold"; mkfifo "$OUT.hold"
ip netns exec "$B" "$HOLD" listen 198.51.100.2:9000 < "$OUT.hold" > "$OUT/listen" 2>&1 &
pids+=($!)
exec {keep}> "$OUT.hold"
cat > "$OUT/server.py" <<'PY'
import selectors, socket
sel = selectors.DefaultSelector()
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("198.51.100.2", 9100))
ls.listen(65535)
ls.setblocking(False)
sel.register(ls, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is ls:
            while True:
                try:
                    c, _ = ls.accept()
                except BlockingIOError:
                    break
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
            continue
        try:
            data = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            sel.unregister(s)
            s.close()
PY
ip netns exec "$B" python3 "$OUT/server.py" > "$OUT/server.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$OUT/listen" 2>/dev/null && grep -q ready "$OUT/server.out" && break; nap 0.1; done
grep -q ready "$OUT/server.out" || die "the churn server did not start: $(cat "$OUT/server.out")"
if [ "$BASE" -gt 0 ]; then
    ip netns exec "$A" "$HOLD" connect 198.18.0.2 198.51.100.2:9000 "$BASE" 40000 < "$OUT.hold" > "$OUT/hold" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do grep -q ready "$OUT/hold" 2>/dev/null && break; nap 0.1; done
    grep -q ready "$OUT/hold" || die "the base connections did not come up: $(cat "$OUT/hold")"
fi

# The churn: RATE connections a second, each closed by the client after LIFETIME seconds.
# Logs "open LOCAL T" and "close LOCAL T" (T: epoch seconds, written before the close).
cat > "$OUT/churn.py" <<'PY'
import collections, socket, sys, time
rate, lifetime, duration, log = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
ips = ["198.18.0.20", "198.18.0.21", "198.18.0.22", "198.18.0.23"]
IP_BIND_ADDRESS_NO_PORT = 24
live = collections.deque()
opened = failed = 0
t0 = time.time()
with open(log, "w") as f:
    while True:
        now = time.time()
        if now - t0 >= duration:
            break
        while opened + failed < int((now - t0) * rate):
            s = socket.socket()
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            try:
                s.bind((ips[(opened + failed) % len(ips)], 0))
                s.connect(("198.51.100.2", 9100))
            except OSError:
                failed += 1
                s.close()
                continue
            local = "%s:%d" % s.getsockname()
            f.write(f"open {local} {time.time():.3f}\n")
            live.append((now + lifetime, s, local))
            opened += 1
        while live and live[0][0] <= now:
            _, s, local = live.popleft()
            f.write(f"close {local} {time.time():.3f}\n")
            s.close()
        time.sleep(0.005)
print(f"opened {opened} failed {failed}", flush=True)
PY

read -r -a extra <<< "${WATCH_ARGS:-}"
ip netns exec "$A" "$BIN" --json watch --remote 198.51.100.2 --time "${T}s" --metrics 127.0.0.1:9479 "${extra[@]}" \
    > "$OUT/watch.out" 2> "$OUT/watch.err" &
kp=$!
nap 2
kill -0 "$kp" 2>/dev/null || die "watch did not start: $(cat "$OUT/watch.err")"
ip netns exec "$A" python3 "$OUT/churn.py" "$RATE" "$LIFETIME" "$DURATION" "$OUT/churn.log" > "$OUT/churn.out" 2>&1 &
churn=$!
pids+=($churn)

HZ=$(getconf CLK_TCK)
scrape() { ip netns exec "$A" curl -sf --max-time 5 http://127.0.0.1:9479/metrics || echo "scrape failed"; }
alive() { kill -0 "$kp" 2>/dev/null || die "watch ended: $(tail -n 5 "$OUT/watch.err")"; }
echo "## kaprobe watch under churn: $RATE new connections/s living ${LIFETIME}s, $BASE idle, --time ${T}s, ${DURATION}s"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| minute | CPU % of one core | RSS (MiB) | open fds | watched (gauge) | probes sent | verdicts: alive / other |"
echo "|---|---|---|---|---|---|---|"
start=$(awk '{print $1}' /proc/uptime)
prev_ticks=$(awk '{print $14 + $15}' "/proc/$kp/stat"); prev_t=$start
minutes=$(( DURATION / 60 ))
rss_first=
for m in $(seq 1 "$minutes"); do
    nap "$(python3 -c "import sys; print(max(0.0, $start + $m * 60 - float(open('/proc/uptime').read().split()[0])))")"
    alive
    now=$(awk '{print $1}' /proc/uptime)
    ticks=$(awk '{print $14 + $15}' "/proc/$kp/stat")
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$kp/status")
    fds=$(ls "/proc/$kp/fd" | wc -l)
    [ -z "$rss_first" ] && rss_first=$rss
    scrape > "$OUT/metrics.$m"
    python3 - "$m" "$ticks" "$prev_ticks" "$now" "$prev_t" "$HZ" "$rss" "$fds" "$OUT/metrics.$m" <<'PY'
import re, sys
m, ticks, pticks, now, pt, hz, rss, fds, path = sys.argv[1:]
cpu = 100.0 * (float(ticks) - float(pticks)) / int(hz) / (float(now) - float(pt))
watched = probes = alive = other = 0
for line in open(path):
    if line.startswith("kaprobe_connections{"):
        watched += float(line.split()[-1])
    elif line.startswith("kaprobe_probes_sent_total"):
        probes = float(line.split()[-1])
    elif line.startswith("kaprobe_verdicts_total{"):
        v = float(line.split()[-1])
        if 'verdict="alive"' in line:
            alive += v
        else:
            other += v
print(f"| {m} | {cpu:.1f} | {int(rss) / 1024:.1f} | {fds} | {watched:,.0f} | {probes:,.0f} | {alive:,.0f} / {other:,.0f} |")
PY
    prev_ticks=$ticks; prev_t=$now
done
wait "$churn" || true
alive
rss_end=$(awk '/^VmRSS:/ {print $2}' "/proc/$kp/status")
kill -TERM "$kp"
for _ in $(seq 100); do kill -0 "$kp" 2>/dev/null || break; nap 0.1; done
wait "$kp" || true
kp=
echo
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); churn: $(cat "$OUT/churn.out")"
python3 - "$OUT/watch.out" "$OUT/churn.log" "$rss_first" "$rss_end" <<'PY'
import bisect, collections, datetime, json, sys
watch, churn, rss_first, rss_end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# Each client's incarnations of a local address: [(open, close or None)], in order.
life = collections.defaultdict(list)
with open(churn) as f:
    for line in f:
        kind, local, t = line.split()
        if kind == "open":
            life[local].append([float(t), None])
        elif life[local]:
            life[local][-1][1] = float(t)
states = collections.Counter()
false = []
summary = {}
with open(watch) as f:
    for line in f:
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        if e.get("event") == "summary":
            summary = e
        if e.get("event") != "state":
            continue
        states[e["state"]] += 1
        if e["state"] in ("alive", "closed"):
            continue
        t = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
        spans = life.get(e["local"], [])
        # The incarnation open at the verdict: the last one opened before it.
        i = bisect.bisect_right([s[0] for s in spans], t) - 1
        closed_before = i >= 0 and spans[i][1] is not None and spans[i][1] <= t
        if not closed_before:
            false.append(e)
print(f"state changes: {dict(states)}; summary: {summary.get('connections')} connections, "
      f"{summary.get('rounds')} rounds")
print(f"RSS {rss_first / 1024:.1f} MiB after the first minute, {rss_end / 1024:.1f} MiB at the end")
print(f"false verdicts (not alive, client had not closed): {len(false)}")
for e in false[:10]:
    print("  ", json.dumps(e))
flat = rss_end <= rss_first * 1.05 + 1024
print("targets (RSS flat after the first minute, no false verdict):",
      "met" if flat and not false else "NOT met")
PY
