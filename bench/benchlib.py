"""What the benchmark scripts of bench/ share (stdlib only; on loopback, bounded in time).

- logging and settings: logger, env_int, env_float, raise_nofile, exit_on_signals;
- ports: free_ports (the kernel's), pick_ports (below the ephemeral range), bound_ports
  (/proc/net/tcp, /proc/net/udp), probe;
- waiting with a timeout: wait_until (any condition), wait_port, wait_bound, wait_log (a line in
  a log file), wait_for (ports accepting or refusing, the propagation probe), wait_etcd_healthy;
- statistics: pct (nearest rank), pct_index (the element at p % of the length);
- /proc readers: read_stat, group_pids, group_cpu, group_cpu_exact, vmrss_kib, pss_kib,
  tcp_out_segs (what nstat reads);
- processes: Procs (process groups listed in a file the shell drivers read), Proc (one child
  and its log; finds a tcp-redirs node's control API), stop_all, start_etcd, start_serve;
- tcp-redirs: server_env, run_cli, binary_version, etcd_build, Api, ApiError, default_org;
- network namespaces: own_netns, require_own_netns (steered mode runs in one the script made);
- backends: start_nginx_http (nginx answering `return 200`), write_manifest (a file for `apply -f`);
- tools attached to a process: PerfStat, perf_usable, FORWARDER_COUNTERS, PerfRecord,
  perf_report_top, Strace;
- reports: Recorder (runs per metric and path, notes, interleaved rounds), md_table,
  raw_lines, command_line, tool_version, cpu_model, source_revision.
"""

import collections
import http.client
import json
import math
import os
import pwd
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

HOST = "127.0.0.1"
TOKEN = "t"                # the admin token of the nodes fleet.py, fleet_tls.py and scale.py start
CLK_TCK = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POLL_EVERY = 0.0002        # wait_for: seconds between two rounds of connects
POLL_MAX = 2.0             # wait_for: seconds one wait may take
ANSI = re.compile(r"\x1b\[[0-9;]*m")
API_LINE = re.compile(r"control API listening on (https?://[^\s\"',]+)")
# What a node's environment must not pass on from ours (it would override the command line).
NODE_VARS = ("TCP_REDIRS_URL", "TCP_REDIRS_TOKEN", "TCP_REDIRS_LISTEN", "TCP_REDIRS_DATA_DIR",
             "TCP_REDIRS_PUBLIC_BIND", "TCP_REDIRS_CONFIG", "TCP_REDIRS_ADMIN_SECRET",
             "TCP_REDIRS_STORE", "TCP_REDIRS_NODE", "TCP_REDIRS_LOG_FORMAT", "TCP_REDIRS_ACCESS_LOG")


class Failure(RuntimeError):
    """A benchmark that cannot go on: a process that did not start, an answer it cannot use."""


# ---------------------------------------------------------------- logging and settings

def logger(tag=None):
    """A print to stderr, its line led by `[TAG HH:MM:SS]` when a tag is given."""
    def log(*a):
        if tag:
            print(f"[{tag} {time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)
        else:
            print(*a, file=sys.stderr, flush=True)
    return log


log = logger("bench")
_say = logger()


def env_int(name, default):
    """The environment variable `name` as an int, `default` when unset or blank."""
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name, default):
    """The environment variable `name` as a float, `default` when unset or blank."""
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


