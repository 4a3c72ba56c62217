#!/usr/bin/env python3
"""One node's capacity (issue 32): redirections made by `apply -f`, steered against bound mode.

Run through bench/capacity.sh (a network namespace of its own: steered mode attaches a BPF
program to the namespace its server runs in; the namespace's ephemeral range is moved to
60001-65535, as the README advises, so that no outgoing connection takes a port of the range).

    python3 bench/capacity.py run TMP

Two namespaces on two loopback addresses, `a` on 127.0.0.2 and `b` on 127.0.0.3, ports
10001-60000 each; every application has one TCP redirection in each (ports fixed in the
manifest: the same port number in both), all to one nginx backend (`return 200`). For each
mode and each size (TCP redirections, half in each namespace), a fresh server: `apply -f` of
the manifest, then the server's descriptors (/proc/PID/fd), RSS and PSS, a sample of ports
that must each forward (a GET answered through it), then SIGTERM and a new start on the same
data directory: the time from start to the control API answering, and from then until every
sampled port accepts. At the steered sizes of UDP_AT (the largest by default), UDP_PORTS UDP
redirections (one socket each, bound in both modes) are added by a second `apply -f`, their
descriptors reported apart, a sample of them answered through an echo backend (bench/udpload),
and the restart measured again with them. Bound mode stops at BOUND_SIZES: its listeners need a
descriptor each, under the open-file hard limit (20,000 here).

Settings: STEERED_SIZES=0,1000,10000,50000,100000 BOUND_SIZES=0,1000,10000,15000 UDP_PORTS=10000
UDP_AT=(largest steered size) SAMPLE=1000 PLOT=docs/scale-steered.png
BACKENDS=shared (every application's instance is the one nginx at 127.0.0.1) or distinct (each
application without a UDP redirection has an address of its own, 127.x.y.z, on the same nginx
listening on 0.0.0.0, as when every application has its own backend: a health-check target
each; the node's health checks are then off, `[health_checks] enabled = false`, since 45,000
addresses checked every 5 s would be 9,000 connects a second to the one nginx)
QUICK=1 (STEERED_SIZES=0,1000,10000 BOUND_SIZES=0,1000 UDP_PORTS=1000 SAMPLE=200 unless set)
TCP_REDIRS_BIN UDPLOAD_BIN RESULTS=bench/capacity-results.md
"""

import datetime
import json
import os
import platform
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time

sys.dont_write_bytecode = True
from benchlib import (ANSI, HERE, HOST, ROOT, Failure, Proc, Procs, command_line, cpu_model,  # noqa: E402
                      exit_on_signals, log, md_table, pick_ports, pss_kib, raise_nofile, read_stat,
                      require_own_netns, run_cli, server_env, source_revision, start_nginx_http,
                      vmrss_kib, wait_port, wait_until, write_manifest)

NS = [("a", "127.0.0.2"), ("b", "127.0.0.3")]
PORT_LO, PORT_HI = 10001, 60000
TOKEN = "bench"
# What the server logs when it gives its heap's free pages back after a large change.
TRIMMED = "gave the heap's free pages back"
# How many ports the change that it followed started or stopped.
PORTS_CHANGED = re.compile(r"ports_changed=(\d+)")


def sizes(name, default):
    return [int(x) for x in os.environ.get(name, default).split(",") if x.strip()]


def fd_counts(pid):
    """(all descriptors, sockets) of a process."""
    n = socks = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        n += 1
        try:
            socks += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n, socks


