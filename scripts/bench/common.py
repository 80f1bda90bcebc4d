"""Shared helpers for scripts/bench/*.py: timed child runs with CPU accounting, statistics.

Every harness runs inside the lab's client namespace (bench.sh starts it with
`ip netns exec`), so the tools it times need no namespace switch of their own.
"""
import ctypes
import json
import os
import resource
import time

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper():
    """Orphans of the tools we run (kaprobe hands its last AF_PACKET close to a short-lived
    child) are reparented to us, so their CPU time lands in RUSAGE_CHILDREN too."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _reap_all():
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def _cpu_children():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_timed(argv, stdout_path, stdin_path=os.devnull, env=None):
    """posix_spawn argv with stdout to stdout_path (stderr too), wait for it.

    Returns (wall_ms exec-to-exit, cpu_ms user+sys of it and every descendant, exit code).
    The wall time ends when the process itself exits; the CPU time also covers descendants
    that outlive it (reaped afterwards, outside the timed region).
    """
    _reap_all()
    cpu0 = _cpu_children()
    out = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    inp = os.open(stdin_path, os.O_RDONLY)
    actions = [
        (os.POSIX_SPAWN_DUP2, inp, 0),
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, out, 2),
    ]
    try:
        t0 = time.perf_counter_ns()
        pid = os.posix_spawnp(argv[0], argv, env if env is not None else os.environ,
                              file_actions=actions)
        _, status = os.waitpid(pid, 0)
        wall = (time.perf_counter_ns() - t0) / 1e6
    finally:
        os.close(out)
        os.close(inp)
    _reap_all()
    cpu = (_cpu_children() - cpu0) * 1000.0
    return wall, cpu, os.waitstatus_to_exitcode(status)


def median(xs):
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return None
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def p95(xs):
    """Nearest-rank 95th percentile."""
    s = sorted(xs)
    if not s:
        return None
    k = -(-95 * len(s) // 100)  # ceil(0.95 n)
    return s[max(1, k) - 1]


def json_lines(text):
    """The JSON objects among the lines of `text` (other lines are skipped)."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def read_json_lines(path):
    with open(path) as f:
        return json_lines(f.read())


def learn_numbers(kaprobe, out_path, *args):
    """Runs `kaprobe --json -v sweep ARGS --probes 1` (outside any timed region) and returns
    {(local, remote): (snd_nxt, rcv_nxt)} from its `learned` events, and its summary."""
    run_timed([kaprobe, "--json", "-v", "sweep", *args, "--probes", "1"], out_path)
    nums, summary = {}, None
    for ev in read_json_lines(out_path):
        if ev.get("event") == "learned":
            local, remote = ev["flow"].split("-", 1)
            nums[(local, remote)] = (ev["snd_nxt"], ev["rcv_nxt"])
        elif ev.get("event") == "summary":
            summary = ev
    return nums, summary


def split_hostport(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)
