#!/usr/bin/env python3
"""Fleet mode: how fast a change reaches the other nodes, and what `add` costs with etcd.

Usage: cargo build --release --features etcd
       RUNS=200 python3 bench/fleet.py target/release/tcp-redirs

Starts, on loopback, everything it measures, and stops it at the end (also on errors and
Ctrl-C): one etcd (/usr/bin/etcd, free ports, temporary data directory), three fleet nodes
sharing it (a on 127.0.0.2, b on 127.0.0.3, c on 127.0.0.4; --node-ttl 5) and one
single-node server on the SQLite store (127.0.0.5). Then, sample by sample, interleaved:

- etcd: POST tcpRedirs on node a (a fresh application per sample), then connects in a tight
  loop (one try per node every ~0.2 ms, 2 s at most) to the new port on b, c and a, until
  each accepts; later DELETE it on a and connects until b, c and a refuse;
- sqlite: the same POST on the single node, one connect to check the port accepts; DELETE.

The etcd and sqlite samples alternate (which goes first alternates too), so that both see
the same machine. CPU time (utime+stime from /proc/PID/stat, 10 ms ticks) of each process
is read before and after each batch of adds and of removes, and divided by the batch size.

Prints two markdown tables on stdout (progress and problems go to stderr):
propagation to b and c (p50/p90/p99/max, and in how many samples the very first connect after
the answer already found the port accepting, or refusing after a remove: the contract wants
all), and the add/remove round trips of both stores
with their ratio and the CPU per operation.

Settings (environment):
  RUNS=200        samples of each kind (add and remove, etcd and sqlite)
  WARMUP=10       samples first run and thrown away (connections, caches, fleet membership)
  BATCH=20        samples per CPU-time window
  TIME_LIMIT=900  seconds for the sampling; a run that reaches it reports what it has
  ETCD=/usr/bin/etcd
  KEEP_TMP=1      keep the temporary directory (node and etcd logs, data) at the end
"""
import collections, gc, http.client, json, math, os, re, shutil, signal, socket, subprocess
import sys, tempfile, threading, time, urllib.parse, urllib.request

RUNS = int(os.environ.get("RUNS", "200"))
WARMUP = int(os.environ.get("WARMUP", "10"))
BATCH = max(1, int(os.environ.get("BATCH", "20")))
TIME_LIMIT = float(os.environ.get("TIME_LIMIT", "900"))
ETCD = os.environ.get("ETCD", "/usr/bin/etcd")
KEEP_TMP = os.environ.get("KEEP_TMP") == "1"
TOKEN = "t"
POLL_EVERY = 0.0002   # seconds between two rounds of connects
POLL_MAX = 2.0        # seconds a propagation sample may take
HTTP_TIMEOUT = 15.0
READY_TIMEOUT = 60.0  # for etcd and for each node to come up
INSTANCE = "127.0.0.1:9"
TICK = os.sysconf("SC_CLK_TCK")
NODES = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
SQLITE_IP = "127.0.0.5"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Failure(Exception):
    pass


# ---------------------------------------------------------------- processes