def http_through(ip, port, timeout=2.0):
    """Whether a GET through (ip, port) is answered with nginx's `200 ok`; then a reset, not a FIN."""
    # The client resets once answered (HTTP/1.1, keep-alive, SO_LINGER 0): a close by the server
    # side first would leave the dialled port in TIME_WAIT for 60 s, and steered mode then
    # refuses that port to a later `add` (see bench/capacity-results.md), which the next size
    # of this benchmark, on the same ports, would hit.
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.connect((ip, port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not (b"\r\n\r\n" in data and data.endswith(b"ok\n")):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        return data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok\n")
    except OSError:
        return False
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def udp_through(ip, port, timeout=1.0):
    """Whether a datagram to (ip, port) comes back (the echo backend behind it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        msg = os.urandom(16)
        for _ in range(3):
            s.sendto(msg, (ip, port))
            try:
                data, _ = s.recvfrom(2048)
                if data == msg:
                    return True
            except socket.timeout:
                continue
        return False
    except OSError:
        return False
    finally:
        s.close()


def accepts(ip, port):
    s = socket.socket()
    s.settimeout(0.5)
    try:
        s.connect((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class Capacity:
    def __init__(self, tmp):
        self.tmp = tmp
        quick = os.environ.get("QUICK", "") not in ("", "0")
        self.steered_sizes = sizes("STEERED_SIZES", "0,1000,10000" if quick else "0,1000,10000,50000,100000")
        self.bound_sizes = sizes("BOUND_SIZES", "0,1000" if quick else "0,1000,10000,15000")
        self.udp_ports = int(os.environ.get("UDP_PORTS") or (1000 if quick else 10000))
        self.udp_at = sizes("UDP_AT", str(max(self.steered_sizes)))
        self.sample = int(os.environ.get("SAMPLE") or (200 if quick else 1000))
        self.bin = os.environ.get("TCP_REDIRS_BIN") or os.path.join(ROOT, "target/release/tcp-redirs")
        self.udpload = os.environ.get("UDPLOAD_BIN") or os.path.join(HERE, "udpload/udpload")
        self.results = os.environ.get("RESULTS") or os.path.join(HERE, "capacity-results.md")
        self.plot = os.environ.get("PLOT", os.path.join(ROOT, "docs/scale-steered.png"))
        self.distinct = os.environ.get("BACKENDS", "shared") == "distinct"
        self.procs = Procs(tmp)
        self.revision = source_revision()
        self.rows = []   # one dict per (mode, size, udp)
        self.notes = []

    def note(self, msg):
        log("note: " + msg)
        self.notes.append(msg)

    # ---- one server ----------------------------------------------------------------------------

    @staticmethod
    def trims(node):
        """The lines of the node's log (shared by its restarts) that say it trimmed its heap."""
        try:
            with open(node.log_path, errors="replace") as f:
                return [line for line in f if TRIMMED in line]
        except OSError:
            return []

    def settle(self, node, before, changed):
        """Waits, before reading the RSS, for the heap trim that follows a change of 1,000 ports
        or more by a second (server/state/heap.rs): for trim lines past the first `before` that
        count `changed` ports (10 s at most); a smaller change gets a second."""
        if changed < 1000:
            time.sleep(1.0)
            return
        # An `apply` with a quiet second in the middle is trimmed in parts: wait for all of them.
        def trimmed(lines):
            found = (PORTS_CHANGED.search(ANSI.sub("", line)) for line in lines[before:])
            return sum(int(m.group(1)) for m in found if m)

        t0 = time.monotonic()
        while trimmed(self.trims(node)) < changed and time.monotonic() - t0 < 10:
            time.sleep(0.1)
        lines = self.trims(node)
        if trimmed(lines) < changed:
            self.note(f"{node.name}: no heap trim logged within 10 s of a change of {changed:,} ports")
        else:
            log(f"{node.name}: {ANSI.sub('', lines[-1]).strip()}")

    def serve(self, mode, d):
        cfg = os.path.join(d, "config.toml")
        if not os.path.exists(cfg):
            with open(cfg, "w") as f:
                for name, ip in NS:
                    f.write(f'[[namespace]]\nname = "{name}"\nbind = "{ip}"\nports = "{PORT_LO}-{PORT_HI}"\n')
                if self.distinct:
                    f.write("[health_checks]\nenabled = false\n")
        argv = [self.bin, "serve", "--listen", f"{HOST}:0", "--data-dir", os.path.join(d, "data"),
                "--config", cfg, "--port-mode", mode]
        node = Proc(f"serve-{mode}", argv, server_env(os.path.join(d, "cfg"), TOKEN), d, pipe=True)
        with open(self.procs.pgfile, "a") as f:       # so that the shell driver kills it if we die
            f.write(f"{node.pid}\n")
        url = node.wait_ready(120)
        env = dict(server_env(os.path.join(d, "cfg"), TOKEN), TCP_REDIRS_URL=url, TCP_REDIRS_TOKEN=TOKEN)
        return node, env

    def apply(self, node, env, manifest, want):
        c0 = read_stat(node.pid)[1]
        t0 = time.monotonic()
        out = run_cli(self.bin, ["apply", "-f", manifest, "-F", "json"], env, timeout=1800)
        wall = time.monotonic() - t0
        made = sum(1 for c in json.loads(out)["changes"] if c.get("kind") == "redirection" and c.get("port"))
        if made != want:
            raise Failure(f"apply made {made} of {want} redirections")
        return wall, read_stat(node.pid)[1] - c0

    def manifest(self, path, n_tcp, n_udp):
        """n_tcp TCP redirections (half in each namespace), n_udp UDP ones likewise; the TCP and UDP samples."""
        per = (n_tcp + 1) // 2
        per_udp = (n_udp + 1) // 2
        apps = []
        tcp, udp = [], []
        for i in range(max(per, per_udp)):
            redirs = []
            for k, (name, ip) in enumerate(NS):
                if i < per and i * 2 + k < n_tcp:
                    redirs.append((name, PORT_LO + i, "tcp"))
                    tcp.append((ip, PORT_LO + i))
                if i < per_udp and i * 2 + k < n_udp:
                    redirs.append((name, PORT_LO + i, "udp"))
                    udp.append((ip, PORT_LO + i))
            # The UDP echo listens on 127.0.0.1 only: an application with a UDP redirection keeps it.
            own = self.distinct and i >= per_udp
            host = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}" if own else HOST
            apps.append((f"app{i}", [f"{host}:{self.backend}"], redirs))
        write_manifest(path, apps)
        return tcp, udp

    def check(self, ports, how, what):
        if not ports:
            return None
        sample = random.sample(ports, min(self.sample, len(ports)))
        t0 = time.monotonic()
        bad = [p for p in sample if not how(*p)]
        log(f"{what}: {len(sample) - len(bad)} of {len(sample)} sampled ports answered "
            f"({time.monotonic() - t0:.1f} s)")
        if bad:
            self.note(f"{what}: {len(bad)} of {len(sample)} sampled ports did not answer, e.g. {bad[:5]}")
        return len(sample) - len(bad), len(sample)

    def restart(self, node, mode, d, tcp_ports):
        """SIGTERM, a new start on the same data: (s to API, s from API to every sampled port accepting)."""
        node.stop(signal.SIGTERM)
        try:
            node.p.wait(60)
        except subprocess.TimeoutExpired:
            raise Failure(f"{node.name} did not exit within 60 s of SIGTERM") from None
        node.finish(1)
        sample = random.sample(tcp_ports, min(self.sample, len(tcp_ports))) if tcp_ports else []
        new, env = self.serve(mode, d)
        api = new.ready_at
        pending = list(sample)
        rounds = 0
        while pending and time.monotonic() - api < 60:
            rounds += 1
            pending = [p for p in pending if not accepts(*p)]
        done = time.monotonic()
        if pending:
            self.note(f"{mode}: {len(pending)} of {len(sample)} sampled ports still refused 60 s after the restart")
        return new, env, api - new.started, (done - api) if sample else None, rounds

    def measure(self, mode, size):
        d = os.path.join(self.tmp, f"{mode}-{size}")
        os.makedirs(d, exist_ok=True)
        node, env = self.serve(mode, d)
        try:
            rows = []
            manifest = os.path.join(d, "manifest.toml")
            tcp, _ = self.manifest(manifest, size, 0)
            wall = cpu = 0.0
            trimmed = len(self.trims(node))
            if size:
                wall, cpu = self.apply(node, env, manifest, size)
            self.settle(node, trimmed, size)
            row = self.snapshot(node, mode, size, 0, wall, cpu)
            row["tcp_ok"] = self.check(tcp, lambda ip, p: http_through(ip, p), f"{mode} {size:,} TCP")
            trimmed = len(self.trims(node))
            node, env, row["to_api"], row["to_ports"], row["rounds"] = self.restart(node, mode, d, tcp)
            self.settle(node, trimmed, size)
            row["fds_after_restart"] = fd_counts(node.pid)[0]
            row["rss_after_restart"] = vmrss_kib(node.pid)
            rows.append(row)
            log(self.describe(row))
            if mode == "steered" and size in self.udp_at and self.udp_ports:
                tcp, udp = self.manifest(manifest, size, self.udp_ports)
                trimmed = len(self.trims(node))
                wall, cpu = self.apply(node, env, manifest, self.udp_ports)
                self.settle(node, trimmed, self.udp_ports)
                row = self.snapshot(node, mode, size, self.udp_ports, wall, cpu)
                row["tcp_ok"] = self.check(tcp, lambda ip, p: http_through(ip, p), f"{mode} {size:,} TCP (with UDP)")
                row["udp_ok"] = self.check(udp, udp_through, f"{mode} {self.udp_ports:,} UDP")
                trimmed = len(self.trims(node))
                node, env, row["to_api"], row["to_ports"], row["rounds"] = self.restart(node, mode, d, tcp)
                self.settle(node, trimmed, size + self.udp_ports)
                # At rest, before the sample's datagrams open flows (a socket each, until idle).
                row["fds_after_restart"] = fd_counts(node.pid)[0]
                row["rss_after_restart"] = vmrss_kib(node.pid)
                row["udp_ok_after_restart"] = self.check(udp, udp_through, f"{mode} UDP after the restart")
                row["fds_with_flows"] = fd_counts(node.pid)[0]
                rows.append(row)
                log(self.describe(row))
            return rows
        finally:
            node.finish(30)

    def snapshot(self, node, mode, size, udp, wall, cpu):
        fds, socks = fd_counts(node.pid)
        return {"mode": mode, "tcp": size, "udp": udp, "apply_s": wall, "apply_cpu": cpu, "fds": fds,
                "socks": socks, "rss": vmrss_kib(node.pid), "pss": pss_kib(node.pid)}

    @staticmethod
    def describe(r):
        return (f"{r['mode']} {r['tcp']:,} TCP + {r['udp']:,} UDP: apply {r['apply_s']:.1f} s "
                f"({r['apply_cpu']:.1f} s CPU), {r['fds']} descriptors ({r['socks']} sockets), "
                f"RSS {r['rss'] / 1024:.1f} MiB, PSS {r['pss'] / 1024:.1f} MiB; restart: API after "
                f"{r['to_api']:.2f} s, every sampled port accepting "
                + (f"{r['to_ports']:.3f} s after it ({r['rounds']} probe rounds)" if r["to_ports"] is not None else "—"))

    # ---- run and report ------------------------------------------------------------------------

    def run(self):
        require_own_netns("bench/capacity.py")
        self.backend, self.udp_backend = pick_ports(2, kinds=(socket.SOCK_STREAM, socket.SOCK_DGRAM))
        # Both backends on one port number: TCP to nginx, UDP to the echo (an instance is an address).
        self.udp_backend = self.backend
        if self.distinct:
            # nginx listens on 0.0.0.0 then: on a port below the namespaces' range, which it
            # would otherwise hold on their addresses too.
            self.backend = self.udp_backend = PORT_LO - 1
        start_nginx_http(self.procs, os.path.join(self.tmp, "nginx"),
                         f"{'0.0.0.0' if self.distinct else HOST}:{self.backend}", "ok\n")
        self.procs.start("udp echo", [self.udpload, "echo", str(self.udp_backend)],
                         log_path=os.path.join(self.tmp, "udpecho.log"))
        wait_port(self.backend, what="nginx")
        for mode, szs in (("steered", self.steered_sizes), ("bound", self.bound_sizes)):
            for size in szs:
                try:
                    self.rows += self.measure(mode, size)
                except Failure as e:
                    self.note(f"{mode} at {size:,}: {e}")

    def per_redir(self, r, key):
        base = next((b for b in self.rows if b["mode"] == r["mode"] and b["tcp"] == 0 and b["udp"] == 0), None)
        n = r["tcp"] + r["udp"]
        if base is None or n == 0:
            return None
        return (r[key] - base[key]) / n

    def after_restart(self, r):
        """RSS once restarted on the same data (no apply's garbage), and per redirection over the mode's 0."""
        rss = r.get("rss_after_restart")
        if not rss:
            return "—"
        base = next((b for b in self.rows if b["mode"] == r["mode"] and b["tcp"] == 0 and b["udp"] == 0), None)
        n = r["tcp"] + r["udp"]
        per = (rss - base["rss_after_restart"]) / n if base and base.get("rss_after_restart") and n else None
        return f"{rss / 1024:.1f}" + (f" ({per:.2f})" if per is not None else "")

    def table(self):
        header = ["mode", "TCP", "UDP", "apply s (server CPU s)", "descriptors (sockets)", "after restart",
                  "RSS MiB", "PSS MiB", "RSS KiB / redirection", "PSS KiB / redirection",
                  "RSS after restart MiB (KiB / redirection)",
                  "sampled forwarding", "restart: API at s", "every sampled port accepts, s after API"]
        body = []
        for r in self.rows:
            ok = r.get("tcp_ok")
            u = r.get("udp_ok")
            fwd = (f"TCP {ok[0]}/{ok[1]}" if ok else "—") + (f", UDP {u[0]}/{u[1]}" if u else "")
            ua = r.get("udp_ok_after_restart")
            if ua:
                fwd += f" (after restart {ua[0]}/{ua[1]})"
            kib = self.per_redir(r, "rss")
            pk = self.per_redir(r, "pss")
            body.append([r["mode"], f"{r['tcp']:,}", f"{r['udp']:,}", f"{r['apply_s']:.1f} ({r['apply_cpu']:.1f})",
                         f"{r['fds']:,} ({r['socks']:,})", f"{r.get('fds_after_restart', 0) or 0:,}",
                         f"{r['rss'] / 1024:.1f}", f"{r['pss'] / 1024:.1f}",
                         f"{kib:.2f}" if kib is not None else "—", f"{pk:.2f}" if pk is not None else "—",
                         self.after_restart(r), fwd,
                         f"{r['to_api']:.2f}", f"{r['to_ports']:.3f}" if r.get("to_ports") is not None else "—"])
        return md_table(header, body)

    def draw(self):
        if not self.plot:
            return
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log("no matplotlib: plot skipped (python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip "
                "install matplotlib; run with PYTHON=/work/bench-venv/bin/python3)")
            return
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
        for mode, colour in (("steered", "tab:blue"), ("bound", "tab:orange")):
            rs = sorted((r for r in self.rows if r["mode"] == mode and r["udp"] == 0), key=lambda r: r["tcp"])
            if not rs:
                continue
            xs = [r["tcp"] for r in rs]
            axes[0].plot(xs, [r["rss"] / 1024 for r in rs], "o-", color=colour, label=f"{mode} RSS")
            axes[0].plot(xs, [r["pss"] / 1024 for r in rs], "x--", color=colour, alpha=0.6, label=f"{mode} PSS")
            axes[1].plot(xs, [max(1, r["fds"]) for r in rs], "o-", color=colour, label=mode)
            axes[2].plot([r["tcp"] for r in rs if r.get("to_ports") is not None],
                         [r["to_ports"] * 1000 for r in rs if r.get("to_ports") is not None], "o-", color=colour,
                         label=f"{mode}: sampled ports accepting after the API")
            axes[2].plot(xs, [r["to_api"] * 1000 for r in rs], "x--", color=colour, alpha=0.6,
                         label=f"{mode}: start to API")
        axes[1].axhline(20000, color="grey", lw=0.8, ls=":")
        axes[1].text(1000, 21500, "open-file hard limit (20,000)", fontsize=8, color="grey")
        axes[1].set_yscale("log")
        axes[0].set_title("memory of the server")
        axes[0].set_ylabel("MiB")
        axes[1].set_title("descriptors of the server")
        axes[2].set_title("restart (SIGTERM, new start)")
        axes[2].set_ylabel("ms")
        for ax in axes:
            ax.set_xlabel("TCP redirections (two namespaces)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"tcp-redirs, one node: steered (BPF sk_lookup) against bound (one socket per port); "
                     f"{datetime.date.today()}, {self.revision}", fontsize=9)
        fig.tight_layout()
        fig.savefig(self.plot, dpi=110)
        plt.close(fig)
        log(f"wrote {self.plot}")

    def report(self):
        cmd = command_line("bench/capacity.sh", ("QUICK", "STEERED_SIZES", "BOUND_SIZES", "UDP_PORTS", "UDP_AT",
                                                 "SAMPLE", "BACKENDS", "TCP_REDIRS_THREADS"))
        ctx = [
            f"- when: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; tcp-redirs {self.revision} (`{self.bin}`)",
            f"- machine: {os.cpu_count()} CPUs ({cpu_model()}), Linux {platform.release()}, open-file limit "
            f"{open('/proc/self/limits').read().split('Max open files')[1].split()[1]}; in a network namespace "
            "of the benchmark's own, its ephemeral range 60001-65535",
            f"- two namespaces, a on 127.0.0.2 and b on 127.0.0.3, ports {PORT_LO}-{PORT_HI} each; one application "
            "per port number with one TCP redirection in each namespace (and, for the UDP rows, one UDP "
            "redirection in each), ports fixed in the manifest, made by `tcp-redirs apply -f`; backends: nginx "
            "`return 200` (TCP) and bench/udpload echo (UDP) on one port of 127.0.0.1"
            + ("; BACKENDS=distinct: each application without a UDP redirection has an instance address of its "
               "own (127.x.y.z, nginx listening on 0.0.0.0), a health-check target each; the node's health "
               "checks off (`[health_checks] enabled = false`)" if self.distinct else ""),
            f"- a fresh server (SQLite, fresh data directory) for each row; descriptors: /proc/PID/fd, at rest (the "
            "UDP sample's datagrams then open a flow each, a socket until it idles out: `fds_with_flows` in the row's "
            "JSON); RSS, PSS: "
            f"/proc/PID/status, smaps_rollup, once the server logged the heap trim that follows a change of 1,000 ports or more by a second (1 s after a smaller one); per redirection: minus the same mode's row "
            f"of 0; sampled forwarding: {self.sample:,} random ports (of each protocol), each a GET answered "
            "through the port (a datagram echoed for UDP); restart: SIGTERM, then a new start on the same data: "
            "seconds from the start to the control API's log line, then from that line until every sampled "
            "TCP port accepted (rounds of connects, one at a time, so one round of the sample is the resolution)",
        ]
        md = ["# One node's capacity: steered against bound", "", f"`{cmd}`", "", *ctx, "", self.table(), ""]
        if self.notes:
            md += ["## Notes", "", *[f"- {n}" for n in self.notes], ""]
        md += ["## Every row", "", *[f"- `{json.dumps(r)}`" for r in self.rows], ""]
        with open(self.results, "w") as f:
            f.write("\n".join(md))
        print("\n" + self.table())
        log(f"wrote {self.results}")
        self.draw()

    def drive(self):
        try:
            self.run()
            self.report()
        except KeyboardInterrupt:
            return 130
        finally:
            self.procs.stop_all()
        return 0


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "run":
        raise SystemExit("usage: capacity.py run TMP   (through bench/capacity.sh)")
    exit_on_signals()
    raise_nofile()
    return Capacity(sys.argv[2]).drive()


if __name__ == "__main__":
    sys.exit(main())
