#!/usr/bin/env python3
"""Benchmark driver for tcp-redirs (stdlib only). Run it through bench/run.sh.

Modes:
  bench.py run TMPDIR               the whole benchmark (run.sh calls this)
  bench.py echo PORT STATS_PORT     an epoll echo server that holds many idle connections;
                                    a connection to STATS_PORT answers how many it holds

Everything listens on and connects to 127.0.0.1 only. Every process started here gets its own
process group; the group ids are written to TMPDIR/pgids so that run.sh can kill them even if
this script dies, and this script kills them itself on exit.
"""

import contextlib
import datetime
import errno
import glob
import json
import os
import platform
import pwd
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
from benchlib import (FORWARDER_COUNTERS, HERE, HOST, ROOT, PerfStat, Procs, Recorder,  # noqa: E402
                      account, command_line, cpu_model, own_netns, start_nginx_http, env_float, env_int, group_cpu, group_pids, log, md_table, pct_index,
                      perf_usable, pick_ports, pss_kib, raise_nofile, raw_lines, run_cli, server_env,
                      source_revision, start_serve, tcp_out_segs, tool_version, vmrss_kib, wait_port,
                      wait_until)

# haproxy: HAProxy `mode tcp` with `option splice-auto` (its own heuristic decides when to splice);
# haproxy-splice: the same plus `option splice-request` and `option splice-response`, which force
# splice on every connection. The two win in different places (forced splice: bulk over many
# connections; splice-auto: small exchanges), so both are measured and compared against.
PATHS = ["direct", "tcp-redirs", "haproxy", "haproxy-splice", "socat"]  # default set and columns
# `tcp-redirs-log`: the same binary with `serve --access-log` (one log line per connection),
# to measure what the connection log costs; `tcp-redirs-limits`: the same binary, its
# redirections with a cap per client address and a bandwidth limit set but never reached
# (LIMITS_ADD), to measure what they cost per connection and per byte; `tcp-redirs-base`: a second binary
# (TCP_REDIRS_BASE_BIN, e.g. one built from main), so that a change is measured against what it
# changes in the same run. Neither is in the default set.
ALL_PATHS = PATHS + ["tcp-redirs-log", "tcp-redirs-limits", "tcp-redirs-base"]
FORWARDERS = ["tcp-redirs", "tcp-redirs-log", "tcp-redirs-limits", "tcp-redirs-base", "haproxy",
              "haproxy-splice", "socat"]
# The settings of tcp-redirs-limits' redirections: far above what any test reaches (wrk opens
# 16 connections from one address, iperf3 8; loopback moves a few GB/s), so that every
# connection is counted against its address and every read and splice takes from the
# redirection's buckets, and none is ever refused or throttled.
LIMITS_ADD = ["--max-connections-per-client", "10000", "--bandwidth-limit", "100G"]
# The saturation counters, read with `perf stat -p` over each wrk run (software counters and
# syscall tracepoints: they count, they do not sample, and do not slow the process down the
# way strace does): (key, event, tracepoint filter, label).
COUNTERS = FORWARDER_COUNTERS
# Backends every run starts (the memory test, the sanity check and the wrk and iperf3 tests use
# them), and those started only for the tests that need them.
BASE_BACKENDS = ["iperf", "http", "echo"]
TEST_BACKEND = {"redis": "redis", "pg": "pg", "pgconn": "pg"}
DEFAULT_TESTS = "mem,bulk1,bulkN,rr,cc,redis,pg,pgconn"
SPLICE_TEXT = {"auto": "option splice-auto",
               "all": "option splice-auto + splice-request + splice-response",
               "none": "no splice"}


# --------------------------------------------------------------------------------------------
# echo server (its own process)
# --------------------------------------------------------------------------------------------


def echo_server(port, stats_port):
    raise_nofile()
    sel = selectors.DefaultSelector()
    listeners = {}
    for p, kind in ((port, "listen"), (stats_port, "stats")):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((HOST, p))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, kind)
        listeners[kind] = s
    count = 0
    while True:
        for key, _ in sel.select(timeout=1.0):
            if key.data == "listen":
                for _ in range(1024):
                    try:
                        c, _ = key.fileobj.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                            time.sleep(0.01)
                            break
                        raise
                    c.setblocking(False)
                    sel.register(c, selectors.EVENT_READ, "conn")
                    count += 1
            elif key.data == "stats":
                try:
                    c, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                try:
                    c.settimeout(1.0)
                    c.sendall(f"{count}\n".encode())
                except OSError:
                    pass
                c.close()
            else:
                c = key.fileobj
                try:
                    data = c.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(c)
                    c.close()
                    count -= 1
                    continue
                try:
                    c.send(data)  # a few bytes: the send buffer always has room
                except OSError:
                    pass


# --------------------------------------------------------------------------------------------
# network helpers
# --------------------------------------------------------------------------------------------


def echo_count(stats_port):
    with socket.create_connection((HOST, stats_port), timeout=5) as s:
        data = b""
        while True:
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
    return int(data.strip() or b"0")