class Proc:
    """A child in its own process group; stderr into a log file (nodes: through a pipe
    drained by a thread, which also finds the control API's URL)."""

    def __init__(self, name, argv, env, logdir, pipe):
        self.name, self.argv = name, argv
        self.log_path = os.path.join(logdir, name + ".log")
        self.tail = collections.deque(maxlen=400)
        self.url = None
        self.ready = threading.Event()
        self._logf = open(self.log_path, "w")
        self.p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self._logf,
                                  stderr=subprocess.PIPE if pipe else self._logf,
                                  start_new_session=True, text=pipe, errors="replace" if pipe else None)
        self.pid = self.p.pid
        if pipe:
            self.reader = threading.Thread(target=self._drain, daemon=True)
            self.reader.start()

    def _drain(self):
        pat = re.compile(r"control API listening on (https?://[^\s\"',]+)")
        for line in self.p.stderr:        # until the process (and its group) closes the pipe
            self.tail.append(line)
            try:
                self._logf.write(line); self._logf.flush()
            except ValueError:            # closed at the end
                pass
            if self.url is None:
                m = pat.search(re.sub(r"\x1b\[[0-9;]*m", "", line))
                if m:
                    self.url = m.group(1); self.ready.set()
        self.ready.set()

    def wait_ready(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.ready.wait(0.05):
                break
        if self.url is None:
            state = f"exited with {self.p.returncode}" if self.p.poll() is not None else f"no 'control API listening on' line within {timeout:.0f} s"
            raise Failure(f"node {self.name} did not come up ({state}): {' '.join(self.argv)}")
        return self.url

    def cpu(self):
        """utime+stime in seconds (exited threads included)."""
        with open(f"/proc/{self.pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / TICK

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass

    def log_tail(self, n=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(collections.deque(f, maxlen=n))
        except OSError:
            return "".join(list(self.tail)[-n:])


def stop_all(procs, timeout=5.0):
    """Nodes first (they may deregister from etcd as they leave), then etcd; SIGKILL after
    `timeout` seconds for each group."""
    for group in ([p for p in procs if p.name != "etcd"], [p for p in procs if p.name == "etcd"]):
        for p in group:
            p.stop()
        end = time.monotonic() + timeout
        for p in group:
            try:
                p.p.wait(max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{p.name} (pid {p.pid}) ignored SIGTERM for {timeout:.0f} s: SIGKILL")
                p.stop(signal.SIGKILL)
                try:
                    p.p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            # also any child left in the group
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in group:
            try:
                p._logf.close()
            except Exception:
                pass


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_etcd(tmp, logdir):
    client, peer = free_ports(2)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
    c, p = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    argv = [ETCD, "--name", "fleet", "--data-dir", os.path.join(tmp, "etcd"),
            "--listen-client-urls", c, "--advertise-client-urls", c,
            "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
            "--initial-cluster", f"fleet={p}", "--initial-cluster-state", "new",
            "--initial-cluster-token", "tcp-redirs-bench"]
    proc = Proc("etcd", argv, env, logdir, pipe=False)
    end = time.monotonic() + READY_TIMEOUT
    last = None
    while time.monotonic() < end:
        if proc.p.poll() is not None:
            raise Failure(f"etcd exited with {proc.p.returncode}: {' '.join(argv)}\n{proc.log_tail()}")
        try:
            body = urllib.request.urlopen(c + "/health", timeout=1).read().decode()
            if json.loads(body).get("health") == "true":
                return proc, client
            last = body
        except Exception as e:
            last = repr(e)
        time.sleep(0.1)
    proc.stop(signal.SIGKILL)
    raise Failure(f"etcd not healthy within {READY_TIMEOUT:.0f} s (last answer: {last})")


def start_node(name, binary, ip, tmp, logdir, etcd_port=None):
    argv = [binary, "serve"]
    if etcd_port is not None:
        argv += ["--store", f"etcd://127.0.0.1:{etcd_port}", "--node", name]
    argv += ["--listen", f"{ip}:0", "--public-bind", ip, "--data-dir", os.path.join(tmp, name)]
    if etcd_port is not None:
        argv += ["--node-ttl", "5"]
    env = dict(os.environ, TCP_REDIRS_ADMIN_TOKEN=TOKEN, TCP_REDIRS_CONFIG_DIR=os.path.join(tmp, "cfg-" + name),
               NO_COLOR="1")
    for k in ("TCP_REDIRS_URL", "TCP_REDIRS_TOKEN", "TCP_REDIRS_LISTEN", "TCP_REDIRS_DATA_DIR",
              "TCP_REDIRS_PUBLIC_BIND", "TCP_REDIRS_CONFIG", "TCP_REDIRS_ADMIN_SECRET"):
        env.pop(k, None)
    return Proc(name, argv, env, logdir, pipe=True)


# ---------------------------------------------------------------- API

class ApiError(Exception):
    def __init__(self, node, method, path, status, body):
        super().__init__(f"{node}: {method} {path} answered {status}: {body[:300]}")
        self.status = status


class Api:
    """One persistent HTTP/1.1 connection to a node's control API."""

    def __init__(self, name, url):
        u = urllib.parse.urlsplit(url)
        self.name, self.host, self.port = name, u.hostname, u.port
        self.conn = None
        self.reconnects = 0

    def _connect(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT)
        c.connect()
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = c

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": "Bearer " + TOKEN}
        if data is not None:
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self._connect()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close(); self.conn = None
                if fresh or attempt:
                    raise
                self.reconnects += 1       # a kept-alive connection the server had closed
                continue
            except Exception:
                self.conn.close(); self.conn = None
                raise
            if (r.getheader("Connection") or "").lower() == "close":
                self.conn.close(); self.conn = None
            if not 200 <= r.status < 300:
                raise ApiError(self.name, method, path, r.status, raw.decode(errors="replace"))
            return json.loads(raw) if raw.strip() else None


# ---------------------------------------------------------------- probes

def probe(ip, port):
    """True: accepted; False: refused; None: neither (timeout, other error)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.2)
    try:
        s.connect((ip, port))
        return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None
    finally:
        s.close()


def wait_for(targets, accept):
    """Connects to each (ip, port) in turn, every POLL_EVERY, until each accepts (accept=True)
    or refuses (accept=False), POLL_MAX at most. Returns, per target, the perf_counter time
    the wanted answer came (None: not within POLL_MAX) and how many tries it took."""
    done = [None] * len(targets)
    tries = [0] * len(targets)
    end = time.perf_counter() + POLL_MAX
    while True:
        for k, (ip, port) in enumerate(targets):
            if done[k] is None:
                tries[k] += 1
                if probe(ip, port) is accept:
                    done[k] = time.perf_counter()
        if all(d is not None for d in done) or time.perf_counter() > end:
            return done, tries
        time.sleep(POLL_EVERY)


# ---------------------------------------------------------------- statistics

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(p / 100 * len(xs)) - 1))]


def fmt(v):
    if v is None:
        return "–"
    v = round(v, 3)
    return f"{v:.3f}" if abs(v) < 1 else f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


class Series:
    def __init__(self):
        self.ms, self.timeouts, self.first_try = [], 0, 0

    def add(self, t0, t1, tries=None):
        if t1 is None:
            self.timeouts += 1
        else:
            self.ms.append((t1 - t0) * 1000)
            if tries == 1:
                self.first_try += 1

    def q(self, p):
        return pct(self.ms, p) if self.ms else None


# ---------------------------------------------------------------- the benchmark

def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    if not os.access(binary, os.X_OK):
        sys.exit(f"error: {binary} is not an executable (cargo build --release --features etcd)")
    if not os.access(ETCD, os.X_OK):
        sys.exit(f"error: no etcd at {ETCD} (apt-get install etcd-server, or set ETCD=)")
    help_text = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, timeout=30).stdout
    if "--store" not in help_text:
        sys.exit(f"error: `{sys.argv[1]} serve --help` has no --store: build with --features etcd")

    procs = []
    tmp = tempfile.mkdtemp(prefix="tcp-redirs-fleet-")
    logdir = os.path.join(tmp, "logs"); os.makedirs(logdir)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    ok = False
    try:
        log(f"temporary directory {tmp}")
        etcd, etcd_port = start_etcd(tmp, logdir); procs.append(etcd)
        log(f"etcd healthy on 127.0.0.1:{etcd_port}")
        nodes = {}
        for name, ip in NODES.items():
            n = start_node(name, binary, ip, tmp, logdir, etcd_port); procs.append(n)
            n.wait_ready(READY_TIMEOUT); nodes[name] = n
            log(f"node {name}: {n.url}")
        s = start_node("s", binary, SQLITE_IP, tmp, logdir); procs.append(s)
        s.wait_ready(READY_TIMEOUT)
        log(f"sqlite node s: {s.url}")
        results = run(nodes, s, etcd)
        report(results, binary, etcd)
        ok = results["errors_n"] == 0
    except BaseException as e:
        log(f"\nFAILED: {type(e).__name__}: {e}")
        for p in procs:
            log(f"\n----- {p.name} (pid {p.pid}, {'running' if p.p.poll() is None else 'exit ' + str(p.p.returncode)}): last lines of {p.log_path}")
            log(p.log_tail())
        raise
    finally:
        stop_all(procs)
        if KEEP_TMP or not ok:
            log(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(nodes, s, etcd):
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    api_a, api_s = Api("a", a.url), Api("s", s.url)
    orgs_a, orgs_s = api_a.call("GET", "/v2/organisations"), api_s.call("GET", "/v2/organisations")
    pick = lambda orgs: next((o for o in orgs if o.get("name") == "default"), orgs[0])["id"]
    org_a, org_s = pick(orgs_a), pick(orgs_s)
    # the other nodes see the same organisation (a sanity check of the shared table)
    for n in (b, c):
        ids = [o["id"] for o in Api(n.name, n.url).call("GET", "/v2/organisations")]
        if org_a not in ids:
            log(f"warning: node {n.name} does not list organisation {org_a} of node a (it lists {ids})")

    cpu_procs = {"a": a, "b": b, "c": c, "etcd": etcd, "s": s}
    # idle CPU, to judge the background work (lease keep-alives, watches) in the windows
    c0 = {k: p.cpu() for k, p in cpu_procs.items()}; t0 = time.perf_counter()
    time.sleep(3)
    c1 = {k: p.cpu() for k, p in cpu_procs.items()}; idle_s = time.perf_counter() - t0
    idle = {k: (c1[k] - c0[k]) / idle_s * 1000 for k in cpu_procs}   # ms of CPU per second

    R = {k: Series() for k in ("add_ans_b", "add_ans_c", "add_ans_a", "add_start_b", "add_start_c",
                               "rm_ans_b", "rm_ans_c", "rm_ans_a", "rm_start_b", "rm_start_c",
                               "add_etcd", "add_sqlite", "rm_etcd", "rm_sqlite", "probe_ok")}
    cpu_add = {k: 0.0 for k in cpu_procs}; cpu_rm = {k: 0.0 for k in cpu_procs}
    n_add = {"etcd": 0, "sqlite": 0}; n_rm = {"etcd": 0, "sqlite": 0}
    sqlite_not_accepting = [0]; sqlite_still_accepting = [0]
    errors = []
    seq = [0]

    def err(what, e):
        errors.append(f"{what}: {type(e).__name__}: {e}")
        log(f"error: {what}: {type(e).__name__}: {e}")
        if len(errors) > max(10, RUNS // 10):
            raise Failure(f"too many errors ({len(errors)}); the first: {errors[0]}")

    def batch(k, record):
        kinds = []
        for i in range(k):
            seq[0] += 1
            kinds.append((seq[0], "etcd", api_a, org_a))
            kinds.append((seq[0], "sqlite", api_s, org_s))
        # fresh applications, created outside the measured windows
        apps = {}
        for n, kind, api, org in kinds:
            try:
                app = api.call("POST", f"/v2/organisations/{org}/applications",
                               {"name": f"fleet-{kind}-{n}", "instances": [{"address": INSTANCE}]})
                apps[(n, kind)] = app["id"]
            except Exception as e:
                err(f"create application on {api.name}", e)
        # the two kinds interleaved, which goes first alternating
        order = []
        for i in range(k):
            pair = kinds[2 * i:2 * i + 2]
            order += pair if pair[0][0] % 2 else pair[::-1]
        ports, accepted = {}, {}
        gc.collect(); gc.disable()
        try:
            # ---- adds
            cpu0 = {x: p.cpu() for x, p in cpu_procs.items()}
            for n, kind, api, org in order:
                app = apps.get((n, kind))
                if app is None:
                    continue
                path = f"/v2/organisations/{org}/applications/{app}/tcpRedirs"
                t0 = time.perf_counter()
                try:
                    r = api.call("POST", path, {"namespace": "default"})
                except Exception as e:
                    err(f"add on {api.name}", e); continue
                t1 = time.perf_counter()
                port = r["port"]; ports[(n, kind)] = port
                if kind == "sqlite":
                    ok = probe(SQLITE_IP, port)
                    if record:
                        R["add_sqlite"].add(t0, t1); n_add["sqlite"] += 1
                        if ok is not True:
                            sqlite_not_accepting[0] += 1
                    continue
                names = ("b", "c") if n % 2 else ("c", "b")
                targets = [(NODES[x], port) for x in names] + [(NODES["a"], port)]
                done, tries = wait_for(targets, True)
                got = dict(zip(names + ("a",), zip(done, tries)))
                accepted[(n, kind)] = {x for x in got if got[x][0] is not None}
                if record:
                    n_add["etcd"] += 1
                    R["add_etcd"].add(t0, t1)
                    for x in ("b", "c", "a"):
                        R["add_ans_" + x].add(t1, got[x][0], got[x][1])
                    for x in ("b", "c"):
                        R["add_start_" + x].add(t0, got[x][0])
            cpu1 = {x: p.cpu() for x, p in cpu_procs.items()}
            if record:
                for x in cpu_procs:
                    cpu_add[x] += cpu1[x] - cpu0[x]
            # ---- removes
            cpu0 = {x: p.cpu() for x, p in cpu_procs.items()}
            for n, kind, api, org in order:
                port = ports.get((n, kind))
                if port is None:
                    continue
                path = f"/v2/organisations/{org}/applications/{apps[(n, kind)]}/tcpRedirs/{port}?namespace=default"
                t0 = time.perf_counter()
                try:
                    api.call("DELETE", path)
                except Exception as e:
                    err(f"remove on {api.name}", e); continue
                t1 = time.perf_counter()
                if kind == "sqlite":
                    ok = probe(SQLITE_IP, port)
                    if record:
                        R["rm_sqlite"].add(t0, t1); n_rm["sqlite"] += 1
                        if ok is not False:
                            sqlite_still_accepting[0] += 1
                    continue
                # only the nodes where the port accepted: elsewhere a refusal proves nothing
                names = tuple(x for x in (("b", "c") if n % 2 else ("c", "b")) + ("a",)
                              if x in accepted.get((n, kind), ()))
                done, tries = wait_for([(NODES[x], port) for x in names], False)
                got = dict(zip(names, zip(done, tries)))
                if record:
                    n_rm["etcd"] += 1
                    R["rm_etcd"].add(t0, t1)
                    for x in names:
                        R["rm_ans_" + x].add(t1, got[x][0], got[x][1])
                        if x != "a":
                            R["rm_start_" + x].add(t0, got[x][0])
            cpu1 = {x: p.cpu() for x, p in cpu_procs.items()}
            if record:
                for x in cpu_procs:
                    cpu_rm[x] += cpu1[x] - cpu0[x]
        finally:
            gc.enable()
        # one connect to a port that accepts: the floor of every propagation figure
        if record and ports:
            srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(64)
            pp = srv.getsockname()[1]
            for _ in range(5):
                t0 = time.perf_counter(); probe("127.0.0.1", pp); R["probe_ok"].add(t0, time.perf_counter())
            srv.close()
        # clean up, outside the windows: the applications go (their instance pools with them)
        for n, kind, api, org in kinds:
            app = apps.get((n, kind))
            if app is not None:
                try:
                    api.call("DELETE", f"/v2/organisations/{org}/applications/{app}")
                except Exception as e:
                    err(f"remove application on {api.name}", e)

    log(f"warm-up: {WARMUP} samples")
    if WARMUP:
        batch(WARMUP, record=False)
    started = time.monotonic()
    stopped_early = False
    done_n = 0
    while done_n < RUNS:
        if time.monotonic() - started > TIME_LIMIT:
            stopped_early = True
            log(f"TIME_LIMIT={TIME_LIMIT:.0f} s reached after {done_n} samples")
            break
        k = min(BATCH, RUNS - done_n)
        batch(k, record=True)
        done_n += k
        log(f"{done_n}/{RUNS} samples ({time.monotonic() - started:.0f} s)")
    return dict(R=R, cpu_add=cpu_add, cpu_rm=cpu_rm, n_add=n_add, n_rm=n_rm, idle=idle,
                sqlite_not_accepting=sqlite_not_accepting[0], sqlite_still_accepting=sqlite_still_accepting[0],
                errors=errors, errors_n=len(errors), samples=done_n, stopped_early=stopped_early,
                seconds=time.monotonic() - started, reconnects=api_a.reconnects + api_s.reconnects)


def report(res, binary, etcd):
    R = res["R"]
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        version = "?"
    try:
        ev = subprocess.run([ETCD, "--version"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0]
    except Exception:
        ev = "etcd ?"
    out = []
    w = out.append
    w(f"## fleet: {version}, {ev}, {os.cpu_count()} CPUs, RUNS={RUNS} (done {res['samples']}"
      f"{', stopped by TIME_LIMIT' if res['stopped_early'] else ''}), {res['seconds']:.0f} s")
    w("")
    w("Propagation (ms; `accept at answer`: the first connect after the answer succeeded / refused)")
    w("")
    w("| measure | n | p50 | p90 | p99 | max | over 2 s | at answer |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [("add: POST answered on a → b accepts", "add_ans_b", True),
            ("add: POST answered on a → c accepts", "add_ans_c", True),
            ("add: POST started on a → b accepts", "add_start_b", False),
            ("add: POST started on a → c accepts", "add_start_c", False),
            ("remove: DELETE answered on a → b refuses", "rm_ans_b", True),
            ("remove: DELETE answered on a → c refuses", "rm_ans_c", True),
            ("remove: DELETE started on a → b refuses", "rm_start_b", False),
            ("remove: DELETE started on a → c refuses", "rm_start_c", False)]
    for label, key, at in rows:
        s = R[key]
        n = len(s.ms) + s.timeouts
        w(f"| {label} | {n} | {fmt(s.q(50))} | {fmt(s.q(90))} | {fmt(s.q(99))} | {fmt(s.q(100))} | "
          f"{s.timeouts} | {f'{s.first_try}/{n}' if at else ''} |")
    w("")
    w("Round trip of the API call (ms) and CPU time per call (ms, utime+stime over batches of "
      f"{BATCH}) of the node that served it")
    w("")
    w("| call | store | n | p50 | p90 | p99 | max | CPU of serving node |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for call, ke, ks, cpu, nn in (("add", "add_etcd", "add_sqlite", res["cpu_add"], res["n_add"]),
                                  ("remove", "rm_etcd", "rm_sqlite", res["cpu_rm"], res["n_rm"])):
        e, s = R[ke], R[ks]
        ce = cpu["a"] / nn["etcd"] * 1000 if nn["etcd"] else None
        cs = cpu["s"] / nn["sqlite"] * 1000 if nn["sqlite"] else None
        w(f"| {call} | etcd, 3 nodes (on a) | {len(e.ms)} | {fmt(e.q(50))} | {fmt(e.q(90))} | {fmt(e.q(99))} | {fmt(e.q(100))} | {fmt(ce)} |")
        w(f"| {call} | sqlite, 1 node | {len(s.ms)} | {fmt(s.q(50))} | {fmt(s.q(90))} | {fmt(s.q(99))} | {fmt(s.q(100))} | {fmt(cs)} |")
        ratio = lambda x, y: f"{x / y:.2f}×" if x is not None and y else "–"
        w(f"| {call} | etcd / sqlite | | {ratio(e.q(50), s.q(50))} | {ratio(e.q(90), s.q(90))} | "
          f"{ratio(e.q(99), s.q(99))} | {ratio(e.q(100), s.q(100))} | {ratio(ce, cs)} |")
    w("")
    for call, cpu, nn in (("add", res["cpu_add"], res["n_add"]), ("remove", res["cpu_rm"], res["n_rm"])):
        if nn["etcd"]:
            per = {k: cpu[k] / nn["etcd"] * 1000 for k in ("a", "b", "c", "etcd")}
            w(f"- CPU per etcd {call}, every process (ms): a {per['a']:.2f}, b {per['b']:.2f}, c {per['c']:.2f}, "
              f"etcd {per['etcd']:.2f}; fleet total {sum(per.values()):.2f} (b and c include accepting the probes)")
    idle = res["idle"]
    w(f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    w("- idle CPU before the run (ms per s): " + ", ".join(f"{k} {v:.1f}" for k, v in idle.items()))
    w(f"- one connect to a listening loopback port (the floor of the `answered →` rows): "
      f"p50 {fmt(R['probe_ok'].q(50))} ms")
    if R["add_ans_a"].ms or R["add_ans_a"].timeouts:
        sa, ra = R["add_ans_a"], R["rm_ans_a"]
        w(f"- node a itself at answer: accepting after add {sa.first_try}/{len(sa.ms) + sa.timeouts}, "
          f"refusing after remove {ra.first_try}/{len(ra.ms) + ra.timeouts}")
    w(f"- sqlite node at answer: not accepting after add {res['sqlite_not_accepting']}, "
      f"still accepting after remove {res['sqlite_still_accepting']}")
    if res["reconnects"]:
        w(f"- the API closed a kept-alive connection {res['reconnects']} times (call retried, within its time)")
    if res["errors"]:
        w(f"- {len(res['errors'])} errors; the first: {res['errors'][0]}")
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    main()
