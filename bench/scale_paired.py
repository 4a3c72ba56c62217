#!/usr/bin/env python3
"""Scale, paired: the add rate with N redirections in the table against the rate with 0,
both set-ups running at once and measured in alternating windows (issue 19's headline).

Usage: cargo build --release --features etcd
       python3 bench/scale_paired.py target/release/tcp-redirs [--store sqlite|etcd|both]
               [--size 100000] [--rounds 20] [--window 1.5] [--strace] [--perf-dir DIR]
       (--help lists every option)

Why: bench/scale.py measures its sizes one after the other, minutes apart, so on a shared
2-core machine its "ratio to size 0" moves with whatever else ran meanwhile (the same
binary gave 0.30x, 0.85x and 1.10x at 100,000 on etcd). Here both tables exist at once and
the windows alternate, so both see the same machine; what is reported is the ratio of each
round and counts that noise does not move (CPU time per add).

For each store (one after the other, never at once), two independent set-ups, started and
stopped by the script, on loopback, each with its own data directories (temporary, removed
unless --keep-tmp):
- "small": the table at size 0 (only the applications the windows add to);
- "large": the table grown to --size through the API exactly as bench/scale.py grows it
  (its Layout and Bench.grow: 18,000 redirections listening in s0/s1, the rest in
  table-only namespaces u0..; single adds on SQLite, batches of 500 on etcd).
SQLite: one node each, small on 127.0.1.5, large on 127.0.0.5 (scale.py's address).
etcd: one etcd and three nodes a, b, c each; large on 127.0.0.2-4 (scale.py's), small on
127.0.1.2-4; each etcd on its own free ports of 127.0.0.1, each control API on a free port
of its node's address. Both set-ups have the same config file (the same namespaces and
port ranges); their listeners never collide because every node binds its own address.
The measured namespace m is moved to ports M_BASE.. (2 x --window-max ports, at most half
full at once).

Then, per store: one warm-up window per set-up (not counted), and --rounds rounds of one
window per set-up, small first in even rounds and large first in odd ones. A window:
--clients threads (keep-alive connections to node a) add in m, each add to its own
application, for --window seconds of adding, in chunks of at most --window-max adds (1,500:
the large node holds 18,000 ports and its open-file limit is 20,000), each chunk removed
again before the next (untimed, not in the CPU figures). Per window: adds/s, each add's latency, and the CPU time
(utime+stime, /proc/PID/stat) of every process of both set-ups and of this script over the
adding only. Reported: each round's rates and ratio large/small; the median ratio with its
min and max; the pooled rate; add latency p50/p99 per set-up; CPU per add of node a, of all
nodes, of etcd and of the client; the CPU the idle set-up used during the other's windows.

Optional, after the rounds (not in the ratios): --strace (SQLite, when strace exists): one
more window per set-up under `strace -c -f -p NODE`: system calls per add, the main ones
named. --perf-dir DIR: one more window per set-up (PERF_WINDOWS x --window seconds) under
`perf record -e cpu-clock -g -p NODE -o DIR/<store>-<setup>.data` (software clock only:
hardware counters do not work here); read them with `perf report -i FILE --no-children`.
The release profile strips symbols: profile a build with CARGO_PROFILE_RELEASE_STRIP=false
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only (any target dir).

Every loop is bounded in count and time. Prints markdown on stdout, progress on stderr.
"""
import argparse, collections, gc, http.client, os, re, shutil, statistics, sys, threading, time
import urllib.request

sys.dont_write_bytecode = True   # importing scale.py and benchlib leaves no bench/__pycache__ behind
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scale  # noqa: E402
from benchlib import (Failure, PerfRecord, Proc, Strace, binary_version, exit_on_signals,  # noqa: E402
                      pct, raise_nofile, stop_all)
from scale import Pool, fmt, log, node_argv, start_etcd  # noqa: E402

IPS = {  # (store, set-up) -> node addresses, a first
    ("sqlite", "large"): ["127.0.0.5"], ("sqlite", "small"): ["127.0.1.5"],
    ("etcd", "large"): ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
    ("etcd", "small"): ["127.0.1.2", "127.0.1.3", "127.0.1.4"],
}
M_BASE = 3000        # namespace m: M_BASE .. M_BASE + 2*window_max - 1, below s0 (10000)
ETCD_COUNTERS = ("etcd_mvcc_range_total", "etcd_mvcc_txn_total", "etcd_mvcc_put_total",
                 "etcd_mvcc_delete_total", "go_memstats_alloc_bytes_total", "go_gc_duration_seconds_count",
                 "etcd_server_proposals_committed_total")
