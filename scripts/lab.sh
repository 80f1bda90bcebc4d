#!/usr/bin/env bash
# kaprobe test lab: network namespaces joined by veth pairs, optional router / NAT.
# Addresses only from 198.18.0.0/15, 198.51.100.0/24 and 2001:db8::/32; no default route anywhere.
set -euo pipefail

PROG=${0##*/}
STATE_ROOT=/run/kaprobe-lab

usage() {
    cat <<EOF
usage: $PROG SUBCOMMAND NAME [ARGS...]

Builds and breaks the kaprobe test lab. NAME is a short prefix of letters and
digits (e.g. kp1234x); the namespaces are NAME-a (client), NAME-b (peer) and,
for routed/nat, NAME-r (router). Must run as root.

One address plan in every topology:
  A eth0 198.18.0.2/24    2001:db8:18::2/64  (the client; kaprobe runs here)
  B eth0 198.51.100.2/24  2001:db8:51::2/64  (the peer)
  R eth0 198.18.0.1/24    2001:db8:18::1/64  (routed/nat: A's side)
  R eth1 198.51.100.1/24  2001:db8:51::1/64  (routed/nat: B's side)

Topologies:
  up direct NAME     A(eth0)--B(eth0) over one veth pair; each reaches the
                     other's prefix on the link (on-link routes, no router)
  up routed NAME     A--R--B, plain routing: A and B route each other's
                     prefix via R
  up nat NAME        like routed, but B has no route back; R masquerades out of
                     eth1 (nftables), drops ct state invalid in forward, and sets
                     nf_conntrack_tcp_loose=0 and
                     nf_conntrack_tcp_timeout_established=\$LAB_CT_TIMEOUT (default 5)
  down NAME          delete every namespace NAME-* (idempotent)

Faults (the topologies each applies to in brackets):
  blackhole NAME     [all] in B: drop all TCP in and out (peer host goes silent)
  unblackhole NAME   [all] undo blackhole
  freeze NAME        [all] in B: drop everything B sends (closing sockets emits
                     no FIN/RST)
  unfreeze NAME      [all] undo freeze
  restart NAME       [all] peer crash and restart: freeze, kill B's processes,
                     destroy B, recreate it with the same addresses, link and
                     routes. Behind nat, R's masquerade forgets every flow out of
                     eth1 when that link goes away: the restarted peer is then
                     never reached (silence, i.e. dead), not reset.
  nat-expire NAME    [nat] in R: flush conntrack state (as if the NAT timed the
                     flow out)
  reject NAME host-unreachable|admin-prohibited
                     [routed, nat] in R: reject forwarded A->B TCP with that
                     ICMP/ICMPv6 error (v6: addr-unreachable / admin-prohibited)
  policy NAME MARK MAIN
                     (routed) policy routing in A as applications set it up: packets
                     with fwmark MARK use table 100, which routes B's networks via R;
                     the main table instead has, for B's networks, MAIN:
                       elsewhere  a route via A eth1 to a sink namespace NAME-s
                                  (A 203.0.113.1/24 2001:db8:203::1/64, S .2 / ::2)
                                  that drops every TCP segment it gets
                       none       no route at all
                       prohibit   a prohibit route
                     rp_filter is off in A (replies from B arrive on eth0).
  refuse NAME prohibit|unreachable|noroute
                     (routed) in A: a prohibit / unreachable host route to B, or no
                     route to B's network at all: sends to B fail locally
  refuse NAME firewall PORT|any [UID]
                     in A: an nftables output rule drops TCP to B (to port PORT, or
                     any port); with UID, packets from sockets owned by UID pass
  carrier NAME off|on
                     take the far end of A's eth0 (B's eth0 in direct, R's eth0
                     otherwise) administratively down: A's eth0 has NO-CARRIER;
                     'on' brings it back, waits until it is ready and flushes the
                     neighbour entries on that link
  divert NAME        (direct) a multi-homed A: host routes for B's addresses in A's main
                     table lead via eth1 to the sink namespace NAME-s (see policy);
                     only sockets bound to eth0 still reach B
  linklocal NAME     (direct) fe80::1/64 on A's eth0, fe80::2/64 on B's eth0
  vrf NAME           (direct) a VRF vrf-x (table 10) in A with eth0 enslaved;
                     exits 3 with a message if the kernel has no VRF support
  lose-probes NAME UID
                     packets to B's address sent from sockets not owned by UID are
                     marked (DSCP CS1) in A's output and dropped by B's input: the
                     application's own segments (socket owned by UID) pass,
                     kaprobe's raw-socket probes are lost on the way

Other:
  connect NAME PORT CLIENT_PORT...
                     [all] a small server in B on 198.51.100.2:PORT (started unless one
                     listens there) that accepts connections and holds them, and one
                     idle client connection from 198.18.0.2:CLIENT_PORT in A for each
                     CLIENT_PORT; returns once they are established. Needs python3.
                     Stopped by restart (B's processes die) and by down.
  exec NAME a|b|r CMD...
                     run CMD inside NAME-a, NAME-b or NAME-r (r: routed/nat)

Names: everything the lab creates is named after NAME: the namespaces NAME-a,
NAME-b, NAME-r and NAME-s, and its state under $STATE_ROOT/NAME. Devices,
addresses, routes and nftables tables live inside those namespaces only, with no
route out, so labs with different NAMEs run side by side and 'down NAME' removes
everything one made (and kills the processes left in it).

Testing your own service: build a lab, run the service in B and its client in
A (or kaprobe's own 'connect'), then break the path and watch what your
client, and kaprobe, make of it:
  $PROG up nat svc1                    # A -- NAT R -- B
  $PROG exec svc1 b my-server --listen 198.51.100.2:8080 &
  $PROG exec svc1 a my-client http://198.51.100.2:8080/ &
  $PROG blackhole svc1                 # the peer host goes silent: dead
  $PROG restart svc1                   # the peer reboots: reset on the next segment
  $PROG reject svc1 host-unreachable   # a router says no: unreachable
  $PROG nat-expire svc1                # the NAT forgets idle flows: dead
  $PROG down svc1
kaprobe runs in A: kaprobe --netns svc1-a list, then probe a flow it lists.

Environment: LAB_CT_TIMEOUT (nat only, seconds, default 5).
EOF
}

die() { echo "$PROG: $*" >&2; exit 1; }

check_name() {
    [[ ${1:-} =~ ^[A-Za-z0-9]{1,20}$ ]] || die "bad lab name '${1:-}' (1-20 letters/digits)"
}

ns_exists() { [[ -e /run/netns/$1 ]]; }

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# Create a namespace with lo up; the caller's trap cleans up on failure.
ns_new() {
    ns_exists "$1" && die "namespace $1 already exists"
    ip netns add "$1"
    ip -n "$1" link set lo up
    # IPv6 addresses added while a link is down stay tentative after it comes up until
    # a work item runs after a random delay below router_solicitation_delay (1 s): the
    # namespace ignores neighbour solicitations for them meanwhile, and the first
    # connection through the lab stalls for a second. No delay, and no DAD at all.
    nsx "$1" sysctl -q -w net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.router_solicitation_delay=0 \
        net.ipv6.conf.default.router_solicitation_delay=0
}

kind_of() {
    local name=$1
    if [[ -r $STATE_ROOT/$name/kind ]]; then
        cat "$STATE_ROOT/$name/kind"
    elif ns_exists "$name-r"; then
        if nsx "$name-r" nft list table inet kplab >/dev/null 2>&1; then echo nat; else echo routed; fi
    elif ns_exists "$name-a"; then
        echo direct
    else
        die "no lab named $name"
    fi
}

need_ns() { ns_exists "$1" || die "namespace $1 does not exist"; }

# need_kind NAME WHAT KIND...: the lab exists and is one of KINDs, else say which
# topologies WHAT applies to.
need_kind() {
    local name=$1 what=$2 kind k; shift 2
    kind=$(kind_of "$name")
    for k in "$@"; do [[ $kind == "$k" ]] && return 0; done
    local want=$*
    die "$what applies to ${want// / and } labs only; $name is a $kind lab"
}

# ---------------------------------------------------------------- building blocks
# Explicit interface indexes: a veth whose ifindex equals its peer's (both "2" in fresh
# namespaces) gets its carrier-up event handled by linkwatch as non-urgent, up to 1 s
# late, and until then IPv6 has not joined the solicited-node groups: neighbour
# solicitations are dropped and the first IPv6 connection stalls for a second.
# Indexes: A eth0 10, R eth0 11, R eth1 12, B eth0 13.

# Wait (bounded) until IPv6 is ready on a link: it has a non-tentative link-local address.
wait_ready() {
    local ns=$1 dev=$2 i
    for i in $(seq 60); do
        if ip -n "$ns" -6 addr show dev "$dev" scope link | grep -q inet6 &&
            ! ip -n "$ns" -6 addr show dev "$dev" tentative | grep -q inet6; then
            return 0
        fi
        sleep 0.05
    done
    die "IPv6 not ready on $dev in $ns after 3 s"
}

# veth_pair NS1 DEV1 INDEX1 ADDR4/LEN ADDR6/LEN  NS2 DEV2 INDEX2 ADDR4/LEN ADDR6/LEN:
# one veth pair between two namespaces, each end with its index (see above), an IPv4
# and an IPv6 address (no DAD), up, and returns once IPv6 is ready on both ends.
veth_pair() {
    local ns1=$1 dev1=$2 index1=$3 v4_1=$4 v6_1=$5 ns2=$6 dev2=$7 index2=$8 v4_2=$9 v6_2=${10}
    ip -n "$ns1" link add "$dev1" index "$index1" type veth \
        peer name "$dev2" index "$index2" netns "$ns2"
    ip -n "$ns1" addr add "$v4_1" dev "$dev1"
    ip -n "$ns1" addr add "$v6_1" dev "$dev1" nodad
    ip -n "$ns2" addr add "$v4_2" dev "$dev2"
    ip -n "$ns2" addr add "$v6_2" dev "$dev2" nodad
    ip -n "$ns1" link set "$dev1" up
    ip -n "$ns2" link set "$dev2" up
    wait_ready "$ns1" "$dev1"
    wait_ready "$ns2" "$dev2"
}

# The B side (namespace + link + addresses + routes). Used by up and restart.
build_b() {
    local name=$1 kind=$2 a=$1-a b=$1-b r=$1-r
    ns_new "$b"
    case $kind in
    direct)
        # The same addresses as behind a router; each side reaches the other's prefix
        # on the link itself.
        veth_pair "$a" eth0 10 198.18.0.2/24 2001:db8:18::2/64 \
                  "$b" eth0 13 198.51.100.2/24 2001:db8:51::2/64
        ip -n "$a" route add 198.51.100.0/24 dev eth0
        ip -n "$a" -6 route add 2001:db8:51::/64 dev eth0
        ip -n "$b" route add 198.18.0.0/24 dev eth0
        ip -n "$b" -6 route add 2001:db8:18::/64 dev eth0
        ;;
    routed|nat)
        veth_pair "$r" eth1 12 198.51.100.1/24 2001:db8:51::1/64 \
                  "$b" eth0 13 198.51.100.2/24 2001:db8:51::2/64
        if [[ $kind == routed ]]; then
            ip -n "$b" route add 198.18.0.0/24 via 198.51.100.1 dev eth0
            ip -n "$b" -6 route add 2001:db8:18::/64 via 2001:db8:51::1 dev eth0
        fi
        ;;
    *) die "unknown topology '$kind'" ;;
    esac
}

build_ar() {
    local name=$1 a=$1-a r=$1-r
    ns_new "$r"
    nsx "$r" sysctl -q -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv6.conf.default.forwarding=1
    veth_pair "$a" eth0 10 198.18.0.2/24 2001:db8:18::2/64 \
              "$r" eth0 11 198.18.0.1/24 2001:db8:18::1/64
    ip -n "$a" route add 198.51.100.0/24 via 198.18.0.1 dev eth0
    ip -n "$a" -6 route add 2001:db8:51::/64 via 2001:db8:18::1 dev eth0
}

setup_nat() {
    local r=$1-r timeout=${LAB_CT_TIMEOUT:-5}
    [[ $timeout =~ ^[0-9]+$ && $timeout -ge 1 ]] || die "LAB_CT_TIMEOUT must be a positive integer"
    # Ruleset first: its ct/masquerade expressions bring conntrack into this netns,
    # and only then do the net.netfilter.* sysctls exist there.
    nsx "$r" nft -f - <<'EOF'
table inet kplab {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "eth1" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state invalid drop
    }
}
EOF
    local i
    for i in $(seq 50); do
        if nsx "$r" test -e /proc/sys/net/netfilter/nf_conntrack_tcp_loose; then break; fi
        sleep 0.1
    done
    nsx "$r" sysctl -q -w net.netfilter.nf_conntrack_tcp_loose=0 \
        "net.netfilter.nf_conntrack_tcp_timeout_established=$timeout"
    local loose est
    loose=$(nsx "$r" sysctl -n net.netfilter.nf_conntrack_tcp_loose)
    est=$(nsx "$r" sysctl -n net.netfilter.nf_conntrack_tcp_timeout_established)
    [[ $loose == 0 && $est == "$timeout" ]] ||
        die "conntrack sysctls did not take in $r (loose=$loose established=$est)"
}

