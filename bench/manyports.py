#!/usr/bin/env python3
"""Short connections at random over 10,000 redirections: tcp-redirs steered, bound, and HAProxy.

Run through bench/manyports.sh (it installs HAProxy and nginx, builds bench/connload, and runs
this in a network namespace of its own: steered mode attaches a BPF program to the namespace).

    python3 bench/manyports.py run TMP

One nginx backend (`return 200`, one worker) on 127.0.0.1. Three forwarders of PORTS ports each
(20000-29999 by default), each on a loopback address of its own so that every one has the same
port numbers:
- steered: `tcp-redirs serve --port-mode steered`, namespace `many` bound to 127.0.0.2, the
  ports made by `tcp-redirs apply -f` (PORTS applications, one redirection each, all to the
  backend; an application has one redirection per namespace);
- bound: the same with `--port-mode bound` on 127.0.0.3 (one listening socket per port);
- haproxy: HAProxy `mode tcp`, one `bind 127.0.0.4:20000-29999`, `default_backend` to nginx.
The steered server's BPF program runs for every new connection of the namespace, the other
paths' too (it finds no key for them and lets the kernel look up as usual).

The load: bench/connload (C): INFLIGHT connections in flight, each to a port drawn at random,
`GET / HTTP/1.0`, the answer read to the end, close; a run lasts DURATION s or COUNT
connections. Interleaved rounds (RUNS, the first path rotating). Per run: connections/s,
latency p50/p99, the forwarder's CPU per connection (/proc/PID/stat: threads that exited
during the run count, as tokio's blocking threads do 10 s after the apply), its perf
counters per connection (context switches, CPU migrations, system calls, failed accept4,
epoll_wait, epoll_ctl; `perf stat -p`), its resident memory (RSS, PSS) after the run, and the
CPU of the client and the backend. Then, per path, a short pass under `strace -c -f`
(STRACE_CONNS connections) for system calls and failed accept4 per connection, and (PROFILE=1)
a `perf record -e cpu-clock -g` of each tcp-redirs server. Writes bench/manyports-results.md.

Settings: RUNS=5 DURATION=5 COUNT=300000 INFLIGHT=8 PORTS=10000 PORT_LO=20000
PATHS=steered,bound,haproxy STRACE_CONNS=3000 PROFILE=1 HAPROXY_MAXCONN=2000
QUICK=1 (RUNS=1 DURATION=2 PORTS=2000 STRACE_CONNS=1000 PROFILE=0 unless set)
TCP_REDIRS_BIN CONNLOAD_BIN RESULTS=bench/manyports-results.md
"""

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True
from benchlib import (FORWARDER_COUNTERS, HERE, HOST, ROOT, Failure, PerfRecord, PerfStat, Procs,  # noqa: E402
                      Recorder, Strace, bound_ports, command_line, cpu_model, env_int, exit_on_signals,
                      group_cpu, log, md_table, perf_report_top, perf_usable, pick_ports, pss_kib,
                      raise_nofile, raw_lines, require_own_netns, run_cli, server_env, source_revision,
                      start_nginx_http, start_serve, tool_version, vmrss_kib, wait_port, wait_until,
                      write_manifest)

ADDR = {"steered": "127.0.0.2", "bound": "127.0.0.3", "haproxy": "127.0.0.4"}
PATHS = ["steered", "bound", "haproxy"]
TOKEN = "bench"