ETCD_GAUGES = ("etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_current_revision",
               "etcd_debugging_mvcc_compact_revision", "etcd_mvcc_db_total_size_in_bytes",
               "etcd_mvcc_db_total_size_in_use_in_bytes")
STRACE = shutil.which("strace")
PERF = shutil.which("perf")
PERF_WINDOWS = 4     # a perf window is this many --window long
MAX_CHUNKS = 20      # chunks of --window-max adds in one window, at most


def options():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("binary", help="tcp-redirs built with --features etcd (etcd runs need it)")
    p.add_argument("--store", default="both", choices=["sqlite", "etcd", "both"])
    p.add_argument("--size", type=int, default=100000, help="redirections in the large set-up's table")
    p.add_argument("--rounds", type=int, default=20, help="rounds of one window per set-up")
    p.add_argument("--window", type=float, default=1.5, help="seconds of adding per window")
    p.add_argument("--window-max", type=int, default=1500,
                   help="adds held at once (a chunk; the large node holds --listen ports besides)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients adding in a window")
    p.add_argument("--strace", action="store_true", help="SQLite: one window per set-up under strace -c")
    p.add_argument("--perf-dir", default="", help="record one perf window per set-up into this directory")
    p.add_argument("--etcd-pprof", default="",
                   help="etcd: start each etcd with --enable-pprof and take its CPU profile over one more "
                        "window per set-up (PERF_WINDOWS x --window), saved in this directory; the "
                        "report names the functions whose CPU per add grows the most")
    p.add_argument("--listen", type=int, default=18000, help="as bench/scale.py")
    p.add_argument("--table-apps", type=int, default=10000, help="as bench/scale.py")
    p.add_argument("--grow-clients", type=int, default=16, help="as bench/scale.py")
    p.add_argument("--grow-batch", default="auto", help="as bench/scale.py")
    p.add_argument("--grow-batch-clients", type=int, default=2, help="as bench/scale.py")
    p.add_argument("--grow-timeout", type=float, default=300)
    p.add_argument("--phase-timeout", type=float, default=120,
                   help="seconds the removes after one window may take")
    p.add_argument("--http-timeout", type=float, default=60)
    p.add_argument("--ready-timeout", type=float, default=120)
    p.add_argument("--time-limit", type=float, default=900, help="seconds the rounds of one store may take")
    p.add_argument("--etcd", default="/usr/bin/etcd")
    p.add_argument("--keep-tmp", action="store_true")
    o = p.parse_args()
    if o.grow_batch != "auto":
        o.grow_batch = int(o.grow_batch)
    if M_BASE + 2 * o.window_max > scale.SERVED_BASE:
        p.error(f"--window-max over {(scale.SERVED_BASE - M_BASE) // 2}: namespace m would reach s0")
    o.binary = os.path.abspath(o.binary)
    # what scale.Layout and scale.Bench read
    o.sizes, o.samples, o.rate_max = [0, o.size], 1, o.window_max
    return o


class PairLayout(scale.Layout):
    """scale.py's layout, with namespace m wide enough for a window's adds."""

    def __init__(self, o):
        super().__init__(o)
        self.m = (M_BASE, M_BASE + 2 * o.window_max - 1)
        self.n_apps = max(self.n_apps, o.window_max)


