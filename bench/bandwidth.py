#!/usr/bin/env python3
"""How close a bandwidth-limited redirection runs to its limit (issue 34), each direction.

    cargo build --release && python3 bench/bandwidth.py [target/release/tcp-redirs]

One server in bound mode on 127.0.0.1 (no BPF program: it runs in the machine's network
namespace, loopback only), one iperf3 server behind it, and for each limit of LIMITS (bytes
per second) one redirection with `--bandwidth-limit`. For each, RUNS runs of iperf3 for
DURATION seconds, one connection, client to application (the `in` bucket) then with -R
(application to client, `out`): the bytes the receiver counted over its own measured time,
divided by the limit. The first 2 s of each run are left out (iperf3 -O 2): a bucket earns
a burst of one second while the other direction runs, which would count as speed. Above 1
is what the limit lets past, below 1 what the throttling loses. Prints one Markdown table (median of the runs, and the lowest and
highest), the forwarder's CPU seconds per GB moved and its CPU in % of a core over the runs
(iperf3's start and end included), and writes it to RESULTS.

Settings (environment): LIMITS=1M,10M,100M,1G RUNS=3 DURATION=5
RESULTS=bench/bandwidth-results.md. Needs iperf3.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from benchlib import (HOST, Procs, free_ports, group_cpu, run_cli, server_env,  # noqa: E402
                      start_serve, wait_port)

UNITS = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}


def parse_rate(text):
    """`10M` as 10,000,000 (decimal units, as `--bandwidth-limit` reads them)."""
    text = text.strip().upper()
    return int(float(text[:-1]) * UNITS[text[-1]]) if text[-1] in UNITS else int(text)


def iperf(port, duration, reverse):
    """Bytes per second the receiver counted, one connection."""
    # -O 2: the first 2 s are left out of the count, so that what a bucket earned while the
    # other direction ran (a burst of one second) does not count as speed.
    argv = ["iperf3", "-c", HOST, "-p", str(port), "-t", str(duration), "-O", "2", "-J",
            "--connect-timeout", "3000"]
    if reverse:
        argv.append("-R")
    for _ in range(3):
        r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30)
        try:
            doc = json.loads(r.stdout)
        except json.JSONDecodeError:
            time.sleep(1)
            continue
        if "error" in doc:      # "the server is busy": the previous test is still closing
            time.sleep(1)
            continue
        recv = doc["end"]["sum_received"]
        return recv["bytes"] / recv["seconds"], recv["bytes"]
    raise RuntimeError(f"iperf3 through port {port} failed three times: {r.stderr.strip()[:200]}")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(HERE), "target/release/tcp-redirs")
    if not os.access(binary, os.X_OK):
        sys.exit(f"error: {binary} is not executable: cargo build --release first")
    if not shutil.which("iperf3"):
        sys.exit("error: iperf3 is needed (apt-get install iperf3)")
    limits = [(t, parse_rate(t)) for t in os.environ.get("LIMITS", "1M,10M,100M,1G").split(",")]
    runs, duration = int(os.environ.get("RUNS", "3")), int(os.environ.get("DURATION", "5"))
    results = os.environ.get("RESULTS", os.path.join(HERE, "bandwidth-results.md"))
    tmp = tempfile.mkdtemp(prefix="tcp-redirs-bandwidth.")
    procs = Procs(tmp)
    try:
        (iperf_port,) = free_ports(1)
        procs.start("iperf3", ["iperf3", "-s", "-B", HOST, "-p", str(iperf_port)],
                    log_path=os.path.join(tmp, "iperf3.log"))
        wait_port(iperf_port, what="iperf3")
        cfg = os.path.join(tmp, "cfg")
        p, url = start_serve(procs, "serve", [binary, "serve", "--listen", f"{HOST}:0", "--data-dir",
                                              os.path.join(tmp, "data"), "--public-bind", HOST],
                             server_env(cfg, "bench"), os.path.join(tmp, "serve.log"))
        env = dict(os.environ, TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN="bench", TCP_REDIRS_CONFIG_DIR=cfg)
        rows = []
        for text, rate in limits:
            # One application a limit: an application has one TCP redirection a namespace.
            app = f"bw-{text}"
            run_cli(binary, ["apps", "create", app, "--instance", f"{HOST}:{iperf_port}"], env)
            added = json.loads(run_cli(binary, ["add", "--app", app, "--namespace", "default", "-F", "json",
                                                "--bandwidth-limit", text], env))
            port = int(added["port"])
            for reverse, direction in ((False, "in (client to application)"), (True, "out (application to client)")):
                ratios, cpu, moved, spent = [], 0.0, 0, 0.0
                for _ in range(runs):
                    c0, t0 = group_cpu(p.pid), time.monotonic()
                    got, n = iperf(port, duration, reverse)
                    cpu += group_cpu(p.pid) - c0
                    spent += time.monotonic() - t0
                    moved += n
                    ratios.append(got / rate)
                rows.append((text, direction, statistics.median(ratios), min(ratios), max(ratios),
                             cpu / (moved / 1e9) if moved else float("nan"), 100 * cpu / spent))
                print(f"[bandwidth] {text} {direction}: {statistics.median(ratios):.3f} of the limit", flush=True)
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
        lines = ["# A bandwidth-limited redirection against its limit", "",
                 "`python3 bench/bandwidth.py` (bound mode, one connection, iperf3 "
                 f"{runs} runs of {duration} s each way; {version}; {time.strftime('%Y-%m-%d %H:%M')})", "",
                 "| limit (bytes/s) | direction | achieved / limit (median) | lowest | highest | forwarder CPU-s per GB | forwarder CPU, % of a core |",
                 "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        lines += [f"| {t} | {d} | {m:.3f} | {lo:.3f} | {hi:.3f} | {c:.2f} | {u:.2f} |" for t, d, m, lo, hi, c, u in rows]
        text = "\n".join(lines) + "\n"
        print(text)
        with open(results, "w") as f:
            f.write(text)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