def raise_nofile():
    """Raises the open-file soft limit to the hard one; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1048576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def exit_on_signals(sigs=(signal.SIGTERM, signal.SIGHUP)):
    """Makes each of `sigs` raise SystemExit(128 + signal), so that `finally` blocks clean up."""
    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    for sig in sigs:
        signal.signal(sig, on_signal)


# ---------------------------------------------------------------- ports

def free_ports(n):
    """n distinct ports of 127.0.0.1 the kernel gives as free now (held at once, then closed)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((HOST, 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def eph_low():
    """The first port of the ephemeral range (net.ipv4.ip_local_port_range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except OSError:
        return 32768


def port_free(port, kinds=(socket.SOCK_STREAM,), host=HOST):
    """Whether `port` of `host` can be bound now with each socket type of `kinds`."""
    for kind in kinds:
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_ports(n, taken=(), kinds=(socket.SOCK_STREAM,)):
    """n distinct free ports of 10,000 up to below the ephemeral range, none of `taken`."""
    # Below the ephemeral range: outgoing connections never take them. RuntimeError after 10,000 tries.
    hi = max(12000, eph_low() - 1)
    out = []
    for _ in range(10000):
        if len(out) == n:
            break
        p = random.randint(10000, hi)
        if p not in taken and p not in out and port_free(p, kinds):
            out.append(p)
    if len(out) < n:
        raise RuntimeError("could not find free ports")
    return out


def bound_ports(ip, proto="tcp"):
    """Ports of `ip` listening (tcp) or bound unconnected (udp), from /proc/net/tcp or /proc/net/udp."""
    want = "".join(f"{int(b):02X}" for b in reversed(ip.split(".")))
    state = "0A" if proto == "tcp" else "07"
    out = []
    with open(f"/proc/net/{proto}") as f:
        next(f)
        for line in f:
            parts = line.split(None, 4)
            if parts[3] != state:
                continue
            addr, port = parts[1].split(":")
            if addr == want:
                out.append(int(port, 16))
    return out


def probe(ip, port, timeout=0.2):
    """One TCP connect: True accepted, False refused, None neither (timeout, other error)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None
    finally:
        s.close()


# ---------------------------------------------------------------- waiting

def wait_until(cond, timeout, every=0.05, fail=None):
    """cond()'s first true value, polled every `every` s; after `timeout` s None, or Failure(fail)."""
    # `fail`: a text, or a function making it (e.g. with the last answer seen).
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        left = end - time.monotonic()
        if left <= 0:
            if fail is None:
                return None
            raise Failure(fail() if callable(fail) else fail)
        time.sleep(min(every, left))


def wait_port(port, timeout=15.0, what="port", host=HOST):
    """Waits until (host, port) accepts a TCP connection; Failure after `timeout` s."""
    wait_until(lambda: probe(host, port, timeout=1.0), timeout, every=0.1,
               fail=f"{what} {host}:{port} did not accept connections within {timeout}s")


def wait_bound(port, proto="tcp", timeout=15.0, what="port", host=HOST, alive=None):
    """Waits until (host, port) listens (tcp) or is bound (udp), without connecting to it."""
    # alive(): raises if a process died; Failure after `timeout` s.
    def bound():
        if alive:
            alive()
        return port in bound_ports(host, proto)
    wait_until(bound, timeout, every=0.02, fail=f"{what} {host}:{port} ({proto}) was not bound within {timeout}s")


def read_tail(path, chars=2000):
    """The last `chars` characters of a text file ('' if there is none)."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return ""


def wait_log(path, pattern, timeout, proc=None):
    """The first match of `pattern` in the file `path` within `timeout` s (colours stripped)."""
    # Failure on timeout, or as soon as the Popen `proc` has exited.
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern

    def look():
        try:
            with open(path, errors="replace") as f:
                m = rx.search(ANSI.sub("", f.read()))
        except FileNotFoundError:
            m = None
        if not m and proc is not None and proc.poll() is not None:
            raise Failure(f"`{rx.pattern}` not in {path}: the process exited with {proc.returncode}")
        return m
    return wait_until(look, timeout, fail=f"`{rx.pattern}` not in {path} within {timeout:.0f} s")


def wait_for(targets, accept, every=POLL_EVERY, limit=POLL_MAX):
    """Per (ip, port) target, the perf_counter time it accepted (or refused) and the tries; `limit` s at most."""
    # Connects to each target in turn, every `every` s, until each gives the wanted answer
    # (accept=True: accepts; False: refuses); a time is None when it did not come within `limit`.
    done = [None] * len(targets)
    tries = [0] * len(targets)
    end = time.perf_counter() + limit
    while True:
        for k, (ip, port) in enumerate(targets):
            if done[k] is None:
                tries[k] += 1
                if probe(ip, port) is accept:
                    done[k] = time.perf_counter()
        if all(d is not None for d in done) or time.perf_counter() > end:
            return done, tries
        time.sleep(every)


def wait_etcd_healthy(procs, url, timeout, context=None):
    """Waits until etcd at `url` answers /health true; Failure after `timeout` s or if one of `procs` exits."""
    last = [None]

    def healthy():
        for p in procs:
            if p.p.poll() is not None:
                raise Failure(f"{p.name} exited with {p.p.returncode}\n{p.log_tail()}")
        try:
            body = urllib.request.urlopen(url + "/health", timeout=1, context=context).read().decode()
            if json.loads(body).get("health") == "true":
                return True
            last[0] = body
        except Exception as e:
            last[0] = repr(e)
        return False
    wait_until(healthy, timeout, every=0.1,
               fail=lambda: f"etcd at {url} not healthy within {timeout:.0f} s (last answer: {last[0]})")


# ---------------------------------------------------------------- statistics

def pct(xs, p):
    """The p-th percentile of xs, nearest rank (the smallest value with p % at or below it); None if empty."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def pct_index(xs, p):
    """The value at index int(p / 100 * len) of xs sorted (the last one at most); None if empty."""
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


# ---------------------------------------------------------------- /proc readers

def read_stat(pid):
    """(pgrp, utime+stime, cutime+cstime) of a process, in seconds; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = s[s.rindex(")") + 2:].split()
    # rest[0] is field 3 (state): field N is rest[N - 3]
    pgrp = int(rest[5 - 3])
    own = (int(rest[14 - 3]) + int(rest[15 - 3])) / CLK_TCK
    children = (int(rest[16 - 3]) + int(rest[17 - 3])) / CLK_TCK
    return pgrp, own, children


def group_pids(pgid):
    """The live processes of a process group."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = read_stat(int(name))
        if st and st[0] == pgid:
            pids.append(int(name))
    return pids


def group_cpu(pgid):
    """CPU seconds of a process group from /proc/PID/stat: the members' own, the leader's reaped children's."""
    # socat forks one child per connection; its parent reaps them, which moves their time into
    # the parent's cutime/cstime.
    total = 0.0
    for pid in group_pids(pgid):
        st = read_stat(pid)
        if not st:
            continue
        total += st[1]
        if pid == pgid:
            total += st[2]
    return total


def group_cpu_exact(pgid):
    """CPU seconds of a process group from every thread's schedstat, plus the leader's reaped children."""
    # /proc/PID/task/TID/schedstat (nanoseconds on the CPU) is what utime+stime of /proc/PID/stat
    # are scaled from, without their rounding down to a tick (10 ms) per process: socat's 1,000
    # children, each a few ms, would add up to nothing. Plus the leader's cutime+cstime.
    total = 0.0
    for pid in group_pids(pgid):
        ns = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += ns / 1e9
        if pid == pgid:
            st = read_stat(pid)
            if st:
                total += st[2]
    return total


def vmrss_kib(pid):
    """VmRSS of a process in KiB (None if it has none: a zombie)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def pss_kib(pid):
    """Pss of a process in KiB (its shared pages divided among their users); 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tcp_out_segs():
    """TCP segments sent in this network namespace so far (/proc/net/snmp OutSegs, what nstat reads)."""
    with open("/proc/net/snmp") as f:
        lines = [ln.split() for ln in f if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutSegs")])


# ---------------------------------------------------------------- processes

def account(user):
    """Popen arguments running a program as `user`, its group and none of ours ({} for None: us)."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


class Procs:
    """Processes started by a benchmark, each in its own process group, listed in TMP/pgids for the shell driver."""

    def __init__(self, tmp):
        self.items = []
        self.pgfile = os.path.join(tmp, "pgids")

    def start(self, name, argv, env=None, log_path=None, user=None):
        """Starts `argv` in its own group, its output appended to log_path; `user`: as that account, none of our groups."""
        # PostgreSQL refuses to run as root: it runs as `postgres`.
        ids = account(user)
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        p = subprocess.Popen(
            argv,
            env=env,
            **ids,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log_path else subprocess.DEVNULL,
            start_new_session=True,
        )
        if log_path:
            out.close()
        self.items.append((name, p))
        with open(self.pgfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def check_alive(self):
        """RuntimeError if one of the processes has exited."""
        for name, p in self.items:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited early (status {p.returncode})")

    def stop_all(self):
        """SIGTERM to every group, 5 s, then SIGKILL to whatever is left; the list file goes."""
        for _, p in reversed(self.items):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 5
        for _, p in self.items:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for _, p in self.items:
            # SIGKILL the whole group: the leader and anything it forked (socat's children,
            # nginx's workers) that is still there.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.items = []
        try:
            os.unlink(self.pgfile)
        except FileNotFoundError:
            pass


class Proc:
    """A child in its own process group, its output in LOGDIR/NAME.log; pipe=True: finds a node's API URL."""

    def __init__(self, name, argv, env, logdir, pipe):
        self.name, self.argv, self.env = name, argv, env
        self.log_path = os.path.join(logdir, name + ".log")
        self.tail = collections.deque(maxlen=400)
        self.url = None
        self.ready = threading.Event()
        self.ready_at = None
        self._logf = open(self.log_path, "a")
        self.started = time.monotonic()
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._logf,
                                  stderr=subprocess.PIPE if pipe else self._logf,
                                  start_new_session=True, text=pipe, errors="replace" if pipe else None)
        self.pid = self.p.pid
        if pipe:
            threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        """Copies stderr to the log until the process (and its group) closes it; notes the URL."""
        for line in self.p.stderr:
            self.tail.append(line)
            try:
                self._logf.write(line)
                self._logf.flush()
            except ValueError:            # closed at the end
                pass
            if self.url is None:
                m = API_LINE.search(ANSI.sub("", line))
                if m:
                    self.ready_at = time.monotonic()
                    self.url = m.group(1)
                    self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout):
        """The control API's URL once the node logs it; Failure after `timeout` s or on exit."""
        self.ready.wait(timeout)
        if self.url is None:
            state = (f"exited with {self.p.returncode}" if self.p.poll() is not None
                     else f"no 'control API listening on' line within {timeout:.0f} s")
            raise Failure(f"{self.name} did not come up ({state}): {' '.join(self.argv)}\n{self.log_tail()}")
        return self.url

    def cpu(self):
        """utime+stime in seconds (exited threads included)."""
        st = read_stat(self.pid)
        if st is None:
            raise Failure(f"{self.name} (pid {self.pid}) is gone")
        return st[1]

    def rss_kib(self):
        """VmRSS in KiB."""
        return vmrss_kib(self.pid)

    def stop(self, sig=signal.SIGTERM):
        """Sends `sig` to the process group, if the process still runs."""
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self, timeout=10.0):
        """SIGTERM, SIGKILL after `timeout` s, then SIGKILL to anything left in the group."""
        self.stop()
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            _say(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout:.0f} s: SIGKILL")
            self.stop(signal.SIGKILL)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self._logf.close()
        except Exception:
            pass

    def log_tail(self, n=40):
        """The last n lines of the log."""
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(collections.deque(f, maxlen=n))
        except OSError:
            return "".join(list(self.tail)[-n:])