def proc_stat_busy():
    """(busy, total) jiffies of the machine from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


class ManyPorts(Recorder):
    def __init__(self, tmp):
        super().__init__()
        self.tmp = tmp
        quick = os.environ.get("QUICK", "") not in ("", "0")
        self.quick = quick
        self.runs = env_int("RUNS", 1 if quick else 5)
        self.duration = env_int("DURATION", 2 if quick else 5)
        self.count = env_int("COUNT", 300000)
        self.inflight = env_int("INFLIGHT", 8)
        self.nports = env_int("PORTS", 2000 if quick else 10000)
        self.port_lo = env_int("PORT_LO", 20000)
        self.port_hi = self.port_lo + self.nports - 1
        self.strace_conns = env_int("STRACE_CONNS", 1000 if quick else 3000)
        self.profile = env_int("PROFILE", 0 if quick else 1)
        self.hap_maxconn = env_int("HAPROXY_MAXCONN", 2000)
        self.bin = os.environ.get("TCP_REDIRS_BIN") or os.path.join(ROOT, "target/release/tcp-redirs")
        self.load = os.environ.get("CONNLOAD_BIN") or os.path.join(HERE, "connload/connload")
        self.results = os.environ.get("RESULTS") or os.path.join(HERE, "manyports-results.md")
        self.paths = [p for p in os.environ.get("PATHS", ",".join(PATHS)).split(",") if p]
        for p in self.paths:
            if p not in PATHS:
                raise SystemExit(f"PATHS: unknown path {p!r} (known: {', '.join(PATHS)})")
        self.procs = Procs(tmp)
        self.revision = source_revision()
        self.pgid = {}
        self.fds = {}
        self.rest = {}       # path -> (rss, pss) KiB after set-up, before any load
        self.setup_s = {}    # path -> seconds to make its ports
        self.strace = {}     # path -> dict of per-connection figures
        self.profiles = {}   # path -> perf report lines
        self.perf = False

    # ---- set-up ------------------------------------------------------------------------------

    def setup(self):
        if any(p in self.paths for p in ("steered", "bound")):
            require_own_netns("bench/manyports.py")
        (self.backend,) = pick_ports(1, taken=range(self.port_lo, self.port_hi + 1))
        self.nginx = start_nginx_http(self.procs, os.path.join(self.tmp, "nginx"), f"{HOST}:{self.backend}",
                                      "ok\n").pid
        wait_port(self.backend, what="nginx")
        for path in self.paths:
            t0 = time.monotonic()
            if path == "haproxy":
                self.start_haproxy()
            else:
                self.start_tcp_redirs(path)
            self.setup_s[path] = time.monotonic() - t0
            pid = self.pgid[path]
            self.fds[path] = fd_count(pid)
            self.rest[path] = (vmrss_kib(pid), pss_kib(pid))
            log(f"{path}: {self.nports} ports in {self.setup_s[path]:.1f} s; {self.fds[path]} descriptors, "
                f"RSS {self.rest[path][0] / 1024:.1f} MiB, PSS {self.rest[path][1] / 1024:.1f} MiB")
        self.perf = perf_usable(FORWARDER_COUNTERS)
        if not self.perf:
            self.note("perf stat cannot count the software counters and syscall tracepoints here: no counters")
        # Sanity: every path answers on every port tried, none fails.
        for path in self.paths:
            r = self.connload(path, count=min(3000, 2 * self.nports), duration=30)
            if r["failed"] or r["ok"] == 0:
                raise Failure(f"{path}: the sanity pass failed: {r}")
            log(f"{path}: sanity pass {r['ok']} connections, none failed")

    def start_tcp_redirs(self, path):
        addr = ADDR[path]
        d = os.path.join(self.tmp, path)
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "config.toml")
        with open(cfg, "w") as f:
            f.write(f'[[namespace]]\nname = "many"\nbind = "{addr}"\nports = "{self.port_lo}-{self.port_hi}"\n')
        p, url = start_serve(self.procs, f"tcp-redirs {path}",
                             [self.bin, "serve", "--listen", f"{HOST}:0", "--data-dir", os.path.join(d, "data"),
                              "--public-bind", addr, "--config", cfg, "--port-mode", path],
                             server_env(os.path.join(d, "cfg"), TOKEN), os.path.join(d, "server.log"))
        self.pgid[path] = p.pid
        manifest = os.path.join(d, "manifest.toml")
        write_manifest(manifest, [(f"app{i}", [f"{HOST}:{self.backend}"], [("many", self.port_lo + i, "tcp")])
                                  for i in range(self.nports)])
        cenv = dict(server_env(os.path.join(d, "cfg"), TOKEN), TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN=TOKEN)
        t0 = time.monotonic()
        out = run_cli(self.bin, ["apply", "-f", manifest, "-F", "json"], cenv, timeout=600)
        made = sum(1 for c in json.loads(out)["changes"] if c.get("kind") == "redirection" and c.get("port"))
        log(f"{path}: apply of {self.nports} redirections: {made} made in {time.monotonic() - t0:.1f} s")
        if made != self.nports:
            raise Failure(f"{path}: apply made {made} of {self.nports} redirections")
        if path == "bound":
            wait_until(lambda: len(bound_ports(addr)) >= self.nports, 60,
                       fail=f"bound: {self.nports} ports not listening within 60 s")

    def start_haproxy(self):
        conf = f"""global
    maxconn {self.hap_maxconn}
    maxpipes 0
defaults
    mode tcp
    maxconn {self.hap_maxconn}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend many
    bind {ADDR['haproxy']}:{self.port_lo}-{self.port_hi}
    default_backend b
