"""Part 4: how late a dead peer is noticed, kaprobe against the kernel's own keepalive.

usage: dead.py serve IP:PORT                 (in the peer namespace: echo one byte back)
       dead.py client --kaprobe BIN --lab NAME --labsh PATH --remote IP:PORT --local-ip IP
                      --runs N --out RESULT.json      (in the client namespace)

Each run opens two fresh connections to the echo server:
  - one with SO_KEEPALIVE, TCP_KEEPIDLE=1, TCP_KEEPINTVL=1, TCP_KEEPCNT=3, left in a recv();
  - one without, watched by `kaprobe probe FLOW --time 1s --intvl 1s --probes 3`.
On each, one byte goes out and comes back (the last segment the client receives); the time
recv() returns is that connection's t0. Right after both exchanges the peer is blackholed
(all its TCP dropped, in and out). The ideal moment to give up is t0 + time + probes x intvl
= t0 + 4 s; the error is (moment kaprobe prints `dead` | moment recv() fails with
ETIMEDOUT) - (t0 + 4 s).
"""
import errno
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

IDEAL_S = 4.0


def serve(addr):
    host, port = addr.rsplit(":", 1)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, int(port)))
    ls.listen(64)
    print("ready", flush=True)

    def echo(c):
        try:
            while True:
                b = c.recv(1)
                if not b:
                    break
                c.sendall(b)
        except OSError:
            pass
        # Keep the socket open (no FIN): the client side decides when the test is over.
        time.sleep(30)
        c.close()

    while True:
        c, _ = ls.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()


def client(argv):
    import argparse
    ap = argparse.ArgumentParser()
    for a in ("kaprobe", "lab", "labsh", "remote", "local-ip", "out"):
        ap.add_argument("--" + a, required=True)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    host, port = args.remote.rsplit(":", 1)
    remote = (host, int(port))
    runs = []
    for i in range(args.runs):
        kk = socket.socket()
        kk.bind((args.local_ip, 0))
        kk.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        kk.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
        kk.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        kk.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        kk.connect(remote)
        kp = socket.socket()
        kp.bind((args.local_ip, 0))
        kp.connect(remote)
        flow = "%s:%d-%s:%d" % (kp.getsockname() + kp.getpeername())
        time.sleep(0.2)

        kp.sendall(b"x")
        assert kp.recv(1) == b"x"
        t0_kp = time.monotonic()
        proc = subprocess.Popen([args.kaprobe, "--json", "probe", flow, "--time", "1s",
                                 "--intvl", "1s", "--probes", "3"], stdout=subprocess.PIPE)
        kk.sendall(b"x")
        assert kk.recv(1) == b"x"
        t0_k = time.monotonic()
        subprocess.run([args.labsh, "blackhole", args.lab], check=True)
        t_bh = time.monotonic()

        kk.setblocking(False)
        t_k = t_kp = None
        k_err = kp_verdict = None
        kp_out = b""
        deadline = time.monotonic() + 10
        fds = {kk.fileno(): "kernel", proc.stdout.fileno(): "kaprobe"}
        poll = select.poll()
        for fd in fds:
            poll.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
        while (t_k is None or t_kp is None) and time.monotonic() < deadline:
            for fd, _ in poll.poll(100):
                now = time.monotonic()
                if fds[fd] == "kernel":
                    try:
                        data = kk.recv(1)
                        k_err = "eof" if not data else "data"
                    except BlockingIOError:
                        continue
                    except OSError as e:
                        k_err = errno.errorcode.get(e.errno, str(e.errno))
                    t_k = now
                    poll.unregister(fd)
                else:
                    chunk = os.read(fd, 65536)
                    kp_out += chunk
                    for line in kp_out.splitlines():
                        if line.startswith(b"{"):
                            ev = json.loads(line)
                            if ev.get("event") == "verdict":
                                kp_verdict = ev["verdict"]
                                t_kp = now
                    if t_kp is not None or not chunk:
                        poll.unregister(fd)
                        if t_kp is None:
                            t_kp = now
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run([args.labsh, "unblackhole", args.lab], check=True)
        kk.close()
        kp.close()
        r = {
            "kaprobe_verdict": kp_verdict,
            "kaprobe_error_ms": None if t_kp is None else (t_kp - t0_kp - IDEAL_S) * 1000,
            "kernel_error": k_err,
            "kernel_error_ms": None if t_k is None else (t_k - t0_k - IDEAL_S) * 1000,
            "blackhole_after_ms": (t_bh - t0_kp) * 1000,
        }
        runs.append(r)
        print(f"  run {i + 1}: kaprobe {kp_verdict} at 4 s {fmt(r['kaprobe_error_ms'])}, "
              f"kernel {k_err} at 4 s {fmt(r['kernel_error_ms'])} "
              f"(blackholed {r['blackhole_after_ms']:.0f} ms after the last exchange)", flush=True)
        time.sleep(0.3)
    with open(args.out, "w") as f:
        json.dump({"runs": runs}, f, indent=1)


def fmt(ms):
    return "n/a" if ms is None else f"{ms:+.1f} ms"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "client":
        client(sys.argv[2:])
    else:
        sys.exit(__doc__)