def stop_all(procs, timeout=10.0):
    """Stops Procs, nodes first (they may deregister from etcd), then etcd; SIGKILL after `timeout` s."""
    is_etcd = lambda p: p.name.startswith("etcd")
    for group in ([p for p in procs if not is_etcd(p)], [p for p in procs if is_etcd(p)]):
        for p in group:
            p.stop()
        end = time.monotonic() + timeout
        for p in group:
            p.finish(max(0.0, end - time.monotonic()))


def start_etcd(binary, data_dir, logdir, timeout, member="etcd", proc_name="etcd", token=None, extra=()):
    """One etcd member on two free ports of 127.0.0.1, healthy; returns (its Proc, its client port)."""
    # `extra`: more of its flags. Stopped again if it does not become healthy.
    client, peer = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    c, p = f"http://{HOST}:{client}", f"http://{HOST}:{peer}"
    argv = [binary, "--name", member, "--data-dir", data_dir,
            "--listen-client-urls", c, "--advertise-client-urls", c,
            "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
            "--initial-cluster", f"{member}={p}", "--initial-cluster-state", "new",
            *(["--initial-cluster-token", token] if token else []), *extra]
    proc = Proc(proc_name, argv, env, logdir, pipe=False)
    try:
        wait_etcd_healthy([proc], c, timeout)
    except BaseException:
        proc.finish(1.0)
        raise
    return proc, client


