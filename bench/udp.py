#!/usr/bin/env python3
"""UDP benchmark of tcp-redirs against nginx's stream module and socat (stdlib only). Run it
through bench/udp.sh, which installs the tools and builds the load generator.

  udp.py run TMPDIR

Everything listens on and sends to 127.0.0.1 only. Paths, each to the same backends:
  direct      the client straight to the backend (the physical limit of this machine)
  tcp-redirs  a UDP redirection (POST …/applications/{app}/udpRedirs {"namespace":"default"}),
              the server in bound mode (a socket per port)
  tcp-redirs-steered  the same on a second server in steered mode (`--port-mode steered`: the
              port a key of the kernel's BPF steering; needs the network namespace of its
              own that udp.sh enters when this path is asked for)
  nginx       nginx's stream module, `listen PORT udp reuseport`, NGINX_WORKERS workers
  socat       `socat -T 60 UDP-LISTEN:PORT,fork,reuseaddr UDP:BACKEND` (one process per flow)

Backends: bench/udpload/udpload in echo mode (recvmmsg/sendmmsg), unbound answering a local
zone (no recursion, no Internet), and an iperf3 server. Every process started here gets its own
process group (listed in TMPDIR/pgids for udp.sh to kill if this script dies).
"""

import datetime
import json
import os
import platform
import pwd
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
from benchlib import (HERE, HOST, ROOT, Procs, Recorder, command_line, cpu_model, eph_low,  # noqa: E402
                      env_float, env_int, group_cpu_exact, log, md_table, pct_index, pick_ports, port_free,
                      raise_nofile, raw_lines, run_cli, server_env, source_revision, start_serve, tool_version,
                      wait_bound)

PATHS = ["direct", "tcp-redirs", "tcp-redirs-steered", "nginx", "socat"]
FORWARDERS = ["tcp-redirs", "tcp-redirs-steered", "nginx", "socat"]
REFS = ["nginx", "socat", "direct"]  # the ratio columns: tcp-redirs / each
BACKENDS = ["echo", "dns", "iperf"]
# name -> (datagram size, flows, in flight): the round-trip workloads of the echo backend
DEFAULT_TESTS = "small1,small1k,large1,large1k,lat1,lat1k,dns,iperf"
DNS_ZONE = "bench.test."
DNS_NAMES = 1000


UDP_TCP = (socket.SOCK_DGRAM, socket.SOCK_STREAM)  # iperf3 uses both on one port


def pick_block(n, taken):
    """n consecutive free ports below the ephemeral range: the client's source ports."""
    hi = max(12000, eph_low() - 1) - n
    for _ in range(200):
        b = random.randint(10000, hi)
        if all(p not in taken and port_free(p, UDP_TCP) for p in range(b, b + n)):
            return b
    raise RuntimeError(f"no block of {n} free ports")


def dns_query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", 1, 1)


