#!/usr/bin/env bash
# kaprobe live demo: the four verdicts (alive, reset, dead, unreachable) on real TCP
# connections inside a namespace lab.
#   sudo scripts/demo.sh [--prefix NAME] [--no-install]
# Installs what it lacks with apt-get (iproute2, nftables, conntrack, python3; with
# --no-install, or without apt-get, it names them and stops), builds kaprobe (release,
# as the user who ran sudo, with that user's cargo), makes its own labs (torn down on
# every exit path), runs a tiny python3 server in B and client in A, and probes them.
# --prefix NAME (or KAPROBE_DEMO_PREFIX): the labs are NAMEd and NAMEn, so the
# namespaces are NAMEd-a, NAMEd-b, NAMEn-a, NAMEn-r, NAMEn-b (default kpdPID).
# KAPROBE_BIN=/path/to/kaprobe skips the build and uses that binary.
set -euo pipefail

PREFIX=${KAPROBE_DEMO_PREFIX:-}
INSTALL=1
while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help)
        sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    --prefix) PREFIX=${2:-}; shift 2 || { echo "demo.sh: --prefix needs a NAME" >&2; exit 2; } ;;
    --prefix=*) PREFIX=${1#--prefix=}; shift ;;
    --no-install) INSTALL=0; shift ;;
    *) echo "demo.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
if [[ -n $PREFIX && ! $PREFIX =~ ^[A-Za-z0-9]{1,18}$ ]]; then
    echo "demo.sh: --prefix must be 1-18 letters or digits (the labs add d and n)" >&2
    exit 2
