#!/usr/bin/env python3
"""Where a redirection's memory goes: heaptrack on a server holding N redirections.

Run through bench/heap.sh (a network namespace of its own).

    python3 bench/heap.py run TMP

Two namespaces on 127.0.0.2 and 127.0.0.3; N redirections made by one `apply -f`, two per
application (one in each namespace, as bench/capacity.py does), to one instance. The server runs
under heaptrack; once the apply has returned and its RSS has held still for a second, the
server's RSS is read and the server is killed (SIGKILL: what heaptrack saw allocated and not
freed is then exactly the heap the server held). `heaptrack_print --flamegraph-cost-type
leaked` gives every call stack with its bytes; each is charged to the innermost frame in one of
this crate's source files (and the frame it called), and the sites are listed per redirection.

LOAD=SECONDS (TCP only): after the apply, bench/connload opens short connections (8 in flight,
`GET`, the answer read to the end) at random over every port, SECONDS in each namespace, to an
nginx the instances then name; the server is killed once its RSS holds still again, so that what
it holds is what a port keeps once it has taken connections (compare with a run without LOAD).

Settings: N=20000 MODE=steered PROTOCOL=tcp (or udp) TOP=25 LOAD=0 TCP_REDIRS_BIN
CONNLOAD_BIN=bench/connload/connload RESULTS=bench/heap-results.md
"""

import collections
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True
from benchlib import (HOST, ROOT, Failure, Proc, Procs, exit_on_signals, log, pick_ports,  # noqa: E402
                      require_own_netns, run_cli, server_env, source_revision, start_nginx_http,
                      vmrss_kib, wait_port, wait_until, write_manifest)

TOKEN = "bench"


def ours():
    names = set()
    for _, _, files in os.walk(os.path.join(ROOT, "src")):
        names.update(f for f in files if f.endswith(".rs") and f not in ("mod.rs", "lib.rs", "main.rs"))
    return names


