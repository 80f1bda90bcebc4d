#!/usr/bin/env bash
# Benchmark: `kaprobe probe` against an alive peer in the lab, exec to exit.
# Reports median / p95 wall time and peak RSS over RUNS runs (default 40), and the same for
# `kaprobe --version` (a bare process start, in the same harness) with the ratio.
# SOURCE=kernel|local|peer|sniff picks --seq-source (default: kaprobe's own default);
# BIN=path measures another build (default: this tree's release build).
# Needs root (namespaces, raw sockets) and python3 (holds the connection, times the runs).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-40}
[ "$(id -u)" = 0 ] || { echo "bench-probe: run as root (sudo $0)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-probe: needs python3" >&2; exit 1; }
# GNU time reports peak RSS; a posix_spawn from python would report python's own (Linux
# carries the larger RSS across exec into ru_maxrss).
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=$PWD/target/release/kaprobe
fi
SOURCE=${SOURCE:-}
NAME=kpb$$
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    scripts/lab.sh down "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
scripts/lab.sh up direct "$NAME" >/dev/null

hold='
import socket, sys, time
role, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if role == "server":
    s.bind((addr, port)); s.listen(16); held = []
    while True: held.append(s.accept()[0])
else:
    s.bind((addr, int(sys.argv[5]))); s.connect((sys.argv[4], port)); time.sleep(3600)
'
ip netns exec "$NAME-b" python3 -c "$hold" server 198.51.100.2 9000 & pids+=($!)
sleep 0.3
ip netns exec "$NAME-a" python3 -c "$hold" client 198.18.0.2 9000 198.51.100.2 40001 & pids+=($!)
sleep 0.3

python3 - "$BIN" "$NAME-a" "$RUNS" "$SOURCE" <<'PY'
import os, statistics, subprocess, sys, time
binary, ns, runs, source = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
argv = [binary, "--netns", ns, "probe", "198.18.0.2:40001-198.51.100.2:9000"]
if source:
    argv += ["--seq-source", source]
bare = [binary, "--version"]
walls, bare_walls, rss, verdicts = [], [], [], {}
devnull = os.open(os.devnull, os.O_WRONLY)

def timed(args):
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(binary, args, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)])
    _, status = os.waitpid(pid, 0)
    return (time.perf_counter_ns() - t0) / 1e6, os.waitstatus_to_exitcode(status)

for i in range(runs):
    # The local socket sends at most one challenge ACK per 500 ms (tcp_invalid_ratelimit):
    # space the runs so that each one measures the normal path.
    time.sleep(0.55)
    wall, code = timed(argv)
    walls.append(wall)
    verdicts[code] = verdicts.get(code, 0) + 1
    bare_walls.append(timed(bare)[0])
for i in range(5):
    time.sleep(0.55)
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + argv, capture_output=True, text=True)
    rss.append(int(r.stderr.strip().splitlines()[-1]) / 1024)
walls.sort()
p95 = walls[min(len(walls) - 1, int(round(0.95 * len(walls))) - 1)]
print(f"kaprobe probe{' --seq-source ' + source if source else ''}, alive peer, {runs} runs: exit codes {verdicts}")
print(f"bare start (kaprobe --version): median {statistics.median(bare_walls):.2f} ms; "
      f"probe / bare start: {statistics.median(walls) / statistics.median(bare_walls):.2f}x")
print(f"wall exec-to-exit: median {statistics.median(walls):.2f} ms, p95 {p95:.2f} ms, min {walls[0]:.2f} ms, max {walls[-1]:.2f} ms")
print(f"peak RSS (GNU time, 5 runs): median {statistics.median(rss):.1f} MiB, max {max(rss):.1f} MiB")
ok = verdicts == {0: runs} and statistics.median(walls) < 5 and max(rss) < 10
print("targets (median < 5 ms, RSS < 10 MB, all alive):", "met" if ok else "NOT met")
PY
