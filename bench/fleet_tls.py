#!/usr/bin/env python3
"""A fleet on a 3-member etcd cluster with TLS and users, against one on a single plain
etcd member: what `add` and `remove` cost (issue 20).

Usage: cargo build --release --features etcd
       RUNS=200 python3 bench/fleet_tls.py target/release/tcp-redirs

Starts, on loopback, everything it measures, and stops it at the end (also on errors and
Ctrl-C), temporary directories removed (KEEP_TMP=1 keeps them, with every log):
- certificates made with the `openssl` command: a CA, one certificate for the etcd members
  (127.0.0.1, server and client use, so the members also speak TLS to each other) and one
  client certificate for the gateway nodes;
- the secured fleet: three etcd members (`--client-cert-auth`, peer TLS, auth enabled with a
  root user and a user `gw` whose role may read and write the prefix `fleet/`), and three
  nodes a, b, c (127.0.1.2-4) with `--store etcd://M1,M2,M3/fleet --store-ca --store-cert
  --store-key --store-user gw --store-password-file`;
- the plain fleet: one etcd member without TLS or auth, and three nodes (127.0.2.2-4).
Then RUNS samples of each, interleaved (the order flips every BATCH samples): an `add` on
node a (a fresh application each time; the answer comes once b and c confirm), then its
`remove`. CPU time (utime+stime from /proc/PID/stat) of each fleet's nodes and etcd
members is read around each batch and divided by the operations made.

Prints a markdown table on stdout (progress on stderr): add and remove p50/p90/p99 per fleet,
the ratio secured/plain, and the CPU per operation of the nodes and of etcd.

Settings (environment, as bench/fleet.py): RUNS=200, WARMUP=10, BATCH=20, TIME_LIMIT=900
(seconds for the sampling), ETCD=/usr/bin/etcd, KEEP_TMP=1.
"""
import json, os, shutil, signal, ssl, subprocess, sys, tempfile, time, urllib.request

sys.dont_write_bytecode = True   # no __pycache__ beside the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (TOKEN, Api, ApiError, Failure, Proc, binary_version, default_org,  # noqa: E402
                      free_ports, pct, server_env, start_etcd, stop_all, wait_etcd_healthy)
# The settings (RUNS, WARMUP, BATCH, TIME_LIMIT, ETCD, KEEP_TMP) are fleet.py's, read from
# the same environment variables.
from fleet import (  # noqa: E402
    BATCH, ETCD, HTTP_TIMEOUT, INSTANCE, KEEP_TMP, READY_TIMEOUT, RUNS, TIME_LIMIT, WARMUP, fmt, log)
