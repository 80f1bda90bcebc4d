#!/usr/bin/env bash
# CPU per probe round: the kernel's own keepalive against `kaprobe watch` on the same idle,
# alive connections (issue 20; results in scripts/bench/RESULTS.md).
#
# N idle connections from A to B in a direct lab, held by examples/hold, then three windows
# of WINDOW seconds each:
#   (a) idle:    nothing probes (the baseline);
#   (b) kernel:  SO_KEEPALIVE with TCP_KEEPIDLE=T and TCP_KEEPINTVL=INTVL on the client sockets
#                (switched on and off by signals to the holders; see examples/hold.rs);
#   (c) watch:   `kaprobe watch --remote 198.51.100.2 --time T --intvl INTVL` (default
#                sequence source: the kernel's eBPF iterator as root).
# CPU of a window is every CPU's busy time from /proc/stat (user, nice, system, irq, softirq,
# steal) minus the idle window's, per second; per probe round = CPU / (N × WINDOW / T).
# Also, less sensitive to other work on the machine: kaprobe's own CPU (utime + stime of
# /proc/PID/stat) per round. Probes the peer's stack received (TCP InSegs in B) are counted
# in each window as a check of the round count. Then one `sweep --probes 1` over the same N:
# its own CPU (wait4) and the system's (busy minus idle) per connection, against the
# kernel's per-round figure.
#
#   N=10000 T=5 WINDOW=30 scripts/bench-keepalive-cost.sh      # the defaults
#   N=100000 WINDOW=20 scripts/bench-keepalive-cost.sh         # short mode at 100,000
#   BIN=/path/kaprobe ...                                      # another build (no cargo)
#   WATCH_ARGS='--rescan 5s' ...   SWEEP=0 (no sweep)   PER_ADDR=15000 (connections per
#   local address, listening port and holder process)   LIMIT=SECONDS (the script's own time bound)
# Needs root. Everything it changes lives in the lab's namespaces, deleted on exit (also on
# failure or when LIMIT passes).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-keepalive-cost: run as root" >&2; exit 1; }
N=${N:-10000}
T=${T:-5}
INTVL=${INTVL:-1}
WINDOW=${WINDOW:-30}
SWEEP=${SWEEP:-1}
PER_ADDR=${PER_ADDR:-15000}
die() { echo "bench-keepalive-cost: $*" >&2; exit 1; }
[[ $N =~ ^[0-9]+$ ]] && [ "$N" -ge 1 ] && [ "$N" -le 1000000 ] || die "N from 1 to 1000000"
[[ $T =~ ^[0-9]+$ ]] && [ "$T" -ge 1 ] || die "T: whole seconds, at least 1"
[[ $INTVL =~ ^[0-9]+$ ]] && [ "$INTVL" -ge 1 ] || die "INTVL: whole seconds, at least 1"
[[ $WINDOW =~ ^[0-9]+$ ]] && [ "$WINDOW" -ge "$T" ] || die "WINDOW: whole seconds, at least T"
[[ $PER_ADDR =~ ^[0-9]+$ ]] && [ "$PER_ADDR" -ge 1 ] && [ "$PER_ADDR" -le 50000 ] ||
    die "PER_ADDR from 1 to 50000 (local ports 10000 up)"
chunks=$(( (N + PER_ADDR - 1) / PER_ADDR ))
[ "$chunks" -le 200 ] || die "N / PER_ADDR: at most 200 local addresses (198.18.0.10 up)"
# Setup (about 20 s per 100,000 connections here), three windows with their warm-ups, sweep.
LIMIT=${LIMIT:-$(( 3 * WINDOW + 3 * T + 120 + N / 2000 ))}

# Memory: two sockets per connection in the kernel, the holders, kaprobe's ~1.5 KiB each.
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
need_kb=$(( N * 16 + 512 * 1024 ))
[ "$avail_kb" -ge "$need_kb" ] ||
    die "$N connections need about $(( need_kb / 1024 )) MiB, $(( avail_kb / 1024 )) MiB available"
# Descriptors: each holder process (one listening and one connecting per chunk) keeps
# PER_ADDR sockets, under the hard limit (20,000 on these machines; CAP_SYS_RESOURCE, which
# could raise it, is not granted here).
ulimit -Sn "$(ulimit -Hn)"
[ $(( PER_ADDR + 256 )) -le "$(ulimit -Hn)" ] ||
    die "PER_ADDR=$PER_ADDR connections per holder do not fit the descriptor limit ($(ulimit -Hn))"

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/kaprobe
fi
[ -x "$BIN" ] || die "no kaprobe at $BIN"
# This tree's holder (it switches the kernel's keepalive), whichever kaprobe is measured.
HOLD=$PWD/target/release/examples/hold
[ -x "$HOLD" ] || cargo build --release --quiet --example hold
NAME=kpkc$$
NAME=${NAME:0:12}
OUT=/tmp/$NAME
pids=()
connectors=()
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
( sleep "$LIMIT" && echo "bench-keepalive-cost: time limit of $LIMIT s reached" >&2 && kill -TERM $$ ) &
guard=$!
# Sleeps so that a signal (the time limit) is handled at once.
nap() { sleep "$1" & wait $!; }

