//! `kaprobe man [SUBCOMMAND]`: manual pages built from the same clap definitions as
//! `--help` (NAME, OPTIONS, the exit status and examples of each subcommand's help), plus
//! the sections a help screen has no room for (DESCRIPTION, OUTPUT, PRIVILEGES, SIDE
//! EFFECTS, SEE ALSO), written here in a small markup:
//!
//! - paragraphs are separated by a blank line;
//! - a paragraph whose lines all start with two spaces is shown as written (examples);
//! - a paragraph starting with `* TAG` is a tagged paragraph: TAG in bold, the rest below it;
//! - anything else is filled text.
//!
//! Every option clap knows is on the page (tests/cli_help.rs checks it), so a page cannot
//! lose an option that `--help` shows.

use clap_mangen::roff::{Roff, bold, italic, roman};

/// The date on every page's `.TH` line: when the pages' own text last changed. Change it
/// with the text (CONTRIBUTING.md, "Manual pages").
pub const DATE: &str = "2026-12-07";

/// The other manual pages every page points to.
const SEE_ALSO_OTHERS: [(&str, &str); 4] =
    [("ss", "8"), ("tcp", "7"), ("hping3", "8"), ("tcpdump", "1")];

/// A page's own sections, by page name ("" for kaprobe itself).
struct Extra {
    name: &'static str,
    description: &'static str,
    output: &'static str,
    privileges: &'static str,
    side_effects: &'static str,
    /// Examples beyond the two in `--help`.
    examples: &'static str,
}

const TOP: Extra = Extra {
    name: "",
    description: "\
kaprobe tells whether the peer of an established TCP connection is still there, now, \
without waiting two hours for the kernel's keepalive timer and without touching the \
application that owns the connection.

It crafts the TCP keepalive probe itself, in userspace, through a raw socket: a pure ACK \
whose sequence number is one below what the peer expects next (SND.NXT\u{2212}1), with no \
payload, sent on the connection's own 4-tuple. A peer that still holds the connection must \
answer such an unacceptable segment with an ACK (RFC 9293); a host that lost it answers \
with an RST. The answer gives one of four verdicts:

* alive (exit 0)
the peer answered with an ACK carrying the expected numbers: its TCP still holds the \
connection.

* reset (exit 3)
the peer answered with an RST: its host is up but lost the connection (it restarted).

* unreachable (exit 4)
an ICMP destination-unreachable error came back, or this host cannot send toward the peer \
(no route, a prohibit route, a local firewall, its own link without carrier).

* dead (exit 1)
nothing after --probes tries: the peer is powered off, a cable is gone further on, or a \
NAT or firewall on the path forgot the idle flow.

Find a connection with kaprobe list (or ss \\-tn), then probe it with kaprobe probe. A FLOW \
is written LOCAL\\-REMOTE, each side IP:PORT with IPv6 in brackets \
(198.18.0.2:40000\\-198.51.100.2:9000, [2001:db8::1]:40000\\-[2001:db8::2]:9000), or as \
the two words ss prints (LOCAL REMOTE), or as a bare REMOTE when exactly one established \
connection goes there. IPv4\\-mapped IPv6 addresses are the IPv4 address they carry; a \
link\\-local IPv6 address takes its zone ([fe80::1%eth0]:40000). Filters (\\-\\-local, \
\\-\\-remote) also take CIDR prefixes, as ss does.

Durations are written as humantime takes them (500ms, 75s, 2h) and shown in one style: \
milliseconds below a second, seconds below a minute, then days, hours, minutes and seconds.

How the sequence numbers are learned: by default (\\-\\-seq\\-source kernel) an eBPF TCP \
socket iterator reads SND.NXT, RCV.NXT, the window and the timestamp state of every \
socket; nothing is sent to learn them. It needs CAP_BPF and CAP_PERFMON, BTF \
(/sys/kernel/btf/vmlinux) and Linux 5.9 or later. Where it cannot load, kaprobe says why \
at \\-v and falls back to \\-\\-seq\\-source local: a SYN injected into the local stack (it \
never leaves the host) makes the local socket answer with a challenge ACK carrying its \
numbers (RFC 5961). Before injecting anything, kaprobe asks conntrack about the exact flow \
and refuses (exit 7, naming the cause and the remedy) where the SYN could harm the \
connection: its conntrack entry is missing, it is NAT\\-ed on this host, or conntrack \
adjusts its sequence numbers (SYNPROXY).

An answer counts only if it proves it saw the probe: an ACK must carry exactly the learned \
SND.NXT and RCV.NXT, an RST's sequence number must equal the probe's ACK field, an ICMP \
error must quote the probe's ports and sequence number. Anything else is ignored and \
counted, so a blind forger cannot change a verdict.",
    output: "\
The commands print human lines by default. With \\-\\-json every line is one JSON object \
with an \"event\" field naming what it is and the format version \"v\" (1); times are \
whole numbers in the unit their name says (rtt_us, elapsed_ms). Each command's page lists \
its objects and fields; src/output/schema.json in the source describes them all. An error \
under \\-\\-json is also one object on standard output: event \"error\", exit, error \
(usage, no\\-connection, privilege, failure) and message.",
    privileges: "\
kaprobe needs CAP_NET_RAW (the capture socket and the raw sockets that send probes) and \
CAP_NET_ADMIN (sockets' marks and TCP\\-MD5 keys in sock_diag, the capture buffer). Root \
has them; so has a binary given them with

  setcap cap_net_raw,cap_net_admin+ep /usr/local/bin/kaprobe

The default sequence source also needs CAP_BPF and CAP_PERFMON. They let a process read \
kernel memory, so they are not in the grant above: add them (cap_bpf,cap_perfmon) to opt \
in, or let kaprobe fall back to \\-\\-seq\\-source local. \\-\\-netns and \\-\\-pid need \
CAP_SYS_ADMIN. A missing capability is exit 6, with a message naming it. As soon as its \
sockets are open, probe, sweep, watch, nat\\-timeout and sniff drop their capabilities \
(KAPROBE_DEBUG_CAPS=1 prints what is left).",
    side_effects: "\
kaprobe never sends data (except the one already\\-acknowledged byte of \
\\-\\-garbage\\-octet), a FIN or an RST on the connection it probes. The local kernel also \
receives the peer's answer: an ACK is harmless, but an RST from a restarted peer resets the \
local socket, so the application gets ECONNRESET, just as the kernel's own keepalive would \
have done. With \\-\\-seq\\-source local each probe round adds one to the host's InErrs and \
TCPSYNChallenge counters.",
    examples: "\
Find a connection, then probe it:

  kaprobe list
  sudo kaprobe probe 192.0.2.10:51234\\-203.0.113.5:443

Probe every connection to a database port, as JSON:

  sudo kaprobe \\-\\-json sweep \\-\\-port 5432",
};