# ---------------------------------------------------------------- subcommands

cmd_up() {
    local kind=${1:-} name=${2:-}
    [[ $kind =~ ^(direct|routed|nat)$ ]] || die "up: topology must be direct, routed or nat"
    check_name "$name"
    local n
    for n in a b r; do ns_exists "$name-$n" && die "namespace $name-$n already exists"; done
    # Any failure below tears down what was built so far.
    CLEANUP_NAME=$name
    trap 'rc=$?; if [[ $rc -ne 0 ]]; then cmd_down "$CLEANUP_NAME" >/dev/null 2>&1 || true; fi' EXIT
    mkdir -p "$STATE_ROOT/$name"
    echo "$kind" >"$STATE_ROOT/$name/kind"
    ns_new "$name-a"
    if [[ $kind != direct ]]; then build_ar "$name"; fi
    build_b "$name" "$kind"
    if [[ $kind == nat ]]; then setup_nat "$name"; fi
    trap - EXIT
}

cmd_down() {
    local name=${1:-}
    check_name "$name"
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${name}-" || true); do
        for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf "${STATE_ROOT:?}/$name"
    return 0
}

fault_table_add() { # ns table body
    local ns=$1 table=$2 body=$3
    if nsx "$ns" nft list table inet "$table" >/dev/null 2>&1; then return 0; fi
    nsx "$ns" nft -f - <<<"table inet $table {
$body
}"
}