# ---------------------------------------------------------------- tcp-redirs

def server_env(config_dir, token, drop=("TCP_REDIRS_URL", "TCP_REDIRS_TOKEN"), **more):
    """Our environment for a tcp-redirs server: `drop` removed, its config dir and admin token set, `more` added.

    Bound mode unless the caller or the environment says otherwise: as root the server's
    default (auto) steers, attaching a BPF program to the network namespace it runs in, and
    only the benchmarks that enter a namespace of their own (`enter_netns`) may do that."""
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.setdefault("TCP_REDIRS_PORT_MODE", "bound")
    env.update(TCP_REDIRS_CONFIG_DIR=config_dir, TCP_REDIRS_ADMIN_TOKEN=token, **more)
    return env


def start_serve(procs, name, argv, env, log_path, timeout=30.0):
    """Starts `tcp-redirs serve` through a Procs; (Popen, control API URL) once it logs the URL."""
    p = procs.start(name, argv, env=env, log_path=log_path)
    try:
        m = wait_log(log_path, API_LINE, timeout, proc=p)
    except Failure:
        raise Failure(f"tcp-redirs serve did not log its address within {timeout:.0f} s:\n"
                      f"{read_tail(log_path)}") from None
    return p, m.group(1)


def run_cli(binary, args, env, timeout=30):
    """Runs the tcp-redirs CLI; its stdout, or RuntimeError with its stderr when it fails."""
    r = subprocess.run([binary, *args], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"tcp-redirs {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


def binary_version(binary):
    """What `BINARY --version` prints ('?' if it cannot run)."""
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def etcd_build(binary):
    """Whether the binary was built with --features etcd (`serve --help` has --store)."""
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30)
    return "--store" in r.stdout


