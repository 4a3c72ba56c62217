#!/usr/bin/env python3
"""What a steered UDP port costs against a bound one (issue 32), side by side in one network
namespace (stdlib only). Run it through bench/udp_steered.sh, which enters the namespace and
builds the load generator.

  udp_steered.py run TMPDIR

Two tcp-redirs servers, one `--port-mode bound`, one `--port-mode steered`, each given UDPS
(10,000) UDP redirections through one `apply` to one udpload echo backend. Measured on each:
the server's descriptors and resident memory before and after the apply, the apply's time;
then, on one of its ports, round trips of 64 B datagrams (bench/udpload/udpload client, FLOWS
flows, 64 in flight, DURATION s, RUNS runs, the modes interleaved) with the server's CPU per
datagram; and one more run under `strace -c -f` for the system calls per datagram.
"""

import json
import os
import re
import subprocess
import sys
import time

sys.dont_write_bytecode = True
from benchlib import (HERE, HOST, Procs, env_int, group_cpu_exact, log, raise_nofile, run_cli,  # noqa: E402
                      server_env, source_revision, start_serve, vmrss_kib, wait_bound)

UDPS = env_int("UDPS", 10_000)
RUNS = env_int("RUNS", 5)
DURATION = env_int("DURATION", 3)
FLOWS = env_int("FLOWS", 100)
BIN = os.environ.get("TCP_REDIRS_BIN") or os.path.join(os.path.dirname(HERE), "target/release/tcp-redirs")
LOAD = os.path.join(HERE, "udpload/udpload")
MODES = {"bound": "10001-21000", "steered": "21001-32000"}
ECHO_PORT = 1500
CLIENT_BASE = 2000  # the client's source ports: CLIENT_BASE .. CLIENT_BASE + FLOWS - 1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def udpload(port, flows, duration, base):
    argv = [LOAD, "client", HOST, str(port), "-s", "64", "-f", str(flows), "-b", str(base), "-w", "64",
            "-d", str(duration), "-P", "60"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise RuntimeError(f"udpload: {line.strip()} {p.stderr.read().strip()}")
    return p


def finish(p, duration):
    out, err = p.communicate(timeout=duration + 30)
    if p.returncode != 0:
        raise RuntimeError(f"udpload exited {p.returncode}: {err.strip()}")
    return json.loads(out.strip().splitlines()[-1])


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    raise_nofile()
    tmp = sys.argv[2]
    procs = Procs(tmp)
    try:
        return run(tmp, procs)
    finally:
        procs.stop_all()


def run(tmp, procs):
    procs.start("udpload echo", [LOAD, "echo", str(ECHO_PORT)], log_path=os.path.join(tmp, "echo.log"))
    wait_bound(ECHO_PORT, "udp", what="udpload echo", alive=procs.check_alive)
    manifest = os.path.join(tmp, "udp.toml")
    with open(manifest, "w") as f:
        for i in range(UDPS):
            f.write(f'[[application]]\nname = "u-{i}"\ninstances = [{{ address = "{HOST}:{ECHO_PORT}" }}]\n\n'
                    '[[application.redirection]]\nnamespace = "default"\nprotocol = "udp"\n\n')
    servers, rows = {}, []
    for mode, ports in MODES.items():
        cfg, data, conf = (os.path.join(tmp, f"{mode}-{x}") for x in ("cfg", "data", "conf.toml"))
        with open(conf, "w") as f:
            f.write(f'[[namespace]]\nname = "default"\nports = "{ports}"\n')
        p, url = start_serve(procs, f"{mode} serve",
                             [BIN, "serve", "--listen", f"{HOST}:0", "--data-dir", data, "--public-bind", HOST,
                              "--config", conf, "--port-mode", mode],
                             server_env(cfg, "bench"), os.path.join(tmp, f"{mode}.log"))
        env = dict(os.environ, TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN="bench", TCP_REDIRS_CONFIG_DIR=cfg)
        before, rss0 = fds(p.pid), vmrss_kib(p.pid)
        t0 = time.monotonic()
        out = run_cli(BIN, ["apply", "-f", manifest, "-F", "json"], env, timeout=600)
        took = time.monotonic() - t0
        ports = [c["port"] for c in json.loads(out)["changes"] if c.get("kind") == "redirection"]
        after, rss1 = fds(p.pid), vmrss_kib(p.pid)
        log(f"{mode}: {len(ports)} UDP redirections in {took:.1f} s; descriptors {before} -> {after}; "
            f"RSS {rss0} -> {rss1} KiB")
        servers[mode] = (p, ports)
        rows.append((mode, len(ports), took, before, after, rss0, rss1))
    results = {m: {"rtps": [], "cpu": []} for m in MODES}
    for r in range(RUNS):
        order = list(MODES) if r % 2 == 0 else list(reversed(MODES))
        for mode in order:
            p, ports = servers[mode]
            u = udpload(ports[len(ports) // 2], FLOWS, DURATION, CLIENT_BASE)
            c0 = group_cpu_exact(p.pid)
            res = finish(u, DURATION)
            c1 = group_cpu_exact(p.pid)
            per = (c1 - c0) / (2 * res["received"]) * 1e6 if res["received"] else float("nan")
            results[mode]["rtps"].append(res["rtps"])
            results[mode]["cpu"].append(per)
            log(f"run {r + 1} {mode}: {res['rtps']:,.0f} round trips/s, {per:.2f} CPU-us/datagram, lost {res['lost']}")
    syscalls = {}
    for mode in MODES:
        p, ports = servers[mode]
        u = udpload(ports[len(ports) // 2], FLOWS, DURATION, CLIENT_BASE)
        trace = os.path.join(tmp, f"{mode}.strace")
        s = subprocess.Popen(["strace", "-c", "-f", "-o", trace, "-p", str(p.pid)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        res = finish(u, DURATION)
        s.send_signal(2)
        s.wait(timeout=30)
        calls = {}
        with open(trace) as f:
            for line in f:
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
                if m and m.group(2) != "total":
                    calls[m.group(2)] = int(m.group(1))
        datagrams = 2 * res["received"]
        syscalls[mode] = (datagrams, calls)
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        log(f"{mode} under strace: {datagrams} datagrams; " +
            ", ".join(f"{k} {v / datagrams:.3f}" for k, v in top) + f"; all {sum(calls.values()) / datagrams:.3f}")

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]
    out = ["# Steered against bound UDP ports", "", "`bench/udp_steered.sh`", "",
           f"- tcp-redirs {source_revision()} (`{BIN}`), in a network namespace of its own; "
           f"{UDPS:,} UDP redirections per server through one `apply`, all to one udpload echo",
           f"- round trips: udpload client, 64 B, {FLOWS} flows, 64 in flight, {DURATION} s, median of {RUNS} "
           "runs, the modes interleaved; CPU: the server's threads (schedstat) over the run, per datagram "
           "(a round trip is two); system calls: one more run under `strace -c -f` (slower), per datagram",
           "", "| | bound | steered | steered/bound |", "|---|---:|---:|---:|"]
    b, s_ = rows[0], rows[1]
    def line(name, vb, vs, fmt):
        ratio = f"{vs / vb:.2f}" if vb else "—"
        out.append(f"| {name} | {fmt.format(vb)} | {fmt.format(vs)} | {ratio} |")
    line(f"descriptors with {UDPS:,} UDP redirections", b[4], s_[4], "{:,}")
    line("descriptors before the apply", b[3], s_[3], "{:,}")
    line(f"resident memory with {UDPS:,}, KiB", b[6], s_[6], "{:,}")
    line("apply, s", b[2], s_[2], "{:.1f}")
    line("round trips/s", med(results["bound"]["rtps"]), med(results["steered"]["rtps"]), "{:,.0f}")
    line("server CPU-us per datagram", med(results["bound"]["cpu"]), med(results["steered"]["cpu"]), "{:.2f}")
    db, cb = syscalls["bound"]
    ds, cs = syscalls["steered"]
    line("system calls per datagram", sum(cb.values()) / db, sum(cs.values()) / ds, "{:.3f}")
    for name in sorted(set(cb) | set(cs), key=lambda k: -(cb.get(k, 0) / db + cs.get(k, 0) / ds))[:8]:
        line(f"`{name}` per datagram", cb.get(name, 0) / db, cs.get(name, 0) / ds, "{:.3f}")
    out += ["", "## Every run", ""]
    for m in MODES:
        out.append(f"- {m}: round trips/s " + ", ".join(f"{x:,.0f}" for x in results[m]["rtps"]) +
                   "; CPU-us/datagram " + ", ".join(f"{x:.2f}" for x in results[m]["cpu"]))
    text = "\n".join(out) + "\n"
    print(text)
    path = os.environ.get("UDP_STEERED_RESULTS") or os.path.join(HERE, "udp-steered-results.md")
    with open(path, "w") as f:
        f.write(text)
    log(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