const PAGES: [Extra; 10] = [
    Extra {
        name: "probe",
        description: "\
kaprobe probe runs the kernel's keepalive algorithm once, on one established connection, \
and prints one verdict. It waits until the connection has been idle for \\-\\-time \
(counted as the kernel counts it, since the last segment received), sends a probe, and \
sends another every \\-\\-intvl until one is answered or \\-\\-probes probes went \
unanswered. So a dead peer is declared time + probes \u{00d7} intvl after the connection \
fell idle, as the kernel would declare it.

FLOW names the connection: LOCAL\\-REMOTE, LOCAL REMOTE as two arguments (as ss prints \
them), or REMOTE alone when only one established connection goes there. Find it with \
kaprobe list or ss \\-tn. A flow named the wrong way round gets a hint with the right \
orientation; a connection that exists but is not established is named with its TCP state.

A probe is never judged unanswered before the connection's RTO has passed since it left, \
so every probe ends within time + probes \u{00d7} intvl plus the RTO. While data is in \
flight (unacknowledged data, a send queue, a zero\\-window persist) kaprobe sends nothing: \
the kernel's own ACK clock decides, and an ACK during the look means alive. A reset can \
come before the first probe: a restarted peer's RST carrying exactly RCV.NXT is just as \
conclusive, and the verdict says probes=0.

Probes carry the connection's SO_MARK and bound device, so policy routing and VRFs send \
them where the connection's own packets go. A send the local host refuses is unreachable \
with a cause: no\\-route, prohibited, local\\-firewall or link\\-down. A connection signed \
with TCP\\-MD5 (RFC 2385) or TCP\\-AO (RFC 5925) cannot be probed (both ends drop unsigned \
segments): exit 7, naming the option.

The peer answers at most one out\\-of\\-window segment per \
net.ipv4.tcp_invalid_ratelimit (500 ms): an \\-\\-intvl below 500ms warns.",
        output: "\
One verdict line on standard output:

  198.18.0.2:40001\\-198.51.100.2:9000 alive rtt=0.04ms probes=1
  198.18.0.2:40001\\-198.51.100.2:9000 dead probes=3 after=1.503s
  198.18.0.2:40001\\-198.51.100.2:9000 unreachable icmp=host\\-unreachable from=198.18.0.1 rtt=0.06ms probes=1

The line adds evidence= when a probe's answer did not decide (traffic: the kernel \
received a segment of the connection meanwhile; kernel\\-ack\\-clock: data in flight), \
cause= for a local cause, and no rtt= when the answer cannot be tied to one probe. At \\-v \
progress lines go to standard error.

With \\-\\-json, the verdict object has event \"verdict\", flow, local, remote, verdict, \
probes_sent, rtt_us (or null), elapsed_ms, ignored (answers that did not prove they saw a \
probe), evidence (probe, traffic or kernel\\-ack\\-clock), source (the sequence source), \
and for unreachable either icmp {type, code, from, name} or cause. With \\-\\-json \\-v \
the events learned, learn\\-retry, probe, waiting, busy, traffic, ignored and borrowed \
come before it, each with its flow.",
        privileges: "\
CAP_NET_RAW and CAP_NET_ADMIN (root, or setcap); CAP_BPF and CAP_PERFMON for the default \
kernel sequence source, else kaprobe falls back to the local one. Exit 6 names what is \
missing.",
        side_effects: "\
A reset verdict also resets the local socket: the peer's RST reaches the local kernel \
too, and the application gets ECONNRESET, as it would from the kernel's own keepalive. \
Nothing else changes for the connection: the probe is the kernel's own keepalive segment, \
byte for byte.",
        examples: "\
Probe a connection that must have been idle 30 s first, with five tries:

  sudo kaprobe probe \\-\\-time 30s \\-\\-probes 5 198.51.100.2:9000

IPv6, and the two\\-word form ss prints:

  sudo kaprobe probe '[2001:db8::1]:40000\\-[2001:db8::2]:9000'
  sudo kaprobe probe 198.18.0.2:40000 198.51.100.2:9000",
    },
    Extra {
        name: "sweep",
        description: "\
kaprobe sweep runs the probe loop on every established connection (IPv4 and IPv6) that \
matches all the filters, at once, in one process, and prints one verdict per connection. \
\\-\\-port matches either side; \\-\\-local and \\-\\-remote take addresses and CIDR \
prefixes with an optional port, as ss does (198.51.100.0/24:9000, \
'[2001:db8::]/32:9000').

One capture socket with an in\\-kernel BPF filter passes only the probed connections' \
segments and ICMP errors, and a send\\-rate cap (\\-\\-rate, 50000 packets per second by \
default) keeps a large sweep from flooding the path. From 2,000 connections on, the work is \
spread over up to four cores.

Signed (TCP\\-MD5) connections are never probed: each is a signed row. A connection that \
ends without a verdict is closed, failed, or (after SIGINT, SIGTERM or SIGHUP) interrupted.

With \\-\\-textfile PATH the sweep's results are also written, atomically, as Prometheus \
metrics for node_exporter's textfile collector: kaprobe_connections{state}, \
kaprobe_probes_sent_total, kaprobe_verdicts_total{verdict}, \
kaprobe_ignored_answers_total, kaprobe_probe_rtt_seconds, \
kaprobe_sweep_timestamp_seconds and kaprobe_sweep_duration_seconds. A directory kaprobe \
cannot write in is exit 2, before any probe.",
        output: "\
A table sorted by verdict, problems last, then a summary:

  FLOW                                VERDICT             RTT  PROBES  DETAIL
  198.18.0.2:42300\\-198.51.100.2:9300  alive           0.074ms  1
  198.18.0.2:42302\\-198.51.100.2:9301  dead                  \\-  2
  2 connections: 1 alive, 1 dead, 0 reset, 0 unreachable in 1.004s

DETAIL holds the ICMP error, the local cause or the evidence, as the probe line does. With \
\\-\\-json each verdict object (as kaprobe\\-probe(1) describes it) is printed the moment it \
is decided, and a summary object comes last: event \"summary\", connections, alive, dead, \
reset, unreachable, signed, closed, failed, interrupted, elapsed_ms.",
        privileges: "As for kaprobe\\-probe(1).",
        side_effects: "\
As for kaprobe\\-probe(1): every connection found reset has its local socket reset too.",
        examples: "\
Every connection into a /24, two probes half a second apart:

  sudo kaprobe sweep \\-\\-remote 198.51.100.0/24 \\-\\-probes 2 \\-\\-intvl 500ms

From cron, for node_exporter:

  kaprobe sweep \\-\\-port 5432 \\-\\-textfile /var/lib/prometheus/node\\-exporter/kaprobe.prom",
    },
    Extra {
        name: "watch",
        description: "\
kaprobe watch runs the kernel's keepalive algorithm from userspace, forever, for \
connections whose application never turned keepalive on: when a connection has been idle \
for \\-\\-time (60s by default), probe it; unanswered, probe again every \\-\\-intvl; after \
\\-\\-probes unanswered probes it is dead. Any segment the kernel accepts resets the count. \
This both detects dead peers and keeps NAT and firewall state along the path from \
expiring.

Given a FLOW, watch follows that one connection and ends when it is gone. Given filters \
(or nothing), it watches every matching connection and picks up new ones every \
\\-\\-rescan; a rescan lists the sockets only when the kernel's TCP counters say a \
connection may have been opened.

\\-\\-on\\-dead says what to do with a dead connection: report it (the default); kill the \
local socket with SOCK_DESTROY, as ss \\-K does, so the application's blocked call fails at \
once (needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY); or 'exec CMD', which runs CMD \
(one quoted word) through /bin/sh with KAPROBE_FLOW, KAPROBE_VERDICT, KAPROBE_LOCAL and \
KAPROBE_REMOTE set.

\\-\\-metrics ADDR:PORT (also \\-\\-web.listen\\-address, repeatable; :PORT for both \
families) serves Prometheus metrics at /metrics and a landing page at / (OpenMetrics when \
asked for, else the text format 0.0.4; gzip when accepted), on an address of the namespace \
kaprobe was started in, from one thread holding no capability, with at most 64 connections, \
10 s to send a request head of at most 16 KiB and 30 s of idleness allowed. \
\\-\\-web.config.file PATH adds TLS (rustls), client certificates and basic auth (bcrypt) \
from exporter\\-toolkit's YAML. Families: \
kaprobe_connections{state} (alive, dead, reset, unreachable, pending), \
kaprobe_probes_sent_total, kaprobe_verdicts_total{verdict}, \
kaprobe_ignored_answers_total, kaprobe_kills_total and the histogram \
kaprobe_probe_rtt_seconds; with \\-\\-metrics\\-per\\-connection also \
kaprobe_connection_state{local,remote,state}, one series per connection; \
kaprobe_build_info and process_* (CPU, memory, descriptors). Under systemd \
(the kaprobe\\-watch@ unit) it is a Type=notify service.",
        output: "\
One line per state change, with a timestamp, and a summary when SIGINT, SIGTERM or SIGHUP ends it:

  2026\\-11\\-23T09:09:04.801Z 198.18.0.2:40001\\-198.51.100.2:9000 dead probes=3
  watched 1 connection for 2.512s: 1 probe round; went dead 1, reset 0, unreachable 0, closed 0

With \\-\\-json each change is an object with event \"state\", time, flow, state, the \
previous state and the verdict's fields; the summary has event \"summary\".",
        privileges: "\
CAP_NET_RAW and CAP_NET_ADMIN (root, or setcap); CAP_BPF and CAP_PERFMON for the kernel \
sequence source. watch keeps CAP_NET_ADMIN after its sockets are open (conntrack is asked \
before every round; \\-\\-on\\-dead kill needs it). A \\-\\-metrics port below 1024 needs \
CAP_NET_BIND_SERVICE.",
        side_effects: "\
Watched connections get the same probes the kernel's keepalive would send; a reset also \
resets the local socket. \\-\\-on\\-dead kill closes the local socket of a dead \
connection; \\-\\-on\\-dead 'exec CMD' runs CMD as the user kaprobe runs as.",
        examples: "\
Keep every connection to port 5432 alive through a NAT, and expose metrics:

  sudo kaprobe watch \\-\\-port 5432 \\-\\-time 30s \\-\\-metrics 127.0.0.1:9479",
    },
    Extra {
        name: "nat-timeout",
        description: "\
kaprobe nat\\-timeout finds how long the path to HOST:PORT keeps an idle connection, that \
is, the idle timeout of a NAT or stateful firewall on the way. HOST is an address or a \
name, resolved inside \\-\\-netns; the first address is used.

It opens \\-\\-parallel connections and leaves each idle for a different time on a \
geometric ladder from \\-\\-min to \\-\\-max; each is probed once when its time comes (a \
probe refreshes NAT state, so each connection serves one measurement). The first one found \
dead ends the round: the timeout lies between the longest idle time that survived and it. \
Further rounds spread fresh connections across that bracket until it is narrower than \
\\-\\-resolution of its lower bound. A reset answer means something on the path answers \
for the peer, and is reported as such.",
        output: "\
Progress on standard error (\\-q silences it), then the result:

  idle timeout between 4.8s and 5.4s; set keepalive time below 4s
  no idle timeout up to 4s

With \\-\\-json one object with event \"result\": lower_ms, upper_ms (null when no timeout \
was found), recommended_keepalive_time_s, reset, measurements [{idle_ms, verdict}], and \
interrupted when SIGINT, SIGTERM or SIGHUP ended it early.",
        privileges: "\
As for kaprobe\\-probe(1).",
        side_effects: "\
Opens up to \\-\\-parallel TCP connections to HOST:PORT per round and leaves them idle; \
the service sees them as idle clients.",
        examples: "",
    },
    Extra {
        name: "sniff",
        description: "\
kaprobe sniff reports every TCP keepalive probe seen on the wire and the peer's answer to \
it, from any sender: the kernel's keepalive timer of any application, another host's stack, \
or kaprobe itself. Use it to check that an application's TCP_KEEPIDLE and TCP_KEEPINTVL \
are in force, and that the peer (or the NAT in between) answers.

For each connection and direction sniff tracks the next sequence number, the highest ACK \
and the last window. A keepalive probe is an ACK without SYN, FIN or RST, with 0 or 1 byte \
and seq = next \u{2212} 1 (a byte the peer already acknowledged), while the peer's window \
is open; a keepalive ACK is a pure ACK from the other side within 1 s of it. \
Retransmissions, zero\\-window probes, duplicate ACKs and kaprobe's own injected SYNs are \
not counted. sniff cannot know a connection's numbers before it has seen them, so on an \
idle connection the first probe it sees is not reported; the next one is.

With an exact LOCAL\\-REMOTE FLOW (and no \\-i) the kernel filters for that connection; \
otherwise every TCP packet of the chosen interfaces is examined: on a busy host give a FLOW \
and a \\-\\-duration. At most \\-\\-max\\-connections connections are tracked. sniff stops \
after \\-\\-count probes, after \\-\\-duration, or on SIGINT, SIGTERM or SIGHUP, then prints a \
summary.",
        output: "\
One line per probe and per answer, the prober first (> probe, < answer):

  09:21:03.987999 198.18.0.2:40001 > 198.51.100.2:9000 keepalive probe seq=2225475028 ack=447221571 len=0 interval=\\-
  09:21:03.988075 198.18.0.2:40001 < 198.51.100.2:9000 keepalive ack seq=447221571 ack=2225475029 rtt=0.075ms

With \\-\\-json, objects with event \"keepalive_probe\" or \"keepalive_ack\" (time, flow, \
from, to, seq, ack, len, interval_ms, rtt_us), then a summary object (probes, acks, \
unanswered, senders, window_probes, retransmissions, segments, connections_tracked, \
connections_evicted, elapsed_ms).",
        privileges: "CAP_NET_RAW.",
        side_effects: "None: sniff only listens.",
        examples: "",
    },
    Extra {
        name: "list",
        description: "\
kaprobe list shows the established TCP connections (IPv4 and IPv6) that match every \
filter given, sorted by flow: how long each has been idle (since the last segment \
received, as the kernel's keepalive timer counts it), the data in flight and queued, the \
kernel keepalive timer (off, or on with the time to the next probe and the probes already \
out; ? while another timer hides it), and the processes holding the socket (found through \
/proc/*/fd). Its Local and Remote columns are a FLOW for the other commands.",
        output: "\
  Local             Remote             Idle    Unacked  Recv\\-Q  Send\\-Q  Keepalive                  Process
  198.18.0.2:40000  198.51.100.2:5432  2.052s        0       0       0  off                        6040/hold
  198.18.0.2:40001  198.51.100.2:5432  2.052s        0       0       0  on next=1m12.9s probes=0  6040/hold

With \\-\\-json, one object per connection, event \"connection\": flow, local, remote, idle_ms, unacked, \
send_queue, recv_queue, inode, uid, owners [{pid, fd, command}], keepalive (on, off or \
unknown), keepalive_next_ms, keepalive_probes, timer (keepalive, retransmit, \
zero\\-window\\-probe or null) and signature (tcp\\-md5 or null; the table says signed=md5).",
        privileges: "\
None to list; without root, other users' processes show as \\- and TCP\\-MD5 keys are not \
seen (they need CAP_NET_ADMIN).",
        side_effects: "None.",
        examples: "",
    },
    Extra {
        name: "enable",
        description: "\
kaprobe enable turns the kernel's own keepalive on for the socket of a running process \
that never asked for it. It finds the processes holding the socket, borrows a duplicate of \
the descriptor with pidfd_open(2) and pidfd_getfd(2), sets SO_KEEPALIVE, TCP_KEEPIDLE, \
TCP_KEEPINTVL and TCP_KEEPCNT on it (only SO_KEEPALIVE=0 with \\-\\-off), closes the \
duplicate, and reads sock_diag back to check that the timer is armed (or gone). The \
application is neither stopped nor signalled; after time + probes \u{00d7} intvl without \
an answer its next call fails with ETIMEDOUT.

The values are the kernel's: whole seconds, \\-\\-time and \\-\\-intvl from 1s to 32767s, \
\\-\\-probes from 1 to 127; anything else is refused before anything is touched.",
        output: "\
  198.18.0.2:40001\\-198.51.100.2:5432 keepalive on time=75s intvl=5s probes=4 next=1m12.9s (socket of 6040/hold fd 4; was off, time=7200s intvl=75s probes=9)

With \\-\\-json one object, event \"keepalive\\-set\": flow, local, remote, requested, keepalive, time_s, intvl_s, \
probes, keepalive_next_ms, keepalive_probes, timer, owner, owners, previous {keepalive, \
time_s, intvl_s, probes} and verified.",
        privileges: "\
The right to ptrace the owner: root, or CAP_SYS_PTRACE (Yama ptrace_scope=3 refuses it to \
everyone; exit 6).",
        side_effects: "\
Changes the socket's options for the rest of its life. If the application closes its \
descriptor in the instant between the duplication and kaprobe's close, kaprobe's close is \
the last one and closes the connection.",
        examples: "",
    },
    Extra {
        name: "config",
        description: "\
kaprobe config prints the keepalive sysctls of the current network namespace (or of \
\\-\\-netns; they are per namespace), net.ipv4.tcp_invalid_ratelimit and \
net.ipv4.tcp_retries2, and the worst\\-case dead\\-peer detection time they give to \
applications that turn SO_KEEPALIVE on without values of their own \
(tcp_keepalive_time + tcp_keepalive_probes \u{00d7} tcp_keepalive_intvl).",
        output: "\
One line per sysctl with its meaning, then the detection time. With \\-\\-json one \
object, event \"config\": tcp_keepalive_time_s, tcp_keepalive_intvl_s, tcp_keepalive_probes, \
tcp_invalid_ratelimit_ms, tcp_retries2, tcp_rto_max_ms, retries2_timeout_ms and \
dead_peer_detection_s.",
        privileges: "None (CAP_SYS_ADMIN for \\-\\-netns).",
        side_effects: "None.",
        examples: "",
    },
    Extra {
        name: "completions",
        description: "\
kaprobe completions prints a completion script for SHELL (bash, elvish, fish, powershell \
or zsh), generated from the same definitions as \\-\\-help, so it offers every \
subcommand, option and fixed value the binary knows. Install it where the shell looks:

  kaprobe completions bash > /etc/bash_completion.d/kaprobe
  kaprobe completions zsh > /usr/local/share/zsh/site\\-functions/_kaprobe
  kaprobe completions fish > ~/.config/fish/completions/kaprobe.fish",
        output: "The script, on standard output.",
        privileges: "None.",
        side_effects: "None.",
        examples: "",
    },
    Extra {
        name: "man",
        description: "\
kaprobe man prints a manual page in roff, generated from the same definitions as \
\\-\\-help: kaprobe(1) without SUBCOMMAND, kaprobe\\-SUBCOMMAND(1) with it. Install them \
all with

  kaprobe man > /usr/local/share/man/man1/kaprobe.1
  for c in probe sweep watch nat\\-timeout sniff list enable config completions man; do
      kaprobe man $c > /usr/local/share/man/man1/kaprobe\\-$c.1
  done",
        output: "The page, on standard output.",
        privileges: "None.",
        side_effects: "None.",
        examples: "",
    },
];