mkdir -p "$OUT"
scripts/lab.sh up direct "$NAME" >/dev/null
A=$NAME-a B=$NAME-b
ip netns exec "$B" sysctl -q -w net.core.somaxconn=65535 net.ipv4.tcp_max_syn_backlog=65535
# One local address and one listening port per chunk of PER_ADDR connections: every 4-tuple
# is unique with local ports 10000 up, whatever N.
rm -f "$OUT.hold"; mkfifo "$OUT.hold"
for i in $(seq 0 $((chunks - 1))); do
    ip -n "$A" addr add "198.18.0.$(( 10 + i ))/24" dev eth0
    ip netns exec "$B" "$HOLD" listen "198.51.100.2:$(( 9000 + i ))" < "$OUT.hold" > "$OUT/listen.$i" 2>&1 &
    pids+=($!)
done
exec {keep}> "$OUT.hold"   # the holders' stdin stays open until the script ends
for i in $(seq 0 $((chunks - 1))); do
    for _ in $(seq 100); do grep -q ready "$OUT/listen.$i" 2>/dev/null && break; nap 0.1; done
done
left=$N
for i in $(seq 0 $((chunks - 1))); do
    chunk=$(( left < PER_ADDR ? left : PER_ADDR )); left=$(( left - chunk ))
    HOLD_KEEPALIVE="$T $INTVL" ip netns exec "$A" "$HOLD" connect "198.18.0.$(( 10 + i ))" "198.51.100.2:$(( 9000 + i ))" \
        "$chunk" 10000 < "$OUT.hold" > "$OUT/hold.$i" 2>&1 &
    pids+=($!); connectors+=($!)
done
for i in $(seq 0 $((chunks - 1))); do
    for _ in $(seq 1800); do grep -q ready "$OUT/hold.$i" 2>/dev/null && break; nap 0.1; done
    grep -q ready "$OUT/hold.$i" || die "connections did not come up: $(cat "$OUT/hold.$i")"
done
est=$(ip netns exec "$A" ss -Htn state established | wc -l)
[ "$est" -ge "$N" ] || die "only $est of $N connections established"

HZ=$(getconf CLK_TCK)
# snap [PID]: monotonic seconds, busy ticks of all CPUs, TCP segments B received, and the
# process's utime+stime ticks (0 without PID).
snap() {
    local t busy insegs own=0
    t=$(awk '{print $1}' /proc/uptime)
    busy=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat)
    insegs=$(ip netns exec "$B" awk '/^Tcp:/ {n++; if (n == 1) for (i = 1; i <= NF; i++) col[$i] = i; else print $col["InSegs"]}' /proc/net/snmp)
    [ -n "${1:-}" ] && own=$(awk '{print $14 + $15}' "/proc/$1/stat")
    echo "$t $busy $insegs $own"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
switches=0
switch_keepalive() {  # SIGUSR1 on, SIGUSR2 off; waits until every holder said it switched
    local sig=$1 word=$2 i
    switches=$(( switches + 1 ))
    for p in "${connectors[@]}"; do kill "-$sig" "$p"; done
    for i in $(seq 0 $((chunks - 1))); do
        for _ in $(seq 300); do
            [ "$(grep -c '^keepalive ' "$OUT/hold.$i")" -ge "$switches" ] && break; nap 0.1
        done
        [ "$(grep '^keepalive ' "$OUT/hold.$i" | sed -n "${switches}p" | cut -d' ' -f2-)" = "$word $((
            i < chunks - 1 ? PER_ADDR : N - (chunks - 1) * PER_ADDR ))" ] ||
            die "holder $i did not switch keepalive $word on every connection: $(cat "$OUT/hold.$i")"
    done
}

echo "## bench-keepalive-cost: N=$N, T=${T}s, INTVL=${INTVL}s, windows of ${WINDOW}s, $(nproc) CPUs"
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
nap 2
# (a) idle
a0=$(snap); nap "$WINDOW"; a1=$(snap)
# (b) the kernel's keepalive: its first probes go T after it is switched on; one T of
# warm-up, then the window.
switch_keepalive USR1 on
nap "$T"
b0=$(snap); nap "$WINDOW"; b1=$(snap)
switch_keepalive USR2 off
# (c) kaprobe watch: its first round probes every connection at once (at --rate); the
# window starts at the next round's steady state.
read -r -a extra <<< "${WATCH_ARGS:-}"
"$BIN" --netns "$A" --json watch --remote 198.51.100.2 --time "${T}s" --intvl "${INTVL}s" "${extra[@]}" \
    > "$OUT/watch.out" 2> "$OUT/watch.err" &
