#!/usr/bin/env python3
"""The audit trail's cost on `add` (issue 35): the add rate and latency of a binary that
records every change against one that does not (the same code before the trail), on
SQLite and, when etcd is installed, on etcd; interleaved rounds, reported as ratios.

Usage: python3 bench/audit_cost.py WITH_BINARY WITHOUT_BINARY [--store sqlite|etcd|both]
           [--rounds 6] [--adds 300]
  WITH_BINARY: a build of this branch; WITHOUT_BINARY: a build of the commit before the
  trail (for example `git archive 8898864 | tar -x -C /tmp/base && cargo build
  --features etcd` there). Build both the same way (both debug, or both release).

Per store and round, both binaries in turn (their order alternating with the rounds), each
on a fresh set-up started by the script on loopback (a temporary data directory; for etcd,
a fresh single-member etcd on free ports): --adds applications created (untimed), then one
`POST …/tcpRedirs` per application, one after the other on one keep-alive connection,
timed. Reported per round: adds/s of each and the ratio with/without; then the median
ratio with its min and max, and the p50 and p99 latency of each over every round. Every
loop is bounded in count and time. Markdown on stdout, progress on stderr.
"""
import argparse, os, shutil, statistics, sys, tempfile, time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
from benchlib import Api, Procs, binary_version, pct, server_env, start_etcd, start_serve, stop_all  # noqa: E402

TIMEOUT = 30.0
ROUND_LIMIT = 300.0  # seconds one set-up's window may take at most


def log(*args):
    print("[audit_cost]", *args, file=sys.stderr, flush=True)


def one_window(binary, store, adds, tmp, tag):
    """Starts a set-up, adds `adds` redirections; (adds/s, latencies in ms)."""
    procs, etcd = Procs(tmp), None
    try:
        argv = [binary, "serve", "--listen", "127.0.0.1:0", "--public-bind", "127.0.0.1",
                "--data-dir", os.path.join(tmp, "data-" + tag), "--drain-timeout", "1"]
        if store == "etcd":
            etcd, port = start_etcd(shutil.which("etcd"), os.path.join(tmp, "etcd-" + tag), tmp, TIMEOUT)
            argv += ["--store", f"etcd://127.0.0.1:{port}", "--node", "a"]
        env = server_env(os.path.join(tmp, "cfg-" + tag), benchlib.TOKEN, NO_COLOR="1")
        _, url = start_serve(procs, "node", argv, env, os.path.join(tmp, f"node-{tag}.log"))
        api = Api(url, TIMEOUT)
        org = benchlib.default_org(api)
        apps = []
        for i in range(adds):
            app = api.call("POST", f"/v2/organisations/{org}/applications",
                           {"name": f"a{i}", "instances": [{"address": "127.0.0.1:9"}]})
            apps.append(app["id"])
        latencies = []
        deadline = time.monotonic() + ROUND_LIMIT
        started = time.perf_counter()
        for app in apps:
            if time.monotonic() > deadline:
                raise benchlib.Failure(f"{tag}: the adds took more than {ROUND_LIMIT:.0f} s")
            t = time.perf_counter()
            api.call("POST", f"/v2/organisations/{org}/applications/{app}/tcpRedirs", {"namespace": "default"})
            latencies.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - started
        api.close()
        return len(apps) / elapsed, latencies
    finally:
        procs.stop_all()
        if etcd is not None:
            stop_all([etcd])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("with_binary")
    ap.add_argument("without_binary")
    ap.add_argument("--store", choices=["sqlite", "etcd", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--adds", type=int, default=300)
    o = ap.parse_args()
    if not 1 <= o.rounds <= 50 or not 10 <= o.adds <= 5000:
        sys.exit("--rounds 1 to 50, --adds 10 to 5000")
    stores = ["sqlite", "etcd"] if o.store == "both" else [o.store]
    if "etcd" in stores and not shutil.which("etcd"):
        log("etcd is not installed: SQLite only")
        stores = [s for s in stores if s != "etcd"]
    print("# The audit trail's cost on `add`\n")
    print(f"- with: `{o.with_binary}` ({binary_version(o.with_binary)})")
    print(f"- without: `{o.without_binary}` ({binary_version(o.without_binary)})")
    print(f"- {o.rounds} rounds of {o.adds} sequential adds per binary and store, interleaved; "
          f"`{' '.join(sys.argv)}`\n")
    for store in stores:
        rates = {"with": [], "without": []}
        lat = {"with": [], "without": []}
        ratios = []
        print(f"## {store}\n\n| round | with (adds/s) | without (adds/s) | ratio |\n| --- | --- | --- | --- |")
        for r in range(o.rounds):
            order = ["with", "without"] if r % 2 == 0 else ["without", "with"]
            got = {}
            for which in order:
                binary = o.with_binary if which == "with" else o.without_binary
                with tempfile.TemporaryDirectory(prefix="audit-cost-") as tmp:
                    rate, ls = one_window(binary, store, o.adds, tmp, which)
                got[which] = rate
                rates[which].append(rate)
                lat[which].extend(ls)
                log(f"{store} round {r + 1}: {which} {rate:.0f} adds/s")
            ratios.append(got["with"] / got["without"])
            print(f"| {r + 1} | {got['with']:.0f} | {got['without']:.0f} | {ratios[-1]:.3f} |")
        print(f"\nmedian ratio with/without: **{statistics.median(ratios):.3f}** "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})\n")
        print("| binary | add p50 (ms) | add p99 (ms) |\n| --- | --- | --- |")
        for which in ("with", "without"):
            xs = sorted(lat[which])
            print(f"| {which} | {pct(xs, 50):.2f} | {pct(xs, 99):.2f} |")
        p99 = pct(sorted(lat["with"]), 99) / pct(sorted(lat["without"]), 99)
        print(f"\np99 ratio with/without: **{p99:.3f}**\n")


if __name__ == "__main__":
    main()
