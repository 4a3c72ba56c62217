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
import gc, os, shutil, socket, subprocess, sys, tempfile, time

sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import (NODE_VARS, TOKEN, Api, Failure, Proc, binary_version, default_org,  # noqa: E402
                      etcd_build, exit_on_signals, logger, pct, probe, server_env, stop_all, wait_for)

RUNS = int(os.environ.get("RUNS", "200"))
WARMUP = int(os.environ.get("WARMUP", "10"))
BATCH = max(1, int(os.environ.get("BATCH", "20")))
TIME_LIMIT = float(os.environ.get("TIME_LIMIT", "900"))
ETCD = os.environ.get("ETCD", "/usr/bin/etcd")
KEEP_TMP = os.environ.get("KEEP_TMP") == "1"
HTTP_TIMEOUT = 15.0
READY_TIMEOUT = 60.0  # for etcd and for each node to come up
INSTANCE = "127.0.0.1:9"
NODES = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
SQLITE_IP = "127.0.0.5"


log = logger()


# ---------------------------------------------------------------- processes

def start_etcd(tmp, logdir):
    """One etcd on free ports of 127.0.0.1, healthy; returns (its Proc, its client port)."""
    return benchlib.start_etcd(ETCD, os.path.join(tmp, "etcd"), logdir, READY_TIMEOUT, member="fleet",
                               token="tcp-redirs-bench")


def start_node(name, binary, ip, tmp, logdir, etcd_port=None):
    argv = [binary, "serve"]
    if etcd_port is not None:
        argv += ["--store", f"etcd://127.0.0.1:{etcd_port}", "--node", name]
    argv += ["--listen", f"{ip}:0", "--public-bind", ip, "--data-dir", os.path.join(tmp, name)]
    if etcd_port is not None:
        argv += ["--node-ttl", "5"]
    env = server_env(os.path.join(tmp, "cfg-" + name), TOKEN, NODE_VARS[:7], NO_COLOR="1")
    return Proc(name, argv, env, logdir, pipe=True)


# ---------------------------------------------------------------- statistics

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
    if not etcd_build(binary):
        sys.exit(f"error: `{sys.argv[1]} serve --help` has no --store: build with --features etcd")

    procs = []
    tmp = tempfile.mkdtemp(prefix="tcp-redirs-fleet-")
    logdir = os.path.join(tmp, "logs"); os.makedirs(logdir)

    exit_on_signals()

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
            log(p.log_tail(60))
        raise
    finally:
        stop_all(procs, timeout=5.0)
        if KEEP_TMP or not ok:
            log(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(nodes, s, etcd):
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    api_a, api_s = Api(a.url, HTTP_TIMEOUT, name="a"), Api(s.url, HTTP_TIMEOUT, name="s")
    org_a, org_s = default_org(api_a), default_org(api_s)
    # the other nodes see the same organisation (a sanity check of the shared table)
    for n in (b, c):
        ids = [o["id"] for o in Api(n.url, HTTP_TIMEOUT, name=n.name).call("GET", "/v2/organisations")]
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
    version = binary_version(binary)
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