ROOT_PASSWORD = "root-bench-password"
GW_PASSWORD = "gw-bench-password"
FLEETS = {"secured": ["127.0.1.2", "127.0.1.3", "127.0.1.4"], "plain": ["127.0.2.2", "127.0.2.3", "127.0.2.4"]}


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_pki(d):
    """ca.pem; member.pem (127.0.0.1, server+client); gw.pem (client); their keys."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=bench CA", "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=d)
    for name, ext in [("member", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
                      ("gw", "extendedKeyUsage=clientAuth\n")]:
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
                "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)


def etcd_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}


def start_cluster(tmp, pki, logdir, procs):
    """Three TLS members; their client endpoints."""
    ports = free_ports(6)
    clients, peers = ports[:3], ports[3:]
    cluster = ",".join(f"m{i}=https://127.0.0.1:{peers[i]}" for i in range(3))
    tls = ["--cert-file", f"{pki}/member.pem", "--key-file", f"{pki}/member-key.pem",
           "--trusted-ca-file", f"{pki}/ca.pem", "--client-cert-auth",
           "--peer-cert-file", f"{pki}/member.pem", "--peer-key-file", f"{pki}/member-key.pem",
           "--peer-trusted-ca-file", f"{pki}/ca.pem", "--peer-client-cert-auth"]
    members = []
    for i in range(3):
        c, p = f"https://127.0.0.1:{clients[i]}", f"https://127.0.0.1:{peers[i]}"
        argv = [ETCD, "--name", f"m{i}", "--data-dir", os.path.join(tmp, f"m{i}"),
                "--listen-client-urls", c, "--advertise-client-urls", c,
                "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "tcp-redirs-bench-tls", *tls]
        proc = Proc(f"etcd-m{i}", argv, etcd_env(), logdir, pipe=False)
        procs.append(proc)
        members.append(proc)
    context = ssl.create_default_context(cafile=f"{pki}/ca.pem")
    context.load_cert_chain(f"{pki}/member.pem", f"{pki}/member-key.pem")
    for port in clients:
        wait_etcd_healthy(members, f"https://127.0.0.1:{port}", READY_TIMEOUT, context)
    return members, clients, context


def gateway(port, context, path, body, token=None):
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})})
    answer = json.loads(urllib.request.urlopen(req, timeout=10, context=context).read().decode())
    if "error" in answer:
        raise Failure(f"etcd {path}: {answer}")
    return answer


def enable_auth(port, context):
    """root, and a user `gw` whose role reads and writes `fleet/` only; then auth on."""
    b64 = lambda s: __import__("base64").b64encode(s.encode()).decode()
    steps = [("/v3/auth/user/add", {"name": "root", "password": ROOT_PASSWORD}),
             ("/v3/auth/role/add", {"name": "root"}),
             ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
             ("/v3/auth/role/add", {"name": "fleet"}),
             ("/v3/auth/role/grant", {"name": "fleet", "perm": {"permType": "READWRITE", "key": b64("fleet/"), "range_end": b64("fleet0")}}),
             ("/v3/auth/user/add", {"name": "gw", "password": GW_PASSWORD}),
             ("/v3/auth/user/grant", {"user": "gw", "role": "fleet"}),
             ("/v3/auth/enable", {})]
    for path, body in steps:
        gateway(port, context, path, body)


def start_plain(tmp, logdir, procs):
    proc, client = start_etcd(ETCD, os.path.join(tmp, "plain"), logdir, READY_TIMEOUT, member="plain",
                              proc_name="etcd-plain")
    procs.append(proc)
    return proc, client


def start_node(binary, fleet, name, ip, store_args, tmp, logdir, procs):
    argv = [binary, "serve", *store_args, "--node", name, "--node-ttl", "5", "--listen", f"{ip}:0",
            "--public-bind", ip, "--data-dir", os.path.join(tmp, f"{fleet}-{name}")]
    env = server_env(os.path.join(tmp, f"cfg-{fleet}-{name}"), TOKEN,
                     [k for k in os.environ if k.startswith("TCP_REDIRS_")], NO_COLOR="1")
    proc = Proc(f"{fleet}-{name}", argv, env, logdir, pipe=True)
    procs.append(proc)
    return proc


def cpu(procs):
    return sum(p.cpu() for p in procs)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    for tool in ("openssl", ETCD):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: this benchmark needs it")
    tmp = tempfile.mkdtemp(prefix="tcp-redirs-fleet-tls-")
    logdir = os.path.join(tmp, "logs"); os.makedirs(logdir)
    pki = os.path.join(tmp, "pki"); os.makedirs(pki)
    procs = []
    old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        make_pki(pki)
        members, clients, context = start_cluster(tmp, pki, logdir, procs)
        enable_auth(clients[0], context)
        plain, plain_port = start_plain(tmp, logdir, procs)
        with open(os.path.join(pki, "password"), "w") as f:
            f.write(GW_PASSWORD + "\n")
        endpoints = ",".join(f"127.0.0.1:{p}" for p in clients)
        secured_args = ["--store", f"etcd://{endpoints}/fleet", "--store-ca", f"{pki}/ca.pem",
                        "--store-cert", f"{pki}/gw.pem", "--store-key", f"{pki}/gw-key.pem",
                        "--store-user", "gw", "--store-password-file", f"{pki}/password"]
        plain_args = ["--store", f"etcd://127.0.0.1:{plain_port}/fleet"]
        nodes = {}
        for fleet, store_args in (("secured", secured_args), ("plain", plain_args)):
            nodes[fleet] = [start_node(binary, fleet, n, ip, store_args, tmp, logdir, procs)
                            for n, ip in zip("abc", FLEETS[fleet])]
        for fleet in nodes:
            for node in nodes[fleet]:
                node.wait_ready(READY_TIMEOUT)
        etcds = {"secured": members, "plain": [plain]}
        apis = {fleet: Api(nodes[fleet][0].url, HTTP_TIMEOUT, name=f"{fleet}-a") for fleet in nodes}
        orgs = {fleet: default_org(apis[fleet]) for fleet in nodes}
        lat = {fleet: {"add": [], "remove": []} for fleet in nodes}
        cpu_nodes = {fleet: 0.0 for fleet in nodes}
        cpu_etcd = {fleet: 0.0 for fleet in nodes}
        ops = {fleet: 0 for fleet in nodes}
        deadline = time.monotonic() + TIME_LIMIT
        total = WARMUP + RUNS
        done = 0
        order = ["secured", "plain"]
        while done < total and time.monotonic() < deadline:
            n = min(BATCH, total - done)
            for fleet in order:
                api, org = apis[fleet], orgs[fleet]
                before = (cpu(nodes[fleet]), cpu(etcds[fleet]))
                for i in range(n):
                    app = api.call("POST", f"/v2/organisations/{org}/applications",
                                   {"name": f"b{done + i}", "instances": [{"address": INSTANCE}]})["id"]
                    path = f"/v2/organisations/{org}/applications/{app}/tcpRedirs"
                    t0 = time.perf_counter()
                    port = api.call("POST", path, {"namespace": "default"})["port"]
                    t1 = time.perf_counter()
                    api.call("DELETE", f"{path}/{port}?namespace=default")
                    t2 = time.perf_counter()
                    api.call("DELETE", f"/v2/organisations/{org}/applications/{app}")
                    if done + i >= WARMUP:
                        lat[fleet]["add"].append((t1 - t0) * 1000)
                        lat[fleet]["remove"].append((t2 - t1) * 1000)
                if done >= WARMUP:
                    cpu_nodes[fleet] += cpu(nodes[fleet]) - before[0]
                    cpu_etcd[fleet] += cpu(etcds[fleet]) - before[1]
                    ops[fleet] += n * 4   # application create, add, remove, application remove
            done += n
            order.reverse()
            log(f"{done}/{total} samples")
        report(lat, cpu_nodes, cpu_etcd, ops, binary)
    except (Failure, ApiError, subprocess.CalledProcessError) as e:
        log(f"FAILED: {e}")
        for p in procs:
            log(f"----- {p.name}: last lines\n{p.log_tail(20)}")
        sys.exit(1)
    finally:
        signal.signal(signal.SIGTERM, old)
        stop_all(procs, timeout=5.0)
        if KEEP_TMP:
            log(f"logs and data kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def report(lat, cpu_nodes, cpu_etcd, ops, binary):
    version = binary_version(binary)
    print(f"{version}; {os.cpu_count()} CPUs; {len(lat['plain']['add'])} samples per fleet and operation, "
          f"interleaved in batches of {BATCH}; 1 client; each add answers once b and c confirm\n")
    print("| fleet | add p50 ms | add p90 | add p99 | remove p50 ms | remove p90 | remove p99 | "
          "nodes CPU ms / op | etcd CPU ms / op |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for fleet, what in (("secured", "3 etcd members, TLS + client certificates + users"), ("plain", "1 etcd member, no TLS, no auth")):
        a, r = lat[fleet]["add"], lat[fleet]["remove"]
        per = lambda c: c * 1000 / ops[fleet] if ops[fleet] else None
        print(f"| {fleet}: {what} | {fmt(pct(a, 50))} | {fmt(pct(a, 90))} | {fmt(pct(a, 99))} | "
              f"{fmt(pct(r, 50))} | {fmt(pct(r, 90))} | {fmt(pct(r, 99))} | {fmt(per(cpu_nodes[fleet]))} | "
              f"{fmt(per(cpu_etcd[fleet]))} |")
    ratio = lambda op, p: pct(lat["secured"][op], p) / pct(lat["plain"][op], p)
    print(f"\nsecured / plain: add p50 {ratio('add', 50):.2f}x, p99 {ratio('add', 99):.2f}x; "
          f"remove p50 {ratio('remove', 50):.2f}x, p99 {ratio('remove', 99):.2f}x")


if __name__ == "__main__":
    main()