class Bench(Recorder):
    def __init__(self, tmp):
        super().__init__()
        self.tmp = tmp
        quick = os.environ.get("QUICK", "") not in ("", "0")
        self.runs = env_int("RUNS", 1 if quick else 5)
        self.duration = env_float("DURATION", 2 if quick else 3)
        self.flows = env_int("FLOWS", 1000)
        self.inflight = env_int("INFLIGHT", 64)
        self.small = env_int("SMALL", 64)
        self.large = env_int("LARGE", 1400)
        self.nginx_workers = os.environ.get("NGINX_WORKERS", "2")
        self.dns_clients = env_int("DNS_CLIENTS", 16)
        self.dns_outstanding = env_int("DNS_OUTSTANDING", 64)
        self.iperf_rate = os.environ.get("IPERF_BITRATE", "300M")
        self.iperf_len = env_int("IPERF_LEN", 1400)
        self.idle = env_int("IDLE_TIMEOUT", 60)
        self.bin = os.environ.get("TCP_REDIRS_BIN") or os.path.join(ROOT, "target/release/tcp-redirs")
        self.load = os.environ.get("UDPLOAD_BIN") or os.path.join(HERE, "udpload/udpload")
        self.tests = [t for t in os.environ.get("TESTS", DEFAULT_TESTS).split(",") if t]
        for t in self.tests:
            if t not in DEFAULT_TESTS.split(","):
                raise SystemExit(f"TESTS: unknown test {t!r} (known: {DEFAULT_TESTS})")
        self.paths = [p for p in os.environ.get("PATHS", ",".join(PATHS)).split(",") if p]
        for p in self.paths:
            if p not in PATHS:
                raise SystemExit(f"PATHS: unknown path {p!r} (known: {', '.join(PATHS)})")
        self.workloads = {
            "small1": (self.small, 1, self.inflight),
            "small1k": (self.small, self.flows, self.inflight),
            "large1": (self.large, 1, self.inflight),
            "large1k": (self.large, self.flows, self.inflight),
            "lat1": (self.small, 1, 1),
            "lat1k": (self.small, self.flows, 1),
        }
        self.procs = Procs(tmp)
        self.revision = source_revision()
        self.pgid = {}  # (path, backend) -> process group whose CPU is the forwarder's
        self.port = {}  # (path, backend) -> port

    # ---- set-up ------------------------------------------------------------------------------

    def setup(self):
        taken = set()
        fixed = ["direct", "nginx", "socat"]
        ports = pick_ports(len(fixed) * len(BACKENDS), taken, kinds=UDP_TCP)
        taken.update(ports)
        for path in fixed:
            for b in BACKENDS:
                self.port[(path, b)] = ports.pop()
        # The client's source ports: the same ones in every run, so a forwarder's flows (a
        # socket each, a process each for socat) are made once, by the first run's priming,
        # and reused (they idle out after IDLE_TIMEOUT s, and are then primed again).
        self.base1 = pick_block(1, taken)
        taken.add(self.base1)
        self.basek = pick_block(self.flows, taken)
        taken.update(range(self.basek, self.basek + self.flows))
        self.taken = taken

        t = self.tmp
        self.procs.start("udpload echo", [self.load, "echo", str(self.port[("direct", "echo")])],
                         log_path=os.path.join(t, "echo.log"))
        self.start_unbound()
        self.procs.start("iperf3 server", ["iperf3", "-s", "-B", HOST, "-p", str(self.port[("direct", "iperf")])],
                         log_path=os.path.join(t, "iperf3.log"))
        alive = self.procs.check_alive
        wait_bound(self.port[("direct", "echo")], "udp", what="udpload echo", alive=alive)
        wait_bound(self.port[("direct", "dns")], "udp", what="unbound", alive=alive)
        wait_bound(self.port[("direct", "iperf")], "tcp", what="iperf3 server", alive=alive)
        if "tcp-redirs" in self.paths:
            self.start_tcp_redirs("tcp-redirs", "bound", "5001-7499")
        if "tcp-redirs-steered" in self.paths:
            self.start_tcp_redirs("tcp-redirs-steered", "steered", "7500-9999")
        if "nginx" in self.paths:
            self.start_nginx()
        if "socat" in self.paths:
            self.start_socat()
        # iperf3 -u needs its TCP control connection to the same port as its datagrams: a
        # TCP relay (socat, not measured) on each forwarder's iperf port.
        for path in self.paths:
            if path != "direct":
                self.tcp_relay(path)
        for path in ("nginx", "socat"):
            if path in self.paths:
                for b in BACKENDS:
                    wait_bound(self.port[(path, b)], "udp", what=f"{path} ({b})", alive=alive)
        for path in self.paths:
            if path != "direct":
                wait_bound(self.port[(path, "iperf")], "tcp", what=f"iperf3 control relay ({path})", alive=alive)
        self.sanity()

    def start_unbound(self):
        d = os.path.join(self.tmp, "unbound")
        os.makedirs(d)
        os.chmod(self.tmp, 0o755)
        zone = "".join(f'    local-data: "h{i}.{DNS_ZONE} 300 IN A 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"\n'
                       for i in range(DNS_NAMES))
        conf = f"""server:
    interface: {HOST}@{self.port[("direct", "dns")]}
    port: {self.port[("direct", "dns")]}
    do-ip6: no
    do-tcp: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 0
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    so-rcvbuf: 4m
    so-sndbuf: 4m
    module-config: "iterator"
    local-zone: "{DNS_ZONE}" static
{zone}
remote-control:
    control-enable: no
"""
        path = os.path.join(d, "unbound.conf")
        with open(path, "w") as f:
            f.write(conf)
        chk = subprocess.run(["unbound-checkconf", path], capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"unbound-checkconf: {chk.stdout}{chk.stderr}")
        self.procs.start("unbound", ["unbound", "-d", "-c", path], log_path=os.path.join(d, "unbound.log"))
        with open(os.path.join(self.tmp, "queries"), "w") as f:
            for i in range(DNS_NAMES):
                f.write(f"h{i}.{DNS_ZONE} A\n")

    def start_tcp_redirs(self, path, mode, ports):
        if not os.access(self.bin, os.X_OK):
            raise RuntimeError(f"{self.bin} is not executable: cargo build --release first, or set TCP_REDIRS_BIN")
        cfg = os.path.join(self.tmp, f"{path}-cfg")
        data = os.path.join(self.tmp, f"{path}-data")
        # Public ports below 10,000: every other port of the run (the client's source ports,
        # nginx's, socat's, the backends') is picked from 10,000 up, so none can be given twice.
        # The bound and steered servers take halves of that range.
        conf = os.path.join(self.tmp, f"{path}.toml")
        with open(conf, "w") as f:
            f.write(f'[[namespace]]\nname = "default"\nports = "{ports}"\n')
        p, url = start_serve(self.procs, f"{path} serve",
                             [self.bin, "serve", "--listen", f"{HOST}:0", "--data-dir", data,
                              "--public-bind", HOST, "--config", conf, "--port-mode", mode],
                             server_env(cfg, "bench"), os.path.join(self.tmp, f"{path}.log"))
        log(f"tcp-redirs control API at {url}")
        cenv = dict(os.environ, TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN="bench", TCP_REDIRS_CONFIG_DIR=cfg)
        for b in BACKENDS:
            run_cli(self.bin, ["apps", "create", f"bench-{b}", "--instance", f"{HOST}:{self.port[('direct', b)]}"], cenv)
            # POST /v2/organisations/{org}/applications/{app}/udpRedirs {"namespace":"default"}
            org = self.api(url, "GET", "/v2/organisations")[0]["id"]
            app = next(a["id"] for a in self.api(url, "GET", f"/v2/organisations/{org}/applications")
                       if a["name"] == f"bench-{b}")
            doc = self.api(url, "POST", f"/v2/organisations/{org}/applications/{app}/udpRedirs",
                           {"namespace": "default"})
            port = int(doc["port"])
            if port in self.taken:
                raise RuntimeError(f"tcp-redirs gave port {port}, which the client uses as a source port")
            self.port[(path, b)] = port
            self.pgid[(path, b)] = p.pid

    def api(self, url, method, path, body=None):
        req = urllib.request.Request(url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer bench", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"{method} {path}: {e.code} {e.read()[:500]!r}") from None

    def start_nginx(self):
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d)
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
        module = "/usr/lib/nginx/modules/ngx_stream_module.so"
        load = f"load_module {module};" if os.path.exists(module) else ""
        servers = "".join(f"""
    server {{
        listen {HOST}:{self.port[("nginx", b)]} udp reuseport;
        proxy_pass {HOST}:{self.port[("direct", b)]};
        proxy_timeout {self.idle}s;
    }}""" for b in BACKENDS)
        conf = f"""{load}
{user}
daemon off;
master_process on;
worker_processes {self.nginx_workers};
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 20000; }}
stream {{{servers}
}}
"""
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        chk = subprocess.run(["nginx", "-t", "-p", d, "-c", path, "-e", os.path.join(d, "error.log")],
                             capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"nginx -t: {chk.stdout}{chk.stderr}")
        p = self.procs.start("nginx", ["nginx", "-p", d, "-c", path, "-e", os.path.join(d, "error.log")],
                             log_path=os.path.join(d, "stdout.log"))
        for b in BACKENDS:
            self.pgid[("nginx", b)] = p.pid

    def start_socat(self):
        for b in BACKENDS:
            front, back = self.port[("socat", b)], self.port[("direct", b)]
            p = self.procs.start(f"socat {b}", ["socat", "-T", str(self.idle),
                                                f"UDP-LISTEN:{front},bind={HOST},fork,reuseaddr",
                                                f"UDP:{HOST}:{back}"],
                                 log_path=os.path.join(self.tmp, f"socat-{b}.log"))
            self.pgid[("socat", b)] = p.pid

    def tcp_relay(self, path):
        front, back = self.port[(path, "iperf")], self.port[("direct", "iperf")]
        self.procs.start(f"iperf3 control relay ({path})",
                         ["socat", f"TCP-LISTEN:{front},bind={HOST},fork,reuseaddr", f"TCP:{HOST}:{back}"],
                         log_path=os.path.join(self.tmp, f"relay-{path}.log"))

    def sanity(self):
        for path in self.paths:
            r = self.udpload(path, 64, 1, 1, 0.2, base=self.base1)
            if not r["received"]:
                raise RuntimeError(f"echo through {path}: no answer")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                q = dns_query(f"h7.{DNS_ZONE}", 4242)
                for _ in range(3):
                    s.sendto(q, (HOST, self.port[(path, "dns")]))
                    try:
                        a = s.recv(512)
                        break
                    except socket.timeout:
                        a = b""
                if len(a) < 16 or a[:2] != q[:2] or a[-4:] != bytes([10, 0, 0, 7]):
                    raise RuntimeError(f"DNS through {path} answered {a!r}")
        log("all paths answer: " + "; ".join(
            f"{p} " + " ".join(f"{b}:{self.port[(p, b)]}" for b in BACKENDS) for p in self.paths))

    # ---- recording ---------------------------------------------------------------------------

    def cpu(self, path, backend):
        pg = self.pgid.get((path, backend))
        return group_cpu_exact(pg) if pg else None

    # ---- load --------------------------------------------------------------------------------

    def udpload(self, path, size, flows, inflight, duration, base, on_ready=None):
        argv = [self.load, "client", HOST, str(self.port[(path, "echo")]), "-s", str(size), "-f", str(flows),
                "-b", str(base), "-w", str(inflight), "-d", str(duration), "-P", "60"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            if line.strip() != "ready":
                p.wait(timeout=10)
                raise RuntimeError(f"udpload: {line.strip()} {p.stderr.read().strip()}")
            c0 = on_ready() if on_ready else None
            out, err = p.communicate(timeout=duration + 30)
        except BaseException:
            p.kill()
            p.wait()
            raise
        if p.returncode != 0:
            raise RuntimeError(f"udpload exited {p.returncode}: {err.strip()}")
        r = json.loads(out.strip().splitlines()[-1])
        r["cpu0"] = c0
        return r

    def rr(self, test, path):
        size, flows, inflight = self.workloads[test]
        base = self.base1 if flows == 1 else self.basek
        r = self.udpload(path, size, flows, inflight, self.duration, base,
                         on_ready=lambda: self.cpu(path, "echo"))
        c1 = self.cpu(path, "echo")
        self.add(f"{test}_rtps", path, r["rtps"])
        self.add(f"{test}_p50", path, r["p50_us"])
        self.add(f"{test}_p99", path, r["p99_us"])
        lost = (r["lost"] / r["sent"] * 100) if r["sent"] else 0
        self.add(f"{test}_lost", path, lost)
        msg = (f"{r['rtps']:,.0f} round trips/s, p50 {r['p50_us']} us, p99 {r['p99_us']} us, "
               f"lost {r['lost']}, late {r['late']}, primed in {r['prime_seconds']:.2f} s")
        if c1 is not None and r["received"]:
            # each round trip is two datagrams through the forwarder: the request and its answer
            per = (c1 - r["cpu0"]) / (2 * r["received"]) * 1e6
            self.add(f"{test}_cpu", path, per)
            msg += f", {per:.2f} CPU-us/datagram"
        return msg

    def dns(self, path):
        c0 = self.cpu(path, "dns")
        r = subprocess.run(["dnsperf", "-s", HOST, "-p", str(self.port[(path, "dns")]), "-d",
                            os.path.join(self.tmp, "queries"), "-l", str(self.duration), "-c", str(self.dns_clients),
                            "-q", str(self.dns_outstanding), "-T", "1", "-t", "2", "-v"],
                           capture_output=True, text=True, timeout=self.duration + 60)
        c1 = self.cpu(path, "dns")
        text = r.stdout
        m = re.search(r"Queries completed:\s+(\d+)", text)
        qps = re.search(r"Queries per second:\s+([\d.]+)", text)
        lost = re.search(r"Queries lost:\s+(\d+)", text)
        if r.returncode != 0 or not m or not qps:
            raise RuntimeError(f"dnsperf failed ({r.returncode}): {r.stderr[-500:]} {text[-500:]}")
        done = int(m.group(1))
        # -v: one line per answered query, its latency in seconds last
        lat = [float(x) for x in re.findall(r"^> \S+ .* ([\d.]+)$", text, re.M)]
        p50 = pct_index(lat, 50) * 1e6 if lat else None
        p99 = pct_index(lat, 99) * 1e6 if lat else None
        self.add("dns_qps", path, float(qps.group(1)))
        self.add("dns_p50", path, p50)
        self.add("dns_p99", path, p99)
        sent = done + int(lost.group(1)) if lost else done
        self.add("dns_lost", path, (int(lost.group(1)) / sent * 100) if lost and sent else 0)
        msg = f"{float(qps.group(1)):,.0f} queries/s, p50 {p50 or 0:.0f} us, p99 {p99 or 0:.0f} us"
        if c0 is not None and done:
            per = (c1 - c0) / (2 * done) * 1e6
            self.add("dns_cpu", path, per)
            msg += f", {per:.2f} CPU-us/datagram"
        return msg

    def iperf(self, path):
        c0 = self.cpu(path, "iperf")
        r = subprocess.run(["iperf3", "-c", HOST, "-p", str(self.port[(path, "iperf")]), "-u", "-b",
                            self.iperf_rate, "-l", str(self.iperf_len), "-t", str(self.duration), "-J"],
                           capture_output=True, text=True, timeout=self.duration + 60)
        c1 = self.cpu(path, "iperf")
        try:
            doc = json.loads(r.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"iperf3 failed ({r.returncode}): {r.stderr[-500:]}{r.stdout[-500:]}") from None
        if doc.get("error"):
            raise RuntimeError(f"iperf3: {doc['error']}")
        end = doc["end"]
        recv = end.get("sum_received") or end["sum"]
        sent = end.get("sum_sent") or end["sum"]
        packets = sent.get("packets") or end["sum"].get("packets", 0)
        lost = end["sum"].get("lost_packets", 0)
        delivered = max(0, packets - lost)
        mbps = delivered * self.iperf_len * 8 / end["sum"]["seconds"] / 1e6 if end["sum"].get("seconds") else 0
        loss = lost / packets * 100 if packets else 0
        self.add("iperf_mbps", path, mbps)
        self.add("iperf_loss", path, loss)
        self.add("iperf_jitter", path, end["sum"].get("jitter_ms"))
        msg = f"{mbps:,.0f} Mbit/s delivered, loss {loss:.2f} % of {packets} datagrams"
        if c0 is not None and delivered:
            per = (c1 - c0) / delivered * 1e6
            self.add("iperf_cpu", path, per)
            msg += f", {per:.2f} CPU-us/datagram"
        del recv
        return msg

    def one(self, test, path):
        if test == "dns":
            return self.dns(path)
        if test == "iperf":
            return self.iperf(path)
        return self.rr(test, path)

    def run(self):
        self.setup()
        started = time.monotonic()
        # interleaved: every round runs every path, the starting path rotating
        self.rounds(self.tests, pause=0.3)
        log(f"load tests took {time.monotonic() - started:.0f} s")

    # ---- report ------------------------------------------------------------------------------

    def rows(self):
        out = []
        names = {"small1": f"{self.small} B, 1 flow", "small1k": f"{self.small} B, {self.flows:,} flows",
                 "large1": f"{self.large} B, 1 flow", "large1k": f"{self.large} B, {self.flows:,} flows"}
        for t, name in names.items():
            out += [
                (f"{t}_rtps", f"Round trips/s, {name} ({self.inflight} in flight)", "{:,.0f}", False),
                (f"{t}_cpu", f"Forwarder CPU-us per datagram, {name} (lower is better)", "{:.2f}", True),
                (f"{t}_p50", f"Round trip p50 under that load, us, {name} (lower is better)", "{:.0f}", True),
                (f"{t}_p99", f"Round trip p99 under that load, us, {name} (lower is better)", "{:.0f}", True),
                (f"{t}_lost", f"Datagrams lost, % of sent, {name} (lower is better)", "{:.3f}", True),
            ]
        for t, name in (("lat1", "1 flow"), ("lat1k", f"{self.flows:,} flows in turn")):
            out += [
                (f"{t}_rtps", f"Round trips/s, {self.small} B, 1 in flight, {name}", "{:,.0f}", False),
                (f"{t}_p50", f"Round trip p50, {self.small} B, 1 in flight, {name}, us (lower is better)", "{:.0f}", True),
                (f"{t}_p99", f"Round trip p99, {self.small} B, 1 in flight, {name}, us (lower is better)", "{:.0f}", True),
                (f"{t}_cpu", f"Forwarder CPU-us per datagram, 1 in flight, {name} (lower is better)", "{:.2f}", True),
            ]
        out += [
            ("dns_qps", f"DNS queries/s (dnsperf, {self.dns_clients} clients, {self.dns_outstanding} outstanding)",
             "{:,.0f}", False),
            ("dns_p50", "DNS latency p50, us (lower is better)", "{:.0f}", True),
            ("dns_p99", "DNS latency p99, us (lower is better)", "{:.0f}", True),
            ("dns_cpu", "Forwarder CPU-us per datagram, DNS (lower is better)", "{:.2f}", True),
            ("dns_lost", "DNS queries lost, % (lower is better)", "{:.3f}", True),
            ("iperf_mbps", f"iperf3 -u delivered, Mbit/s ({self.iperf_len} B, -b {self.iperf_rate})", "{:,.0f}", False),
            ("iperf_loss", "iperf3 -u loss, % (lower is better)", "{:.2f}", True),
            ("iperf_cpu", "Forwarder CPU-us per datagram delivered, iperf3 -u (lower is better)", "{:.2f}", True),
            ("iperf_jitter", "iperf3 -u jitter, ms (lower is better)", "{:.3f}", True),
        ]
        return out

    def table(self):
        cols = [p for p in PATHS if p in self.paths]
        refs = [r for r in REFS if r in self.paths] if "tcp-redirs" in self.paths else []
        steered = "tcp-redirs" in self.paths and "tcp-redirs-steered" in self.paths
        header = ["metric", *cols, *[f"tcp-redirs/{r}" for r in refs], *(["steered/bound"] if steered else [])]
        body = []
        for key, label, fmt, lower in self.rows():
            if key not in self.raw:
                continue
            vals = {p: self.med(key, p) for p in PATHS}
            if key.endswith("_lost") and not any(vals.values()):
                continue  # nothing lost anywhere: no row
            cells = [label] + [fmt.format(vals[p]) if vals[p] is not None else "—" for p in cols]
            tr = vals.get("tcp-redirs")
            for r in refs:
                v = vals[r]
                cells.append(f"{tr / v:.2f}" if tr is not None and v not in (None, 0) else "—")
            if steered:
                st = vals.get("tcp-redirs-steered")
                cells.append(f"{st / tr:.2f}" if st is not None and tr not in (None, 0) else "—")
            body.append(cells)
        return md_table(header, body)

    def context(self):
        ver = tool_version
        cpu = cpu_model()
        v_nginx = ver(["nginx", "-v"], r"nginx/(\S+)")
        v_socat = ver(["socat", "-V"], r"socat version (\S+)")
        v_unbound = ver(["unbound", "-V"], r"Version (\S+)")
        v_iperf = ver(["iperf3", "--version"], r"iperf (\S+)")
        v_dnsperf = ver(["dnsperf", "-h"], r"Version (\S+)")
        return [
            f"- when: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; tcp-redirs {self.revision} (`{self.bin}`)",
            f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; client, forwarder and "
            "backend share them",
            f"- peers: nginx {v_nginx} stream module (`listen … udp reuseport`, "
            f"`proxy_timeout {self.idle}s`, no `proxy_responses`: a session per client address until idle, "
            f"like a tcp-redirs flow; worker_processes {self.nginx_workers}); socat "
            f"{v_socat} (`-T {self.idle} UDP-LISTEN:…,fork,reuseaddr` to "
            "`UDP:`, one process per flow); tcp-redirs: a UDP redirection made by `POST …/udpRedirs` (idle timeout "
            "60 s, its defaults otherwise)",
            f"- backends: `bench/udpload/udpload echo` (one thread, recvmmsg/sendmmsg); unbound "
            f"{v_unbound} (one thread, a local zone of {DNS_NAMES} A records); "
            f"iperf3 {v_iperf} (its TCP control connection through a socat "
            "TCP relay on the same port number, not measured)",
            f"- round trips: `udpload client` (epoll, recvmmsg/sendmmsg), a closed loop of {self.inflight} "
            f"datagrams in flight over all the flows (each new datagram on the next flow in turn), a datagram "
            "unanswered after 500 ms counted lost and replaced; flows are fixed source ports, primed (one "
            "answer each) before the measurement, and kept from run to run; 1 in flight: unloaded latency",
            f"- CPU per datagram: the forwarder's process tree (every thread's time on the CPU from "
            "/proc/PID/task/TID/schedstat, the unrounded source of /proc/PID/stat's utime+stime; nginx master "
            "and workers, socat's parent and every child) over the run, divided by the datagrams it carried "
            "both ways (a round trip or a DNS query and its answer are two; iperf3: the datagrams delivered)",
            f"- dnsperf {v_dnsperf}: `-c {self.dns_clients} -q "
            f"{self.dns_outstanding} -T 1`, p50/p99 from its `-v` per-query lines",
            f"- each number: median of {self.runs} runs of {self.duration:g} s, the paths interleaved "
            f"(round 1: {', '.join(self.paths)}; each round starts one path further); ratios: tcp-redirs "
            "divided by the column named (in rows marked lower is better, below 1 is better)",
        ]

    def report(self):
        table = self.table()
        print(table, flush=True)
        cmd = command_line("bench/udp.sh", ("QUICK", "RUNS", "DURATION", "FLOWS", "INFLIGHT", "SMALL", "LARGE",
                                            "NGINX_WORKERS", "DNS_CLIENTS", "DNS_OUTSTANDING",
                                            "IPERF_BITRATE", "IPERF_LEN", "PATHS", "TESTS"))
        md = ["# tcp-redirs UDP benchmark", "", f"`{cmd}`", "", *self.context(), "", table, ""]
        if self.notes:
            md += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        md += ["## Every run", "", *raw_lines(self.raw), ""]
        out = os.environ.get("UDP_RESULTS") or os.path.join(HERE, "udp-results.md")
        with open(out, "w") as f:
            f.write("\n".join(md))
        log(f"written {out}")


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    raise_nofile()
    return Bench(sys.argv[2]).drive()


if __name__ == "__main__":
    sys.exit(main())
