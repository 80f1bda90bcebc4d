"""Part 1 (and the single-run half of part 3): time to verdict on one alive connection.

usage: single.py --kaprobe BIN --hping3 BIN --nping BIN --python VENV_PYTHON --remote IP:PORT
                 --locals IP:P1,IP:P2,IP:P3,IP:P4 --runs N --tmp DIR --out RESULT.json
Runs inside the client namespace. Each tool gets its own idle connection (same kind, same
peer); the tools take turns, in a rotating order, and no connection is probed again within
550 ms (the local challenge-ACK and the peer's out-of-window-ACK rate limits, 500 ms each).

The peers cannot learn sequence numbers; they get them from kaprobe's `learned` events,
taken once before the timed runs (the connections are idle, so the numbers do not move).
kaprobe learns its own numbers inside every timed run.
"""
import argparse
import json
import os
import re
import time

import common

SPACING = 0.55


def main():
    ap = argparse.ArgumentParser()
    for a in ("kaprobe", "hping3", "nping", "python", "remote", "locals", "tmp", "out"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    common.become_subreaper()
    here = os.path.dirname(os.path.abspath(__file__))
    remote = args.remote
    dst, dport = common.split_hostport(remote)
    locals_ = args.locals.split(",")
    assert len(locals_) == 4

    nums, summary = common.learn_numbers(args.kaprobe, os.path.join(args.tmp, "learn1.out"),
                                         "--remote", remote)
    for loc in locals_[1:]:
        if (loc, remote) not in nums:
            raise SystemExit(f"single: no learned numbers for {loc}-{remote} (summary {summary})")

    def numbers(loc):
        snd_nxt, rcv_nxt = nums[(loc, remote)]
        return (snd_nxt - 1) % 2**32, rcv_nxt

    tools = []

    # kaprobe: learns its numbers itself (challenge ACK), then one canonical probe.
    loc = locals_[0]
    tools.append({
        "tool": "kaprobe", "local": loc,
        "argv": [args.kaprobe, "--json", "probe", f"{loc}-{remote}"],
        "shown": "kaprobe probe FLOW",
    })

    def kaprobe_ok(out, rc):
        for ev in reversed(common.json_lines(out)):
            if ev.get("event") == "verdict":
                return rc == 0 and ev.get("verdict") == "alive"
        return False

    tools[-1]["ok"] = kaprobe_ok

    # hping3: one ACK with the given seq/ack from the connection's own source port (-k keeps
    # it); it exits as soon as the answer is in.
    loc = locals_[1]
    src, sport = common.split_hostport(loc)
    seq, ack = numbers(loc)
    tools.append({
        "tool": "hping3", "local": loc,
        "argv": [args.hping3, "-A", "-c", "1", "-s", str(sport), "-k", "-p", str(dport),
                 "-M", str(seq), "-L", str(ack), dst],
        "shown": "hping3 -A -c 1 -s SPORT -k -p DPORT -M SEQ -L ACK DST",
        "ok": (lambda pat: lambda out, rc: rc == 0 and re.search(pat, out) is not None)(
            rf"ip={re.escape(dst)} .*sport={dport} flags=A "),
    })

    # nping: same numbers. By default it waits 1 s after its last probe; --delay 1ms makes it
    # exit right after (the answer takes ~0.05 ms here, and it is still caught).
    loc = locals_[2]
    src, sport = common.split_hostport(loc)
    seq, ack = numbers(loc)
    tools.append({
        "tool": "nping", "local": loc,
        "argv": [args.nping, "--tcp", "--flags", "ack", "-g", str(sport), "-p", str(dport),
                 "--seq", str(seq), "--ack", str(ack), "-c", "1", "--delay", "1ms", dst],
        "shown": "nping --tcp --flags ack -g SPORT -p DPORT --seq SEQ --ack ACK -c 1 --delay 1ms DST",
        "ok": (lambda pat: lambda out, rc: rc == 0 and re.search(pat, out) is not None)(
            rf"RCVD \([^)]*\) TCP {re.escape(dst)}:{dport} > {re.escape(src)}:{sport} A "),
    })

    # scapy: a short sr1() script (import included: that is what running it costs).
    loc = locals_[3]
    seq, ack = numbers(loc)

    def scapy_ok(out, rc):
        for ev in reversed(common.json_lines(out)):
            if "answered" in ev:
                results["scapy"].setdefault("import_ms", []).append(ev["import_ms"])
                return rc == 0 and ev["answered"] and ev["flags"] == "A"
        return False

    tools.append({
        "tool": "scapy", "local": loc,
        "argv": [args.python, os.path.join(here, "scapy_probe.py"), loc, remote, str(seq), str(ack)],
        "shown": "sr1(IP(dst=DST)/TCP(sport=SPORT, dport=DPORT, flags='A', seq=SEQ, ack=ACK), "
                 "timeout=1) in a script (scripts/bench/scapy_probe.py)",
        "ok": scapy_ok,
    })

    last = {t["tool"]: time.monotonic() for t in tools}
    results = {t["tool"]: {"command": t["shown"], "wall_ms": [], "cpu_ms": [], "ok": 0,
                           "failures": []} for t in tools}
    out_path = os.path.join(args.tmp, "single.out")
    # One untimed warm-up round (page cache, ARP), then the measured rounds.
    for rnd in range(-1, args.runs):
        order = tools[rnd % len(tools):] + tools[:rnd % len(tools)]
        for t in order:
            wait = last[t["tool"]] + SPACING - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            wall, cpu, rc = common.run_timed(t["argv"], out_path)
            last[t["tool"]] = time.monotonic()
            with open(out_path) as f:
                out = f.read()
            if rnd < 0:
                continue
            r = results[t["tool"]]
            r["wall_ms"].append(wall)
            r["cpu_ms"].append(cpu)
            if t["ok"](out, rc):
                r["ok"] += 1
            elif len(r["failures"]) < 3:
                r["failures"].append({"rc": rc, "output": out[-400:]})
    for r in results.values():
        r["runs"] = len(r["wall_ms"])
        r["median_ms"] = common.median(r["wall_ms"])
        r["p95_ms"] = common.p95(r["wall_ms"])
        r["cpu_per_probe_ms"] = sum(r["cpu_ms"]) / len(r["cpu_ms"])
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    for name, r in results.items():
        print(f"  {name:8} answered {r['ok']}/{r['runs']}  median {r['median_ms']:.2f} ms  "
              f"p95 {r['p95_ms']:.2f} ms  cpu/probe {r['cpu_per_probe_ms']:.2f} ms")


main()
