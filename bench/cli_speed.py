#!/usr/bin/env python3
"""How fast the CLI answers `list` against a local server: wall time and peak memory.

Usage: python3 bench/cli_speed.py target/release/tcp-redirs [RUNS]
Starts its own server on loopback with a temporary data directory. Targets: under 10 ms
wall and 15 MiB of memory (the Node.js clever CLI takes over half a second and 150 MiB).
"""
import os, resource, shutil, statistics, subprocess, sys, tempfile, time

b = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 200
tmp = tempfile.mkdtemp()
env = dict(os.environ, TCP_REDIRS_CONFIG_DIR=tmp + "/cfg", TCP_REDIRS_ADMIN_TOKEN="bench")
srv = subprocess.Popen([b, "serve", "--listen", "127.0.0.1:0", "--data-dir", tmp + "/data",
                        "--public-bind", "127.0.0.1"], env=env, stderr=subprocess.PIPE, text=True)
try:
    deadline = time.time() + 20
    for line in srv.stderr:
        if "listening on http://" in line or time.time() > deadline:
            break
    run = lambda *a: subprocess.run([b, *a], env=env, stdout=subprocess.DEVNULL, check=True)
    run("apps", "create", "speed", "--instance", "127.0.0.1:9")
    run("add", "--app", "speed", "--namespace", "default")
    walls = []
    for _ in range(runs):
        t = time.perf_counter()
        run("--app", "speed", "-F", "json")
        walls.append((time.perf_counter() - t) * 1000)
    walls.sort()
    # Peak memory of one `list` run alone (GNU time), else of every child so far.
    timed = subprocess.run(["/usr/bin/time", "-f", "%M", b, "--app", "speed", "-F", "json"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = timed.stderr.strip().splitlines() if timed.returncode == 0 else []
    peak_kib = int(lines[-1]) if lines and lines[-1].isdigit() else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"tcp-redirs list: median {statistics.median(walls):.2f} ms, p90 {walls[int(runs * 0.9)]:.2f} ms "
          f"over {runs} runs; peak RSS {peak_kib / 1024:.1f} MiB")
finally:
    srv.terminate()
    srv.wait()
    shutil.rmtree(tmp, ignore_errors=True)
