#!/usr/bin/env bash
# Benchmark of tcp-redirs against direct loopback, HAProxy (mode tcp) and socat.
#
#   cargo build --release && bench/run.sh        # full run, about 12 minutes
#   QUICK=1 bench/run.sh                         # smoke run, about two minutes
#
# Measures, on 127.0.0.1 only, five paths to the same backends: direct (the physical limit),
# through tcp-redirs, through HAProxy `mode tcp` twice (column haproxy: `option splice-auto`,
# HAProxy's own heuristic; column haproxy-splice: splice-auto + splice-request +
# splice-response, splice forced on every connection; HAProxy 2.6 in Debian 12 is built with
# splice support), and through socat (`fork`, one process per connection). For each: bulk
# throughput of 1 and 8 connections (iperf3) with the forwarder's CPU seconds per GB,
# requests/s and p50/p99 latency over 16 persistent connections (wrk against nginx), new
# connections/s (wrk with `Connection: close`), each with the forwarder's saturation counters
# per request or connection (perf stat -p: context switches, CPU migrations, system calls,
# failed accept4, epoll_wait and epoll_ctl calls; and every hop's TCP segments, as nstat counts
# them), and the forwarder's memory per idle connection
# with 9,000 connections held open, before and after a little data. Then two real protocols,
# each a server and its own load generator from Debian: Redis (redis-benchmark, SET then GET over
# 50 persistent connections: commands/s, its p99, the forwarder's CPU per command) and
# PostgreSQL (a throwaway cluster in the temporary directory; pgbench -S, select-only over 16
# persistent connections: transactions/s, p50/p99 from its per-transaction log, CPU per
# transaction; and pgbench -S -C, a new connection per transaction: connections/s, CPU per
# connection; libpq's TLS and GSS requests are off, so a connection is its startup packet and
# the query). Each figure is the median of several runs, the paths interleaved in every round
# so that ratios hold on a noisy machine.
# Prints one table and writes it, with the details and every run, to bench/results.md (RESULTS).
#
# Settings (environment):
#   RUNS=5 DURATION=3      runs per measurement (the median is kept) and seconds per run
#   QUICK=1                RUNS=1 DURATION=2 MEM_CONNS=1000 unless set otherwise (~2 minutes)
#   MEM_CONNS=9000         idle connections held for the memory measurement
#   PARALLEL=8 WRK_CONNS=16 BODY_BYTES=64 NGINX_WORKERS=1
#   HAPROXY_SPLICE=auto    the splice options of the `haproxy` column: auto, all or none
#   PATHS=direct,tcp-redirs,haproxy,haproxy-splice,socat
#   TESTS=mem,bulk1,bulkN,rr,cc,redis,pg,pgconn
#                          (subsets, e.g. PATHS=direct,tcp-redirs TESTS=bulk1 while tuning)
#   REDIS_CLIENTS=50       redis-benchmark connections (-c)
#   REDIS_REQUESTS=200000  SETs, then as many GETs, per run (-n; 50000 with QUICK): a run is bounded
#                          by this count (64-byte values, -r 100000 random keys), not by DURATION
#   PG_CLIENTS=16 PG_SCALE=10   pgbench connections (-c, one thread: -j 1) and data size (-i -s:
#                          1,000,000 accounts, about 150 MB, held in shared_buffers of 256 MB);
#                          its runs last DURATION (-T)
#   PATHS=tcp-redirs,tcp-redirs-limits   the same binary, its redirections with a cap per client
#                          address and a bandwidth limit set but never reached: a ratio column of
#                          what they cost per request, connection and byte (issue 34)
#   TCP_REDIRS_BIN=target/release/tcp-redirs
#   TCP_REDIRS_BASE_BIN=...  a second binary, the path `tcp-redirs-base` (e.g. built from main):
#                          PATHS=tcp-redirs,tcp-redirs-base,haproxy adds a before/after ratio column
#   TCP_REDIRS_THREADS=N   forwarding threads of the tcp-redirs server (default: one per core)
#   PORT_MODE=auto|steered|bound       the tcp-redirs server's --port-mode (TCP_REDIRS_PORT_MODE;
#   BASE_PORT_MODE=auto|steered|bound  BASE_: tcp-redirs-base's); unset: the server's default,
#                          auto, which steers as root. So that a steered server never attaches its
#                          BPF program to the machine's network namespace, the benchmark runs, as
#                          root, in a network namespace of its own (unshare --net, loopback only),
#                          after installing what it needs. One port, steered against bound, one
#                          binary: TCP_REDIRS_BASE_BIN=target/release/tcp-redirs PORT_MODE=steered
#                          BASE_PORT_MODE=bound PATHS=tcp-redirs,tcp-redirs-base TESTS=cc,rr bench/run.sh
#   RESULTS=bench/results.md  where the report goes
#
# Installs iperf3, wrk, haproxy, socat and nginx from Debian when they are missing, and, for
# the tests that use them, redis-server and redis-tools, postgresql and postgresql-client
# (apt-get, as root or through sudo; Debian's postgresql package creates and may start a
# cluster of its own on port 5432, which the benchmark leaves alone). PostgreSQL runs as the
# `postgres` account when the benchmark runs as root. Every process it starts is killed on
# exit, and its temporary directory (and the throwaway cluster in it) removed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
need_tcp_redirs
command -v python3 >/dev/null || { echo "error: python3 is needed" >&2; exit 1; }

# ---- tools from Debian -----------------------------------------------------------------------
# The default list of tests, as bench.py has it: only to know which servers to install.
tests=",${TESTS:-mem,bulk1,bulkN,rr,cc,redis,pg,pgconn},"
have_pg() {  # Debian keeps the server's programs off the PATH, in /usr/lib/postgresql/VERSION/bin
    command -v "$1" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}
missing=()
for tool in iperf3 wrk haproxy socat nginx; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [[ $tests == *,redis,* ]]; then
    for tool in redis-server redis-benchmark; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
fi
if [[ $tests == *,pg,* || $tests == *,pgconn,* ]]; then
    for tool in initdb postgres pgbench pg_isready; do
        have_pg "$tool" || missing+=("$tool")
    done
fi
if ((${#missing[@]})); then
    pkgs=()
    for tool in "${missing[@]}"; do
        case $tool in
            nginx)
                # nginx-light where the release still has it (it is the smallest), else nginx
                if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi ;;
            redis-benchmark) pkgs+=(redis-tools) ;;
            initdb | postgres) pkgs+=(postgresql) ;;
            pgbench | pg_isready) pkgs+=(postgresql-client) ;;
            *) pkgs+=("$tool") ;;
        esac
    done
    apt_install bench "${pkgs[@]}"
fi

# ---- a network namespace of its own, as root (steered mode attaches to the namespace) ---------
if [[ $(id -u) -eq 0 ]]; then
    enter_netns "$@"
fi

# ---- file descriptors: 9,000 connections through a forwarder need ~18,000 -----------------------
raise_fd_limit
hard=$FD_LIMIT
if ((hard < 20000)); then
    echo "[bench] warning: the fd limit is $hard; set MEM_CONNS below $((hard / 2 - 500))" >&2
fi

# ---- run, then clean up whatever happens --------------------------------------------------------
run_driver bench "$HERE/bench.py"