kp=$!
nap $(( T + 2 + N / 40000 ))
kill -0 "$kp" 2>/dev/null || die "watch ended early: $(cat "$OUT/watch.err")"
rss0=$(rss_kb "$kp")
c0=$(snap "$kp"); nap "$WINDOW"; c1=$(snap "$kp")
kill -0 "$kp" 2>/dev/null || die "watch ended early: $(cat "$OUT/watch.err")"
rss1=$(rss_kb "$kp")
kill -TERM "$kp"
for _ in $(seq 100); do kill -0 "$kp" 2>/dev/null || break; nap 0.1; done
wait "$kp" || true
kp=
summary=$(grep '"summary"' "$OUT/watch.out" || echo '{}')

# One sweep over the same connections: its own CPU from wait4, the system's from /proc/stat.
sweep='{}'
if [ "$SWEEP" = 1 ]; then
    nap 2
    sweep=$(python3 - "$BIN" "$A" "$OUT/sweep.out" <<'PY'
import json, os, sys
binary, ns, out = sys.argv[1:4]
def busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
def uptime():
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])
argv = [binary, "--netns", ns, "--json", "sweep", "--remote", "198.51.100.2", "--probes", "1"]
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
t0, b0 = uptime(), busy()
pid = os.posix_spawn(binary, argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1)])
_, status, ru = os.wait4(pid, 0)
t1, b1 = uptime(), busy()
summ = {}
with open(out) as f:
    for line in f:
        if '"summary"' in line:
            summ = json.loads(line)
print(json.dumps({"own_s": ru.ru_utime + ru.ru_stime, "wall_s": t1 - t0, "busy_ticks": b1 - b0,
                  "exit": os.waitstatus_to_exitcode(status), "alive": summ.get("alive"),
                  "connections": summ.get("connections")}))
PY
)
fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

python3 - "$N" "$T" "$WINDOW" "$HZ" "$a0" "$a1" "$b0" "$b1" "$c0" "$c1" "$rss0" "$rss1" "$summary" "$sweep" <<'PY'
import json, sys
n, T, window, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
snaps = [[float(x) for x in s.split()] for s in sys.argv[5:11]]
rss0, rss1 = int(sys.argv[11]), int(sys.argv[12])
summary, sweep = json.loads(sys.argv[13]), json.loads(sys.argv[14])
rounds = n * window / T

def win(s0, s1):
    dt = s1[0] - s0[0]
    return {"dt": dt, "busy": (s1[1] - s0[1]) / hz, "segs": s1[2] - s0[2], "own": (s1[3] - s0[3]) / hz}

a, b, c = win(*snaps[0:2]), win(*snaps[2:4]), win(*snaps[4:6])
idle_rate = a["busy"] / a["dt"]            # busy CPU seconds per second with nothing probing
def per_round(w):
    return (w["busy"] / w["dt"] - idle_rate) * window / rounds * 1e6

def cpu(w):  # CPU seconds over the idle baseline, scaled to one WINDOW
    return (w["busy"] / w["dt"] - idle_rate) * window

rows = [("kernel keepalive (system)", cpu(b), b["segs"]),
        ("kaprobe watch (system)", cpu(c), c["segs"]),
        ("kaprobe watch (its own CPU)", c["own"] * window / c["dt"], c["segs"])]
if sweep:
    rows += [("kaprobe sweep, one round (its own CPU)", sweep["own_s"], None),
             ("kaprobe sweep, one round (system)", sweep["busy_ticks"] / hz - idle_rate * sweep["wall_s"], None)]
k = cpu(b) / rounds * 1e6
k_seen = cpu(b) / b["segs"] * 1e6 if b["segs"] else 0
print(f"idle window: {100 * idle_rate:.1f} % of one CPU busy (subtracted); rounds per window "
      f"N × WINDOW / T = {rounds:,.0f}")
print()
print("| keeper | CPU (s) | probes B received | µs/round (N × WINDOW / T) | ÷ kernel | µs/probe received | ÷ kernel |")
print("|---|---|---|---|---|---|---|")
for name, secs, seen in rows:
    sweep_row = seen is None
    per = secs / (n if sweep_row else rounds) * 1e6
    per_seen = secs / (n if sweep_row else seen) * 1e6 if (sweep_row or seen) else 0
    ratio = f"{per / k:.2f}×" if k > 0 else "—"
    ratio_seen = f"{per_seen / k_seen:.2f}×" if k_seen > 0 else "—"
    print(f"| {name} | {secs:.3f} | {n if sweep_row else seen:,.0f} | {per:.2f} | {ratio} | "
          f"{per_seen:.2f} | {ratio_seen} |")
print()
print(f"N={n:,}: kaprobe watch RSS {rss0 / 1024:.1f} MiB at the window's start, {rss1 / 1024:.1f} MiB at its end")
conns, dead = summary.get("connections"), summary.get("dead")
print(f"watch summary: {conns} connections, {summary.get('rounds')} rounds, {dead} dead "
      f"({'every connection alive' if conns == n and dead == 0 else 'NOT as expected'})")
if sweep:
    print(f"sweep: {sweep['alive']} of {sweep.get('connections')} alive in {sweep['wall_s']:.2f} s "
          f"(exit {sweep['exit']})")
PY