cmd_blackhole() {
    local name=${1:-}; check_name "$name"; need_ns "$name-b"
    fault_table_add "$name-b" kpfault '
    chain input {
        type filter hook input priority -10; policy accept;
        meta l4proto tcp drop
    }
    chain output {
        type filter hook output priority -10; policy accept;
        meta l4proto tcp drop
    }'
}

cmd_unblackhole() {
    local name=${1:-}; check_name "$name"; need_ns "$name-b"
    nsx "$name-b" nft delete table inet kpfault 2>/dev/null || true
}

cmd_freeze() {
    local name=${1:-}; check_name "$name"; need_ns "$name-b"
    fault_table_add "$name-b" kpfreeze '
    chain output {
        type filter hook output priority -20; policy drop;
    }'
}

cmd_unfreeze() {
    local name=${1:-}; check_name "$name"; need_ns "$name-b"
    nsx "$name-b" nft delete table inet kpfreeze 2>/dev/null || true
}

cmd_restart() {
    local name=${1:-}; check_name "$name"; need_ns "$name-b"
    local kind; kind=$(kind_of "$name")
    local b=$name-b side_ns side_if
    if [[ $kind == direct ]]; then side_ns=$name-a side_if=eth0; else side_ns=$name-r side_if=eth1; fi
    cmd_freeze "$name"
    local pid
    for pid in $(ip netns pids "$b" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    # Wait (bounded) for the killed processes to be gone.
    local i
    for i in $(seq 50); do
        [[ -z $(ip netns pids "$b" 2>/dev/null || true) ]] && break
        sleep 0.1
    done
    # Delete the link explicitly: sockets closed while frozen (orphans in FIN_WAIT1 whose
    # FIN is dropped) keep the namespace itself alive in the kernel for a while, and with
    # it its devices; deleting the veth removes both ends at once.
    ip -n "$b" link del eth0 2>/dev/null || true
    ip netns del "$b"
    for i in $(seq 50); do
        ip -n "$side_ns" link show "$side_if" >/dev/null 2>&1 || break
        sleep 0.1
    done
    if ip -n "$side_ns" link show "$side_if" >/dev/null 2>&1; then
        die "restart: $side_if in $side_ns still exists 5 s after deleting $b"
    fi
    build_b "$name" "$kind"
}

cmd_nat_expire() {
    local name=${1:-}; check_name "$name"; need_kind "$name" nat-expire nat; need_ns "$name-r"
    nsx "$name-r" conntrack -F
}

cmd_reject() {
    local name=${1:-} what=${2:-}; check_name "$name"; need_kind "$name" reject routed nat
    need_ns "$name-r"
    local v4 v6
    case $what in
    host-unreachable) v4=host-unreachable v6=addr-unreachable ;;
    admin-prohibited) v4=admin-prohibited v6=admin-prohibited ;;
    *) die "reject: expected host-unreachable or admin-prohibited" ;;
    esac
    nsx "$name-r" nft delete table inet kpreject 2>/dev/null || true
    # Own table at a priority before every other forward chain (kplab's is at filter = 0).
    nsx "$name-r" nft -f - <<EOF