class ApiError(Exception):
    """A control API call answered with a status other than 2xx."""

    def __init__(self, method, path, status, body, node=None):
        super().__init__(f"{node + ': ' if node else ''}{method} {path} answered {status}: {body[:300]}")
        self.status, self.body = status, body


class Api:
    """One persistent HTTP/1.1 connection to a node's control API (TCP_NODELAY)."""

    def __init__(self, url, timeout, name=None, token=TOKEN):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.name, self.token = name, token
        self.conn = None
        self.reconnects = 0

    def close(self):
        """Closes the connection (the next call opens another)."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method, path, body=None):
        """The JSON answer to one call (None if empty); ApiError if it is not 2xx."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                self.conn.connect()
                self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if fresh or attempt:
                    raise
                self.reconnects += 1       # a kept-alive connection the server had closed
                continue
            except Exception:
                self.close()
                raise
            if (r.getheader("Connection") or "").lower() == "close":
                self.close()
            if not 200 <= r.status < 300:
                raise ApiError(method, path, r.status, raw.decode(errors="replace"), self.name)
            return json.loads(raw) if raw.strip() else None


def default_org(api):
    """The id of the organisation named default (else the first one)."""
    orgs = api.call("GET", "/v2/organisations")
    return next((x for x in orgs if x.get("name") == "default"), orgs[0])["id"]