def http_get(port, timeout=5.0):
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def tcp_exchange(port, request, n, timeout=5.0):
    """Sends `request`, reads `n` bytes (fewer if the peer closes first)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while len(data) < n:
            chunk = s.recv(n - len(data))
            if not chunk:
                break
            data += chunk
    return data


def pg_bin(name):
    """A PostgreSQL program: Debian keeps the server's in /usr/lib/postgresql/VERSION/bin (not
    on the PATH), the newest version first; otherwise from the PATH."""
    def version(path):
        v = path.split(os.sep)[-3]
        return int(v) if v.isdigit() else 0

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True)
    if found:
        return found[0]
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"{name} not found (Debian: apt-get install postgresql)")


# --------------------------------------------------------------------------------------------
# the measurements
# --------------------------------------------------------------------------------------------


def run_iperf(port, duration, parallel):
    argv = ["iperf3", "-c", HOST, "-p", str(port), "-t", str(duration), "-J",
            "--connect-timeout", "3000"]
    if parallel > 1:
        argv += ["-P", str(parallel)]
    last_err = None
    for attempt in range(3):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 20)
        except subprocess.TimeoutExpired:
            last_err = "iperf3 timed out"
            continue
        try:
            doc = json.loads(r.stdout)
        except json.JSONDecodeError:
            last_err = f"iperf3 printed no JSON (exit {r.returncode}): {r.stderr.strip()[:200]}"
            time.sleep(1)
            continue
        if "error" in doc:
            last_err = f"iperf3: {doc['error']}"
            time.sleep(1)  # "the server is busy": the previous test is still closing
            continue
        recv = doc["end"]["sum_received"]
        return {"gbps": recv["bits_per_second"] / 1e9, "bytes": recv["bytes"]}
    raise RuntimeError(last_err)


UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not m:
        raise ValueError(f"wrk duration {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def run_wrk(port, duration, conns, close):
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "2s"]
    if close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{HOST}:{port}/")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 20)
    out = r.stdout
    if r.returncode != 0:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stderr.strip()[:200]}")
    res = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk output without Requests/sec: {out[:400]}")
    res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    res["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)", out, re.M)
        res[f"p{pct}"] = parse_duration_ms(m.group(1)) if m else None
    errs = []
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m and any(int(x) for x in m.groups()):
        errs.append(f"socket errors connect {m.group(1)}, read {m.group(2)}, "
                    f"write {m.group(3)}, timeout {m.group(4)}")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs.append(f"{m.group(1)} non-2xx/3xx responses")
    res["errors"] = "; ".join(errs)
    return res


def run_redis_benchmark(port, clients, requests, timeout):
    """redis-benchmark SET then GET, `requests` of each over `clients` persistent connections
    (64-byte values, random keys among 100,000). Bounded by the count, and killed at `timeout`."""
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(clients), "-n", str(requests),
            "-d", "64", "-r", "100000", "-t", "set,get", "--csv"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"redis-benchmark failed ({r.returncode}): {(r.stderr or r.stdout).strip()[:200]}")
    res = {}
    for line in r.stdout.splitlines():
        cells = [c.strip('"') for c in line.strip().split(",")]
        if len(cells) < 7 or cells[0] not in ("SET", "GET"):
            continue
        # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms",...
        res[cells[0].lower()] = {"rps": float(cells[1]), "p50": float(cells[4]), "p99": float(cells[6])}
    if set(res) != {"set", "get"}:
        raise RuntimeError(f"redis-benchmark printed no SET and GET rows: {r.stdout[:400]!r} {r.stderr[:200]!r}")
    return res


def run_pgbench(port, clients, duration, connect, log_dir):
    """pgbench -S (select-only: one indexed SELECT on pgbench_accounts per transaction) for
    `duration` seconds over `clients` connections; with `connect`, -C: a new connection for
    every transaction. Latencies come from pgbench's per-transaction log (-l)."""
    for f in glob.glob(os.path.join(log_dir, "pgbench_log.*")):
        os.unlink(f)
    prefix = os.path.join(log_dir, "pgbench_log")
    # Prepared statements on persistent connections (the query is parsed once, as an
    # application's driver would); the simple protocol with -C, where each connection runs one
    # query and preparing it would be one more round trip.
    argv = [pg_bin("pgbench"), "-n", "-S", "-T", str(duration), "-c", str(clients), "-j", "1",
            "-M", "simple" if connect else "prepared", "-l", f"--log-prefix={prefix}",
            "-h", HOST, "-p", str(port), "-U", "postgres", "postgres"]
    if connect:
        argv.insert(1, "-C")
    # No encryption negotiation (libpq would first ask for GSS, then TLS, each a round trip the
    # server declines): a connection is the startup packet, trust authentication and the query.
    env = dict(os.environ, PGGSSENCMODE="disable", PGSSLMODE="disable")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 30, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"pgbench failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    m = re.search(r"number of transactions actually processed: (\d+)", r.stdout)
    if not m:
        raise RuntimeError(f"pgbench output without a transaction count: {r.stdout[-400:]}")
    done = int(m.group(1))
    m = re.search(r"number of failed transactions: (\d+)", r.stdout)
    failed = int(m.group(1)) if m else 0
    # "(without initial connection time)" on persistent connections, "(including reconnection
    # times)" with -C: both count what was done over the run.
    m = re.search(r"tps = ([\d.]+)", r.stdout)
    tps = float(m.group(1))
    # Log lines: client_id transaction_no latency_us script_no epoch_s epoch_us
    lat = []
    for f in glob.glob(prefix + ".*"):
        with open(f) as fh:
            for line in fh:
                cols = line.split()
                if len(cols) >= 3 and cols[2].isdigit():
                    lat.append(int(cols[2]))
        os.unlink(f)
    ms = lambda p: pct_index(lat, p) / 1000 if lat else None
    return {"tps": tps, "transactions": done, "failed": failed, "p50": ms(50), "p99": ms(99)}


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------