fn extra(name: &str) -> &'static Extra {
    PAGES.iter().find(|p| p.name == name).unwrap_or(&TOP)
}

/// Writes `text` (the markup above) as roff.
fn markup(roff: &mut Roff, text: &str) {
    for para in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
        if para.lines().all(|l| l.starts_with("  ")) {
            roff.control("PP", []);
            roff.control("RS", ["4"]);
            roff.control("nf", []);
            for line in para.lines() {
                roff.text([roman(unescape(&line[2..]))]);
            }
            roff.control("fi", []);
            roff.control("RE", []);
        } else if let Some(rest) = para.strip_prefix("* ") {
            let (tag, body) = rest.split_once('\n').unwrap_or((rest, ""));
            roff.control("TP", []);
            roff.text([bold(unescape(tag))]);
            roff.text([roman(unescape(&body.replace('\n', " ")))]);
        } else {
            roff.control("PP", []);
            roff.text([roman(unescape(&para.replace('\n', " ")))]);
        }
    }
}

/// The markup writes `\-` where a reader of the source would see a dash that is a minus
/// (options); roff's own escaping turns `-` into `\-`, so the backslash goes.
fn unescape(s: &str) -> String {
    s.replace("\\-", "-")
}

fn section(roff: &mut Roff, title: &str, text: &str) {
    if text.trim().is_empty() {
        return;
    }
    roff.control("SH", [title]);
    markup(roff, text);
}

