#!/usr/bin/env python3
"""Health checks at scale (issue 33), interleaved against checks off in the same run.

Usage: bench/health_checks_scale.py BINARY [N] [ROUND_SECONDS] [ROUNDS]
       (defaults: 10000 instances, 10 s rounds, 4 rounds of each mode; stdlib only)

N instance addresses (127.0.X.Y:P: one listener on 0.0.0.0:P that timestamps every accept),
one application and one TCP redirection each (`apply`), the node's checks every 5 s with a
2 s timeout. The same server then alternates rounds with the checks on and off (the config
file rewritten and reloaded with SIGHUP; ABBA order, so that a drift of the machine weighs on
both modes alike), each measured after a settle of one timeout. Per round:

- the server's CPU (utime+stime of the whole process, from /proc) as % of one core;
- the connections the checks open per second (the listener's accepts), against the
  expected N / interval;
- the most accepts in any 100 ms window over the round's average per 100 ms (1.00: perfectly
  even; a thundering herd would be about 50 at a 5 s interval).

It prints a markdown table of the rounds and the ratios: CPU with the checks over CPU without
(each on round against the off round next to it), and the checks' own CPU (the difference,
also per check), connections/s over the expected rate, the busiest window over the average.
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import md_table, raise_nofile, read_stat  # noqa: E402

INTERVAL = 5.0
TIMEOUT = 2.0
API = ("127.0.0.1", 7391)
TOKEN = "t0ken-for-the-measure"


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    window = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    raise_nofile()
    d = tempfile.mkdtemp(prefix="health-bench-")

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    stamps = []

    def accept():
        while True:
            c, _ = listener.accept()
            stamps.append(time.monotonic())
            c.close()

    threading.Thread(target=accept, daemon=True).start()

    cfg = os.path.join(d, "config.toml")

    def write_cfg(enabled):
        with open(cfg, "w") as f:
            f.write(f"[health_checks]\nenabled = {'true' if enabled else 'false'}\n"
                    f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
                    "[[namespace]]\nname = \"default\"\nports = \"10000-29999\"\n")

    write_cfg(True)
    env = dict(os.environ, TCP_REDIRS_CONFIG_DIR=d, TCP_REDIRS_TOKEN=TOKEN, TCP_REDIRS_ADMIN_TOKEN=TOKEN)
    log = open(os.path.join(d, "log"), "w")
    srv = subprocess.Popen([binary, "serve", "--listen", f"{API[0]}:{API[1]}", "--public-bind", "127.0.0.1",
                            "--data-dir", os.path.join(d, "data"), "--config", cfg, "--threads", "1",
                            "--port-mode", "bound"], env=env, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(API, 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or srv.poll() is not None:
                    sys.exit(f"the server did not start; its log is {d}/log")
                time.sleep(0.1)
        apps = []
        for i in range(n):
            a, b = divmod(i, 250)
            apps.append(f'[[application]]\nname = "a{i}"\ninstances = [{{ address = "127.0.{a + 1}.{b + 1}:{port}" }}]\n'
                        '[[application.redirection]]\nnamespace = "default"\n')
        manifest = os.path.join(d, "m.toml")
        with open(manifest, "w") as f:
            f.write("\n".join(apps))
        started = time.time()
        r = subprocess.run([binary, "--server", f"http://{API[0]}:{API[1]}", "apply", "-f", manifest, "-F", "json"],
                           env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            sys.exit(f"apply failed ({r.returncode}): {r.stderr[:500]}")
        print(f"apply of {n} applications: {time.time() - started:.1f} s", flush=True)

        def cpu():
            stat = read_stat(srv.pid)
            if stat is None:
                sys.exit(f"the server is gone; its log is {d}/log")
            return stat[1]

        # Every address's first check is in.
        time.sleep(INTERVAL + 1)
        results = []  # (mode, cpu %, accepts/s, busiest window / average)
        order = [m for r in range(rounds) for m in (("on", "off") if r % 2 == 0 else ("off", "on"))]
        current = True
        for mode in order:
            enabled = mode == "on"
            if enabled != current:
                write_cfg(enabled)
                srv.send_signal(signal.SIGHUP)
                current = enabled
            # A check in flight at a switch ends within the timeout; a new schedule is even
            # from its start (every address at its phase of the interval).
            time.sleep(TIMEOUT + 0.5)
            c0, t0, s0 = cpu(), time.monotonic(), len(stamps)
            time.sleep(window)
            c1, t1 = cpu(), time.monotonic()
            seen = [s for s in stamps[s0:] if t0 <= s < t1]
            rate = len(seen) / (t1 - t0)
            buckets = [0] * (int((t1 - t0) * 10) + 1)
            for s in seen:
                buckets[int((s - t0) * 10)] += 1
            full = buckets[:int((t1 - t0) * 10)]  # the last, partial window left out
            peak = (max(full) / (rate / 10)) if rate > 0 and full else 0.0
            results.append((mode, 100 * (c1 - c0) / (t1 - t0), rate, peak))
            busiest = f", busiest 100 ms {peak:.2f}x the average" if enabled else ""
            print(f"{mode:>3}: CPU {results[-1][1]:5.1f} % of a core, {rate:7.1f} connections/s{busiest}", flush=True)
    finally:
        srv.terminate()
        srv.wait(timeout=30)

    on = [r for r in results if r[0] == "on"]
    off = [r for r in results if r[0] == "off"]
    # Each on round against the off round next to it (ABBA: the pairs are (0,1), (2,3), ...).
    pairs = [(results[i], results[i + 1]) for i in range(0, len(results) - 1, 2)]
    pairs = [(a, b) if a[0] == "on" else (b, a) for a, b in pairs]
    expected = n / INTERVAL
    med = statistics.median

    def span(xs, fmt):
        return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})"

    print()
    print(md_table(["round", "mode", "CPU, % of a core", "connections/s", "busiest 100 ms / average"],
                   [[str(i + 1), m, f"{c:.1f}", f"{r:.0f}", f"{p:.2f}" if m == "on" else "-"]
                    for i, (m, c, r, p) in enumerate(results)]))
    print()
    print(md_table(["figure", "median (range)"], [
        # /proc counts CPU in ticks (10 ms): an idle round can read 0, hence the floor of one
        # tick per round in the ratio.
        ["CPU with checks / without (paired rounds)",
         span([a[1] / max(b[1], 100 / os.sysconf("SC_CLK_TCK") / window) for a, b in pairs], "{:.0f}x")],
        ["the checks' CPU, % of a core (on - off)", span([a[1] - b[1] for a, b in pairs], "{:.1f}")],
        ["CPU per check, µs (on - off, over the checks made)",
         span([1e4 * (a[1] - b[1]) / max(a[2], 1) for a, b in pairs], "{:.0f}")],
        ["CPU with checks off, % of a core", span([r[1] for r in off], "{:.2f}")],
        [f"connections/s / expected ({expected:.0f}/s)", span([r[2] / expected for r in on], "{:.3f}x")],
        ["connections/s with checks off", span([r[2] for r in off], "{:.1f}")],
        ["busiest 100 ms window / average", span([r[3] for r in on], "{:.2f}x")],
    ]))
    print(f"\n{n} instances, checked every {INTERVAL:g} s (timeout {TIMEOUT:g} s), {rounds} rounds of each mode, "
          f"{window:g} s each; server log in {d}/log", flush=True)


if __name__ == "__main__":
    main()