class Setup(scale.Bench):
    """One set-up: scale.Bench (processes, growth) on its own addresses."""

    def __init__(self, o, store, role, layout):
        super().__init__(o, store, layout)
        self.role, self.ips = role, IPS[(store, role)]
        self.label = f"{store}/{role}"
        self.windows = []
        self.pool = None

    def start(self):
        o = self.o
        self.others, self.etcd = [], None
        etcd_port = None
        if self.store == "etcd":
            extra = ["--enable-pprof"] if o.etcd_pprof else []
            self.etcd, etcd_port = start_etcd(o, self.tmp, self.logdir, extra); self.procs.append(self.etcd)
            self.etcd_port = etcd_port
        names = ["s"] if self.store == "sqlite" else ["a", "b", "c"]
        for name, ip in zip(names, self.ips):
            argv, env = node_argv(o, name, ip, self.tmp, self.cfg, etcd_port)
            p = Proc(name, argv, env, self.logdir, pipe=True); self.procs.append(p)
            p.wait_ready(o.ready_timeout)
            if name in ("s", "a"):
                self.node = p
            else:
                self.others.append(p)
        self.ip = self.ips[0]
        log(f"{self.label}: node {self.node.name} at {self.node.url} (pid {self.node.pid})"
            + (f", etcd on 127.0.0.1:{etcd_port} (pid {self.etcd.pid})" if self.etcd else ""))
        self.connect()

    def nodes(self):
        return [self.node] + self.others

    def all_procs(self):
        return self.nodes() + ([self.etcd] if self.etcd else [])

    def cpu(self):
        return {p.name: p.cpu() for p in self.all_procs()}

    def etcd_metrics(self):
        """etcd: the counters of /metrics that say what the nodes asked of it (calls by gRPC
        method, MVCC operations, watch messages sent) and what it cost inside (bytes
        allocated, GCs); plus its key count, revision and database size."""
        if not self.etcd:
            return {}
        body = urllib.request.urlopen(f"http://127.0.0.1:{self.etcd_port}/metrics", timeout=5).read().decode()
        out = collections.Counter()
        for line in body.splitlines():
            if line.startswith("#") or " " not in line:
                continue
            key, val = line.rsplit(" ", 1)
            name = key.split("{", 1)[0]
            if name in ("grpc_server_handled_total", "grpc_server_msg_sent_total"):
                meth = re.search(r'grpc_method="([^"]+)"', key).group(1)
                out[f"{'calls' if name.endswith('handled_total') else 'sent'} {meth}"] += float(val)
            elif name in ETCD_COUNTERS or name in ETCD_GAUGES:
                out[name] += float(val)
        return out

    def prepare(self):
        if self.role == "large":
            took = self.grow(self.o.size)
            if took is None:
                raise Failure(f"{self.label}: {self.o.size} not reached within --grow-timeout")
        self.ensure_apps(self.o.window_max, time.monotonic() + self.o.grow_timeout)
        self.pool = Pool(self.node.url, self.o.clients, self.o.http_timeout)

    def window(self, seconds, other, attach=None):
        """`seconds` of adding in m, in chunks of at most --window-max adds (what a node can
        hold besides its 18,000 ports), each chunk removed again untimed before the next
        (at most MAX_CHUNKS). CPU of both set-ups and of this process over the adding only;
        `attach`: a context (strace, perf) started before and stopped after the window."""
        o = self.o
        lat, lock = [], threading.Lock()
        n = secs = client = other_cpu = 0.0
        cpu, etcd = collections.Counter(), collections.Counter()
        tool = attach() if attach else None
        for _ in range(MAX_CHUNKS):
            if secs >= seconds:
                break
            taken = {}

            def add(api, i):
                t = time.perf_counter()
                r = api.call("POST", f"{self.base}/{self.apps[i]}/tcpRedirs", {"namespace": "m"})
                dt = (time.perf_counter() - t) * 1000
                with lock:
                    lat.append(dt); taken[i] = r["port"]

            def rm(api, i):
                api.call("DELETE", f"{self.base}/{self.apps[i]}/tcpRedirs/{taken[i]}?namespace=m")
            e0 = self.etcd_metrics()
            gc.collect(); gc.disable()
            try:
                c0, d0, me0 = self.cpu(), other.cpu(), sum(os.times()[:2])
                t0 = time.monotonic()
                k, errors = self.pool.run(range(o.window_max), add, t0 + seconds - secs)
                secs += time.monotonic() - t0
                c1, d1, me1 = self.cpu(), other.cpu(), sum(os.times()[:2])
            finally:
                gc.enable()
            e1 = self.etcd_metrics()
            etcd.update({x: e1[x] - e0.get(x, 0) for x in e1 if x not in ETCD_GAUGES})
            n += k
            cpu.update({p: c1[p] - c0[p] for p in c0})
            other_cpu += sum(d1.values()) - sum(d0.values())
            client += me1 - me0
            m, errors2 = self.pool.run(sorted(taken), rm, time.monotonic() + o.phase_timeout)
            if errors or errors2 or m != len(taken):
                raise Failure(f"{self.label}: window: {(errors + errors2)[:3]}, {len(taken) - m} adds not removed")
        extra = tool.stop() if tool else None
        return dict(n=int(n), secs=secs, rate=n / secs, lat=lat, cpu=dict(cpu), etcd=dict(etcd), other_cpu=other_cpu,
                    client_cpu=client, extra=extra)

    def close(self):
        if self.pool:
            self.pool.close()


