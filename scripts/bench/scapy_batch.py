"""The same keepalive probes as a kaprobe sweep, sent by scapy's sr() in one batch.

usage: scapy_batch.py NUMBERS.json TIMEOUT_S
NUMBERS.json: [[local "ip:port", remote "ip:port", snd_nxt, rcv_nxt], ...] (learned beforehand).
Builds one pure ACK per connection (seq = SND.NXT-1, ack = RCV.NXT), sends them all with sr(),
which returns once every probe is answered or TIMEOUT_S after the last one went out.
Prints one JSON line with the counts and the split of the time.
"""
import json
import sys
import time

t_start = time.perf_counter()
from scapy.all import IP, TCP, sr  # noqa: E402

t_import = time.perf_counter()


def main():
    with open(sys.argv[1]) as f:
        rows = json.load(f)
    timeout = float(sys.argv[2])
    expect = {}
    probes = []
    for local, remote, snd_nxt, rcv_nxt in rows:
        src, sport = local.rsplit(":", 1)
        dst, dport = remote.rsplit(":", 1)
        sport, dport = int(sport), int(dport)
        probes.append(IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="A",
                                                  seq=(snd_nxt - 1) % 2**32, ack=rcv_nxt))
        expect[sport] = (rcv_nxt, snd_nxt)
    t_built = time.perf_counter()
    ans, unans = sr(probes, timeout=timeout, verbose=0)
    t_done = time.perf_counter()
    acks = exact = resets = 0
    for _, r in ans:
        if not r.haslayer(TCP):
            continue
        t = r[TCP]
        if "R" in str(t.flags):
            resets += 1
        elif str(t.flags) == "A":
            acks += 1
            if expect.get(t.dport) == (t.seq, t.ack):
                exact += 1
    print(json.dumps({
        "probes": len(probes), "answered": len(ans), "unanswered": len(unans),
        "acks": acks, "acks_exact": exact, "resets": resets,
        "import_ms": (t_import - t_start) * 1000, "build_ms": (t_built - t_import) * 1000,
        "sr_ms": (t_done - t_built) * 1000,
    }))


main()