def breakdown(stacks_path, top):
    """[(bytes, site)], total bytes: each stack charged to its innermost frame of ours."""
    mine = ours()
    sites = collections.Counter()
    for line in open(stacks_path, errors="replace"):
        stack, _, n = line.rstrip().rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        at = [i for i, f in enumerate(frames) if (m := re.search(r"\((\S+\.rs)\)$", f)) and m.group(1) in mine]
        if at:
            i = at[-1]
            callee = re.sub(r"_R\w+", "", frames[i + 1]).strip() if i + 1 < len(frames) else ""
            site = frames[i] + (f" → {callee}" if callee else "")
        else:
            site = "(elsewhere: the runtime, libraries)"
        sites[site] += int(n)
    total = sum(sites.values())
    return sites.most_common(top), total


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        sys.exit(__doc__)
    tmp = sys.argv[2]
    exit_on_signals()
    require_own_netns("heap")
    n = int(os.environ.get("N") or 20000)
    mode = os.environ.get("MODE") or "steered"
    protocol = os.environ.get("PROTOCOL") or "tcp"
    if protocol not in ("tcp", "udp"):
        sys.exit(f"PROTOCOL={protocol}: use tcp or udp")
    top = int(os.environ.get("TOP") or 25)
    binary = os.environ.get("TCP_REDIRS_BIN") or os.path.join(ROOT, "target/release/tcp-redirs")
    results = os.environ.get("RESULTS") or os.path.join(ROOT, "bench/heap-results.md")
    load = float(os.environ.get("LOAD") or 0)
    if load and protocol != "tcp":
        sys.exit("LOAD is for TCP redirections: leave it out with PROTOCOL=udp")
    connload = os.environ.get("CONNLOAD_BIN") or os.path.join(ROOT, "bench/connload/connload")
    instance = f"{HOST}:9"
    procs = Procs(tmp)
    if load:
        port = pick_ports(1)[0]
        start_nginx_http(procs, os.path.join(tmp, "nginx"), f"{HOST}:{port}", "ok\n")
        wait_port(port, what="nginx")
        instance = f"{HOST}:{port}"
    with open(os.path.join(tmp, "config.toml"), "w") as f:
        for name, ip in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
            f.write(f'[[namespace]]\nname = "{name}"\nbind = "{ip}"\nports = "10001-60000"\n')
    manifest = os.path.join(tmp, "manifest.toml")
    write_manifest(manifest, [(f"app{i}", [instance], [(ns, 10001 + i, protocol) for k, ns in enumerate("ab")
                                                            if i * 2 + k < n]) for i in range((n + 1) // 2)])
    profile = os.path.join(tmp, "heap")
    argv = ["heaptrack", "-o", profile, binary, "serve", "--listen", f"{HOST}:0", "--data-dir",
            os.path.join(tmp, "data"), "--config", os.path.join(tmp, "config.toml"), "--port-mode", mode]
    node = Proc("serve", argv, server_env(os.path.join(tmp, "cfg"), TOKEN), tmp, pipe=True)
    try:
        url = node.wait_ready(120)
        pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_server(int(p), binary, tmp))
        rss0 = vmrss_kib(pid)
        env = dict(server_env(os.path.join(tmp, "cfg"), TOKEN), TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN=TOKEN)
        t0 = time.monotonic()
        run_cli(binary, ["apply", "-f", manifest, "-F", "json"], env, timeout=1800)
        log(f"apply of {n:,} redirections: {time.monotonic() - t0:.1f} s")
        last = [vmrss_kib(pid)]

        def still():
            now = vmrss_kib(pid)
            held = now == last[0]
            last[0] = now
            return held
        wait_until(still, 30, every=1.0, fail="the server's RSS kept moving for 30 s after the apply")
        rss = vmrss_kib(pid)
        loaded = ""
        if load:
            made = 0
            for k, ip in enumerate(("127.0.0.2", "127.0.0.3")):
                last_port = 10001 + (n - k + 1) // 2 - 1
                out = subprocess.run([connload, ip, "10001", str(last_port), "-c", "8", "-d", str(load),
                                      "-n", "10000000"], capture_output=True, text=True, timeout=load + 60)
                made += json.loads(out.stdout.strip().splitlines()[-1])["ok"]
            wait_until(still, 30, every=1.0, fail="the server's RSS kept moving for 30 s after the load")
            rss_loaded = vmrss_kib(pid)
            loaded = (f"; then {made:,} short connections over every port (bench/connload, 8 in flight, "
                      f"{load:g} s a namespace): RSS {rss_loaded / 1024:.1f} MiB, "
                      f"**{(rss_loaded - rss) * 1024 / n:,.0f} B more per port**")
            log(loaded)
            rss = rss_loaded
        os.kill(pid, signal.SIGKILL)
        node.p.wait(60)
    finally:
        node.finish(5)
        procs.stop_all()
    data = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("heap"))
    stacks = os.path.join(tmp, "stacks.txt")
    subprocess.run(["heaptrack_print", "-f", data, "--flamegraph-cost-type", "leaked", "-F", stacks],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    sites, total = breakdown(stacks, top)
    if not total:
        raise Failure("heaptrack recorded nothing held: is the binary stripped? (see bench/heap.sh)")
    lines = [
        "# Where a redirection's memory goes",
        "",
        "`bench/heap.sh`",
        "",
        f"- when: {datetime.datetime.now():%Y-%m-%d %H:%M}; tcp-redirs {source_revision()} (`{binary}`)",
        f"- {n:,} {protocol.upper()} redirections, {mode} mode, two per application, made by one `apply -f`; the server under heaptrack, "
        "killed once its RSS held still after the apply",
        f"- RSS {rss / 1024:.1f} MiB after the apply, {rss0 / 1024:.1f} MiB before it (under heaptrack): "
        f"**{(rss - rss0) * 1024 / n:,.0f} B of RSS per redirection**; heap held {total / 2**20:.1f} MiB, "
        f"**{total / n:,.0f} B per redirection** (the empty server's heap included){loaded}",
        "",
        "| bytes per redirection | MiB | innermost function of this crate → what it called |",
        "|---:|---:|---|",
    ]
    for site, size in sites:
        lines.append(f"| {size / n:,.0f} | {size / 2**20:.2f} | `{site}` |")
    with open(results, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def _is_server(pid, binary, tmp):
    """Whether process `pid` is the server under heaptrack (heaptrack itself runs the binary)."""
    try:
        return (os.readlink(f"/proc/{pid}/exe") == os.path.realpath(binary)
                and tmp in open(f"/proc/{pid}/cmdline").read())
    except OSError:
        return False


if __name__ == "__main__":
    try:
        main()
    except (Failure, RuntimeError) as e:
        log(f"error: {e}")
        sys.exit(1)
