#!/usr/bin/env python3
"""Scale: what `add`, `remove`, instance changes and lists cost as the table grows, and what
a node's memory, idle CPU and restart cost with many redirections (issue 19).

Usage: cargo build --release --features etcd
       python3 bench/scale.py target/release/tcp-redirs [--sizes 0,1000,10000,50000,100000]
               [--store sqlite|etcd|both] [--samples 200] [--plot docs/scale.png] ...
       (python3 bench/scale.py --help lists every option; each also has an environment
       variable, SCALE_<OPTION>, e.g. SCALE_SIZES=0,500,2000)
The plot needs matplotlib: python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip
install matplotlib, then run the script with /work/bench-venv/bin/python3 (without
matplotlib the tables are printed and the plot is skipped).

Starts, on loopback, everything it measures, and stops it at the end (also on errors and
Ctrl-C), temporary directories removed: for `sqlite`, one node on 127.0.0.5 with its own
data directory; for `etcd`, one etcd (/usr/bin/etcd, free ports) and three nodes
`serve --store etcd://...` on 127.0.0.2 (a, the measured node), 127.0.0.3 and 127.0.0.4.
The stores run one after the other, never at once.

The table. A node holds at most ~18,000 listening ports (the open-file hard limit is
20,000), so the config file (`serve --config`) defines namespaces the nodes serve and
namespaces they only keep in their table (every node runs `--namespaces s0,s1,m`):
- s0 and s1: LISTEN/2 ports each (10000-...; below the ephemeral range): the first LISTEN
  (18,000) redirections of the table, two per application (apps 0..LISTEN/2-1);
- u0, u1, ...: 15,000-port ranges (40000-54999, never bound: no node serves them), one
  redirection per application per namespace (one per app per namespace is the rule), for
  the rest of the table up to the largest size: TABLE_APPS applications (10,000) times as
  many namespaces as needed (9 for 100k: 18,000 + 82,000);
- m: where the measured adds go (served, RATE_MAX+100 ports right after s1), so that they
  bind a port and, on etcd, wait for the other nodes to listen, as a real add does.
The table is grown between sizes through the API only: POST applications (created when a
redirection first needs them, GROW_CLIENTS at once), then the redirections, either
- in batches (GROW_BATCH redirections a call, the default on etcd: 500): `POST
  /v2/organisations/{org}/tcpRedirs` with {"redirections": [{"application": "app_…",
  "namespace": "u0"}, ...]} from GROW_BATCH_CLIENTS threads; each item's outcome says made
  (its `redirection`) or refused (its `error`): 4090 (made by an earlier try of the same
  call) is looked up, 4092/4095/5xxx are sent again, those items only (at most 4 tries),
  any other refusal stops the run; or
- one by one (--grow-batch 0, the default on sqlite): POST …/applications/{app}/tcpRedirs
  from GROW_CLIENTS threads,
each thread with its own keep-alive http.client connection; the time it took is printed. A
call answered 503 is retried (up to 10 times; on etcd, concurrent changes of one
organisation conflict on its counter: "the organisation kept changing; try again") and the
retries are reported.

At each size, with the table at exactly that size:
- add and remove: SAMPLES times, 1 client, an add in namespace m (a fresh application each
  time) then its remove: latency p50/p99 of each;
- instances: SAMPLES PUTs of application 0's instances (alternating two lists);
- list: SAMPLES GETs of application 0's tcpRedirs;
- adds/s: RATE_CLIENTS clients add in m (each to its own application) for up to RATE_MAX
  adds or RATE_SECONDS; removed again (untimed for the rate), rounds repeated until
  RATE_SECONDS of adding (at most 5 rounds); the headline is adds/s(size) / adds/s(first size);
- idle CPU of the measured node (utime+stime from /proc/PID/stat) over IDLE_SECONDS,
  then its VmRSS. Memory per listening redirection is (RSS - RSS at size 0) / listening,
  taken at min(size, LISTEN) (the table is grown to LISTEN first and RSS read there when a
  larger size is asked); per table-only redirection (RSS - RSS at LISTEN) / table-only.
- etcd only, propagation (PROP_SAMPLES, bench/fleet.py's method): an add in m on node a, then
  connects to its port on b and c in a tight loop (one try per node every 0.2 ms, 2 s at
  most) until both accept; then its remove on a, and connects until both refuse. Timed from
  the call sent and from its answer (an add on etcd answers once the fleet confirmed it, so
  the second is ~0 when the contract holds); b and c pooled.
At the largest size, on etcd, a fresh node d joins the fleet (127.0.0.5, its own empty data
directory, the same --namespaces s0,s1,m; --no-join skips it): the time from its process
start until its control API answers and until every served port of the table listens on
127.0.0.5 (/proc/net/tcp); then it is stopped. Then the measured node is restarted
(SIGTERM, then the same command): the time from the new process until its control API
answers, and until every served port of the table listens (counted in /proc/net/tcp),
RESTART_TIMEOUT at most.

Every loop is bounded in count and in time; growth that takes longer than GROW_TIMEOUT for
one size stops that store's run (the sizes reached are reported). Prints a markdown table
per store on stdout (progress on stderr) and writes the plot (add p50/p99 and RSS against
table size, symlog x axis so that size 0 shows, one line per store).
"""
import argparse, gc, json, math, os, shutil, sys, tempfile, threading, time

sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import (NODE_VARS, POLL_EVERY, Api, ApiError, Failure, Proc, binary_version,  # noqa: E402
                      bound_ports, default_org, etcd_build, exit_on_signals, logger, pct, raise_nofile,
                      server_env, stop_all, wait_for, wait_until)

NODES = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
SQLITE_IP = "127.0.0.5"
JOIN = ("d", "127.0.0.5")  # etcd: the node that joins at the largest size (no sqlite node then)
SERVED_BASE = 10000        # first port of s0
UNSERVED_RANGE = "40000-54999"  # 15,000 ports for 10,000 apps: concurrent picks near a full range collide
INSTANCE = "127.0.0.1:9"


