#!/usr/bin/env python3
# Usage: bench/health_checks_scale.py BINARY N SECONDS  (stdlib only; issue 33)
# Health checks at scale: N instance addresses (127.0.X.Y:P, one listener on 0.0.0.0:P that
# timestamps every accept), one application and one TCP redirection each, checked every 5 s.
# Measures the server's CPU (utime+stime from /proc) over a window with checks on, then off
# (SIGHUP reload), and the checks' connections per second in 100 ms windows.
import os, socket, subprocess, sys, tempfile, threading, time, json, signal
BIN, N, WINDOW = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
d = tempfile.mkdtemp()
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", 0)); ls.listen(4096); P = ls.getsockname()[1]
stamps = []
def accept():
    while True:
        c, _ = ls.accept(); stamps.append(time.monotonic()); c.close()
threading.Thread(target=accept, daemon=True).start()
cfg = os.path.join(d, "config.toml")
def write_cfg(enabled):
    open(cfg, "w").write(f"[health_checks]\nenabled = {'true' if enabled else 'false'}\ninterval = 5\ntimeout = 2\n[[namespace]]\nname = \"default\"\nports = \"10000-29999\"\n")
write_cfg(True)
env = dict(os.environ, TCP_REDIRS_CONFIG_DIR=d, TCP_REDIRS_TOKEN="t0ken-for-the-measure", TCP_REDIRS_ADMIN_TOKEN="t0ken-for-the-measure")
srv = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:7391", "--public-bind", "127.0.0.1", "--data-dir", os.path.join(d, "data"), "--config", cfg, "--threads", "1", "--port-mode", "bound"],
                       env=env, stderr=open(os.path.join(d, "log"), "w"))
for _ in range(200):
    try: socket.create_connection(("127.0.0.1", 7391), 0.2).close(); break
    except OSError: time.sleep(0.1)
m = []
for i in range(N):
    a, b = divmod(i, 250)
    m.append(f'[[application]]\nname = "a{i}"\ninstances = [{{ address = "127.0.{a+1}.{b+1}:{P}" }}]\n[[application.redirection]]\nnamespace = "default"\n')
mf = os.path.join(d, "m.toml"); open(mf, "w").write("\n".join(m))
t = time.time()
r = subprocess.run([BIN, "--server", "http://127.0.0.1:7391", "apply", "-f", mf, "-F", "json"], env=env, capture_output=True, text=True)
print(f"apply of {N}: exit {r.returncode} in {time.time()-t:.1f} s {r.stderr[:300]}", flush=True)
def cpu():
    f = open(f"/proc/{srv.pid}/stat").read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
time.sleep(6)  # every address's first check is in
c0, t0, s0 = cpu(), time.monotonic(), len(stamps)
time.sleep(WINDOW)
c1, t1 = cpu(), time.monotonic()
win = [s for s in stamps[s0:] if t0 <= s < t1]
rate = len(win) / (t1 - t0)
buckets = {}
for s in win: buckets[int((s - t0) * 10)] = buckets.get(int((s - t0) * 10), 0) + 1
most = max(buckets.values()) if buckets else 0
print(f"checks on: {len(win)} checks in {t1-t0:.1f} s = {rate:.0f}/s (expected {N/5:.0f}/s); most in a 100 ms window {most}, average {rate/10:.1f}; server CPU {100*(c1-c0)/(t1-t0):.1f} % of one core", flush=True)
write_cfg(False); srv.send_signal(signal.SIGHUP); time.sleep(2)
c0, t0, s0 = cpu(), time.monotonic(), len(stamps)
time.sleep(WINDOW)
c1, t1 = cpu(), time.monotonic()
print(f"checks off: {len(stamps)-s0} checks; server CPU {100*(c1-c0)/(t1-t0):.1f} % of one core", flush=True)
srv.terminate(); srv.wait()
