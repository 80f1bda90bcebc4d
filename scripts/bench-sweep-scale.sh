#!/usr/bin/env bash
# sweep (and watch) over many connections spread over many address pairs: issue 19's capture
# filter at 100,000 connections over 256 remote x 64 local addresses, and issue 20's sweep
# curve up to a million (results in scripts/bench/RESULTS.md).
#
# Two namespaces joined by a veth pair: A holds LOCALS addresses (198.18.1.1 up), B holds
# REMOTES addresses (198.19.1.0 up, in 198.19.0.0/16) and listens on port 9600 on all of them.
# For each N in COUNTS (ascending), connections are added until N are up, spread evenly over
# every local address and, round-robin, every remote one (examples/hold); then one
# `kaprobe sweep --port 9600 --probes 1 --json` over them all, and its wall time, CPU,
# peak RSS, exit status and verdicts are printed. The last N is also watched for WATCH
# seconds (`watch --port 9600 --time 10s`): it must not exit, every connection must stay alive.
#
#   scripts/bench-sweep-scale.sh                          # COUNTS="10000 100000", WATCH=40
#   COUNTS="10000 100000 300000 1000000" scripts/bench-sweep-scale.sh
#   BIN=/path/kaprobe  SWEEP_ARGS='--rate 0'  WATCH=0  LOCALS=64  REMOTES=256
#   KEEP=DIR: keep kaprobe's output (sweep.N.json, .err, watch.json) there
# Needs root. Everything it changes lives in its two namespaces, deleted on exit (also on
# failure).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-sweep-scale: run as root" >&2; exit 1; }
COUNTS=${COUNTS:-10000 100000}
LOCALS=${LOCALS:-64}
REMOTES=${REMOTES:-256}
WATCH=${WATCH:-40}
SWEEP_ARGS=${SWEEP_ARGS:-}
die() { echo "bench-sweep-scale: $*" >&2; exit 1; }
[ "$LOCALS" -ge 1 ] && [ "$LOCALS" -le 250 ] || die "LOCALS from 1 to 250"
[ "$REMOTES" -ge 1 ] && [ "$REMOTES" -le 1024 ] || die "REMOTES from 1 to 1024"
max=0
for n in $COUNTS; do
    [[ $n =~ ^[0-9]+$ ]] && [ "$n" -gt "$max" ] || die "COUNTS: ascending whole numbers"
    max=$n
done
# bind(LOCAL, 0) takes one of 28,232 ephemeral ports per local address.
[ $(( max / LOCALS )) -lt 28000 ] || die "$max connections need more than $LOCALS local addresses"
avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
need_kb=$(( max * 12 + 1024 * 1024 ))
[ "$avail_kb" -ge "$need_kb" ] ||
    die "$max connections need about $(( need_kb / 1024 )) MiB; $(( avail_kb / 1024 )) MiB available"

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/kaprobe
fi
HOLD=$(dirname "$BIN")/examples/hold
if [ ! -x "$HOLD" ]; then
    cargo build --release --quiet --example hold
    HOLD=$PWD/target/release/examples/hold
fi