table inet kpreject {
    chain forward {
        type filter hook forward priority -100; policy accept;
        ip saddr 198.18.0.0/24 ip daddr 198.51.100.0/24 meta l4proto tcp reject with icmp type $v4
        ip6 saddr 2001:db8:18::/64 ip6 daddr 2001:db8:51::/64 meta l4proto tcp reject with icmpv6 type $v6
    }
}
EOF
}

# B's addresses as A sees them, by topology.
b_addr4() { echo 198.51.100.2; }
b_addr6() { echo 2001:db8:51::2; }

# A sink namespace NAME-s on A's eth1 that swallows every TCP segment (no forwarding).
build_sink() {
    local name=$1 a=$1-a s=$1-s
    ns_exists "$s" && return 0
    ns_new "$s"
    veth_pair "$a" eth1 14 203.0.113.1/24 2001:db8:203::1/64 \
              "$s" eth0 15 203.0.113.2/24 2001:db8:203::2/64
    nsx "$s" nft -f - <<'EOF'
table inet kpsink {
    chain prerouting {
        type filter hook prerouting priority -300; policy accept;
        meta l4proto tcp drop
    }
}
EOF
}

cmd_policy() {
    local name=${1:-} mark=${2:-} main=${3:-}; check_name "$name"; need_ns "$name-a"
    need_kind "$name" policy routed
    [[ $mark =~ ^(0x[0-9a-fA-F]{1,8}|[0-9]{1,10})$ ]] || die "policy: bad mark '$mark'"
    [[ $main =~ ^(elsewhere|none|prohibit)$ ]] || die "policy: MAIN must be elsewhere, none or prohibit"
    local a=$name-a
    nsx "$a" sysctl -q -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        net.ipv4.conf.eth0.rp_filter=0
    ip -n "$a" rule add pref 100 fwmark "$mark" table 100
    ip -n "$a" -6 rule add pref 100 fwmark "$mark" table 100
    ip -n "$a" route add 198.51.100.0/24 via 198.18.0.1 dev eth0 table 100
    ip -n "$a" -6 route add 2001:db8:51::/64 via 2001:db8:18::1 dev eth0 table 100
    ip -n "$a" route del 198.51.100.0/24
    ip -n "$a" -6 route del 2001:db8:51::/64
    case $main in
    elsewhere)
        build_sink "$name"
        ip -n "$a" route add 198.51.100.0/24 via 203.0.113.2 dev eth1
        ip -n "$a" -6 route add 2001:db8:51::/64 via 2001:db8:203::2 dev eth1
        ;;
    none) ;;
    prohibit)
        ip -n "$a" route add prohibit 198.51.100.0/24
        ip -n "$a" -6 route add prohibit 2001:db8:51::/64
        ;;
    esac
}