backend b
    server s1 {HOST}:{self.backend}
"""
        path = os.path.join(self.tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(conf)
        chk = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True, timeout=60)
        if chk.returncode != 0:
            raise Failure(f"haproxy config check failed: {chk.stdout}{chk.stderr}")
        p = self.procs.start("haproxy", ["haproxy", "-db", "-f", path], log_path=os.path.join(self.tmp, "haproxy.log"))
        self.pgid["haproxy"] = p.pid
        wait_until(lambda: len(bound_ports(ADDR["haproxy"])) >= self.nports, 60,
                   fail=lambda: f"haproxy: {self.nports} ports not listening within 60 s\n"
                                f"{open(os.path.join(self.tmp, 'haproxy.log')).read()[-2000:]}")

    # ---- load --------------------------------------------------------------------------------

    def connload(self, path, count=None, duration=None):
        """One connload run against a path; its JSON, with the client's CPU seconds as 'client_cpu'."""
        argv = [self.load, ADDR[path], str(self.port_lo), str(self.port_hi), "-c", str(self.inflight),
                "-n", str(count or self.count), "-d", str(duration or self.duration)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run(argv, capture_output=True, text=True, timeout=(duration or self.duration) + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode != 0:
            raise Failure(f"connload failed ({r.returncode}): {r.stderr.strip()}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        out["client_cpu"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return out

    def one(self, test, path):
        pid = self.pgid[path]
        counting = PerfStat(pid, os.path.join(self.tmp, "perf-stat.csv"), FORWARDER_COUNTERS) if self.perf else None
        if counting:
            counting.__enter__()
        try:
            c0, n0 = group_cpu(pid), group_cpu(self.nginx)
            b0 = proc_stat_busy()
            r = self.connload(path)
            b1 = proc_stat_busy()
            cpu, ncpu = group_cpu(pid) - c0, group_cpu(self.nginx) - n0
        finally:
            if counting:
                counting.__exit__(None, None, None)
        ok = r["ok"]
        if not ok:
            raise Failure(f"no connection answered: {r}")
        self.add("cps", path, r["cps"])
        self.add("p50", path, r["p50_us"] / 1000)
        self.add("p99", path, r["p99_us"] / 1000)
        self.add("cpu", path, cpu / ok * 1e6)
        self.add("client_cpu", path, r["client_cpu"] / ok * 1e6)
        self.add("nginx_cpu", path, ncpu / ok * 1e6)
        self.add("busy", path, 100.0 * (b1[0] - b0[0]) / max(1, b1[1] - b0[1]))
        self.add("failed", path, r["failed"])
        for key, value in ((counting.counts if counting else None) or {}).items():
            self.add(key, path, value / ok)
        self.add("rss", path, vmrss_kib(pid) / 1024)
        self.add("pss", path, pss_kib(pid) / 1024)
        if r["failed"]:
            self.note(f"{path}: {r['failed']} connections failed in a run ({r['refused']} refused, "
                      f"{r['reset']} reset, {r['timeouts']} timed out, {r['short']} short)")
        return (f"{r['cps']:.0f} conn/s, p50 {r['p50_us'] / 1000:.2f} ms, p99 {r['p99_us'] / 1000:.2f} ms, "
                f"{cpu / ok * 1e6:.1f} CPU-us/conn" + (f", {counting.counts.get('eagain', 0) / ok:.2f} failed accept4/conn"
                                                      if counting and counting.counts else ""))

    def strace_pass(self, path):
        pid = self.pgid[path]
        st = Strace(pid, os.path.join(self.tmp, f"strace-{path}.txt"))
        try:
            r = self.connload(path, count=self.strace_conns, duration=60)
        finally:
            total, top = st.stop()
        ok = r["ok"] or 1
        calls = dict(top)
        with open(os.path.join(self.tmp, f"strace-{path}.txt")) as f:
            text = f.read()
        acc = 0
        for line in text.splitlines():
            parts = line.split()
            if parts and parts[-1] == "accept4":
                acc = int(parts[3])
        self.strace[path] = {
            "conns": r["ok"], "sys": total / ok, "accept4": acc / ok,
            "accept4_failed": st.errors.get("accept4", 0) / ok,
            "top": ", ".join(f"{n} {c / ok:.2f}" for n, c in top), "raw": text,
        }
        log(f"strace {path}: {r['ok']} connections, {total / ok:.2f} system calls/conn, "
            f"{acc / ok:.2f} accept4/conn of which {st.errors.get('accept4', 0) / ok:.2f} failed")
        del calls

    def profile_pass(self, path):
        pid = self.pgid[path]
        data = os.path.join(self.tmp, f"perf-{path}.data")
        rec = PerfRecord(pid, data)
        try:
            r = self.connload(path)
        finally:
            rec.stop()
        self.profiles[path] = perf_report_top(data, 40)
        log(f"profile {path}: {r['ok']} connections recorded")

    def run(self):
        self.setup()
        t0 = time.monotonic()
        self.rounds(["conn"], pause=0.5)
        log(f"rounds took {time.monotonic() - t0:.0f} s")
        for path in self.paths:
            try:
                self.strace_pass(path)
            except Exception as e:  # noqa: BLE001 - reported
                self.note(f"strace pass of {path} failed: {e}")
        if self.profile:
            for path in self.paths:
                try:
                    self.profile_pass(path)
                except Exception as e:  # noqa: BLE001 - reported
                    self.note(f"perf record of {path} failed: {e}")

    # ---- report ------------------------------------------------------------------------------

    def paired(self, metric, a, b):
        """The median of round-by-round ratios a/b of a metric (the runs are in round order)."""
        va, vb = self.raw.get(metric, {}).get(a), self.raw.get(metric, {}).get(b)
        if not va or not vb or len(va) != len(vb):
            return None
        return statistics.median(x / y for x, y in zip(va, vb) if y)

    ROWS = [
        ("cps", "New connections/s", "{:,.0f}", False),
        ("p50", "Connection time p50, ms (connect to last byte; lower is better)", "{:.3f}", True),
        ("p99", "Connection time p99, ms (lower is better)", "{:.3f}", True),
        ("cpu", "Forwarder CPU-us per connection (lower is better)", "{:.1f}", True),
        ("rss", "Forwarder resident memory (RSS) after the runs, MiB (lower is better)", "{:.1f}", True),
        ("pss", "Forwarder PSS after the runs, MiB (lower is better)", "{:.1f}", True),
        ("cs", "Context switches per connection (forwarder; lower is better)", "{:.2f}", True),
        ("mig", "CPU migrations per connection (forwarder; lower is better)", "{:.3f}", True),
        ("sys", "System calls per connection (forwarder, perf; lower is better)", "{:.2f}", True),
        ("eagain", "Failed accept4 (EAGAIN) per connection (forwarder, perf; lower is better)", "{:.3f}", True),
        ("epwait", "epoll_wait calls per connection (forwarder; lower is better)", "{:.2f}", True),
        ("epctl", "epoll_ctl calls per connection (forwarder; lower is better)", "{:.2f}", True),
        ("client_cpu", "Load generator CPU-us per connection", "{:.1f}", True),
        ("nginx_cpu", "Backend (nginx) CPU-us per connection", "{:.1f}", True),
        ("busy", "Machine CPU busy during the run, %", "{:.0f}", None),
        ("failed", "Failed connections per run", "{:.0f}", True),
    ]

    def ratio_pairs(self):
        pairs = []
        for a, b in (("steered", "haproxy"), ("steered", "bound"), ("bound", "haproxy")):
            if a in self.paths and b in self.paths:
                pairs.append((a, b))
        return pairs

    def table(self):
        pairs = self.ratio_pairs()
        header = ["metric", *self.paths, *[f"{a}/{b}" for a, b in pairs]]
        body = []
        for key, label, fmt, _ in self.ROWS:
            if key not in self.raw:
                continue
            cells = [label]
            for p in self.paths:
                v = self.med(key, p)
                cells.append(fmt.format(v) if v is not None else "—")
            for a, b in pairs:
                x, y = self.med(key, a), self.med(key, b)
                cells.append(f"{x / y:.2f}" if x is not None and y else "—")
            body.append(cells)
        # static figures
        extra = [
            ("Descriptors of the forwarder after set-up", {p: f"{self.fds[p]:,}" for p in self.paths if self.fds.get(p)}),
            ("Forwarder RSS at rest (ports made, no load yet), MiB",
             {p: f"{self.rest[p][0] / 1024:.1f}" for p in self.paths if self.rest.get(p)}),
            ("Forwarder PSS at rest, MiB", {p: f"{self.rest[p][1] / 1024:.1f}" for p in self.paths if self.rest.get(p)}),
            ("Seconds to make the ports (apply -f / haproxy start)",
             {p: f"{self.setup_s[p]:.1f}" for p in self.paths if p in self.setup_s}),
        ]
        for key, label in (("sys", "System calls per connection (strace -c -f pass)"),
                           ("accept4", "accept4 per connection (strace pass)"),
                           ("accept4_failed", "Failed accept4 per connection (strace pass)")):
            extra.append((label, {p: f"{self.strace[p][key]:.2f}" for p in self.paths if p in self.strace}))
        for label, per in extra:
            if not per:
                continue
            cells = [label] + [per.get(p, "—") for p in self.paths]
            for a, b in pairs:
                try:
                    cells.append(f"{float(per[a].replace(',', '')) / float(per[b].replace(',', '')):.2f}")
                except (KeyError, ValueError, ZeroDivisionError):
                    cells.append("—")
            body.append(cells)
        return md_table(header, body)

    def paired_lines(self):
        out = []
        for a, b in self.ratio_pairs():
            bits = []
            for key, label in (("cps", "connections/s"), ("cpu", "CPU per connection")):
                v = self.paired(key, a, b)
                if v is not None:
                    bits.append(f"{label} {v:.3f}")
            if bits:
                out.append(f"- {a}/{b}, median of the round-by-round ratios: " + ", ".join(bits))
        return out

    def report(self):
        cmd = command_line("bench/manyports.sh", ("QUICK", "RUNS", "DURATION", "COUNT", "INFLIGHT", "PORTS",
                                                  "PORT_LO", "PATHS", "STRACE_CONNS", "PROFILE",
                                                  "HAPROXY_MAXCONN", "TCP_REDIRS_THREADS"))
        v_hap = tool_version(["haproxy", "-v"], r"version (\S+)")
        v_nginx = tool_version(["nginx", "-v"], r"nginx/(\S+)")
        ctx = [
            f"- when: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; tcp-redirs {self.revision} (`{self.bin}`)",
            f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}; in a network "
            "namespace of the benchmark's own (unshare --net)",
            f"- {self.nports:,} ports {self.port_lo}-{self.port_hi} on each path: steered on {ADDR['steered']} "
            f"(`--port-mode steered`), bound on {ADDR['bound']} (`--port-mode bound`), HAProxy {v_hap} on "
            f"{ADDR['haproxy']} (`mode tcp`, one `bind` with the port range, `nbthread` default, "
            f"maxconn {self.hap_maxconn}, no splice); tcp-redirs: {self.nports:,} applications made by "
            "`apply -f`, one redirection each, every one to the same backend",
            f"- backend: nginx {v_nginx} (1 worker, `return 200`) on {HOST}; load: bench/connload, "
            f"{self.inflight} connections in flight, each to a random port of the range, `GET / HTTP/1.0`, "
            f"the answer read to the end, close; runs of {self.duration} s (or {self.count:,} connections)",
            f"- each number: median of {self.runs} runs, the paths interleaved (round 1: "
            f"{', '.join(self.paths)}; each round starts one path further); ratios: of the medians",
            "- counters: `perf stat -e " + ",".join(e + (f" --filter '{f}'" if f else "") for _, e, f, _ in FORWARDER_COUNTERS)
            + " -p PID` over each run, divided by the connections answered; CPU: utime+stime of "
            "/proc/PID/stat (exited threads included); RSS and PSS: /proc/PID/status and smaps_rollup after each run",
            f"- strace pass: `strace -c -f -p PID` over {self.strace_conns:,} connections per path, after the rounds",
        ]
        md = ["# Many ports, short connections", "", f"`{cmd}`", "", *ctx, "", self.table(), "",
              *self.paired_lines(), ""]
        if self.notes:
            md += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        md += ["## Every run", "", *raw_lines(self.raw), ""]
        if self.strace:
            md += ["## strace -c -f, per path", ""]
            for p, s in self.strace.items():
                md += [f"### {p} ({s['conns']:,} connections)", "", f"most frequent per connection: {s['top']}", "",
                       "```", s["raw"].strip(), "```", ""]
        if self.profiles:
            md += ["## perf record -e cpu-clock -g (self time by DSO and symbol, >= 0.5 %)", ""]
            for p, lines in self.profiles.items():
                md += [f"### {p}", "", "```", *lines, "```", ""]
        text = "\n".join(md)
        print("\n" + self.table() + "\n" + "\n".join(self.paired_lines()))
        with open(self.results, "w") as f:
            f.write(text)
        log(f"wrote {self.results}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        raise SystemExit("usage: manyports.py run TMP   (through bench/manyports.sh)")
    exit_on_signals()
    raise_nofile()
    return ManyPorts(sys.argv[2]).drive()


if __name__ == "__main__":
    sys.exit(main())