log = logger("scale")


def options():
    env = lambda k, d: os.environ.get("SCALE_" + k, d)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("binary", help="tcp-redirs built with --features etcd (etcd runs need it)")
    p.add_argument("--sizes", default=env("SIZES", "0,1000,10000,50000,100000"),
                   help="table sizes (redirections), comma-separated, increasing")
    p.add_argument("--store", default=env("STORE", "both"), choices=["sqlite", "etcd", "both"])
    p.add_argument("--samples", type=int, default=int(env("SAMPLES", "200")),
                   help="sequential samples per size of add+remove, of instances and of list")
    p.add_argument("--rate-clients", type=int, default=int(env("RATE_CLIENTS", "8")))
    p.add_argument("--rate-seconds", type=float, default=float(env("RATE_SECONDS", "5")),
                   help="seconds of adding per size for adds/s")
    p.add_argument("--rate-max", type=int, default=int(env("RATE_MAX", "900")),
                   help="adds per rate round (held at once: listening ports of namespace m)")
    p.add_argument("--listen", type=int, default=int(env("LISTEN", "18000")),
                   help="listening redirections of the table at most (s0+s1, even)")
    p.add_argument("--table-apps", type=int, default=int(env("TABLE_APPS", "10000")),
                   help="applications holding the table-only redirections (one per namespace u*)")
    p.add_argument("--grow-clients", type=int, default=int(env("GROW_CLIENTS", "16")),
                   help="clients growing the table with single adds, and creating applications")
    p.add_argument("--grow-batch", default=env("GROW_BATCH", "auto"),
                   help="grow the table through the batch route, this many redirections a call "
                        "(at most 1000); 0: single adds; auto: 500 on etcd, single adds on sqlite")
    p.add_argument("--grow-batch-clients", type=int, default=int(env("GROW_BATCH_CLIENTS", "2")),
                   help="clients sending batches at once (one organisation: its batches take turns "
                        "in the store anyway)")
    p.add_argument("--prop-samples", type=int, default=int(env("PROP_SAMPLES", "100")),
                   help="etcd: adds on node a per size timed until b and c accept (then removed, "
                        "timed until they refuse); 0: none")
    p.add_argument("--no-join", action="store_true", default=env("NO_JOIN", "") == "1",
                   help="etcd: do not time a fresh node d joining at the largest size")
    p.add_argument("--grow-timeout", type=float, default=float(env("GROW_TIMEOUT", "300")),
                   help="seconds growing to one size may take; over it the store's run stops")
    p.add_argument("--phase-timeout", type=float, default=float(env("PHASE_TIMEOUT", "180")),
                   help="seconds each sampled phase (adds, instances, list) may take")
    p.add_argument("--idle-seconds", type=float, default=float(env("IDLE_SECONDS", "20")))
    p.add_argument("--restart-timeout", type=float, default=float(env("RESTART_TIMEOUT", "120")))
    p.add_argument("--no-restart", action="store_true", default=env("NO_RESTART", "") == "1")
    p.add_argument("--http-timeout", type=float, default=float(env("HTTP_TIMEOUT", "60")))
    p.add_argument("--ready-timeout", type=float, default=float(env("READY_TIMEOUT", "120")))
    p.add_argument("--etcd", default=env("ETCD", "/usr/bin/etcd"))
    p.add_argument("--plot", default=env("PLOT", "docs/scale.png"), help="PNG path ('' for none)")
    p.add_argument("--json", default=env("JSON", ""), help="also write the raw results here")
    p.add_argument("--keep-tmp", action="store_true", default=env("KEEP_TMP", "") == "1")
    o = p.parse_args()
    o.sizes = sorted({int(s) for s in o.sizes.split(",") if s.strip()})
    if o.grow_batch != "auto":
        try:
            o.grow_batch = int(o.grow_batch)
        except ValueError:
            p.error("--grow-batch takes a number or auto")
        if not 0 <= o.grow_batch <= 1000:
            p.error("--grow-batch must be 0 (single adds) to 1000")
    if o.listen % 2 or o.listen < 2:
        p.error("--listen must be even and positive")
    o.binary = os.path.abspath(o.binary)
    return o


# ---------------------------------------------------------------- the table's layout

class Layout:
    """Which (application, namespace) the k-th redirection of the table is, and the config."""

    def __init__(self, o):
        self.listen, self.table_apps = o.listen, o.table_apps
        self.half = o.listen // 2
        span = max(self.half + 2, math.ceil(self.half * 1.01))   # a little slack: random picks
        self.s0 = (SERVED_BASE, SERVED_BASE + span - 1)
        self.s1 = (self.s0[1] + 1, self.s0[1] + span)
        self.m = (self.s1[1] + 1, self.s1[1] + o.rate_max + 100)
        if self.m[1] >= 32768:
            raise Failure(f"served ports would reach {self.m[1]}: lower --listen or --rate-max")
        rest = max(0, max(o.sizes) - o.listen)
        self.n_unserved = max(1, math.ceil(rest / o.table_apps))
        if o.table_apps > 10000:
            raise Failure("--table-apps over 10,000: the unserved ranges have 10,000 ports")
        self.served = ["s0", "s1", "m"]
        self.n_apps = max(self.half if max(o.sizes) > 0 else 0,
                          o.table_apps if rest else 0, o.rate_max, o.samples)

    def slot(self, k):
        if k < self.listen:
            return k // 2, ("s0", "s1")[k % 2]
        j = k - self.listen
        return j % self.table_apps, f"u{j // self.table_apps}"

    def listening(self, size):
        return min(size, self.listen)

    def config(self):
        r = lambda t: f"{t[0]}-{t[1]}"
        out = []
        for name, ports, what in (("s0", r(self.s0), "served, first half of the listening table"),
                                  ("s1", r(self.s1), "served, second half"),
                                  ("m", r(self.m), "served, where measured adds go")):
            out.append(f'[[namespace]]\nname = "{name}"\nports = "{ports}"\ndescription = "{what}"\n')
        for i in range(self.n_unserved):
            out.append(f'[[namespace]]\nname = "u{i}"\nports = "{UNSERVED_RANGE}"\n'
                       f'description = "table only: no node serves it"\n')
        return "\n".join(out)