class Bench(Recorder):
    def __init__(self, tmp):
        super().__init__()
        self.tmp = tmp
        quick = os.environ.get("QUICK", "") not in ("", "0")
        self.quick = quick
        self.runs = env_int("RUNS", 1 if quick else 5)
        self.duration = env_int("DURATION", 2 if quick else 3)
        self.parallel = env_int("PARALLEL", 8)
        self.wrk_conns = env_int("WRK_CONNS", 16)
        self.mem_conns = env_int("MEM_CONNS", 1000 if quick else 9000)
        self.mem_batch = env_int("MEM_BATCH", 250)
        self.mem_bytes = env_int("MEM_BYTES", 16)
        self.body_bytes = env_int("BODY_BYTES", 64)
        self.settle = env_float("SETTLE", 1.0)
        self.nginx_workers = env_int("NGINX_WORKERS", 1)
        self.haproxy_splice = os.environ.get("HAPROXY_SPLICE", "auto")
        self.bin = os.environ.get("TCP_REDIRS_BIN") or os.path.join(ROOT, "target/release/tcp-redirs")
        self.base_bin = os.environ.get("TCP_REDIRS_BASE_BIN", "")
        self.perf = False
        self.redis_clients = env_int("REDIS_CLIENTS", 50)
        self.redis_requests = env_int("REDIS_REQUESTS", 50000 if quick else 200000)
        self.pg_clients = env_int("PG_CLIENTS", 16)
        self.pg_scale = env_int("PG_SCALE", 10)
        self.tests = [t for t in os.environ.get("TESTS", DEFAULT_TESTS).split(",") if t]
        known = DEFAULT_TESTS.split(",")
        for t in self.tests:
            if t not in known:
                raise SystemExit(f"TESTS: unknown test {t!r} (known: {', '.join(known)})")
        self.backends = BASE_BACKENDS + sorted({TEST_BACKEND[t] for t in self.tests if t in TEST_BACKEND},
                                               key=["redis", "pg"].index)
        self.paths = [p for p in os.environ.get("PATHS", ",".join(PATHS)).split(",") if p]
        for p in self.paths:
            if p not in ALL_PATHS:
                raise SystemExit(f"PATHS: unknown path {p!r} (known: {', '.join(ALL_PATHS)})")
        self.procs = Procs(tmp)
        self.revision = source_revision()
        self.pgid = {}  # forwarder name -> process group id
        self.modes = {}  # tcp-redirs server -> the --port-mode it was given
        self.port = {}  # (path, backend) -> port
        self.versions = {}

    # ---- set-up ------------------------------------------------------------------------------

    def setup(self):
        tmp = self.tmp
        # Ports: one per backend for direct, and one per backend for each forwarder that is
        # not told its ports (tcp-redirs allocates its own), plus the echo server's stats.
        fixed = ["direct", "haproxy", "haproxy-splice", "socat"]
        ports = pick_ports(len(fixed) * len(self.backends) + 1)
        self.stats_port = ports.pop()
        for path in fixed:
            for backend in self.backends:
                self.port[(path, backend)] = ports.pop()
        self.iperf_port, self.http_port, self.echo_port = (self.port[("direct", b)] for b in BASE_BACKENDS)

        # backends
        self.procs.start("iperf3 server", ["iperf3", "-s", "-B", HOST, "-p", str(self.iperf_port)],
                         log_path=os.path.join(tmp, "iperf3.log"))
        self.start_nginx()
        self.procs.start("echo server", [sys.executable, os.path.abspath(__file__), "echo",
                                         str(self.echo_port), str(self.stats_port)],
                         log_path=os.path.join(tmp, "echo.log"))
        if "redis" in self.backends:
            self.start_redis()
        if "pg" in self.backends:
            self.start_postgres()
        for what, port in (("iperf3 server", self.iperf_port), ("nginx", self.http_port),
                           ("echo server", self.echo_port), ("echo stats", self.stats_port)):
            wait_port(port, what=what)
        if "redis" in self.backends:
            wait_port(self.port[("direct", "redis")], what="redis-server")
        if "pg" in self.backends:
            self.init_postgres()
        if "tcp-redirs-base" in self.paths and not os.access(self.base_bin, os.X_OK):
            raise RuntimeError("PATHS has tcp-redirs-base: set TCP_REDIRS_BASE_BIN to the second "
                               f"binary (now {self.base_bin!r}, not an executable)")
        for name in ("tcp-redirs", "tcp-redirs-log", "tcp-redirs-limits", "tcp-redirs-base"):
            if name in self.paths:
                self.start_tcp_redirs(name, ["--access-log"] if name == "tcp-redirs-log" else [])
        self.perf = perf_usable(COUNTERS)
        if not self.perf and any(t in self.tests for t in ("rr", "cc")):
            self.note("perf stat cannot count context switches and syscall tracepoints here "
                      "(perf missing, or perf_event_paranoid > 1 without root): no saturation counters")
        if "haproxy" in self.paths:
            self.start_haproxy("haproxy", self.haproxy_splice)
        if "haproxy-splice" in self.paths:
            self.start_haproxy("haproxy-splice", "all")
        if "socat" in self.paths:
            self.start_socat()
        self.sanity()

    def start_redis(self):
        d = os.path.join(self.tmp, "redis")
        os.makedirs(d, exist_ok=True)
        # No persistence at all (no RDB snapshot, no AOF): the disk stays out of the figures.
        # The default of 10,000 clients is more than enough for REDIS_CLIENTS.
        self.procs.start("redis-server",
                         ["redis-server", "--bind", HOST, "--port", str(self.port[("direct", "redis")]),
                          "--save", "", "--appendonly", "no", "--dir", d, "--daemonize", "no",
                          "--protected-mode", "no", "--logfile", ""],
                         log_path=os.path.join(d, "redis.log"))

    def start_postgres(self):
        """A throwaway cluster in the temporary directory: initdb, then `postgres` itself in the
        foreground (in its own process group like every other backend, not through pg_ctl's
        daemon), TCP on 127.0.0.1 only, its Unix socket in the same directory. As root, both
        run as the `postgres` account (the server refuses root)."""
        self.pg_user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root, and there is no `postgres` account to run "
                                   "PostgreSQL as (Debian's package makes it)") from None
            self.pg_user = "postgres"
            # mktemp -d made the directory 0700: the postgres account must be able to go through it.
            os.chmod(self.tmp, 0o711)
        d = os.path.join(self.tmp, "pg")
        os.makedirs(d)
        if self.pg_user:
            ids = account(self.pg_user)
            os.chown(d, ids["user"], ids["group"])
        data = os.path.join(d, "data")
        t0 = time.monotonic()
        r = subprocess.run([pg_bin("initdb"), "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                            "--no-sync"], capture_output=True, text=True, timeout=120,
                           **account(self.pg_user))
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed ({r.returncode}): {(r.stdout + r.stderr)[-1000:]}")
        # fsync and synchronous_commit off: select-only load writes nothing anyway, and the
        # set-up (pgbench -i) should not wait for the disk. max_connections above PG_CLIENTS.
        self.procs.start("postgres",
                         [pg_bin("postgres"), "-D", data, "-p", str(self.port[("direct", "pg")]),
                          "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={d}",
                          "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                          "-c", f"max_connections={max(100, 2 * self.pg_clients + 20)}",
                          "-c", "shared_buffers=256MB", "-c", "log_min_messages=warning"],
                         log_path=os.path.join(d, "postgres.log"), user=self.pg_user)
        self.pg_started = t0

    def init_postgres(self):
        port = self.port[("direct", "pg")]
        last = [""]

        def ready():
            r = subprocess.run([pg_bin("pg_isready"), "-h", HOST, "-p", str(port), "-t", "2"],
                               capture_output=True, text=True, timeout=10)
            last[0] = r.stdout.strip()
            if r.returncode != 0:
                self.procs.check_alive()
            return r.returncode == 0
        wait_until(ready, 60, every=0.2,
                   fail=lambda: f"PostgreSQL on port {port} not ready within 60 s: {last[0]}")
        r = subprocess.run([pg_bin("pgbench"), "-i", "-q", "-s", str(self.pg_scale), "-h", HOST,
                            "-p", str(port), "-U", "postgres", "postgres"],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"pgbench -i failed ({r.returncode}): {r.stderr[-1000:]}")
        log(f"PostgreSQL ready on port {port} (pgbench scale {self.pg_scale}) in "
            f"{time.monotonic() - self.pg_started:.1f} s")

    def start_nginx(self):
        body = "x" * max(0, self.body_bytes - 1) + "\n" if self.body_bytes else ""
        start_nginx_http(self.procs, os.path.join(self.tmp, "nginx"), f"{HOST}:{self.http_port}", body,
                         self.nginx_workers)

    def start_tcp_redirs(self, name="tcp-redirs", extra=()):
        binary = self.base_bin if name == "tcp-redirs-base" else self.bin
        if not os.access(binary, os.X_OK):
            raise RuntimeError(f"{binary} is not executable: cargo build --release first, "
                               "or set TCP_REDIRS_BIN")
        cfg = os.path.join(self.tmp, f"{name}-cfg")
        data = os.path.join(self.tmp, f"{name}-data")
        # PORT_MODE (BASE_PORT_MODE for tcp-redirs-base): the server's --port-mode, through
        # TCP_REDIRS_PORT_MODE; unset: the server's default (auto: steered as root).
        mode = os.environ.get("BASE_PORT_MODE" if name == "tcp-redirs-base" else "PORT_MODE", "")
        env = server_env(cfg, "bench", **({"TCP_REDIRS_PORT_MODE": mode} if mode else {}))
        if mode != "bound" and os.geteuid() == 0 and not own_netns():
            raise RuntimeError(f"{name} would steer its ports in the machine's network namespace: "
                               "run bench/run.sh (it enters one of its own), or set PORT_MODE=bound")
        p, url = start_serve(self.procs, f"{name} serve",
                             [binary, "serve", "--listen", f"{HOST}:0", "--data-dir", data,
                              "--public-bind", HOST, *extra],
                             env, os.path.join(self.tmp, f"{name}.log"))
        self.modes[name] = mode or "auto"
        self.pgid[name] = p.pid
        log(f"tcp-redirs control API at {url}")
        cenv = dict(os.environ, TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN="bench",
                    TCP_REDIRS_CONFIG_DIR=cfg)
        for backend in self.backends:
            port = self.port[("direct", backend)]
            run_cli(binary, ["apps", "create", f"bench-{backend}", "--instance", f"{HOST}:{port}"], cenv)
            limits = LIMITS_ADD if name == "tcp-redirs-limits" else []
            out = run_cli(binary, ["add", "--app", f"bench-{backend}", "--namespace", "default", "-F", "json",
                                   *limits], cenv)
            doc = json.loads(out)
            self.port[(name, backend)] = int(doc["port"])

    def start_haproxy(self, name, mode):
        if mode == "all":
            splice = "    option splice-auto\n    option splice-request\n    option splice-response\n"
        elif mode == "none":
            splice = ""
        else:
            splice = "    option splice-auto\n"
        maxconn = max(1000, self.mem_conns + 100)
        # HAProxy 2.6 (Debian 12) is built with USE_LINUX_SPLICE: the splice options work.
        # It sizes its descriptors as 2 x maxconn + 2 x maxpipes (maxconn / 4 by default):
        # with the 20,000 fds of this machine, the pipes must be capped for 9,000 connections.
        conf = f"""global
    maxconn {maxconn}
    maxpipes 256
defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 1h
    timeout server 1h
{splice}"""
        for backend in self.backends:
            front, back = self.port[(name, backend)], self.port[("direct", backend)]
            conf += f"""
frontend f_{backend}
    bind {HOST}:{front}
    default_backend b_{backend}
backend b_{backend}
    server s1 {HOST}:{back}
"""
        path = os.path.join(self.tmp, f"{name}.cfg")
        with open(path, "w") as f:
            f.write(conf)
        chk = subprocess.run(["haproxy", "-c", "-f", path], capture_output=True, text=True, timeout=30)
        if chk.returncode != 0:
            raise RuntimeError(f"haproxy config check failed: {chk.stdout}{chk.stderr}")
        p = self.procs.start(name, ["haproxy", "-db", "-f", path],
                             log_path=os.path.join(self.tmp, f"{name}.log"))
        self.pgid[name] = p.pid
        for backend in self.backends:
            wait_port(self.port[(name, backend)], what=name)

    def start_socat(self):
        # One listener per backend, `fork` = one process per connection. backlog: socat's
        # default is 5, which makes it drop SYNs under wrk's reconnects and the 9,000-connection
        # test; nodelay: TCP_NODELAY like the other two forwarders.
        self.socat_pgid = {}
        for name in self.backends:
            front, back = self.port[("socat", name)], self.port[("direct", name)]
            p = self.procs.start(f"socat {name}",
                                 ["socat", f"TCP-LISTEN:{front},bind={HOST},fork,reuseaddr,backlog=4096,nodelay",
                                  f"TCP:{HOST}:{back},nodelay"],
                                 log_path=os.path.join(self.tmp, f"socat-{name}.log"))
            self.socat_pgid[name] = p.pid
            wait_port(front, what=f"socat {name}")

    def fwd_pgid(self, path, backend):
        if path == "socat":
            return self.socat_pgid[backend]
        return self.pgid.get(path)

    def sanity(self):
        for path in self.paths:
            data = http_get(self.port[(path, "http")])
            if not data.startswith(b"HTTP/1.1 200") or not data.endswith(
                    ("x" * max(0, self.body_bytes - 1) + "\n").encode() if self.body_bytes else b""):
                raise RuntimeError(f"HTTP through {path} answered {data[:200]!r}")
            with socket.create_connection((HOST, self.port[(path, "echo")]), timeout=5) as s:
                s.sendall(b"ping")
                got = b""
                while len(got) < 4:
                    chunk = s.recv(16)
                    if not chunk:
                        break
                    got += chunk
                if got != b"ping":
                    raise RuntimeError(f"echo through {path} answered {got!r}")
            if "redis" in self.backends:
                got = tcp_exchange(self.port[(path, "redis")], b"PING\r\n", 7)
                if got != b"+PONG\r\n":
                    raise RuntimeError(f"Redis through {path} answered {got!r} to PING")
            if "pg" in self.backends:
                # An SSLRequest (length 8, code 80877103): the server answers one byte, N or S.
                got = tcp_exchange(self.port[(path, "pg")], (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"), 1)
                if got not in (b"N", b"S"):
                    raise RuntimeError(f"PostgreSQL through {path} answered {got!r} to an SSLRequest")
        self.wait_echo_drained()
        log("all paths answer: " + "; ".join(
            f"{p} " + " ".join(f"{b}:{self.port[(p, b)]}" for b in self.backends) for p in self.paths))

    # ---- memory ------------------------------------------------------------------------------

    def wait_echo_drained(self, timeout=30.0):
        """How many connections the echo backend still holds once none (or after `timeout` s)."""
        left = [0]

        def drained():
            left[0] = echo_count(self.stats_port)
            return left[0] <= 0
        wait_until(drained, timeout, every=0.1)
        return left[0]

    def fwd_memory_kib(self, path):
        pgid = self.fwd_pgid(path, "echo")
        if path == "socat":
            # socat forks one process per connection: summing their RSS would count the shared
            # pages thousands of times, so sum PSS (each shared page divided among its users).
            return sum(pss_kib(pid) for pid in group_pids(pgid))
        return vmrss_kib(pgid)

    def mem_test(self, path):
        n_target = self.mem_conns
        left = self.wait_echo_drained()
        if left:
            self.note(f"memory/{path}: the echo backend still held {left} connections before the test")
        time.sleep(self.settle)
        base = self.fwd_memory_kib(path)
        port = self.port[(path, "echo")]
        socks = []
        t0 = time.monotonic()
        deadline = t0 + 60 + n_target / 100
        failure = None
        try:
            while len(socks) < n_target and not failure:
                if time.monotonic() > deadline:
                    failure = "time bound reached while opening"
                    break
                for _ in range(min(self.mem_batch, n_target - len(socks))):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    s.settimeout(5)
                    try:
                        s.connect((HOST, port))
                    except OSError as e:
                        s.close()
                        failure = f"connect #{len(socks) + 1} failed: {e}"
                        break
                    socks.append(s)
                # wait until the forwarder has connected every one to the backend
                if not wait_until(lambda: echo_count(self.stats_port) >= len(socks), 20, every=0.02):
                    failure = (f"only {echo_count(self.stats_port)} of {len(socks)} connections "
                               "reached the backend within 20 s")
            held = echo_count(self.stats_port)
            n = min(held, len(socks))
            if failure:
                self.note(f"memory/{path}: {failure}; measured with {n} connections")
            if n == 0:
                return
            time.sleep(self.settle)
            idle = self.fwd_memory_kib(path)
            # a little data each way on every connection
            payload = b"m" * self.mem_bytes
            for s in socks:
                s.sendall(payload)
            bad = 0
            for s in socks:
                got = 0
                try:
                    while got < len(payload):
                        chunk = s.recv(len(payload) - got)
                        if not chunk:
                            break
                        got += len(chunk)
                except OSError:
                    pass
                if got < len(payload):
                    bad += 1
                if time.monotonic() > deadline + 60:
                    self.note(f"memory/{path}: time bound reached while reading echoes")
                    break
            if bad:
                self.note(f"memory/{path}: {bad} connections did not echo {self.mem_bytes} bytes back")
            time.sleep(self.settle)
            after = self.fwd_memory_kib(path)
            self.add("mem_base", path, base / 1024)
            self.add("mem_idle", path, (idle - base) / n)
            self.add("mem_data", path, (after - base) / n)
            self.add("mem_conns", path, n)
            log(f"memory {path}: base {base / 1024:.1f} MiB, {n} conns: +{(idle - base) / n:.2f} KiB/conn idle, "
                f"+{(after - base) / n:.2f} KiB/conn after data ({time.monotonic() - t0:.1f} s)")
        finally:
            for s in socks:
                s.close()
            left = self.wait_echo_drained(timeout=60)
            if left:
                self.note(f"memory/{path}: {left} backend connections still open 60 s after closing")

    # ---- load tests --------------------------------------------------------------------------

    def cpu_before(self, path, backend):
        pgid = self.fwd_pgid(path, backend)
        return group_cpu(pgid) if pgid else None

    def cpu_after(self, path, backend, before):
        if before is None:
            return None
        # socat: until it has reaped its children (their time then reaches the parent's), 2 s at most
        pgid = self.fwd_pgid(path, backend)
        wait_until(lambda: group_pids(pgid) == [pgid], 2.0, every=0.01)
        return group_cpu(pgid) - before

    def one(self, test, path):
        if test in ("bulk1", "bulkN"):
            parallel = 1 if test == "bulk1" else self.parallel
            c0 = self.cpu_before(path, "iperf")
            r = run_iperf(self.port[(path, "iperf")], self.duration, parallel)
            cpu = self.cpu_after(path, "iperf", c0)
            self.add(f"{test}_gbps", path, r["gbps"])
            if cpu is not None and r["bytes"]:
                self.add(f"{test}_cpu", path, cpu / (r["bytes"] / 1e9))
            return f"{r['gbps']:.2f} Gbit/s" + (f", {cpu / (r['bytes'] / 1e9):.2f} CPU-s/GB" if cpu is not None else "")
        if test == "redis":
            c0 = self.cpu_before(path, "redis")
            r = run_redis_benchmark(self.port[(path, "redis")], self.redis_clients, self.redis_requests,
                                    timeout=120)
            cpu = self.cpu_after(path, "redis", c0)
            for cmd in ("set", "get"):
                self.add(f"redis_{cmd}_rps", path, r[cmd]["rps"])
                self.add(f"redis_{cmd}_p99", path, r[cmd]["p99"])
            if cpu is not None:
                self.add("redis_cpu", path, cpu / (2 * self.redis_requests) * 1e6)
            return (f"SET {r['set']['rps']:.0f}/s p99 {r['set']['p99']:.3f} ms, GET {r['get']['rps']:.0f}/s "
                    f"p99 {r['get']['p99']:.3f} ms" + (f", {cpu / (2 * self.redis_requests) * 1e6:.1f} CPU-us/op"
                                                       if cpu is not None else ""))
        if test in ("pg", "pgconn"):
            connect = test == "pgconn"
            c0 = self.cpu_before(path, "pg")
            r = run_pgbench(self.port[(path, "pg")], self.pg_clients, self.duration, connect, self.tmp)
            cpu = self.cpu_after(path, "pg", c0)
            self.add(f"{test}_tps", path, r["tps"])
            self.add(f"{test}_p50", path, r["p50"])
            self.add(f"{test}_p99", path, r["p99"])
            if cpu is not None and r["transactions"]:
                self.add(f"{test}_cpu", path, cpu / r["transactions"] * 1e6)
            if r["failed"]:
                self.note(f"{test}/{path}: pgbench reported {r['failed']} failed transactions")
            return (f"{r['tps']:.0f} tps, p50 {r['p50'] or 0:.3f} ms, p99 {r['p99'] or 0:.3f} ms"
                    + (f", {cpu / r['transactions'] * 1e6:.1f} CPU-us/tx" if cpu is not None and r["transactions"] else ""))
        close = test == "cc"
        c0 = self.cpu_before(path, "http")
        pgid = self.fwd_pgid(path, "http")
        # socat forks a process per connection, which perf -p would not see: no counters.
        counting = (PerfStat(pgid, os.path.join(self.tmp, "perf-stat.csv"), COUNTERS)
                    if self.perf and pgid and path != "socat" else contextlib.nullcontext())
        segs = tcp_out_segs()
        with counting:
            r = run_wrk(self.port[(path, "http")], self.duration, self.wrk_conns, close)
        segs = tcp_out_segs() - segs
        cpu = self.cpu_after(path, "http", c0)
        self.add(f"{test}_rps", path, r["rps"])
        self.add(f"{test}_p50", path, r["p50"])
        self.add(f"{test}_p99", path, r["p99"])
        if cpu is not None and r["requests"]:
            self.add(f"{test}_cpu", path, cpu / r["requests"] * 1e6)
        if r["requests"]:
            # Every hop's segments (client, forwarder, backend): the forwarder's share is the
            # difference from the direct path.
            self.add(f"{test}_segs", path, segs / r["requests"])
            for key, value in (getattr(counting, "counts", None) or {}).items():
                self.add(f"{test}_{key}", path, value / r["requests"])
        if r["errors"]:
            self.note(f"{test}/{path}: wrk reported {r['errors']}")
        return f"{r['rps']:.0f} req/s, p50 {r['p50'] or 0:.3f} ms, p99 {r['p99'] or 0:.3f} ms"

    def run(self):
        self.setup()
        started = time.monotonic()
        if "mem" in self.tests:
            for path in self.paths:
                if path in FORWARDERS:
                    self.procs.check_alive()
                    self.mem_test(path)
        # interleaved: every round runs every path, the starting path rotating
        self.rounds([t for t in self.tests if t != "mem"], pause=0.5)
        log(f"load tests took {time.monotonic() - started:.0f} s")

    # ---- report ------------------------------------------------------------------------------

    def table(self):
        n = self.parallel
        rows = [
            ("bulk1_gbps", "Bulk, 1 connection (Gbit/s)", "{:.2f}", False),
            ("bulkN_gbps", f"Bulk, {n} connections (Gbit/s)", "{:.2f}", False),
            ("bulk1_cpu", "Forwarder CPU-s per GB, 1 connection (lower is better)", "{:.3f}", True),
            ("bulkN_cpu", f"Forwarder CPU-s per GB, {n} connections (lower is better)", "{:.3f}", True),
            ("rr_rps", f"Requests/s, {self.wrk_conns} persistent connections", "{:,.0f}", False),
            ("rr_p50", "Request latency p50, ms (lower is better)", "{:.3f}", True),
            ("rr_p99", "Request latency p99, ms (lower is better)", "{:.3f}", True),
            ("rr_cpu", "Forwarder CPU-us per request (lower is better)", "{:.1f}", True),
            ("cc_rps", "New connections/s (Connection: close)", "{:,.0f}", False),
            ("cc_p99", "New-connection request p99, ms (lower is better)", "{:.3f}", True),
            ("cc_cpu", "Forwarder CPU-us per new connection (lower is better)", "{:.1f}", True),
            *[(f"rr_{key}", f"{label} per request (forwarder; lower is better)", "{:.2f}", True)
              for key, _, _, label in COUNTERS],
            ("rr_segs", "TCP segments per request, all hops (nstat; lower is better)", "{:.2f}", True),
            *[(f"cc_{key}", f"{label} per new connection (forwarder; lower is better)", "{:.2f}", True)
              for key, _, _, label in COUNTERS],
            ("cc_segs", "TCP segments per new connection, all hops (nstat; lower is better)", "{:.2f}", True),
            ("redis_set_rps", f"Redis SET/s, {self.redis_clients} connections (redis-benchmark)", "{:,.0f}", False),
            ("redis_get_rps", f"Redis GET/s, {self.redis_clients} connections", "{:,.0f}", False),
            ("redis_set_p99", "Redis SET p99, ms (lower is better)", "{:.3f}", True),
            ("redis_get_p99", "Redis GET p99, ms (lower is better)", "{:.3f}", True),
            ("redis_cpu", "Forwarder CPU-us per Redis command (lower is better)", "{:.2f}", True),
            ("pg_tps", f"PostgreSQL select-only tx/s, {self.pg_clients} connections (pgbench -S)", "{:,.0f}", False),
            ("pg_p50", "PostgreSQL select-only latency p50, ms (lower is better)", "{:.3f}", True),
            ("pg_p99", "PostgreSQL select-only latency p99, ms (lower is better)", "{:.3f}", True),
            ("pg_cpu", "Forwarder CPU-us per PostgreSQL transaction (lower is better)", "{:.2f}", True),
            ("pgconn_tps", "PostgreSQL new connections/s (pgbench -S -C)", "{:,.0f}", False),
            ("pgconn_p99", "PostgreSQL new-connection transaction p99, ms (lower is better)", "{:.3f}", True),
            ("pgconn_cpu", "Forwarder CPU-us per PostgreSQL connection (lower is better)", "{:.1f}", True),
            ("mem_base", "Forwarder memory at rest, MiB (lower is better)", "{:.1f}", True),
            ("mem_idle", "Memory per idle connection, no data yet, KiB (lower is better)", "{:.2f}", True),
            ("mem_data", f"Memory per idle connection after {self.mem_bytes} B each way, KiB (lower is better)",
             "{:.2f}", True),
        ]
        cols = [p for p in ALL_PATHS if p in PATHS or p in self.paths]
        refs = ["direct", "haproxy"] + (["haproxy-splice"] if "haproxy-splice" in self.paths else [])
        # The targets are against the better of the two HAProxy columns, row by row.
        better = "haproxy" in self.paths and "haproxy-splice" in self.paths
        based = "tcp-redirs-base" in self.paths
        logged = "tcp-redirs-log" in self.paths and "tcp-redirs" in self.paths
        limited = "tcp-redirs-limits" in self.paths and "tcp-redirs" in self.paths
        header = ["metric", *cols, *[f"tcp-redirs/{r}" for r in refs],
                  *(["tcp-redirs/better HAProxy"] if better else []),
                  *(["tcp-redirs/tcp-redirs-base (paired)"] if based else []),
                  *(["tcp-redirs-log/tcp-redirs"] if logged else []),
                  *(["tcp-redirs-limits/tcp-redirs (paired)"] if limited else [])]
        body = []
        for key, label, fmt, lower in rows:
            if key not in self.raw:
                continue
            vals = {p: self.med(key, p) for p in ALL_PATHS}
            cells = [label]
            for p in cols:
                cells.append(fmt.format(vals[p]) if vals[p] is not None else "—")
            tr = vals["tcp-redirs"]
            for ref in refs:
                r = vals[ref]
                cells.append(f"{tr / r:.2f}" if tr is not None and r not in (None, 0) else "—")
            if better:
                hs = [v for v in (vals["haproxy"], vals["haproxy-splice"]) if v is not None]
                r = (min(hs) if lower else max(hs)) if hs else None
                cells.append(f"{tr / r:.2f}" if tr is not None and r not in (None, 0) else "—")
            if based:
                # Round by round (the two ran a few seconds apart), then the median: on a
                # noisy machine this moves less than the ratio of the two medians.
                a = self.raw.get(key, {}).get("tcp-redirs", [])
                b = self.raw.get(key, {}).get("tcp-redirs-base", [])
                pairs = [x / y for x, y in zip(a, b) if y] if len(a) == len(b) else []
                cells.append(f"{statistics.median(pairs):.3f}" if pairs else "—")
            if logged:
                lg = vals["tcp-redirs-log"]
                cells.append(f"{lg / tr:.3f}" if lg is not None and tr not in (None, 0) else "—")
            if limited:
                a = self.raw.get(key, {}).get("tcp-redirs-limits", [])
                b = self.raw.get(key, {}).get("tcp-redirs", [])
                pairs = [x / y for x, y in zip(a, b) if y] if len(a) == len(b) else []
                cells.append(f"{statistics.median(pairs):.3f}" if pairs else "—")
            body.append(cells)
        return md_table(header, body)

    def context(self):
        ver = tool_version
        cpu = cpu_model()
        mem_n = self.raw.get("mem_conns", {})
        conns = ", ".join(f"{p} {int(v[0])}" for p, v in mem_n.items()) or "—"
        splice = "haproxy: " + SPLICE_TEXT.get(self.haproxy_splice, self.haproxy_splice)
        if "haproxy-splice" in self.paths:
            splice += f"; haproxy-splice: {SPLICE_TEXT['all']}, i.e. splice forced on every connection"
        v_hap = ver(["haproxy", "-v"], r"version (\S+)")
        v_socat = ver(["socat", "-V"], r"socat version (\S+)")
        v_iperf = ver(["iperf3", "--version"], r"iperf (\S+)")
        v_nginx = ver(["nginx", "-v"], r"nginx/(\S+)")
        v_wrk = ver(["wrk", "-v"], r"wrk (\S+)")
        protocols = []
        if "redis" in self.backends:
            v_redis = ver(["redis-server", "--version"], r"v=(\S+)")
            protocols.append(f"Redis {v_redis} (no persistence; redis-benchmark SET then GET, "
                             f"{self.redis_requests:,} of each per run over {self.redis_clients} connections, "
                             "64-byte values, random keys; its own p99)")
        if "pg" in self.backends:
            v_pg = ver([pg_bin("postgres"), "--version"], r"(\d+\.\d+)")
            protocols.append(f"PostgreSQL {v_pg} (a throwaway cluster, fsync off; pgbench -S -M prepared "
                             f"over {self.pg_clients} connections, scale {self.pg_scale}; -C: a new "
                             "connection per transaction, simple protocol; p50/p99 from pgbench's "
                             "per-transaction log)")
        return [
            f"- when: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; tcp-redirs {self.revision} "
            f"(`{self.bin}`)" + (f"; tcp-redirs-base: `{self.base_bin}`" if "tcp-redirs-base" in self.paths else ""),
            *([f"- port modes: " + ", ".join(f"{n} `--port-mode {m}`" for n, m in self.modes.items())
               + ("; in a network namespace of the benchmark's own" if own_netns() else "")] if self.modes else []),
            *(["- saturation counters (rows per request and per new connection): `perf stat -e "
               + ",".join(e + (f" --filter '{f}'" if f else "") for _, e, f, _ in COUNTERS)
               + " -p THREADS` over each wrk run, divided by the requests wrk counted; TCP segments: "
               "/proc/net/snmp OutSegs (what nstat reads) over the run, every hop's"] if self.perf else []),
            f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}",
            f"- peers: HAProxy {v_hap} (`mode tcp`, {splice}), socat {v_socat} (`fork`); "
            f"backends: iperf3 {v_iperf}, nginx {v_nginx} ({self.nginx_workers} worker, "
            f"{self.body_bytes}-byte body); clients: iperf3, wrk {v_wrk}",
            f"- each number: median of {self.runs} runs of {self.duration} s, the paths interleaved "
            f"(round 1: {', '.join(self.paths)}; each round starts one path further); "
            f"ratios: tcp-redirs divided by direct / by HAProxy (in rows marked lower is better, "
            f"below 1 is better)",
            *([f"- protocols: {'; '.join(protocols)}; CPU per command, transaction or connection: "
               "the forwarder's CPU seconds over the run divided by their number"] if protocols else []),
            *([f"- memory: measured once per forwarder with {conns} idle connections through it to an "
               f"echo backend (RSS delta / connections; socat: PSS summed over its processes)"]
              if "mem" in self.tests else []),
        ]

    def report(self):
        table = self.table()
        print(table, flush=True)
        cmd = command_line("bench/run.sh", ("QUICK", "RUNS", "DURATION", "MEM_CONNS", "HAPROXY_SPLICE",
                                            "PARALLEL", "WRK_CONNS", "BODY_BYTES", "PATHS", "TESTS",
                                            "REDIS_CLIENTS", "REDIS_REQUESTS", "PG_CLIENTS", "PG_SCALE",
                                            "TCP_REDIRS_THREADS", "PORT_MODE",
                                            "BASE_PORT_MODE", "RESULTS"))
        md = ["# tcp-redirs benchmark", "", f"`{cmd}`", "", *self.context(), "", table, ""]
        if self.notes:
            md += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        md += ["## Every run", "", *raw_lines(self.raw), ""]
        out = os.environ.get("RESULTS") or os.path.join(HERE, "results.md")
        with open(out, "w") as f:
            f.write("\n".join(md))
        for n in self.notes:
            print(f"note: {n}", file=sys.stderr)
        log(f"written {out}")


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "echo":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        echo_server(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        print(__doc__, file=sys.stderr)
        return 2
    tmp = sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    limit = raise_nofile()[0]
    b = Bench(tmp)
    if limit < 2 * b.mem_conns + 500:
        log(f"warning: the fd limit is {limit}; holding {b.mem_conns} connections needs more")
    return b.drive()


if __name__ == "__main__":
    sys.exit(main())