class EtcdProfile:
    """etcd's own CPU profile (/debug/pprof/profile, Go's symbols) over `seconds`, fetched
    by a thread from start to stop()."""

    def __init__(self, port, seconds, path):
        self.path, self.error = path, None
        # The request is sent here (etcd's profile starts when it arrives); the answer comes
        # `seconds` later, read by the thread.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=seconds + 60)
        conn.request("GET", f"/debug/pprof/profile?seconds={max(1, round(seconds))}")

        def fetch():
            try:
                r = conn.getresponse()
                data = r.read()
                if r.status != 200:
                    raise Failure(f"/debug/pprof/profile answered {r.status}: {data[:200]!r}")
                with open(path, "wb") as f:
                    f.write(data)
            except Exception as e:
                self.error = e
            finally:
                conn.close()
        self.t = threading.Thread(target=fetch, daemon=True); self.t.start()

    def stop(self):
        self.t.join(120)
        if self.error or not os.path.exists(self.path):
            raise Failure(f"etcd profile: {self.error}")
        return pprof_functions(self.path)


def _fields(buf):
    """(field number, wire type, value) of one protobuf message: ints, or bytes for wire type 2."""
    i, n = 0, len(buf)

    def varint():
        nonlocal i
        v = shift = 0
        while True:
            b = buf[i]; i += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v
            shift += 7
    while i < n:
        key = varint()
        field, wt = key >> 3, key & 7
        if wt == 0:
            yield field, wt, varint()
        elif wt == 2:
            ln = varint(); yield field, wt, buf[i:i + ln]; i += ln
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"protobuf wire type {wt}")


def _ints(wt, v):
    """A repeated integer field: packed (bytes) or one value."""
    if wt == 0:
        return [v]
    out, i = [], 0
    while i < len(v):
        x = shift = 0
        while True:
            b = v[i]; i += 1
            x |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        out.append(x)
    return out


def pprof_functions(path):
    """A Go CPU profile (gzipped profile.proto) as {function: [flat s, cumulative s]}: flat,
    the samples where it is the innermost frame; cumulative, those where it is on the stack."""
    import gzip
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    strings, funcs, locs, samples = [], {}, {}, []
    for field, wt, v in _fields(data):
        if field == 6:
            strings.append(v.decode(errors="replace"))
        elif field == 5:
            d = {fl: x for fl, _, x in _fields(v)}
            funcs[d.get(1, 0)] = d.get(2, 0)
        elif field == 4:
            lid, fns = 0, []
            for fl, w2, x in _fields(v):
                if fl == 1:
                    lid = x
                elif fl == 4:
                    fns.append(next((y for f3, _, y in _fields(x) if f3 == 1), 0))
            locs[lid] = fns          # inlined frames first, the outer one last
        elif field == 2:
            ids, vals = [], []
            for fl, w2, x in _fields(v):
                if fl == 1:
                    ids += _ints(w2, x)
                elif fl == 2:
                    vals += _ints(w2, x)
            samples.append((ids, vals))
    out = collections.defaultdict(lambda: [0.0, 0.0])
    for ids, vals in samples:
        secs = (vals[-1] if vals else 0) / 1e9     # cpu nanoseconds
        names = [strings[funcs.get(fn, 0)] for lid in ids for fn in locs.get(lid, [])]
        if not names:
            continue
        out[names[0]][0] += secs
        for name in set(names):
            out[name][1] += secs
    return dict(out)