A=ksa-$$ B=ksb-$$
OUT=$(mktemp -d /tmp/bench-sweep-scale.XXXXXX)
cleanup() {
    set +e
    trap '' INT TERM   # a second signal must not cut the cleanup short
    [ -n "${keep:-}" ] && exec {keep}>&-
    pkill -KILL -f "$OUT" 2>/dev/null
    ip netns pids "$A" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns pids "$B" 2>/dev/null | xargs -r kill -9 2>/dev/null
    ip netns del "$A" 2>/dev/null
    ip netns del "$B" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp "$OUT"/*.json "$OUT"/*.err "$KEEP"/ 2>/dev/null
    fi
    rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The accepted sockets are shared among listening holders (SO_REUSEPORT) of at most about
# 10,000 each: a process may be held to a hard limit of some thousands of descriptors that
# not even root can raise (no CAP_SYS_RESOURCE, as on this project's VM: 20,000).
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=1048576
ulimit -n "$hard"
listeners=$(( max / 10000 + 1 ))
[ $(( max / LOCALS + 64 )) -le "$hard" ] || die "$(( max / LOCALS )) connections per holder over the descriptor limit $hard: raise LOCALS"
files_max=$(cat /proc/sys/fs/file-max)
[ $(( 2 * max + 65536 )) -le "$files_max" ] || die "$max connections need $(( 2 * max )) open files; fs.file-max is $files_max"

ip netns add "$A"
ip netns add "$B"
ip link add ks-a netns "$A" type veth peer name ks-b netns "$B"
{
    for i in $(seq 1 "$LOCALS"); do echo "addr add 198.18.1.$i/24 dev ks-a"; done
    echo "link set lo up"
    echo "link set ks-a up"
    echo "route add 198.19.0.0/16 dev ks-a"
} | ip -n "$A" -batch -
{
    for i in $(seq 0 $(( REMOTES - 1 ))); do
        echo "addr add 198.19.$(( 1 + i / 256 )).$(( i % 256 ))/16 dev ks-b"
    done
    echo "link set lo up"
    echo "link set ks-b up"
    echo "route add 198.18.1.0/24 dev ks-b"
} | ip -n "$B" -batch -
remotes=$(for i in $(seq 0 $(( REMOTES - 1 ))); do
    printf '198.19.%d.%d:9600,' $(( 1 + i / 256 )) $(( i % 256 ))
done)
remotes=${remotes%,}
mapfile -t R < <(tr ',' '\n' <<< "$remotes")

mkfifo "$OUT/hold"
for l in $(seq 1 "$listeners"); do
    ip netns exec "$B" "$HOLD" listen 0.0.0.0:9600 < "$OUT/hold" > "$OUT/listen.$l" 2>&1 &
done
exec {keep}> "$OUT/hold"
for l in $(seq 1 "$listeners"); do
    for _ in $(seq 100); do grep -q ready "$OUT/listen.$l" 2>/dev/null && break; sleep 0.1; done
    grep -q ready "$OUT/listen.$l" || die "listener $l did not start: $(cat "$OUT/listen.$l")"
done

up=0
batch=0
# Adds connections until $1 are up: LOCALS holders, one per local address, in parallel.
grow_to() {
    local want=$1 i each left from k targets
    batch=$(( batch + 1 ))
    left=$(( want - up ))
    for i in $(seq 1 "$LOCALS"); do
        each=$(( left / LOCALS + (i <= left % LOCALS ? 1 : 0) ))
        [ "$each" -gt 0 ] || continue
        # Start each holder on a different remote, so every pair gets some.
        from=198.18.1.$i
        k=$(( (i * 7 + batch * 13) % REMOTES ))
        targets=$(printf '%s,' "${R[@]:k}" "${R[@]:0:k}")
        ip netns exec "$A" "$HOLD" connect "$from" "${targets%,}" "$each" \
            < "$OUT/hold" > "$OUT/hold.$batch.$i" 2>&1 &
    done
    for i in $(seq 1 "$LOCALS"); do
        [ -e "$OUT/hold.$batch.$i" ] || continue
        for _ in $(seq 6000); do
            grep -q '^ready' "$OUT/hold.$batch.$i" 2>/dev/null && break
            grep -q '^hold:' "$OUT/hold.$batch.$i" 2>/dev/null && break
            sleep 0.1
        done
        grep -q '^ready' "$OUT/hold.$batch.$i" || die "holder $i: $(cat "$OUT/hold.$batch.$i")"
    done
    up=$want
}

established() {
    ip netns exec "$A" ss -Htn state established '( dport = :9600 )' | wc -l
}

# Counts the verdicts of a --json sweep on stdin: "alive=N dead=N ... rows=N".
count_verdicts() {
    python3 -c '
import json, sys, collections
c = collections.Counter(); rows = 0
for line in sys.stdin:
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if "verdict" in v and v.get("event") != "summary":
        rows += 1; c[v["verdict"]] += 1
print(" ".join(f"{k}={c[k]}" for k in sorted(c)) + f" rows={rows}")
'
}

printf '\n%-9s %-9s %-8s %-9s %-9s %-6s %s\n' N setup_s wall_s cpu_s rss_MiB exit verdicts
last_setup=0
for n in $COUNTS; do
    t0=$(date +%s.%N)
    grow_to "$n"
    setup=$(echo "$(date +%s.%N) - $t0" | bc)
    got=$(established)
    [ "$got" -eq "$n" ] || die "$got connections established, $n wanted"
    # shellcheck disable=SC2086
    /usr/bin/time -f '%e %U %S %M' -o "$OUT/time" \
        "$BIN" --netns "$A" --json sweep --port 9600 --probes 1 $SWEEP_ARGS \
        > "$OUT/sweep.$n.json" 2> "$OUT/sweep.$n.err" && code=0 || code=$?
    # (time's last line: a first one says when the command exited non-zero.)
    read -r wall usr sys rss < <(tail -n 1 "$OUT/time")
    verdicts=$(count_verdicts < "$OUT/sweep.$n.json")
    printf '%-9s %-9.1f %-8s %-9s %-9s %-6s %s\n' "$n" "$setup" "$wall" \
        "$(echo "$usr + $sys" | bc)" "$(( rss / 1024 ))" "$code" "$verdicts"
    grep -v '^$' "$OUT/sweep.$n.err" | sed 's/^/    stderr: /' | head -5
done

if [ "$WATCH" -gt 0 ]; then
    "$BIN" --netns "$A" --json watch --port 9600 --time 10s --intvl 1s --probes 3 \
        > "$OUT/watch.json" 2> "$OUT/watch.err" &
    wpid=$!
    sleep "$WATCH"
    if kill -0 "$wpid" 2>/dev/null; then
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$wpid/status")
        kill -TERM "$wpid"
        wait "$wpid" && code=0 || code=$?
    else
        wait "$wpid" && code=0 || code=$?
        rss=0
    fi
    states=$(python3 -c '
import json, sys, collections
c = collections.Counter()
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("event") == "state":
        c[v.get("state")] += 1
print(" ".join(f"{k}={c[k]}" for k in sorted(c)))
' "$OUT/watch.json")
    echo
    echo "watch over $up connections for ${WATCH} s: exit $code (0 = ran until SIGTERM), RSS $(( rss / 1024 )) MiB, state changes: $states"
    grep -v '^$' "$OUT/watch.err" | sed 's/^/    stderr: /' | head -5
fi