cmd_refuse() {
    local name=${1:-} how=${2:-}; check_name "$name"; need_ns "$name-a"
    local a=$name-a kind b4 b6
    kind=$(kind_of "$name"); b4=$(b_addr4 "$kind"); b6=$(b_addr6 "$kind")
    case $how in
    prohibit|unreachable)
        need_kind "$name" "refuse $how" routed nat
        ip -n "$a" route add "$how" "$b4/32"
        ip -n "$a" -6 route add "$how" "$b6/128"
        ;;
    noroute)
        need_kind "$name" "refuse noroute" routed nat
        ip -n "$a" route del 198.51.100.0/24
        ip -n "$a" -6 route del 2001:db8:51::/64
        ;;
    firewall)
        local port=${3:-} uid=${4:-} match="" except=""
        case $port in
        any) ;;
        *) [[ $port =~ ^[0-9]{1,5}$ ]] || die "refuse firewall: PORT must be a number or 'any'"
           match="tcp dport $port" ;;
        esac
        if [[ -n $uid ]]; then
            [[ $uid =~ ^[0-9]{1,10}$ ]] || die "refuse firewall: bad UID '$uid'"
            except="meta skuid != $uid"
        fi
        # Declaring the table again adds rules to it: several ports can be refused.
        nsx "$a" nft -f - <<EOF