# ---------------------------------------------------------------- network namespaces

def own_netns():
    """Whether this process runs in a network namespace other than the machine's."""
    # The machine's: the one lib.sh's enter_netns left (TCP_REDIRS_BENCH_HOST_NETNS), else PID
    # 1's where it can be read; neither known: False.
    try:
        here = os.readlink("/proc/self/ns/net")
    except OSError:
        return False
    host = os.environ.get("TCP_REDIRS_BENCH_HOST_NETNS")
    if not host:
        try:
            host = os.readlink("/proc/1/ns/net")
        except OSError:
            return False
    return here != host


def require_own_netns(what):
    """Failure unless this process runs in a network namespace of its own (see lib.sh's enter_netns)."""
    # Steered mode attaches a BPF program to the namespace its server runs in: never the machine's.
    if not own_netns():
        raise Failure(f"{what} runs a steered tcp-redirs server: run it in a network namespace of its "
                      "own (its .sh driver does: unshare --net, as root), not in the machine's")


# ---------------------------------------------------------------- backends

def start_nginx_http(procs, d, listen, body="ok\n", workers=1, backlog=4096, name="nginx"):
    """nginx answering `return 200 BODY` on `listen` (HOST:PORT), its files in `d`; the Popen."""
    # Keep-alive as the client asks (HTTP/1.0 without keep-alive: nginx closes after the answer).
    os.makedirs(os.path.join(d, "temp"), exist_ok=True)
    user = ""
    if os.geteuid() == 0:
        # As root, nginx would switch its workers to `nobody`: keep them as the current user.
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};"
    conf = f"""
{user}
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 10000; }}
http {{
    access_log off;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    keepalive_timeout 65;
    keepalive_requests 10000000;
    tcp_nodelay on;
    server {{
        listen {listen} backlog={backlog};
        location / {{
            default_type text/plain;
            return 200 "{body}";
        }}
    }}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return procs.start(name, ["nginx", "-p", d, "-c", path, "-e", os.path.join(d, "error.log")],
                       log_path=os.path.join(d, "stdout.log"))


def write_manifest(path, apps):
    """Writes a file for `tcp-redirs apply -f`: `apps` is [(name, [instance], [(namespace, port|None, proto)])]."""
    # An application has at most one redirection per namespace and protocol.
    with open(path, "w") as f:
        for name, instances, redirs in apps:
            inst = ", ".join(f'{{ address = "{a}" }}' for a in instances)
            f.write(f'[[application]]\nname = "{name}"\ninstances = [{inst}]\n')
            for ns, port, proto in redirs:
                f.write(f'[[application.redirection]]\nnamespace = "{ns}"\n')
                if port is not None:
                    f.write(f"port = {port}\n")
                if proto == "udp":
                    f.write('protocol = "udp"\n')


# ---------------------------------------------------------------- tools attached to a process

def _perf_fds(pid):
    """How many perf_event descriptors a process holds."""
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                n += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]"
            except OSError:
                pass
    except OSError:
        pass
    return n


def _threads(pid):
    """The thread ids of a process (none if it is gone)."""
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def _traced_by(pid, tracer):
    """Whether every thread of `pid` is traced by `tracer` (strace attached to all)."""
    tids = _threads(pid)
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                m = re.search(r"^TracerPid:\s*(\d+)", f.read(), re.M)
        except OSError:
            continue
        if not m or int(m.group(1)) != tracer:
            return False
    return bool(tids)


class Attached:
    """A tool (perf, strace) attached to a process, from when `ready(tool pid)` says so (10 s at most) to interrupt()."""

    def __init__(self, argv, ready):
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda: self.p.poll() is not None or ready(self.p.pid), 10.0, every=0.01)

    def interrupt(self, grace):
        """SIGINT (the tool writes its figures and ends), SIGKILL after `grace` s; True if it ended."""
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(grace)
            return True
        except subprocess.TimeoutExpired:
            self.p.kill()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                pass
            return False


# A forwarder's saturation counters for PerfStat: (key, event, filter, label). Software counters
# and syscall tracepoints: they count without slowing the process as strace does.
FORWARDER_COUNTERS = [
    ("cs", "context-switches", None, "Context switches"),
    ("mig", "cpu-migrations", None, "CPU migrations"),
    ("sys", "raw_syscalls:sys_enter", None, "System calls"),
    ("eagain", "syscalls:sys_exit_accept4", "ret == -11", "Failed accept4 (EAGAIN)"),
    ("epwait", "syscalls:sys_enter_epoll_wait", None, "epoll_wait calls"),
    ("epctl", "syscalls:sys_enter_epoll_ctl", None, "epoll_ctl calls"),
]


def _perf_events(counters):
    """perf's -e (and --filter) arguments for (key, event, filter, label) counters."""
    argv = []
    for _, event, filt, _ in counters:
        argv += ["-e", event] + (["--filter", filt] if filt else [])
    return argv