# ---------------------------------------------------------------- processes

def start_etcd(o, tmp, logdir, extra=()):
    """One etcd on free ports of 127.0.0.1; `extra`: more of its flags (e.g. --enable-pprof)."""
    return benchlib.start_etcd(o.etcd, os.path.join(tmp, "etcd"), logdir, o.ready_timeout, member="scale",
                               token="tcp-redirs-scale", extra=["--quota-backend-bytes", str(8 << 30), *extra])


def node_argv(o, name, ip, tmp, cfg, etcd_port):
    argv = [o.binary, "serve"]
    if etcd_port is not None:
        argv += ["--store", f"etcd://127.0.0.1:{etcd_port}", "--node", name]
    argv += ["--listen", f"{ip}:0", "--public-bind", ip, "--data-dir", os.path.join(tmp, name),
             "--config", cfg, "--namespaces", "s0,s1,m", "--drain-timeout", "1"]
    return argv, server_env(os.path.join(tmp, "cfg-" + name), benchlib.TOKEN, NODE_VARS, NO_COLOR="1")


# ---------------------------------------------------------------- API

class Pool:
    """`n` threads, each with its own keep-alive connection, running tasks from an iterator
    until it ends, `deadline` (monotonic) passes, or too many errors."""

    def __init__(self, url, n, timeout):
        self.url, self.n, self.timeout = url, n, timeout
        self.apis = [Api(url, timeout) for _ in range(n)]
        self.retries = 0

    def run(self, tasks, fn, deadline, max_errors=50):
        lock = threading.Lock()
        it = iter(tasks)
        done, errors = [0], []

        def worker(api):
            while time.monotonic() < deadline and len(errors) <= max_errors:
                with lock:
                    task = next(it, None)
                if task is None:
                    return
                for attempt in range(10):
                    try:
                        fn(api, task)
                        with lock:
                            done[0] += 1
                        break
                    except ApiError as e:
                        # 503: on etcd, concurrent changes of one organisation conflict
                        # ("the organisation kept changing; try again"): retried, counted
                        if e.status < 500 or attempt == 9 or (e.status != 503 and attempt >= 2):
                            with lock:
                                errors.append(f"{task}: {e}")
                            break
                        with lock:
                            self.retries += 1
                        time.sleep(0.005 * (attempt + 1))
                    except Exception as e:
                        if attempt >= 2:
                            with lock:
                                errors.append(f"{task}: {type(e).__name__}: {e}")
                        api.close()
        threads = [threading.Thread(target=worker, args=(a,), daemon=True) for a in self.apis]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()) + self.timeout + 5)
        return done[0], errors

    def close(self):
        for a in self.apis:
            a.close()


# ---------------------------------------------------------------- statistics

def fmt(v, nd=2):
    if v is None:
        return "–"
    return f"{v:.{nd}f}" if abs(v) < 100 else f"{v:.0f}"


def listening_count(ip, ranges):
    """LISTEN sockets in /proc/net/tcp on `ip` with a port in one of `ranges`."""
    return sum(1 for port in bound_ports(ip) if any(lo <= port <= hi for lo, hi in ranges))


# ---------------------------------------------------------------- one store