/// `--time DUR`, `-i IFACE`, `--garbage-octet`, `FLOW`: one argument as the synopsis shows it.
fn synopsis_arg(arg: &clap::Arg) -> Vec<clap_mangen::roff::Inline> {
    let values: Vec<String> = arg
        .get_value_names()
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    if arg.is_positional() {
        let name = values
            .first()
            .cloned()
            .unwrap_or_else(|| arg.get_id().to_string());
        if arg.is_required_set() {
            out.push(italic(name));
        } else {
            out.push(roman("["));
            out.push(italic(name));
            out.push(roman("]"));
        }
        return out;
    }
    let flag = match (arg.get_long(), arg.get_short()) {
        (Some(l), _) => format!("--{l}"),
        (None, Some(s)) => format!("-{s}"),
        (None, None) => return out,
    };
    out.push(roman("["));
    out.push(bold(flag));
    if arg.get_action().takes_values() {
        for v in &values {
            out.push(roman(" "));
            out.push(italic(v.clone()));
        }
    }
    out.push(roman("]"));
    out
}

fn synopsis(roff: &mut Roff, page: &clap::Command, top: bool) {
    roff.control("SH", ["SYNOPSIS"]);
    let name = if top {
        "kaprobe".to_string()
    } else {
        format!("kaprobe {}", page.get_name())
    };
    let mut line = vec![bold(name)];
    let mut globals = false;
    for arg in page.get_arguments() {
        if arg.is_hide_set() || matches!(arg.get_id().as_str(), "help" | "version") {
            continue;
        }
        if arg.is_global_set() || arg.get_help_heading() == Some("Global options") {
            globals = true;
            continue;
        }
        if arg.is_positional() {
            continue;
        }
        line.push(roman(" "));
        line.extend(synopsis_arg(arg));
    }
    if globals || top {
        line.push(roman(" ["));
        line.push(italic("GLOBAL OPTIONS"));
        line.push(roman("]"));
    }
    for arg in page.get_positionals() {
        line.push(roman(" "));
        line.extend(synopsis_arg(arg));
    }
    if top {
        line.push(roman(" "));
        line.push(italic("COMMAND"));
        line.push(roman(" ["));
        line.push(italic("ARGS"));
        line.push(roman("]"));
    }
    roff.text(line);
}