fi
[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (sudo $0)" >&2; exit 1; }

# What the lab needs, as command:package.
missing=()
for need in ip:iproute2 nft:nftables conntrack:conntrack python3:python3 ss:iproute2; do
    command -v "${need%%:*}" >/dev/null 2>&1 || missing+=("${need#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    if [[ $INSTALL == 1 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "demo.sh: installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "demo.sh: missing ${missing[*]}: install these packages (Debian/Ubuntu names) and run again" >&2
        exit 1
    fi
fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
LAB="$ROOT/scripts/lab.sh"
BIN=${KAPROBE_BIN:-$ROOT/target/release/kaprobe}
PREFIX=${PREFIX:-kpd$(( $$ % 100000 ))}
DIRECT="${PREFIX}d"
NAT="${PREFIX}n"
WORK=$(mktemp -d /tmp/kaprobe-demo.XXXXXX)
PIDS=()

cleanup() {
    local rc=$?
    set +e
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    "$LAB" down "$DIRECT" >/dev/null 2>&1
    "$LAB" down "$NAT" >/dev/null 2>&1
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Print a command, run it, show its exit code; never aborts the demo.
run() {
    printf '$ %s\n' "$*"
    local rc=0
    "$@" || rc=$?
    printf '(exit %d)\n' "$rc"
}

cat >"$WORK/server.py" <<'EOF'
# Accepts connections on HOST:PORT and holds them open, reading and discarding.
import socket, sys, threading
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
l = socket.socket(fam, socket.SOCK_STREAM)
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((host, port))
l.listen(16)
held = []
def drain(c):
    while c.recv(4096):
        pass
while True:
    c, _ = l.accept()
    held.append(c)
    threading.Thread(target=drain, args=(c,), daemon=True).start()
EOF

cat >"$WORK/client.py" <<'EOF'
# Connects from LOCAL:LPORT to REMOTE:RPORT, then sits idle.
import socket, sys, time
lh, lp, rh, rp = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
fam = socket.AF_INET6 if ":" in rh else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((lh, lp))
s.settimeout(5)
s.connect((rh, rp))
s.settimeout(None)
time.sleep(3600)
EOF

# start_bg NS CMD...: run in a namespace in the background, remembered for cleanup.
start_bg() {
    local ns=$1; shift
    ip netns exec "$ns" "$@" &
    PIDS+=("$!")
    disown "$!"  # no "Killed" job notices when the lab kills it
}

# wait_established NS LPORT: bounded wait until the client's connection is up.
wait_established() {
    local ns=$1 lport=$2 i
    for i in $(seq 50); do
        if [[ -n $(ip netns exec "$ns" ss -Htn state established "( sport = :$lport )") ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "demo.sh: connection from port $lport in $ns did not come up" >&2
    return 1
}

# connect NAME SERVER_IP CLIENT_IP CLIENT_PORT: server (if not running) + client.
start_server() { start_bg "$1-b" python3 "$WORK/server.py" "$2" 9000; sleep 0.3; }
start_client() {
    start_bg "$1-a" python3 "$WORK/client.py" "$3" "$4" "$2" 9000
    wait_established "$1-a" "$4"
}

# Build as the user who ran sudo, with that user's cargo (rustup puts it in ~/.cargo/bin,
# which is not on root's PATH), so target/ stays theirs.
build() {
    local user=${SUDO_USER:-root} home cargo
    home=$(getent passwd "$user" | cut -d: -f6)
    cargo=$(command -v cargo || true)
    [[ -z $cargo && -x $home/.cargo/bin/cargo ]] && cargo=$home/.cargo/bin/cargo
    if [[ -z $cargo ]]; then
        echo "demo.sh: no cargo: install Rust 1.85 or newer (https://rustup.rs), or set KAPROBE_BIN" >&2
        exit 1
    fi
    if [[ $user == root ]]; then
        (cd "$ROOT" && "$cargo" build --release)
    else
        (cd "$ROOT" && sudo -u "$user" -H env "PATH=$(dirname "$cargo"):$PATH" "$cargo" build --release)
    fi
}
if [[ -z ${KAPROBE_BIN:-} ]]; then
    say "building kaprobe"
    build
fi
[[ -x $BIN ]] || { echo "demo.sh: $BIN was not built" >&2; exit 1; }

# ------------------------------------------------------------------ direct lab
say "lab: A (198.18.0.2) -- B (198.51.100.2) on one link, namespaces $DIRECT-a / $DIRECT-b"
"$LAB" up direct "$DIRECT"
start_server "$DIRECT" 198.51.100.2
start_client "$DIRECT" 198.51.100.2 198.18.0.2 40001
run ip netns exec "$DIRECT-a" ss -tn state established

say "1. peer alive -> alive (exit 0)"
run "$BIN" --netns "$DIRECT-a" probe 198.18.0.2:40001-198.51.100.2:9000

say "2. peer crashes and restarts, no FIN or RST ever sent -> reset (exit 3)"
run "$LAB" restart "$DIRECT"
run "$BIN" --netns "$DIRECT-a" probe 198.18.0.2:40001-198.51.100.2:9000

say "3. peer host goes silent (crash, no restart) -> dead (exit 1) after 0s + 3 x 500ms"
start_server "$DIRECT" 198.51.100.2
start_client "$DIRECT" 198.51.100.2 198.18.0.2 40002
run "$LAB" blackhole "$DIRECT"
run "$BIN" --netns "$DIRECT-a" probe --time 0s --intvl 500ms --probes 3 198.18.0.2:40002-198.51.100.2:9000
"$LAB" down "$DIRECT"

# ------------------------------------------------------------------ NAT lab
say "lab: A (198.18.0.2) -- NAT R -- B (198.51.100.2), conntrack established timeout 3 s"
LAB_CT_TIMEOUT=3 "$LAB" up nat "$NAT"
start_server "$NAT" 198.51.100.2
start_client "$NAT" 198.51.100.2 198.18.0.2 40003
run ip netns exec "$NAT-r" conntrack -L

say "4a. idle less than the NAT timeout -> alive (exit 0)"
run "$BIN" --netns "$NAT-a" probe 198.18.0.2:40003-198.51.100.2:9000

say "4b. idle 5 s, past the NAT timeout: the NAT drops the probe -> dead (exit 1)"
run sleep 5
run ip netns exec "$NAT-r" conntrack -L
run "$BIN" --netns "$NAT-a" probe --intvl 500ms --probes 2 198.18.0.2:40003-198.51.100.2:9000

say "5. the router rejects the flow with ICMP host-unreachable -> unreachable (exit 4)"
start_client "$NAT" 198.51.100.2 198.18.0.2 40004
run "$LAB" reject "$NAT" host-unreachable
run "$BIN" --netns "$NAT-a" probe 198.18.0.2:40004-198.51.100.2:9000

say "done (labs are torn down on exit)"
