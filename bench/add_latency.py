#!/usr/bin/env python3
"""Time from `add` to the public port accepting a connection, through the API and the CLI.

Usage: python3 bench/add_latency.py target/release/tcp-redirs [RUNS]
Starts its own server on loopback with a temporary data directory; prints medians.
"""
import json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request, statistics
sys.dont_write_bytecode = True   # importing benchlib leaves no bench/__pycache__ behind
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Proc, pct_index, server_env  # noqa: E402
B = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 50
tmp = tempfile.mkdtemp()
env = server_env(tmp + "/cfg", "t", drop=())
srv = Proc("server", [B, "serve", "--listen", "127.0.0.1:0", "--data-dir", tmp + "/data", "--public-bind", "127.0.0.1"], env, tmp, pipe=True)
url = srv.wait_ready(20)
def call(method, path, body=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
        headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=10))
org = call("GET", "/v2/organisations")[0]["id"]
api, cli = [], []
for i in range(N):
    app = call("POST", f"/v2/organisations/{org}/applications", {"name": f"a{i}", "instances": [{"address": "127.0.0.1:9"}]})
    t0 = time.perf_counter()
    r = call("POST", f"/v2/organisations/{org}/applications/{app['id']}/tcpRedirs", {"namespace": "default"})
    s = socket.create_connection(("127.0.0.1", r["port"]), timeout=2)  # must accept at once
    api.append((time.perf_counter() - t0) * 1000); s.close()
    t0 = time.perf_counter()
    out = subprocess.run([B, "add", "--app", f"a{i}", "--namespace", "cleverapps", "-F", "json", "--server", url, "--token", "t"], env=env, capture_output=True, text=True, check=True)
    s = socket.create_connection(("127.0.0.1", json.loads(out.stdout)["port"]), timeout=2)
    cli.append((time.perf_counter() - t0) * 1000); s.close()
srv.finish()
shutil.rmtree(tmp, ignore_errors=True)
q = lambda xs: f"median {statistics.median(xs):.2f} ms, p90 {pct_index(xs, 90):.2f} ms, max {max(xs):.2f} ms"
print(f"API POST tcpRedirs -> port accepted a connection ({N} runs): {q(api)}")
print(f"CLI `tcp-redirs add` process -> port accepted a connection ({N} runs): {q(cli)}")
