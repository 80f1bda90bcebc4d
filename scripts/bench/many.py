"""Part 2 (and the batch half of part 3): one probe on each of many idle connections.

usage: many.py --kaprobe BIN --hping3 BIN --python VENV_PYTHON --set N=IP:PORT [--set ...]
               --sweep-runs K --scapy-runs K --hping-n 100 --tmp DIR --out RESULT.json
Runs inside the client namespace. For each set (all established connections to IP:PORT,
N of them): kaprobe `sweep --probes 1` against scapy's sr() of the same N probes in one batch,
taking turns; then, on the first set, a shell loop of hping3 over its first --hping-n
connections (extrapolated per probe). The numbers for scapy and hping3 are learned once,
before the timed runs, from kaprobe's `learned` events. Every connection is left alone for
550 ms between two probes (the rate limits of 500 ms per socket).
"""
import argparse
import json
import os
import re
import time

import common

SPACING = 0.6


def main():
    ap = argparse.ArgumentParser()
    for a in ("kaprobe", "hping3", "python", "tmp", "out"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--set", action="append", required=True)
    ap.add_argument("--sweep-runs", type=int, default=5)
    # scapy's sr() sends its batch unpaced: kaprobe is measured with its rate cap raised to
    # match (its default, 50,000 packets/s, is a safety limit for real networks).
    ap.add_argument("--sweep-rate", type=int, default=1000000)
    ap.add_argument("--scapy-runs", default="3")  # one number, or one per set: "3,2"
    ap.add_argument("--scapy-timeout", type=float, default=2.0)
    ap.add_argument("--hping-n", type=int, default=100)
    args = ap.parse_args()
    common.become_subreaper()
    here = os.path.dirname(os.path.abspath(__file__))
    scapy_runs = [int(x) for x in args.scapy_runs.split(",")]
    results = {"sets": [], "hping3_loop": None}

    for idx, spec in enumerate(args.set):
        n, remote = spec.split("=", 1)
        n = int(n)
        nums, summary = common.learn_numbers(
            args.kaprobe, os.path.join(args.tmp, f"learn{n}.out"), "--remote", remote)
        if len(nums) != n:
            raise SystemExit(f"many: learned {len(nums)} of {n} connections to {remote} ({summary})")
        rows = sorted([loc, rem, s, r] for (loc, rem), (s, r) in nums.items())
        numfile = os.path.join(args.tmp, f"numbers{n}.json")
        with open(numfile, "w") as f:
            json.dump(rows, f)
        entry = {"connections": n, "remote": remote,
                 "kaprobe": {"wall_ms": [], "cpu_ms": [], "alive": [], "elapsed_ms": [],
                             "rate": args.sweep_rate},
                 "scapy": {"wall_ms": [], "cpu_ms": [], "acks": [], "acks_exact": [],
                           "answered": [], "import_ms": [], "build_ms": [], "sr_ms": []}}
        k_argv = [args.kaprobe, "--json", "sweep", "--remote", remote, "--probes", "1",
                  "--rate", str(args.sweep_rate)]
        s_argv = [args.python, os.path.join(here, "scapy_batch.py"), numfile,
                  str(args.scapy_timeout)]
        out = os.path.join(args.tmp, "many.out")
        sr = scapy_runs[min(idx, len(scapy_runs) - 1)]
        for i in range(max(args.sweep_runs, sr)):
            if i < args.sweep_runs:
                time.sleep(SPACING)
                wall, cpu, rc = common.run_timed(k_argv, out)
                summ = next((e for e in common.read_json_lines(out) if e.get("event") == "summary"),
                            {})
                k = entry["kaprobe"]
                k["wall_ms"].append(wall)
                k["cpu_ms"].append(cpu)
                k["alive"].append(summ.get("alive", 0))
                k["elapsed_ms"].append(summ.get("elapsed_ms"))
                print(f"  {n:>6} kaprobe sweep: {wall:8.1f} ms, cpu {cpu:7.1f} ms, "
                      f"alive {summ.get('alive')} (exit {rc})", flush=True)
            if i < sr:
                time.sleep(SPACING)
                wall, cpu, rc = common.run_timed(s_argv, out)
                res = next((e for e in common.read_json_lines(out) if "acks" in e), None)
                s = entry["scapy"]
                s["wall_ms"].append(wall)
                s["cpu_ms"].append(cpu)
                if res is None:
                    with open(out) as f:
                        s.setdefault("failures", []).append(f.read()[-400:])
                    res = {}
                for key in ("acks", "acks_exact", "answered", "import_ms", "build_ms", "sr_ms"):
                    s[key].append(res.get(key, 0))
                print(f"  {n:>6} scapy sr():    {wall:8.1f} ms, cpu {cpu:7.1f} ms, "
                      f"ACKs {res.get('acks')} (exact {res.get('acks_exact')}), "
                      f"sr() {res.get('sr_ms', 0):.0f} ms", flush=True)
        results["sets"].append(entry)

        if idx == 0 and args.hping_n > 0:
            # A shell loop of hping3, one connection after the other, over the first
            # hping_n connections of this set.
            dst, dport = common.split_hostport(remote)
            lst = os.path.join(args.tmp, "hping.list")
            with open(lst, "w") as f:
                for loc, _, s_nxt, r_nxt in rows[:args.hping_n]:
                    f.write(f"{common.split_hostport(loc)[1]} {(s_nxt - 1) % 2**32} {r_nxt}\n")
            loop = (f'while read sp sq ak; do "{args.hping3}" -A -c 1 -s "$sp" -k -p {dport} '
                    f'-M "$sq" -L "$ak" {dst}; done')
            time.sleep(SPACING)
            wall, cpu, rc = common.run_timed(["/bin/bash", "-c", loop], out, stdin_path=lst)
            with open(out) as f:
                text = f.read()
            answered = len(re.findall(rf"ip={re.escape(dst)} .*sport={dport} flags=A ", text))
            results["hping3_loop"] = {"n": args.hping_n, "wall_ms": wall, "cpu_ms": cpu,
                                      "answered": answered, "command": loop}
            print(f"  {args.hping_n:>6} hping3 loop:   {wall:8.1f} ms, cpu {cpu:7.1f} ms, "
                  f"answered {answered}", flush=True)

    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


main()