def run_store(o, store, layout):
    small, large = Setup(o, store, "small", layout), Setup(o, store, "large", layout)
    sets = {"small": small, "large": large}
    res = dict(store=store, rounds=[], warm={}, strace={}, perf={}, pprof={}, notes=[])
    try:
        for s in (small, large):
            s.start()
        for s in (small, large):
            s.prepare()
        res["grow_s"] = large.grow_total
        res["rss"] = {k: s.node.rss_kib() for k, s in sets.items()}
        log(f"{store}: warm-up window per set-up")
        for s, other in ((small, large), (large, small)):
            res["warm"][s.role] = s.window(o.window, other)
        end = time.monotonic() + o.time_limit
        for r in range(o.rounds):
            if time.monotonic() > end:
                res["notes"].append(f"rounds stopped by --time-limit after {r}")
                break
            order = ("small", "large") if r % 2 == 0 else ("large", "small")
            w = {}
            for role in order:
                s = sets[role]
                w[role] = s.window(o.window, sets["large" if role == "small" else "small"])
            res["rounds"].append(dict(order=order, **w))
            log(f"{store}: round {r}: small {w['small']['rate']:.0f}/s, large {w['large']['rate']:.0f}/s, "
                f"ratio {w['large']['rate'] / w['small']['rate']:.2f}")
        if o.strace and store == "sqlite":
            if not STRACE:
                res["notes"].append("--strace: no strace on this machine, skipped")
            else:
                for role in ("small", "large"):
                    s = sets[role]
                    path = os.path.join(s.tmp, "strace.txt")
                    log(f"{store}: strace window, {role}")
                    w = s.window(o.window, sets["large" if role == "small" else "small"],
                                 attach=lambda: Strace(s.node.pid, path))
                    res["strace"][role] = dict(n=w["n"], calls=w["extra"][0], top=w["extra"][1])
        if o.perf_dir:
            if not PERF:
                res["notes"].append("--perf-dir: no perf on this machine, skipped")
            else:
                os.makedirs(o.perf_dir, exist_ok=True)
                for role in ("small", "large"):
                    s = sets[role]
                    path = os.path.abspath(os.path.join(o.perf_dir, f"{store}-{role}.data"))
                    log(f"{store}: perf window, {role} -> {path}")
                    w = s.window(o.window * PERF_WINDOWS, sets["large" if role == "small" else "small"],
                                 attach=lambda: PerfRecord(s.node.pid, path))
                    res["perf"][role] = dict(n=w["n"], path=path, cpu=w["cpu"][s.node.name])
        if o.etcd_pprof and store == "etcd":
            os.makedirs(o.etcd_pprof, exist_ok=True)
            for role in ("small", "large"):
                s = sets[role]
                path = os.path.abspath(os.path.join(o.etcd_pprof, f"etcd-{role}.pb.gz"))
                secs = o.window * PERF_WINDOWS
                log(f"{store}: etcd CPU profile window, {role} -> {path}")
                w = s.window(secs, sets["large" if role == "small" else "small"],
                             attach=lambda: EtcdProfile(s.etcd_port, secs, path))
                res["pprof"][role] = dict(n=w["n"], path=path, funcs=w["extra"], cpu=w["cpu"]["etcd"])
        res["etcd_end"] = {k: s.etcd_metrics() for k, s in sets.items()}
        res["retries"] = {k: s.retries["grow"] + (s.pool.retries if s.pool else 0) for k, s in sets.items()}
    finally:
        for s in (small, large):
            s.close()
        stop_all(small.procs + large.procs)
        for s in (small, large):
            if o.keep_tmp:
                log(f"{s.label}: logs and data kept in {s.tmp}")
            else:
                shutil.rmtree(s.tmp, ignore_errors=True)
    return res


