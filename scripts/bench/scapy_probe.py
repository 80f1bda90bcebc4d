"""One keepalive probe with scapy's sr1(), as a scapy user would write it.

usage: scapy_probe.py SRC:SPORT DST:DPORT SEQ ACK
Sends a pure ACK with the given seq/ack and waits (up to 1 s) for the answer. Prints one
JSON line; exit 0 when the answer is an ACK (no RST) from the peer's port, 1 otherwise.
"""
import json
import sys
import time

t_start = time.perf_counter()
from scapy.all import IP, TCP, sr1  # noqa: E402  (the import is part of the measured cost)

IMPORT_MS = (time.perf_counter() - t_start) * 1000


def main():
    src, sport = sys.argv[1].rsplit(":", 1)
    dst, dport = sys.argv[2].rsplit(":", 1)
    seq, ack = int(sys.argv[3]), int(sys.argv[4])
    probe = IP(src=src, dst=dst) / TCP(sport=int(sport), dport=int(dport), flags="A",
                                       seq=seq, ack=ack)
    ans = sr1(probe, timeout=1, verbose=0)
    out = {"answered": False, "import_ms": IMPORT_MS}
    if ans is not None and ans.haslayer(TCP):
        t = ans[TCP]
        out.update(answered=True, flags=str(t.flags), seq=t.seq, ack=t.ack)
    print(json.dumps(out))
    ok = out["answered"] and out["flags"] == "A"
    sys.exit(0 if ok else 1)


main()