table inet kprefuse {
    chain output {
        type filter hook output priority 0; policy accept;
        ip daddr $b4 meta l4proto tcp $match $except drop
        ip6 daddr $b6 meta l4proto tcp $match $except drop
    }
}
EOF
        ;;
    *) die "refuse: expected prohibit, unreachable, noroute or firewall" ;;
    esac
}

cmd_carrier() {
    local name=${1:-} what=${2:-}; check_name "$name"
    local kind ns dev=eth0 i
    kind=$(kind_of "$name")
    if [[ $kind == direct ]]; then ns=$name-b; else ns=$name-r; fi
    need_ns "$ns"
    case $what in
    off)
        # Keep the far end's IPv6 addresses across the down/up, as for a pulled cable.
        nsx "$ns" sysctl -q -w "net.ipv6.conf.$dev.keep_addr_on_down=1"
        ip -n "$ns" link set "$dev" down
        for i in $(seq 60); do
            ip -n "$name-a" link show eth0 | grep -q NO-CARRIER && return 0
            sleep 0.05
        done
        die "carrier: A's eth0 still has carrier 3 s after the far end went down"
        ;;
    on)
        ip -n "$ns" link set "$dev" up
        wait_ready "$ns" "$dev"
        if [[ $kind == direct ]]; then
            # Taking the link down removed B's on-link routes to A's prefixes (only the
            # prefix routes of B's own addresses come back by themselves).
            ip -n "$ns" route replace 198.18.0.0/24 dev "$dev"
            ip -n "$ns" -6 route replace 2001:db8:18::/64 dev "$dev"
        fi
        for i in $(seq 60); do
            if ! ip -n "$name-a" link show eth0 | grep -q NO-CARRIER; then
                wait_ready "$name-a" eth0
                # Neighbour entries left INCOMPLETE by sends while the link was down would
                # hold the next packets until their next solicitation (up to 1 s): start afresh.
                ip -n "$name-a" neigh flush dev eth0
                ip -n "$ns" neigh flush dev "$dev"
                return 0
            fi
            sleep 0.05
        done
        die "carrier: A's eth0 has no carrier 3 s after the far end came up"
        ;;
    *) die "carrier: expected off or on" ;;
    esac
}

cmd_divert() {
    local name=${1:-}; check_name "$name"; need_kind "$name" divert direct
    build_sink "$name"
    ip -n "$name-a" route add 198.51.100.2/32 via 203.0.113.2 dev eth1
    ip -n "$name-a" -6 route add 2001:db8:51::2/128 via 2001:db8:203::2 dev eth1
}

cmd_linklocal() {
    local name=${1:-}; check_name "$name"; need_kind "$name" linklocal direct
    ip -n "$name-a" addr add fe80::1/64 dev eth0 nodad
    ip -n "$name-b" addr add fe80::2/64 dev eth0 nodad
}

cmd_vrf() {
    local name=${1:-}; check_name "$name"; need_kind "$name" vrf direct
    local a=$name-a err
    if ! err=$(ip -n "$a" link add vrf-x type vrf table 10 2>&1); then
        echo "$PROG: vrf: this kernel cannot make a VRF device (CONFIG_NET_VRF): $err" >&2
        exit 3
    fi
    nsx "$a" sysctl -q -w net.ipv6.conf.eth0.keep_addr_on_down=1
    ip -n "$a" link set vrf-x up
    ip -n "$a" link set eth0 master vrf-x
    wait_ready "$a" eth0
}