/// The pages of the subcommands, as `kaprobe-probe` (not `help`, which has no page).
pub fn page_names(top: &clap::Command) -> Vec<String> {
    top.get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|s| format!("kaprobe-{}", s.get_name()))
        .collect()
}

/// Renders one page: `top` is the whole (built) command, `page` the one to render.
pub fn render(top: &clap::Command, page: &clap::Command, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    render_page(top, page, &mut buf)?;
    // groff reads its input as Latin-1: the few other characters the text uses become
    // groff's named glyphs.
    let text = String::from_utf8_lossy(&buf)
        .replace('\u{2212}', "\\(mi")
        .replace('\u{00d7}', "\\(mu");
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

fn render_page(top: &clap::Command, page: &clap::Command, w: &mut Vec<u8>) -> std::io::Result<()> {
    let is_top = std::ptr::eq(top, page) || page.get_name() == top.get_name();
    let sub = if is_top { "" } else { page.get_name() };
    let ex = extra(sub);
    let title = if is_top {
        "KAPROBE".to_string()
    } else {
        format!("KAPROBE-{}", sub.to_uppercase())
    };
    let version = format!("kaprobe {}", top.get_version().unwrap_or(""));
    let mut roff = Roff::default();
    roff.control(
        "TH",
        [title.as_str(), "1", DATE, version.as_str(), "User Commands"],
    );
    // No hyphenation: an option or page name broken across lines is hard to search for.
    roff.control("nh", []);
    roff.to_writer(w)?;
    let man = clap_mangen::Man::new(page.clone());
    man.render_name_section(w)?;
    let mut roff = Roff::default();
    synopsis(&mut roff, page, is_top);
    section(&mut roff, "DESCRIPTION", ex.description);
    roff.to_writer(w)?;
    man.render_options_section(w)?;

    let mut roff = Roff::default();
    if is_top {
        roff.control("SH", ["COMMANDS"]);
        for sc in page.get_subcommands().filter(|s| s.get_name() != "help") {
            roff.control("TP", []);
            roff.text([bold(format!("kaprobe-{}", sc.get_name())), roman("(1)")]);
            roff.text([roman(
                sc.get_about().map(|a| a.to_string()).unwrap_or_default(),
            )]);
        }
        roff.control("PP", []);
        roff.text([roman(
            "kaprobe help COMMAND and kaprobe COMMAND --help print the same options \
             briefly.",
        )]);
    }
    section(&mut roff, "OUTPUT", ex.output);
    // The closing blocks of the help ("Exit status:", "Examples:", ...), lines kept as
    // written; the OUTPUT section above covers the help's own "Output:" block.
    let after = page
        .get_after_help()
        .map(|a| a.to_string())
        .unwrap_or_default();
    for block in after.split("\n\n") {
        let mut lines = block.lines();
        let Some(title) = lines.next().and_then(|t| t.strip_suffix(':')) else {
            continue;
        };
        if title == "Output" {
            continue;
        }
        roff.control("SH", [title.to_uppercase().as_str()]);
        roff.control("nf", []);
        for line in lines {
            roff.text([roman(line.strip_prefix("  ").unwrap_or(line))]);
        }
        roff.control("fi", []);
        if title == "Examples" {
            markup(&mut roff, ex.examples);
        }
    }
    section(&mut roff, "PRIVILEGES", ex.privileges);
    section(&mut roff, "SIDE EFFECTS", ex.side_effects);
    if is_top {
        section(
            &mut roff,
            "ENVIRONMENT",
            "\
* RUST_LOG
the log filter, as env_logger takes it; it wins over \\-v and \\-q.

* KAPROBE_DEBUG_CAPS
when 1, print the capability sets after kaprobe dropped them.

* JOURNAL_STREAM, NOTIFY_SOCKET, WATCHDOG_USEC
set by systemd: log lines carry their priority, and watch reports readiness and \
watchdog pings.",
        );
    }
    roff.control("SH", ["VERSION"]);
    roff.text([roman(format!(
        "{version}, pages dated {DATE}. kaprobe --version prints the binary's."
    ))]);
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<(String, &str)> = page_names(top)
        .into_iter()
        .filter(|n| *n != format!("kaprobe-{sub}"))
        .map(|n| (n, "1"))
        .collect();
    if !is_top {
        refs.insert(0, ("kaprobe".to_string(), "1"));
    }
    refs.extend(SEE_ALSO_OTHERS.iter().map(|(n, s)| (n.to_string(), *s)));
    let last = refs.len() - 1;
    for (i, (name, sec)) in refs.iter().enumerate() {
        let tail = if i == last {
            format!("({sec})")
        } else {
            format!("({sec}),")
        };
        roff.control("BR", [name.as_str(), tail.as_str()]);
    }
    roff.to_writer(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_has_its_own_sections() {
        let mut names: Vec<&str> = PAGES.iter().map(|p| p.name).collect();
        names.sort();
        let cmd = crate::cli::command();
        let mut subs: Vec<&str> = cmd
            .get_subcommands()
            .map(|s| s.get_name())
            .filter(|&n| n != "help")
            .collect();
        subs.sort();
        assert_eq!(names, subs);
        for p in PAGES.iter().chain([&TOP]) {
            assert!(!p.description.is_empty(), "{}", p.name);
            assert!(!p.output.is_empty(), "{}", p.name);
            assert!(!p.privileges.is_empty(), "{}", p.name);
        }
    }
}
