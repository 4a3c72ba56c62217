#!/usr/bin/env python3
"""What the connection log costs per connection, in instructions (valgrind's callgrind).

    cargo build --release && python3 bench/conn_log_cost.py [target/release/tcp-redirs]

Throughput on this shared, noisy machine moves 10-30 % between runs, more than the cost
being measured; callgrind counts the instructions the server executes in user space, which
is the same for the same binary and inputs whatever else the machine does. For each mode
(log off, text log, JSON log) the server runs under callgrind with one forwarding thread,
takes SMALL and then LARGE short connections (connect, a request, the answer, close), and
stops; the difference between the two counts, divided by LARGE - SMALL, is the cost of one
connection, start-up excluded. Kernel work (most of a connection's cost on loopback) is not
counted: the figure to read is the log's extra instructions per connection, and its ratio
to the user-space instructions of a connection without it, an upper bound of its share of
the whole. Everything runs on 127.0.0.1; valgrind must be installed.

Settings (environment): SMALL=200 LARGE=1200.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import HOST, wait_log  # noqa: E402

SMALL = int(os.environ.get("SMALL", "200"))
LARGE = int(os.environ.get("LARGE", "1200"))
ANSWER = b"HTTP/1.0 200 OK\r\nContent-Length: 64\r\n\r\n" + b"x" * 64


def backend():
    """A backend that answers each connection once and closes it; returns its port."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(512)

    def serve():
        while True:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(ANSWER)

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def run(binary, mode, count, backend_port):
    """Instructions the server executes for `count` connections in `mode`, start-up included."""
    tmp = tempfile.mkdtemp(prefix="tr-logcost-")
    try:
        # Bound: as root the default (auto) would steer in the machine's network namespace.
        env = dict(os.environ, TCP_REDIRS_CONFIG_DIR=os.path.join(tmp, "cfg"), TCP_REDIRS_LOG="info",
                   TCP_REDIRS_PORT_MODE="bound")
        args = []
        if mode != "off":
            args.append("--access-log")
        if mode == "json":
            env["TCP_REDIRS_LOG_FORMAT"] = "json"
        out = os.path.join(tmp, "callgrind.out")
        log = os.path.join(tmp, "server.log")
        with open(log, "wb") as logf:
            server = subprocess.Popen(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve",
                 "--data-dir", os.path.join(tmp, "data"), "--listen", f"{HOST}:0", "--threads", "1",
                 "--public-bind", HOST, *args],
                env=env, stdout=logf, stderr=subprocess.STDOUT)
        try:
            wait_log(log, r"listening|ready", 120, proc=server)
            cli = lambda *a: subprocess.run([binary, *a], env=env, check=True, capture_output=True, text=True)
            cli("apps", "create", "web", "--instance", f"{HOST}:{backend_port}")
            added = cli("add", "--app", "web", "--namespace", "default").stdout
            port = int(re.search(r"port: (\d+)", added).group(1))
            for _ in range(count):
                with socket.create_connection((HOST, port), timeout=30) as s:
                    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    got = b""
                    while True:
                        chunk = s.recv(4096)
                        if not chunk:
                            break
                        got += chunk
                    assert got == ANSWER, got
        finally:
            server.terminate()
            server.wait(timeout=120)
        with open(out) as f:
            for line in f:
                if line.startswith("summary:") or line.startswith("totals:"):
                    return int(line.split()[1])
        raise RuntimeError("no instruction total in callgrind's output")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/tcp-redirs")
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install valgrind")
    port = backend()
    per_conn = {}
    for mode in ("off", "text", "json"):
        small = run(binary, mode, SMALL, port)
        large = run(binary, mode, LARGE, port)
        per_conn[mode] = (large - small) / (LARGE - SMALL)
        print(f"{mode:>4}: {per_conn[mode]:,.0f} instructions per connection (user space)", flush=True)
    base = per_conn["off"]
    for mode in ("text", "json"):
        extra = per_conn[mode] - base
        print(f"{mode} log: +{extra:,.0f} instructions per connection, {per_conn[mode] / base:.3f}x the user-space cost")


if __name__ == "__main__":
    main()