cmd_lose_probes() {
    local name=${1:-} uid=${2:-}; check_name "$name"; need_ns "$name-a"; need_ns "$name-b"
    [[ $uid =~ ^[0-9]{1,10}$ ]] || die "lose-probes: bad UID '$uid'"
    local kind b4 b6
    kind=$(kind_of "$name"); b4=$(b_addr4 "$kind"); b6=$(b_addr6 "$kind")
    # A route chain may rewrite headers of locally generated packets. A packet without an
    # owning socket file (e.g. an RST for no socket) does not match meta skuid at all.
    nsx "$name-a" nft -f - <<EOF
table inet kptag {
    chain output {
        type route hook output priority -150; policy accept;
        ip daddr $b4 meta l4proto tcp meta skuid != $uid ip dscp set cs1
        ip6 daddr $b6 meta l4proto tcp meta skuid != $uid ip6 dscp set cs1
    }
}
EOF
    nsx "$name-b" nft -f - <<'EOF'
table inet kplose {
    chain input {
        type filter hook input priority -10; policy accept;
        ip dscp cs1 meta l4proto tcp counter drop
        ip6 dscp cs1 meta l4proto tcp counter drop
    }
}
EOF
}

# The server and clients of 'connect': python3, holding every connection until killed.
LAB_SERVER='
import socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("198.51.100.2", int(sys.argv[1])))
l.listen(64)
held = []
while True:
    held.append(l.accept()[0])
'
LAB_CLIENT='
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.2", int(sys.argv[1])))
s.settimeout(5)
s.connect(("198.51.100.2", int(sys.argv[2])))
time.sleep(10**9)
'

cmd_connect() {
    local name=${1:-} port=${2:-}; check_name "$name"
    [[ $port =~ ^[0-9]+$ && $# -ge 3 ]] || die "connect: expected NAME PORT CLIENT_PORT..."
    shift 2
    need_ns "$name-a"; need_ns "$name-b"
    command -v python3 >/dev/null || die "connect needs python3"
    local i
    if [[ -z $(nsx "$name-b" ss -Htln "( sport = :$port )") ]]; then
        setsid ip netns exec "$name-b" python3 -c "$LAB_SERVER" "$port" </dev/null >/dev/null 2>&1 &
        for i in $(seq 50); do
            [[ -n $(nsx "$name-b" ss -Htln "( sport = :$port )") ]] && break
            sleep 0.1
        done
    fi
    local cport
    for cport in "$@"; do
        [[ $cport =~ ^[0-9]+$ ]] || die "connect: bad client port '$cport'"
        setsid ip netns exec "$name-a" python3 -c "$LAB_CLIENT" "$cport" "$port" </dev/null >/dev/null 2>&1 &
        for i in $(seq 50); do
            [[ -n $(nsx "$name-a" ss -Htn state established "( sport = :$cport )") ]] && break
            sleep 0.1
        done
        [[ -n $(nsx "$name-a" ss -Htn state established "( sport = :$cport )") ]] ||
            die "connect: 198.18.0.2:$cport -> 198.51.100.2:$port did not come up"
    done
}

cmd_exec() {
    local name=${1:-} which=${2:-}; check_name "$name"
    [[ $which =~ ^[abr]$ ]] || die "exec: expected a, b or r"
    shift 2
    [[ $# -gt 0 ]] || die "exec: missing command"
    if [[ $which == r ]]; then need_kind "$name" "exec ... r" routed nat; fi
    need_ns "$name-$which"
    exec ip netns exec "$name-$which" "$@"
}

main() {
    local sub=${1:-}
    case $sub in
    -h|--help|help|"") usage; [[ -n $sub ]] || exit 2; exit 0 ;;
    esac
    shift
    [[ $(id -u) -eq 0 ]] || die "must run as root"
    case $sub in
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    blackhole) cmd_blackhole "$@" ;;
    unblackhole) cmd_unblackhole "$@" ;;
    freeze) cmd_freeze "$@" ;;
    unfreeze) cmd_unfreeze "$@" ;;
    restart) cmd_restart "$@" ;;
    nat-expire) cmd_nat_expire "$@" ;;
    reject) cmd_reject "$@" ;;
    policy) cmd_policy "$@" ;;
    refuse) cmd_refuse "$@" ;;
    carrier) cmd_carrier "$@" ;;
    divert) cmd_divert "$@" ;;
    linklocal) cmd_linklocal "$@" ;;
    vrf) cmd_vrf "$@" ;;
    lose-probes) cmd_lose_probes "$@" ;;
    connect) cmd_connect "$@" ;;
    exec) cmd_exec "$@" ;;
    *) echo "$PROG: unknown subcommand '$sub'" >&2; usage >&2; exit 2 ;;
    esac
}

main "$@"
