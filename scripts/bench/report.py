"""Turns the JSON results of single.py, many.py and dead.py into the markdown report.

usage: report.py --dir RESULTS_DIR --out FILE.md --env ENV.json
Prints the report and writes it to FILE.md.
"""
import argparse
import json
import os

import common


def ms(x, digits=None):
    if x is None:
        return "n/a"
    if digits is None:
        digits = 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0
    return f"{x:,.{digits}f} ms"


def cpu(x_ms):
    """CPU time per probe: µs below a millisecond."""
    if x_ms is None:
        return "n/a"
    if x_ms < 1:
        us = x_ms * 1000
        return f"{us:.1f} µs" if us < 10 else f"{us:.0f} µs"
    return ms(x_ms)


def secs(x_ms):
    if x_ms is None:
        return "n/a"
    if x_ms < 1000:
        return ms(x_ms)
    return f"{x_ms / 1000:,.2f} s"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    return f"{r:,.0f}×" if r >= 100 else f"{r:,.1f}×" if r >= 10 else f"{r:.2f}×"


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--env", required=True)
    args = ap.parse_args()
    env = load(args.env)
    single = load(os.path.join(args.dir, "single.json"))
    many = load(os.path.join(args.dir, "many.json"))
    dead = load(os.path.join(args.dir, "dead.json"))
    L = []
    w = L.append
    targets = []

    w("### Against hping3, nping, scapy and the kernel's keepalive (`scripts/bench.sh`)")
    w("")
    w(f"Regenerate with `{env['command']}` (root; installs hping3 and nmap from Debian and "
      f"scapy from PyPI into a venv, builds, makes its own lab, about {env['budget']}). "
      f"Measured {env['date']} on kernel {env['kernel']}, {env['cpus']} × {env['cpu_model']}; "
      f"{env['load']}. Versions: kaprobe {env['kaprobe']}, {env['hping3']}, {env['nping']}, "
      f"scapy {env['scapy']}, Python {env['python']}. Sizes and run counts are environment "
      "knobs (see the script's header); `BENCH_WAIT_QUIET=SECONDS` first waits for fuzzers "
      "to finish.")
    w("")
    w("All runs are in a lab of two network namespaces joined by a veth pair (RTT ≈ 0.05 ms), "
      "exec to exit, timed from a harness that itself runs in the client namespace (no "
      "`ip netns exec` in any timed region). CPU is user+sys of the process and every "
      "descendant, from `wait4`/`RUSAGE_CHILDREN` (the harness is a child subreaper, so "
      "processes that outlive the tool are counted too). Ratios are peer ÷ kaprobe.")
    w("")

    # ---------------------------------------------------------------- part 1
    if single:
        k = single["kaprobe"]
        w(f"#### 1. Time to verdict, one alive connection ({k['runs']} runs each)")
        w("")
        w("kaprobe learns the sequence numbers itself inside every timed run (challenge ACK "
          "from the local socket). The other tools cannot: they are given SND.NXT−1 / RCV.NXT, "
          "read once before the timed runs from kaprobe's own `--json -v` `learned` event "
          "(the connections are idle, so the numbers do not move). Each tool has its own "
          "idle connection to the same peer; the tools take turns in a rotating order, each "
          "connection probed at most every 550 ms (the kernel's 500 ms rate limits).")
        w("")
        w("| tool | answer recognised | median | p95 | median ÷ kaprobe | p95 ÷ kaprobe | "
          "CPU per probe | command |")
        w("|---|---|---|---|---|---|---|---|")
        for name in ("kaprobe", "hping3", "nping", "scapy"):
            r = single[name]
            w(f"| {name} | {r['ok']}/{r['runs']} | {ms(r['median_ms'])} | {ms(r['p95_ms'])} | "
              f"{ratio(r['median_ms'], k['median_ms'])} | {ratio(r['p95_ms'], k['p95_ms'])} | "
              f"{cpu(r['cpu_per_probe_ms'])} | `{r['command']}` |")
        w("")
        peers = [(single[n]["median_ms"], n) for n in ("hping3", "nping", "scapy")
                 if single[n]["ok"] > 0]
        if peers:
            fastest, fname = min(peers)
            met = k["ok"] == k["runs"] and k["median_ms"] <= fastest / 2
            targets.append((
                "time to verdict ≤ ½ of the fastest peer's (median)",
                f"kaprobe {ms(k['median_ms'])} vs {fname} {ms(fastest)} "
                f"({ratio(fastest, k['median_ms'])}); kaprobe answered {k['ok']}/{k['runs']}",
                met))
        imp = single["scapy"].get("import_ms")
        w("Where the time goes: hping3 and nping read answers through libpcap, and setting up "
          "its AF_PACKET ring (10–15 ms) and closing the socket (20–30 ms: the kernel waits "
          "for an RCU grace period) is most of their wall time (`strace -r`); kaprobe hands "
          "that last close to a child that outlives it. nping waits 1 s after its last probe "
          "by default; `--delay 1ms` removes that wait and still catches the answer. "
          + (f"scapy's import alone takes {ms(common.median(imp))} (median)." if imp else ""))
        w("")
        for name in ("hping3", "nping", "scapy"):
            r = single[name]
            if r["ok"] < r["runs"]:
                w(f"- {name}: the answer was not recognised in {r['runs'] - r['ok']} of "
                  f"{r['runs']} runs (counted in the timings all the same).")
        if L[-1] != "":
            w("")

    # ---------------------------------------------------------------- part 2
    if many:
        w("#### 2. Many connections, one probe each")
        w("")
        w("kaprobe `sweep --remote B:PORT --probes 1 --rate 1000000` (learning included; its "
          "default cap of 50,000 packets/s is lifted, as scapy's batch is unpaced too) against scapy "
          "`sr()` sending the same canonical probes in one batch (numbers learned beforehand; "
          "the script's import, packet building and `sr(timeout="
          f"{many.get('scapy_timeout', 2)})` all timed: `sr()` returns as soon as every probe "
          "is answered) and a bash `while read` loop running one `hping3 -A -c 1` per "
          "connection, timed over the first "
          f"{many['hping3_loop']['n'] if many.get('hping3_loop') else 'n/a'} connections and "
          "extrapolated linearly.")
        w("")
        w("| connections | tool | runs | wall (median) | ACK answers seen | CPU per probe | "
          "wall ÷ kaprobe | CPU ÷ kaprobe |")
        w("|---|---|---|---|---|---|---|---|")
        hl = many.get("hping3_loop")
        for s in many["sets"]:
            n = s["connections"]
            k, sc = s["kaprobe"], s["scapy"]
            kw = common.median(k["wall_ms"])
            kc = common.median(k["cpu_ms"]) / n
            w(f"| {n:,} | kaprobe sweep | {len(k['wall_ms'])} | {secs(kw)} | "
              f"{min(k['alive']):,} alive (min of runs) | {cpu(kc)} | 1× | 1× |")
            if sc["wall_ms"]:
                sw = common.median(sc["wall_ms"])
                scc = common.median(sc["cpu_ms"]) / n
                srm = common.median(sc["sr_ms"])
                w(f"| {n:,} | scapy sr() batch | {len(sc['wall_ms'])} | {secs(sw)} "
                  f"(sr() alone {secs(srm)}) | {min(sc['acks']):,} (min of runs; "
                  f"{min(sc['acks_exact']):,} with the exact numbers) | {cpu(scc)} | "
                  f"{ratio(sw, kw)} | {ratio(scc, kc)} |")
                if n == 10000:
                    targets.append(("sweep of 10,000 ≥ 50× faster than scapy's batch",
                                    f"kaprobe {secs(kw)} vs scapy {secs(sw)} ({ratio(sw, kw)})",
                                    sw / kw >= 50))
            if hl:
                per = hl["wall_ms"] / hl["n"]
                cper = hl["cpu_ms"] / hl["n"]
                w(f"| {n:,} | hping3 shell loop | 1 ({hl['n']} probes) | {secs(per * n)} "
                  f"(extrapolated; {secs(hl['wall_ms'])} for {hl['n']}) | "
                  f"{hl['answered']}/{hl['n']} | {cpu(cper)} | {ratio(per * n, kw)} | "
                  f"{ratio(cper, kc)} |")
        w("")

    # ---------------------------------------------------------------- part 3
    if single or many:
        w("#### 3. CPU per probe (user+sys)")
        w("")
        w("| tool | one probe per run | in a batch (10,000 or the largest set) |")
        w("|---|---|---|")
        big = many["sets"][-1] if many else None
        kb = common.median(big["kaprobe"]["cpu_ms"]) / big["connections"] if big else None
        sb = (common.median(big["scapy"]["cpu_ms"]) / big["connections"]
              if big and big["scapy"]["cpu_ms"] else None)
        hl = many.get("hping3_loop") if many else None
        hb = hl["cpu_ms"] / hl["n"] if hl else None
        rows = [("kaprobe", kb), ("hping3", hb), ("nping", None), ("scapy", sb)]
        k1 = single["kaprobe"]["cpu_per_probe_ms"] if single else None
        for name, batch in rows:
            one = single[name]["cpu_per_probe_ms"] if single else None
            bpart = "—" if batch is None else (
                f"{cpu(batch)} ({ratio(batch, kb)})" if name != "kaprobe" else cpu(batch))
            opart = cpu(one) + ("" if name == "kaprobe" else f" ({ratio(one, k1)})")
            w(f"| {name} | {opart} | {bpart} |")
        w("")

    # ---------------------------------------------------------------- part 4
    if dead:
        runs = dead["runs"]
        w(f"#### 4. Detection of a dead peer ({len(runs)} runs)")
        w("")
        w("time = 1 s, intvl = 1 s, probes = 3 for both, so the ideal is 4 s after the last "
          "segment received. Each run: two fresh connections to an echo server; one byte out "
          "and back on each (t0 = when `recv()` returns it), then the peer is blackholed "
          "(all its TCP dropped). kaprobe: `probe FLOW --time 1s --intvl 1s --probes 3`, "
          "started right after its connection's exchange; the moment is when its `dead` "
          "verdict line arrives. Kernel: a Python socket with `SO_KEEPALIVE`, "
          "`TCP_KEEPIDLE=1`, `TCP_KEEPINTVL=1`, `TCP_KEEPCNT=3`, the moment `recv()` fails "
          "with `ETIMEDOUT`. Error = moment − (t0 + 4 s).")
        w("")
        w("| detector | verdicts | error: median | min | max | median abs error ÷ kaprobe's |")
        w("|---|---|---|---|---|---|")
        ke = [r["kaprobe_error_ms"] for r in runs if r["kaprobe_error_ms"] is not None]
        ne = [r["kernel_error_ms"] for r in runs if r["kernel_error_ms"] is not None]
        kv = {}
        for r in runs:
            kv[str(r["kaprobe_verdict"])] = kv.get(str(r["kaprobe_verdict"]), 0) + 1
        nv = {}
        for r in runs:
            nv[str(r["kernel_error"])] = nv.get(str(r["kernel_error"]), 0) + 1
        kabs = common.median([abs(x) for x in ke]) if ke else None
        nabs = common.median([abs(x) for x in ne]) if ne else None
        fmtv = lambda d: ", ".join(f"{v}× {k}" for k, v in sorted(d.items()))
        w(f"| kaprobe | {fmtv(kv)} | {sgn(common.median(ke))} | {sgn(min(ke, default=None))} | "
          f"{sgn(max(ke, default=None))} | 1× |")
        w(f"| kernel SO_KEEPALIVE | {fmtv(nv)} | {sgn(common.median(ne))} | "
          f"{sgn(min(ne, default=None))} | {sgn(max(ne, default=None))} | {ratio(nabs, kabs)} |")
        w("")
        kworst = max((abs(x) for x in ke), default=None)
        nworst = max((abs(x) for x in ne), default=None)
        all_dead = kv.get("dead", 0) == len(runs)
        targets.append((
            "dead-peer detection error ≤ 10 ms, no worse than the kernel's",
            f"kaprobe worst {ms(kworst)}, median {ms(kabs)}; kernel worst {ms(nworst)}, "
            f"median {ms(nabs)}; kaprobe said dead in {kv.get('dead', 0)}/{len(runs)}",
            all_dead and kworst is not None and kworst <= 10 and nabs is not None
            and kabs <= nabs and kworst <= nworst))

    if targets:
        w("#### Targets")
        w("")
        w("| target | measured | |")
        w("|---|---|---|")
        for name, what, met in targets:
            w(f"| {name} | {what} | {'met' if met else '**not met**'} |")
        w("")

    text = "\n".join(L)
    print(text)
    with open(args.out, "w") as f:
        f.write(text)


def sgn(x):
    return "n/a" if x is None else f"{x:+.1f} ms"


main()