class Bench:
    def __init__(self, o, store, layout):
        self.o, self.store, self.L = o, store, layout
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix=f"tcp-redirs-scale-{store}-")
        self.logdir = os.path.join(self.tmp, "logs"); os.makedirs(self.logdir)
        self.cfg = os.path.join(self.tmp, "scale.toml")
        with open(self.cfg, "w") as f:
            f.write(layout.config())
        self.size = 0              # redirections in the table
        self.apps = []             # application ids, by index
        self.ports = {}            # (app index, namespace) -> port, of the table
        self.rows = []
        self.notes = []
        self.grow_total = 0.0
        self.retries = {"grow": 0, "rate": 0}
        self.batch_refused = 0     # batch items refused for a passing reason and sent again
        self.grow_calls = 0
        self.join_row = None

    # -- processes
    def start(self):
        o = self.o
        if self.store == "sqlite":
            self.ip = SQLITE_IP
            argv, env = node_argv(o, "s", SQLITE_IP, self.tmp, self.cfg, None)
            self.node = Proc("s", argv, env, self.logdir, pipe=True); self.procs.append(self.node)
            self.node.wait_ready(o.ready_timeout)
            self.others = []
        else:
            self.ip = NODES["a"]
            etcd, port = start_etcd(o, self.tmp, self.logdir); self.procs.append(etcd)
            self.etcd, self.etcd_port = etcd, port
            log(f"etcd healthy on 127.0.0.1:{port}")
            self.others = []
            for name, ip in NODES.items():
                argv, env = node_argv(o, name, ip, self.tmp, self.cfg, port)
                p = Proc(name, argv, env, self.logdir, pipe=True); self.procs.append(p)
                p.wait_ready(o.ready_timeout)
                if name == "a":
                    self.node = p
                else:
                    self.others.append(p)
        log(f"{self.store}: measured node {self.node.name} at {self.node.url} (pid {self.node.pid})")
        self.connect()

    def connect(self):
        """The API client of the measured node, its organisation and its applications' path."""
        self.api = Api(self.node.url, self.o.http_timeout)
        self.org = default_org(self.api)
        self.base = f"/v2/organisations/{self.org}/applications"

    def stop(self):
        stop_all(self.procs)
        if self.o.keep_tmp:
            log(f"{self.store}: logs and data kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- growth
    def ensure_apps(self, n, deadline):
        if n <= len(self.apps):
            return
        start = len(self.apps)
        ids = [None] * (n - start)

        def create(api, i):
            name = f"scale-{i:05d}"
            try:
                app = api.call("POST", self.base, {"name": name, "instances": [{"address": INSTANCE}]})
            except ApiError as e:
                if e.status != 409:
                    raise
                app = next(a for a in api.call("GET", self.base) if a["name"] == name)
            ids[i - start] = app["id"]
        pool = Pool(self.node.url, self.o.grow_clients, self.o.http_timeout)
        t0 = time.monotonic()
        done, errors = pool.run(range(start, n), create, deadline)
        pool.close()
        self.retries["grow"] += pool.retries
        if errors or None in ids:
            raise Failure(f"creating applications {start}..{n - 1}: {len(errors)} errors; first: "
                          f"{errors[0] if errors else 'timed out'}")
        self.apps += ids
        log(f"{self.store}: {n - start} applications created in {time.monotonic() - t0:.1f} s")

    def batch_size(self):
        b = self.o.grow_batch
        if b == "auto":
            return 500 if self.store == "etcd" else 0
        return b

    def grow(self, target):
        """Adds table redirections k = size..target-1; returns seconds, or None on timeout."""
        if target <= self.size:
            return 0.0
        if self.batch_size():
            return self.grow_batched(target)
        o = self.o
        deadline = time.monotonic() + o.grow_timeout
        t0 = time.monotonic()
        need = max(self.L.slot(k)[0] for k in range(self.size, target)) + 1
        self.ensure_apps(need, deadline)
        lock = threading.Lock()
        progress = [0, time.monotonic()]

        def add(api, k):
            app, ns = self.L.slot(k)
            path = f"{self.base}/{self.apps[app]}/tcpRedirs"
            try:
                r = api.call("POST", path, {"namespace": ns})
                port = r["port"]
            except ApiError as e:
                if e.status != 409 or e.body.find("4090") < 0:
                    raise
                port = next(x["port"] for x in api.call("GET", path) if x["namespace"] == ns)
            with lock:
                self.ports[(app, ns)] = port
                progress[0] += 1
                if time.monotonic() - progress[1] > 10:
                    progress[1] = time.monotonic()
                    log(f"{self.store}: growing: {self.size + progress[0]}/{target} "
                        f"({progress[0] / (time.monotonic() - t0):.0f}/s)")
        pool = Pool(self.node.url, o.grow_clients, o.http_timeout)
        done, errors = pool.run(range(self.size, target), add, deadline)
        took = self.grown(pool, errors, target, t0)
        if took is None:
            return None
        log(f"{self.store}: grew to {target} in {took:.1f} s ({done / took:.0f} adds/s, {self.grow_total:.1f} s in all)")
        return took


    def grown(self, pool, errors, target, t0):
        """After a growth: the pool closed, the table's size updated; the seconds it took, or
        None if --grow-timeout stopped it; Failure on errors."""
        pool.close()
        self.retries["grow"] += pool.retries
        took = time.monotonic() - t0
        have = len(self.ports)
        if errors:
            raise Failure(f"growing to {target}: {len(errors)} errors; the first: {errors[0]}")
        self.size = have
        if have < target:
            log(f"{self.store}: growing to {target} stopped by --grow-timeout ({self.o.grow_timeout:.0f} s) at {have}")
            return None
        self.grow_total += took
        return took

    def grow_batched(self, target):
        """grow() through `POST /v2/organisations/{org}/tcpRedirs`, batch_size() a call."""
        o = self.o
        n = self.batch_size()
        deadline = time.monotonic() + o.grow_timeout
        t0 = time.monotonic()
        need = max(self.L.slot(k)[0] for k in range(self.size, target)) + 1
        self.ensure_apps(need, deadline)
        lock = threading.Lock()
        progress = [0, time.monotonic()]
        chunks = [range(k, min(k + n, target)) for k in range(self.size, target, n)]
        path = f"/v2/organisations/{self.org}/tcpRedirs"
        calls = [0]

        def send(api, chunk):
            left = list(chunk)
            for attempt in range(4):          # items refused for a passing reason: again
                items = [dict(zip(("app", "ns"), self.L.slot(k))) for k in left]
                body = {"redirections": [{"application": self.apps[i["app"]], "namespace": i["ns"]}
                                         for i in items]}
                r = api.call("POST", path, body)
                with lock:
                    calls[0] += 1
                outs = r["redirections"]
                if len(outs) != len(items):
                    raise Failure(f"batch of {len(items)} answered {len(outs)} outcomes")
                again, made = [], {}
                for k, it, out in zip(left, items, outs):
                    if out.get("redirection"):
                        made[(it["app"], it["ns"])] = out["redirection"]["port"]
                        continue
                    err = out.get("error") or {}
                    if err.get("id") == 4090:   # made by an earlier try of this call
                        app = self.apps[it["app"]]
                        made[(it["app"], it["ns"])] = next(
                            x["port"] for x in api.call("GET", f"{self.base}/{app}/tcpRedirs")
                            if x["namespace"] == it["ns"])
                    elif err.get("id") in (4092, 4095) or err.get("id", 0) >= 5000:
                        again.append(k)
                    else:
                        raise Failure(f"batch item {it} refused: {err}")
                with lock:
                    self.ports.update(made)
                    progress[0] += len(made)
                    if time.monotonic() - progress[1] > 10:
                        progress[1] = time.monotonic()
                        log(f"{self.store}: growing in batches of {n}: {self.size + progress[0]}/{target} "
                            f"({progress[0] / (time.monotonic() - t0):.0f}/s)")
                if not again:
                    return
                with lock:
                    self.batch_refused += len(again)
                left = again
            raise Failure(f"batch items still refused after 4 tries: {[self.L.slot(k) for k in left[:3]]}")
        pool = Pool(self.node.url, o.grow_batch_clients, o.http_timeout)
        tg = time.monotonic()
        done, errors = pool.run(chunks, send, deadline)
        took = self.grown(pool, errors, target, t0)
        if took is None:
            return None
        self.grow_calls += calls[0]
        log(f"{self.store}: grew to {target} in {took:.1f} s ({progress[0] / took:.0f} redirections/s; "
            f"batches {time.monotonic() - tg:.1f} s, {calls[0]} calls of up to {n}; {self.grow_total:.1f} s in all)")
        return took

    # -- measures
    def sample_add_remove(self):
        o = self.o
        adds, rms = [], []
        end = time.monotonic() + o.phase_timeout
        gc.collect(); gc.disable()
        try:
            for i in range(o.samples):
                if time.monotonic() > end:
                    self.notes.append(f"size {self.size}: add/remove samples stopped by --phase-timeout at {i}")
                    break
                app = self.apps[i % len(self.apps)]
                path = f"{self.base}/{app}/tcpRedirs"
                t0 = time.perf_counter()
                r = self.api.call("POST", path, {"namespace": "m"})
                t1 = time.perf_counter()
                self.api.call("DELETE", f"{path}/{r['port']}?namespace=m")
                t2 = time.perf_counter()
                adds.append((t1 - t0) * 1000); rms.append((t2 - t1) * 1000)
        finally:
            gc.enable()
        return adds, rms

    def sample_simple(self, what):
        o = self.o
        xs = []
        app = self.apps[0]
        end = time.monotonic() + o.phase_timeout
        gc.collect(); gc.disable()
        try:
            for i in range(o.samples):
                if time.monotonic() > end:
                    self.notes.append(f"size {self.size}: {what} samples stopped by --phase-timeout at {i}")
                    break
                t0 = time.perf_counter()
                if what == "instances":
                    addr = INSTANCE if i % 2 else "127.0.0.1:10"
                    self.api.call("PUT", f"{self.base}/{app}/instances", [{"address": addr, "weight": 1}])
                else:
                    self.api.call("GET", f"{self.base}/{app}/tcpRedirs")
                xs.append((time.perf_counter() - t0) * 1000)
        finally:
            gc.enable()
        if what == "instances":   # back to the table's instance
            self.api.call("PUT", f"{self.base}/{app}/instances", [{"address": INSTANCE, "weight": 1}])
        return xs

    def rate(self):
        o = self.o
        pool = Pool(self.node.url, o.rate_clients, o.http_timeout)
        total_n, total_t, rm_n, rm_t = 0, 0.0, 0, 0.0
        try:
            for rnd in range(5):
                if total_t >= o.rate_seconds:
                    break
                taken = {}
                lock = threading.Lock()

                def add(api, i):
                    r = api.call("POST", f"{self.base}/{self.apps[i]}/tcpRedirs", {"namespace": "m"})
                    with lock:
                        taken[i] = r["port"]

                def rm(api, i):
                    api.call("DELETE", f"{self.base}/{self.apps[i]}/tcpRedirs/{taken[i]}?namespace=m")
                left = o.rate_seconds - total_t
                t0 = time.monotonic()
                n, errors = pool.run(range(min(o.rate_max, len(self.apps))), add, t0 + left)
                total_t += time.monotonic() - t0; total_n += n
                t0 = time.monotonic()
                m, errors2 = pool.run(sorted(taken), rm, t0 + o.phase_timeout)
                rm_t += time.monotonic() - t0; rm_n += m
                if errors or errors2 or m != len(taken):
                    raise Failure(f"rate window at size {self.size}: {(errors + errors2)[:3]}, "
                                  f"{len(taken) - m} adds not removed")
        finally:
            pool.close()
            self.retries["rate"] += pool.retries
        return total_n / total_t if total_t else None, rm_n / rm_t if rm_t else None, total_n, total_t

    def idle(self):
        gc.collect()
        procs = [self.node] + self.others + ([self.etcd] if self.store == "etcd" else [])
        c0 = {p.name: p.cpu() for p in procs}; t0 = time.monotonic()
        end = t0 + self.o.idle_seconds
        while time.monotonic() < end:      # nothing to wait for: the window itself
            time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        dt = time.monotonic() - t0
        return {p.name: (p.cpu() - c0[p.name]) / dt * 100 for p in procs}

    def measure(self):
        o = self.o
        log(f"{self.store}: size {self.size}: sampling add/remove ({self.o.samples})")
        adds, rms = self.sample_add_remove()
        log(f"{self.store}: size {self.size}: instances and list")
        inst = self.sample_simple("instances")
        lst = self.sample_simple("list")
        log(f"{self.store}: size {self.size}: adds/s with {self.o.rate_clients} clients")
        rate, rm_rate, rate_n, rate_t = self.rate()
        log(f"{self.store}: size {self.size}: idle CPU over {self.o.idle_seconds:.0f} s")
        idle = self.idle()
        rss = self.node.rss_kib()
        prop = {}
        if self.store == "etcd" and o.prop_samples > 0:
            log(f"{self.store}: size {self.size}: propagation to b and c ({o.prop_samples} adds and removes)")
            prop = self.propagation()
        row = dict(size=self.size, listening=self.L.listening(self.size),
                   add_p50=pct(adds, 50), add_p99=pct(adds, 99), n_add=len(adds),
                   rm_p50=pct(rms, 50), rm_p99=pct(rms, 99),
                   inst_p50=pct(inst, 50), inst_p99=pct(inst, 99), list_p50=pct(lst, 50),
                   rate=rate, rm_rate=rm_rate, rate_n=rate_n, rate_t=rate_t,
                   idle=idle[self.node.name], idle_all=idle, rss=rss,
                   load=os.getloadavg()[0], **prop)
        log(f"{self.store}: size {self.size}: add p50 {fmt(row['add_p50'])} ms p99 {fmt(row['add_p99'])} ms, "
            f"{fmt(rate, 0)} adds/s, RSS {rss} KiB, idle {idle[self.node.name]:.2f} %")
        return row

    def propagation(self):
        """etcd: PROP_SAMPLES adds in m on node a, one at a time; after each answer, connects
        to the port on b and c until both accept (wait_for), then removes it on a and connects
        until both refuse. Times from the request sent and from the answer, b and c pooled."""
        o = self.o
        R = {k: [] for k in ("add_req", "add_ans", "rm_req", "rm_ans")}
        first = {"add": 0, "rm": 0}
        missed = {"add": 0, "rm": 0}
        targets_of = lambda port: [(NODES[x], port) for x in ("b", "c")]
        end = time.monotonic() + o.phase_timeout
        n = 0
        gc.collect(); gc.disable()
        try:
            for i in range(o.prop_samples):
                if time.monotonic() > end:
                    self.notes.append(f"size {self.size}: propagation samples stopped by --phase-timeout at {i}")
                    break
                app = self.apps[i % len(self.apps)]
                path = f"{self.base}/{app}/tcpRedirs"
                t0 = time.perf_counter()
                port = self.api.call("POST", path, {"namespace": "m"})["port"]
                t1 = time.perf_counter()
                for kind, accept in (("add", True), ("rm", False)):
                    if kind == "rm":
                        t0 = time.perf_counter()
                        self.api.call("DELETE", f"{path}/{port}?namespace=m")
                        t1 = time.perf_counter()
                    done, tries = wait_for(targets_of(port), accept)
                    for d, t in zip(done, tries):
                        if d is None:
                            missed[kind] += 1
                            continue
                        R[kind + "_req"].append((d - t0) * 1000)
                        R[kind + "_ans"].append((d - t1) * 1000)
                        first[kind] += t == 1
                n += 1
        finally:
            gc.enable()
        out = dict(prop_n=n, prop_first=first, prop_missed=missed)
        for k, xs in R.items():
            out[f"prop_{k}_p50"], out[f"prop_{k}_p99"] = pct(xs, 50), pct(xs, 99)
            out[f"prop_{k}_max"] = max(xs) if xs else None
        log(f"{self.store}: size {self.size}: propagation to b,c p50/p99 from the add sent "
            f"{fmt(out['prop_add_req_p50'])}/{fmt(out['prop_add_req_p99'])} ms, from its answer "
            f"{fmt(out['prop_add_ans_p50'])}/{fmt(out['prop_add_ans_p99'])} ms; "
            f"first connect after the answer accepted {first['add']}/{2 * n}, missed {missed}")
        return out

    def join(self):
        """etcd, at the largest size: a fresh node d (127.0.0.5, its own empty data directory,
        the same --namespaces s0,s1,m) joins the fleet: the time from its process start until
        its control API answers and until every served port of the table listens on it
        (/proc/net/tcp); then it is stopped again."""
        o = self.o
        name, ip = JOIN
        want = self.L.listening(self.size)
        ranges = [self.L.s0, self.L.s1, self.L.m]
        if listening_count(ip, ranges):
            raise Failure(f"ports already listening on {ip} before {name} joins")
        log(f"{self.store}: node {name} joins on {ip} with {self.size} in the table, {want} to listen")
        argv, env = node_argv(o, name, ip, self.tmp, self.cfg, self.etcd_port)
        new = Proc(name, argv, env, self.logdir, pipe=True); self.procs.append(new)
        api_at, all_at, n = self.come_up(new, ip, ranges, want, new.started + o.restart_timeout, "on joining")
        if all_at is None:
            self.notes.append(f"join: {n}/{want} ports listening on {name} after --restart-timeout {o.restart_timeout:.0f} s")
        cpu, rss = new.cpu(), new.rss_kib()
        log(f"{self.store}: join of {name}: API after {fmt(api_at)} s, all {want} ports after {fmt(all_at)} s, "
            f"CPU {cpu:.2f} s, RSS {rss} KiB")
        new.finish()
        self.procs.remove(new)
        return dict(size=self.size, listening=want, api_s=api_at, ports_s=all_at, cpu_s=cpu, rss=rss)

    def restart(self):
        o = self.o
        node = self.node
        want = self.L.listening(self.size)
        ranges = [self.L.s0, self.L.s1, self.L.m]
        log(f"{self.store}: restart of {node.name} with {self.size} in the table, {want} to listen")
        node.finish()
        self.procs.remove(node)
        end = time.monotonic() + o.restart_timeout
        # the old process's ports, until the kernel drops them
        wait_until(lambda: not listening_count(self.ip, ranges), o.restart_timeout)
        new = Proc(node.name, node.argv, node.env, self.logdir, pipe=True); self.procs.append(new)
        self.node = new
        api_at, all_at, n = self.come_up(new, self.ip, ranges, want, end, "on restart")
        if all_at is None:
            self.notes.append(f"restart: {n}/{want} ports listening after --restart-timeout {o.restart_timeout:.0f} s")
        log(f"{self.store}: restart: API after {fmt(api_at)} s, all {want} ports after {fmt(all_at)} s")
        return dict(size=self.size, listening=want, api_s=api_at, ports_s=all_at, rss=None)

    def come_up(self, new, ip, ranges, want, end, when):
        """Seconds from the start of the node `new` until its control API answered and until
        `want` ports of `ranges` listen on `ip` (None: not by `end`), and the ports listening."""
        n = [0]

        def all_listen():
            if new.p.poll() is not None:
                raise Failure(f"{new.name} exited with {new.p.returncode} {when}\n{new.log_tail()}")
            n[0] = listening_count(ip, ranges)
            return n[0] >= want
        all_at = (time.monotonic() - new.started
                  if wait_until(all_listen, max(0.0, end - time.monotonic()), every=0.02) else None)
        new.ready.wait(max(0.0, end - time.monotonic()))
        api_at = new.ready_at - new.started if new.ready_at else None
        return api_at, all_at, n[0]

    # -- the run
    def run(self):
        o = self.o
        self.start()
        # RSS with an empty table: the size-0 row's when asked for (same conditions), else now
        rss_at = {0: self.node.rss_kib()}
        for size in o.sizes:
            before = self.grow_total
            if size > self.L.listen > self.size:
                if self.grow(self.L.listen) is None:
                    self.notes.append(f"{self.L.listen} not reached within --grow-timeout; larger sizes skipped")
                    break
                self.settle_rss(rss_at, self.L.listen)
            took = self.grow(size)
            if took is None:
                self.notes.append(f"size {size} not reached within --grow-timeout {o.grow_timeout:.0f} s "
                                  f"(stopped at {self.size}); larger sizes skipped")
                break
            # the applications the measures use (the table's first ones, or created now)
            self.ensure_apps(max(o.rate_max, o.samples, 1), time.monotonic() + o.grow_timeout)
            row = self.measure()
            row["grow_s"] = self.grow_total - before   # since the previous size
            row["grow_total_s"] = self.grow_total
            if size == 0:
                rss_at[0] = row["rss"]
            if size == self.L.listen:
                rss_at[self.L.listen] = row["rss"]
            self.rows.append(row)
        for row in self.rows:
            self.per_redirection(row, rss_at)
        self.restart_row = None
        if self.rows and self.store == "etcd" and not o.no_join:
            self.join_row = self.join()
        if self.rows and not o.no_restart:
            self.restart_row = self.restart()
        return self.rows

    def settle_rss(self, rss_at, at):
        self.idle()       # the same settling as a measured size has before its RSS
        rss_at[at] = self.node.rss_kib()
        log(f"{self.store}: at {at} (all listening): RSS {rss_at[at]} KiB")

    def per_redirection(self, row, rss_at):
        r0 = rss_at.get(0)
        lst, size = row["listening"], row["size"]
        row["kib_listening"] = row["kib_table"] = None
        if r0 is None or not lst:
            return
        r_listen = row["rss"] if size <= self.L.listen else rss_at.get(self.L.listen)
        if r_listen is not None:
            row["kib_listening"] = (r_listen - r0) / lst
        if size > self.L.listen and r_listen is not None:
            row["kib_table"] = (row["rss"] - r_listen) / (size - self.L.listen)


# ---------------------------------------------------------------- output

def table(b, binary_version):
    o = b.o
    out = []
    w = out.append
    others = ""
    if b.store == "etcd":
        others = " (3 nodes sharing one etcd; measured node a, 127.0.0.2)"
    w(f"### {b.store}{others}")
    w("")
    w(f"{binary_version}; {os.cpu_count()} CPUs; served namespaces s0,s1 ({o.listen} ports of "
      f"{o.listen // 2} apps at most), m (measured adds); table-only namespaces u0..u{b.L.n_unserved - 1} "
      f"({o.table_apps} apps); {o.samples} samples per size (1 client), adds/s with "
      f"{o.rate_clients} clients over {o.rate_seconds:.0f} s; idle CPU over {o.idle_seconds:.0f} s")
    w("")
    w("| size | listening | add p50 ms | add p99 ms | adds/s | ratio to first | remove p50 ms | remove p99 ms "
      "| instances p50 ms | instances p99 ms | list p50 ms | RSS MiB | KiB/listening | KiB/table-only "
      "| idle CPU % | grown in s |")
    w("| ---: " * 16 + "|")
    first = b.rows[0]["rate"] if b.rows else None
    # A size whose measurement failed midway has some figures only: "–" for the others.
    keys = ("listening", "add_p50", "add_p99", "rate", "rm_p50", "rm_p99", "inst_p50", "inst_p99",
            "list_p50", "rss", "kib_listening", "kib_table", "idle", "grow_s")
    for r in ({**dict.fromkeys(keys), **row} for row in b.rows):
        ratio = f"{r['rate'] / first:.2f}" if first and r["rate"] else "–"
        w(f"| {r['size']} | {r['listening']} | {fmt(r['add_p50'])} | {fmt(r['add_p99'])} | {fmt(r['rate'], 0)} | "
          f"{ratio} | {fmt(r['rm_p50'])} | {fmt(r['rm_p99'])} | {fmt(r['inst_p50'])} | {fmt(r['inst_p99'])} | "
          f"{fmt(r['list_p50'])} | {fmt(r['rss'] / 1024, 1) if r['rss'] else '–'} | {fmt(r['kib_listening'])} | "
          f"{fmt(r['kib_table'])} | {fmt(r['idle'], 2)} | {fmt(r['grow_s'], 1)} |")
    w("")
    prop_rows = [r for r in b.rows if r.get("prop_n")]
    if prop_rows:
        w(f"Propagation from `add` / `remove` on node a to nodes b and c (ms, b and c pooled; "
          f"bench/fleet.py's connect loop, one try per node every {POLL_EVERY * 1000:.1f} ms; "
          f"`from request`: since the call was sent, `from answer`: since it answered)")
        w("")
        w("| size | samples | add→accept from request p50 | p99 | max | from answer p50 | p99 "
          "| first connect after the answer accepted | remove→refuse from request p50 | p99 | from answer p99 "
          "| not within 2 s (add, remove) |")
        w("| ---: " * 12 + "|")
        for r in prop_rows:
            w(f"| {r['size']} | {r['prop_n']} | {fmt(r['prop_add_req_p50'])} | {fmt(r['prop_add_req_p99'])} | "
              f"{fmt(r['prop_add_req_max'])} | {fmt(r['prop_add_ans_p50'])} | {fmt(r['prop_add_ans_p99'])} | "
              f"{r['prop_first']['add']}/{2 * r['prop_n']} | {fmt(r['prop_rm_req_p50'])} | "
              f"{fmt(r['prop_rm_req_p99'])} | {fmt(r['prop_rm_ans_p99'])} | "
              f"{r['prop_missed']['add']}, {r['prop_missed']['rm']} |")
        w("")
    if b.rows:
        last = b.rows[-1]
        batch = b.batch_size()
        how = (f"batches of {batch} (`POST /v2/organisations/{{org}}/tcpRedirs`, {o.grow_batch_clients} "
               f"clients, {b.grow_calls} calls)" if batch else f"single adds, {o.grow_clients} keep-alive clients")
        w(f"- growing the table through the API: {b.grow_total:.1f} s in all to {last['size']} "
          f"({how}; applications created one by one with {o.grow_clients} clients, inside that time)")
        if b.batch_refused:
            w(f"- batch items refused for a passing reason (no free port, taken meanwhile, store) and sent "
              f"again: {b.batch_refused}")
        if b.store == "etcd":
            w("- idle CPU % at the largest size, every process: " +
              ", ".join(f"{k} {v:.2f}" for k, v in last["idle_all"].items()))
        w(f"- removes/s (rate windows, {o.rate_clients} clients): " +
          ", ".join(f"{r['size']}: {fmt(r['rm_rate'], 0)}" for r in b.rows))
    if any(b.retries.values()):
        w(f"- calls answered 503 and retried: {b.retries['grow']} while growing, {b.retries['rate']} in "
          f"the rate windows (etcd: concurrent changes of one organisation conflict on its counter)")
    jr = b.join_row
    if jr:
        w(f"- a fresh node d (127.0.0.5, empty data directory, --namespaces s0,s1,m) joins with "
          f"{jr['size']} in the table: control API answers after {fmt(jr['api_s'])} s, its "
          f"{jr['listening']} served ports listen after {fmt(jr['ports_s'])} s (CPU {fmt(jr['cpu_s'])} s, "
          f"RSS {fmt(jr['rss'] / 1024 if jr['rss'] else None, 0)} MiB)")
    rr = getattr(b, "restart_row", None)
    if rr:
        w(f"- restart at {rr['size']} ({rr['listening']} served ports): control API answers after "
          f"{fmt(rr['api_s'])} s, every served port listens after {fmt(rr['ports_s'])} s")
    for n in b.notes:
        w(f"- {n}")
    w(f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return "\n".join(out)


def plot(benches, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("no matplotlib: plot skipped (python3 -m venv /work/bench-venv && "
            "/work/bench-venv/bin/pip install matplotlib; run the script with /work/bench-venv/bin/python3)")
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"sqlite": "tab:blue", "etcd": "tab:orange"}
    for b in benches:
        rows = [r for r in b.rows if r["add_p50"] is not None]
        if not rows:
            continue
        xs = [r["size"] for r in rows]
        c = colors.get(b.store)
        ax1.plot(xs, [r["add_p50"] for r in rows], "o-", color=c, label=f"{b.store} add p50")
        ax1.plot(xs, [r["add_p99"] for r in rows], "s--", color=c, label=f"{b.store} add p99")
        ax2.plot(xs, [r["rss"] / 1024 for r in rows], "o-", color=c, label=f"{b.store} RSS (node)")
    for ax in (ax1, ax2):
        ax.set_xscale("symlog", linthresh=1000)
        ax.set_xlabel("redirections in the table (symlog: linear below 1,000)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax1.set_yscale("log")
    ax1.set_ylabel("add latency, ms (1 client)")
    ax2.set_ylabel("resident memory of the node, MiB")
    fig.suptitle("tcp-redirs: add latency and memory against table size")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    log(f"plot written to {path}")


def main():
    o = options()
    if not os.access(o.binary, os.X_OK):
        sys.exit(f"error: {o.binary} is not an executable (cargo build --release --features etcd)")
    stores = ["sqlite", "etcd"] if o.store == "both" else [o.store]
    if "etcd" in stores and not etcd_build(o.binary):
        sys.exit(f"error: `{o.binary} serve --help` has no --store: build with --features etcd")
    if "etcd" in stores and not os.access(o.etcd, os.X_OK):
        sys.exit(f"error: no etcd at {o.etcd} (apt-get install etcd-server, or --etcd)")
    soft, hard = raise_nofile()
    log(f"open files: soft limit raised to {soft} (hard {hard})")
    need = o.listen + o.rate_max + 200
    if need > soft:
        sys.exit(f"error: {need} descriptors needed per node (--listen + --rate-max + 200), limit {soft}")
    version = binary_version(o.binary)
    layout = Layout(o)
    exit_on_signals()

    benches = []
    failed = False
    try:
        for store in stores:
            b = Bench(o, store, layout)
            benches.append(b)
            try:
                b.run()
            except Exception as e:
                failed = True
                log(f"{store}: FAILED: {type(e).__name__}: {e}")
                for p in b.procs:
                    log(f"----- {p.name} (pid {p.pid}): last lines of {p.log_path}\n{p.log_tail(20)}")
                b.notes.append(f"run failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            finally:
                b.stop()
            print(table(b, version) + "\n", flush=True)
    finally:
        for b in benches:
            if any(p.p.poll() is None for p in b.procs):
                b.stop()
    if o.json:
        with open(o.json, "w") as f:
            json.dump({b.store: dict(rows=b.rows, restart=getattr(b, "restart_row", None), join=b.join_row,
                                     notes=b.notes,
                                     grow_total=b.grow_total) for b in benches}, f, indent=1)
    if o.plot:
        plot(benches, o.plot)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