def report(o, res, version):
    out = []
    w = out.append
    store, rounds = res["store"], res["rounds"]
    fleet = " (each: one etcd, three nodes; adds on node a, which answers once b and c listen)" \
        if store == "etcd" else " (each: one node)"
    w(f"### {store}, paired: {o.size} redirections against 0{fleet}")
    w("")
    w(f"{version}; {os.cpu_count()} CPUs; {len(rounds)} rounds of one {o.window:g} s window per set-up "
      f"({o.clients} clients adding in namespace m, chunks of at most {o.window_max} adds removed untimed), small first in even rounds; "
      f"large table grown through the API in {res.get('grow_s', 0):.1f} s; "
      f"RSS of node a: small {res['rss']['small'] / 1024:.0f} MiB, large {res['rss']['large'] / 1024:.0f} MiB")
    w("")
    w("| round | order | small adds/s | large adds/s | ratio large/small |")
    w("| ---: | --- | ---: | ---: | ---: |")
    ratios = []
    for i, r in enumerate(rounds):
        ratio = r["large"]["rate"] / r["small"]["rate"]
        ratios.append(ratio)
        w(f"| {i} | {r['order'][0]} first | {r['small']['rate']:.0f} | {r['large']['rate']:.0f} | {ratio:.2f} |")
    w("")
    if not ratios:
        return "\n".join(out)
    pooled = {k: sum(r[k]["n"] for r in rounds) / sum(r[k]["secs"] for r in rounds) for k in ("small", "large")}
    w(f"**Ratio large/small: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max "
      f"{max(ratios):.2f}, {len(ratios)} rounds); pooled rates {pooled['large']:.0f} / {pooled['small']:.0f} "
      f"adds/s = {pooled['large'] / pooled['small']:.2f}.**")
    w("")
    node_names = ["s"] if store == "sqlite" else ["a", "b", "c"]
    w("| set-up | adds | adds/s median | add p50 ms | add p99 ms | CPU ms/add node a | all nodes | etcd "
      "| client (this script) | idle other set-up, % of a core |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    per = {}
    for k in ("small", "large"):
        ws = [r[k] for r in rounds]
        n = sum(x["n"] for x in ws)
        secs = sum(x["secs"] for x in ws)
        lat = [v for x in ws for v in x["lat"]]
        cpu = lambda names: sum(x["cpu"].get(nm, 0) for x in ws for nm in names) / n * 1000
        per[k] = dict(a=cpu(node_names[:1]), nodes=cpu(node_names), etcd=cpu(["etcd"]) if store == "etcd" else None,
                      client=sum(x["client_cpu"] for x in ws) / n * 1000)
        idle_other = sum(x["other_cpu"] for x in ws) / secs * 100
        w(f"| {k} ({o.size if k == 'large' else 0}) | {n} | {statistics.median(x['rate'] for x in ws):.0f} | "
          f"{fmt(pct(lat, 50))} | {fmt(pct(lat, 99))} | {per[k]['a']:.3f} | {per[k]['nodes']:.3f} | "
          f"{fmt(per[k]['etcd'], 3) if per[k]['etcd'] is not None else '–'} | {per[k]['client']:.3f} | "
          f"{idle_other:.2f} |")
    w(f"| large/small | | | | | {per['large']['a'] / per['small']['a']:.2f} | "
      f"{per['large']['nodes'] / per['small']['nodes']:.2f} | "
      f"{fmt(per['large']['etcd'] / per['small']['etcd']) if per['small']['etcd'] else '–'} | "
      f"{per['large']['client'] / per['small']['client']:.2f} | |")
    w("")
    w("(CPU: utime+stime from /proc/PID/stat over the adding of every counted window, divided by "
      "the adds made; ticks of 10 ms. `idle other set-up`: what the set-up not being measured used "
      "meanwhile.)")
    if store == "etcd":
        tot = {k: collections.Counter() for k in ("small", "large")}
        adds = {k: sum(r[k]["n"] for r in rounds) for k in tot}
        for r in rounds:
            for k in tot:
                tot[k].update(r[k]["etcd"])
        names = sorted(x for x in set(tot["small"]) | set(tot["large"])
                       if max(tot["small"][x] / adds["small"], tot["large"][x] / adds["large"]) >= 0.005)
        w("")
        w("What the nodes asked of etcd, and what it cost etcd, per add (its /metrics before and "
          "after the adding of every counted window; `calls M`: gRPC calls of method M handled; `sent M`: "
          "messages sent on M's streams, i.e. watch events):")
        w("")
        w("| per add | small | large | large/small |")
        w("| --- | ---: | ---: | ---: |")
        for x in names:
            a, b = tot["small"][x] / adds["small"], tot["large"][x] / adds["large"]
            unit, div = (" (KiB)", 1024) if x.endswith("bytes_total") else ("", 1)
            w(f"| {x}{unit} | {a / div:.2f} | {b / div:.2f} | {b / a if a else 0:.2f} |")
        end = res.get("etcd_end", {})
        if end:
            w("")
            w("etcd at the end: " + "; ".join(
                f"{k}: {end[k].get('etcd_debugging_mvcc_keys_total', 0):.0f} keys, revision "
                f"{end[k].get('etcd_debugging_mvcc_current_revision', 0):.0f} (compacted to "
                f"{end[k].get('etcd_debugging_mvcc_compact_revision', 0):.0f}), database "
                f"{end[k].get('etcd_mvcc_db_total_size_in_bytes', 0) / 2**20:.0f} MiB "
                f"({end[k].get('etcd_mvcc_db_total_size_in_use_in_bytes', 0) / 2**20:.0f} MiB in use)"
                for k in ("small", "large")))
    if res["strace"]:
        w("")
        w("System calls of the node per add (`strace -c -f -p`, one more window per set-up, not in "
          "the ratios; strace slows the node, the counts per add stay):")
        w("")
        w("| set-up | adds under strace | syscalls/add | main ones, per add |")
        w("| --- | ---: | ---: | --- |")
        for k, s in res["strace"].items():
            top = ", ".join(f"{name} {c / s['n']:.1f}" for name, c in s["top"])
            w(f"| {k} | {s['n']} | {s['calls'] / s['n']:.1f} | {top} |")
    if len(res["pprof"]) == 2:
        pp = res["pprof"]
        n = {k: pp[k]["n"] for k in pp}
        per = lambda k, f, i: pp[k]["funcs"].get(f, [0, 0])[i] / n[k] * 1e6   # µs per add
        tot = {k: sum(v[0] for v in pp[k]["funcs"].values()) / n[k] * 1e6 for k in pp}
        w("")
        w(f"etcd's own CPU profile (Go pprof, one more window per set-up: {n['small']} and {n['large']} adds; "
          f"{tot['small']:.0f} and {tot['large']:.0f} µs of sampled CPU per add), the functions whose "
          f"CPU per add grew the most from small to large, µs per add:")
        w("")
        w("| function | flat small | flat large | cumulative small | cumulative large | cumulative growth |")
        w("| --- | ---: | ---: | ---: | ---: | ---: |")
        names = set(pp["small"]["funcs"]) | set(pp["large"]["funcs"])
        grow = sorted(names, key=lambda f: -(per("large", f, 1) - per("small", f, 1)))
        for f in grow[:25]:
            w(f"| `{f}` | {per('small', f, 0):.1f} | {per('large', f, 0):.1f} | {per('small', f, 1):.1f} | "
              f"{per('large', f, 1):.1f} | {per('large', f, 1) - per('small', f, 1):+.1f} |")
        w("")
        w("Innermost frames, most CPU per add in large (µs): " + ", ".join(
            f"`{f}` {per('large', f, 0):.1f} (small {per('small', f, 0):.1f})"
            for f in sorted(names, key=lambda f: -per("large", f, 0))[:12]))
    if res["perf"]:
        w("")
        for k, p in res["perf"].items():
            w(f"- perf window {k}: {p['n']} adds, node CPU {p['cpu'] * 1000 / p['n']:.3f} ms/add, {p['path']}")
    warm = res["warm"]
    w("")
    w(f"- warm-up windows (not counted): small {warm['small']['rate']:.0f}/s, large {warm['large']['rate']:.0f}/s")
    if any(res.get("retries", {}).values()):
        w(f"- calls answered 503 and retried: {res['retries']}")
    for n in res["notes"]:
        w(f"- {n}")
    w(f"- load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return "\n".join(out)


def main():
    o = options()
    if not os.access(o.binary, os.X_OK):
        sys.exit(f"error: {o.binary} is not an executable (cargo build --release --features etcd)")
    stores = ["sqlite", "etcd"] if o.store == "both" else [o.store]
    if "etcd" in stores and not os.access(o.etcd, os.X_OK):
        sys.exit(f"error: no etcd at {o.etcd}")
    soft, _ = raise_nofile()
    if o.listen + o.window_max + 200 > soft:
        sys.exit(f"error: open-file limit {soft} too low for --listen {o.listen} + --window-max {o.window_max} + 200")
    version = binary_version(o.binary)
    layout = PairLayout(o)
    exit_on_signals()
    failed = False
    for store in stores:
        try:
            res = run_store(o, store, layout)
        except Exception as e:
            failed = True
            log(f"{store}: FAILED: {type(e).__name__}: {e}")
            print(f"### {store}: failed: {type(e).__name__}: {str(e).splitlines()[0][:300]}\n", flush=True)
            continue
        print(report(o, res, version) + "\n", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