def perf_usable(counters):
    """Whether `perf stat` can count these (key, event, filter, label) counters here."""
    # The syscall tracepoints need tracefs and perf_event_paranoid <= 1, or root.
    if not shutil.which("perf"):
        return False
    try:
        r = subprocess.run(["perf", "stat", "-x,", *_perf_events(counters), "--", "true"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and "not supported" not in r.stderr and "<not counted>" not in r.stderr


class PerfStat:
    """`perf stat -p PID` over a `with` block; `.counts` then maps each counter's key to its total."""

    def __init__(self, pid, out, counters):
        self.pid, self.out, self.counters = pid, out, counters
        self.tool = None
        self.counts = None

    def __enter__(self):
        """Starts perf, once it has opened a counter per event and thread."""
        want = len(self.counters) * max(1, len(_threads(self.pid)))
        self.tool = Attached(["perf", "stat", "-x,", "-o", self.out, "-p", str(self.pid),
                              *_perf_events(self.counters)],
                             lambda tool: _perf_fds(tool) >= want)
        return self

    def __exit__(self, *exc):
        """Ends perf and reads its counts (none if it had to be killed)."""
        if not self.tool.interrupt(10):
            return False
        try:
            with open(self.out) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return False
        # One line per event, in the order given: value,unit,event,...
        rows = [ln.split(",") for ln in lines if ln and not ln.startswith("#") and "," in ln]
        counts = {}
        for (key, _, _, _), cells in zip(self.counters, rows):
            try:
                counts[key] = float(cells[0])
            except ValueError:
                pass
        self.counts = counts
        return False


class PerfRecord:
    """`perf record -e cpu-clock -g -p PID -o PATH` from start until stop(), which returns PATH."""

    def __init__(self, pid, path):
        self.path = path
        want = max(1, len(_threads(pid)))
        self.tool = Attached(["perf", "record", "-e", "cpu-clock", "-g", "-p", str(pid), "-o", path],
                             lambda tool: _perf_fds(tool) >= want)

    def stop(self):
        """Ends the recording; the data file's path."""
        self.tool.interrupt(60)
        return self.path


def perf_report_top(data, n=30, extra=()):
    """The first `n` lines of `perf report --stdio --no-children` of a data file (symbols by self time)."""
    r = subprocess.run(["perf", "report", "--stdio", "--no-children", "-i", data, "--sort", "dso,symbol",
                        "-g", "none", "--percent-limit", "0.5", *extra],
                       capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
    return lines[:n]


class Strace:
    """`strace -c -f -p PID` until stop(), which returns (system calls, the 8 most frequent as (name, calls))."""
    # After stop(), .errors maps each call's name to the calls that failed (strace's errors column).

    def __init__(self, pid, path):
        self.path = path
        self.errors = {}
        self.tool = Attached(["strace", "-c", "-f", "-q", "-p", str(pid), "-o", path],
                             lambda tool: _traced_by(pid, tool))

    def stop(self):
        """Ends the tracing; its summary, read from the file."""
        self.tool.interrupt(30)
        rows = []
        with open(self.path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[0].replace(".", "").isdigit() and parts[-1] != "total":
                    try:
                        rows.append((parts[-1], int(parts[3])))
                        if len(parts) >= 6:
                            self.errors[parts[-1]] = int(parts[4])
                    except ValueError:
                        pass
        rows.sort(key=lambda r: -r[1])
        return sum(c for _, c in rows), rows[:8]


# ---------------------------------------------------------------- reports

class Recorder:
    """Runs' figures per metric and path, notes, and interleaved rounds (a subclass has runs, paths, procs, one())."""

    def __init__(self):
        self.raw = {}  # metric -> path -> [values]
        self.notes = []

    def add(self, metric, path, value):
        """Records one run's figure (None: nothing)."""
        if value is not None:
            self.raw.setdefault(metric, {}).setdefault(path, []).append(value)

    def note(self, msg):
        """A note for the report, logged now."""
        log("note: " + msg)
        self.notes.append(msg)

    def med(self, metric, path):
        """The median of a metric's runs on a path (None if none)."""
        vals = self.raw.get(metric, {}).get(path)
        return statistics.median(vals) if vals else None

    def rounds(self, tests, pause):
        """Every test, `runs` rounds of every path, the first path rotating; `pause` s between runs."""
        # The rotation: no path always runs first, or right after the same neighbour.
        for test in tests:
            for rnd in range(self.runs):
                order = self.paths[rnd % len(self.paths):] + self.paths[: rnd % len(self.paths)]
                for path in order:
                    self.procs.check_alive()
                    try:
                        msg = self.one(test, path)
                    except Exception as e:  # noqa: BLE001 - reported in the notes
                        msg = f"FAILED: {e}"
                        self.note(f"{test}/{path} round {rnd + 1}: {e}")
                    log(f"{test} round {rnd + 1}/{self.runs} {path}: {msg}")
                    time.sleep(pause)

    def drive(self):
        """run() then report(), the processes stopped however it ends; the exit status."""
        try:
            self.run()
            self.report()
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        finally:
            self.procs.stop_all()
        return 0


def md_table(header, body):
    """A markdown table, columns padded to one width, the first left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                 for i, c in enumerate(cells)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep, *[line(r) for r in body]])


def raw_lines(raw):
    """A markdown list item per metric with every run's figure per path."""
    return [f"- `{m}`: " + "; ".join(f"{p}: " + ", ".join(f"{v:.4g}" for v in vals) for p, vals in per.items())
            for m, per in raw.items()]


def command_line(script, keys):
    """`script` led by those environment settings of `keys` that are set, as a report shows it."""
    return " ".join([f"{k}={os.environ[k]}" for k in keys if os.environ.get(k)] + [script])


def tool_version(argv, pat=None):
    """A tool's version: `pat`'s group 1 in what argv prints, else its first line; '?' if none."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    if pat:
        m = re.search(pat, text)
        return m.group(1) if m else "?"
    return text.splitlines()[0] if text else "?"


def cpu_model():
    """The CPU's model name from /proc/cpuinfo ('?' if none)."""
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            return m.group(1).strip() if m else "?"
    except OSError:
        return "?"


def source_revision():
    """The work tree's commit when the run starts (the binary is the one built from it)."""
    rev = "?"
    try:
        r = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, timeout=10)
        if r.returncode == 0:
            rev = r.stdout.strip()
            st = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml",
                                 "Cargo.lock"], capture_output=True, text=True, timeout=10)
            if st.stdout.strip():
                rev += " + uncommitted changes"
    except (OSError, subprocess.TimeoutExpired):
        pass
    return rev
