#!/usr/bin/env bash
# Benchmark of tcp-redirs against direct loopback, HAProxy (mode tcp) and socat.
#
#   cargo build --release && bench/run.sh        # full run, about 8 minutes
#   QUICK=1 bench/run.sh                         # smoke run, about a minute
#
# Measures, on 127.0.0.1 only, five paths to the same backends: direct (the physical limit),
# through tcp-redirs, through HAProxy `mode tcp` twice (column haproxy: `option splice-auto`,
# HAProxy's own heuristic; column haproxy-splice: splice-auto + splice-request +
# splice-response, splice forced on every connection; HAProxy 2.6 in Debian 12 is built with
# splice support), and through socat (`fork`, one process per connection). For each: bulk
# throughput of 1 and 8 connections (iperf3) with the forwarder's CPU seconds per GB,
# requests/s and p50/p99 latency over 16 persistent connections (wrk against nginx), new
# connections/s (wrk with `Connection: close`), and the forwarder's memory per idle connection
# with 9,000 connections held open, before and after a little data. Each figure is the median
# of several runs, the paths interleaved in every round so that ratios hold on a noisy machine.
# Prints one table and writes it, with the details and every run, to bench/results.md.
#
# Settings (environment):
#   RUNS=5 DURATION=3      runs per measurement (the median is kept) and seconds per run
#   QUICK=1                RUNS=1 DURATION=2 MEM_CONNS=1000 unless set otherwise (~1 minute)
#   MEM_CONNS=9000         idle connections held for the memory measurement
#   PARALLEL=8 WRK_CONNS=16 BODY_BYTES=64 NGINX_WORKERS=1
#   HAPROXY_SPLICE=auto    the splice options of the `haproxy` column: auto, all or none
#   PATHS=direct,tcp-redirs,haproxy,haproxy-splice,socat   TESTS=mem,bulk1,bulkN,rr,cc
#                          (subsets, e.g. PATHS=direct,tcp-redirs TESTS=bulk1 while tuning)
#   TCP_REDIRS_BIN=target/release/tcp-redirs
#   TCP_REDIRS_THREADS=N   forwarding threads of the tcp-redirs server (default: one per core)
#
# Installs iperf3, wrk, haproxy, socat and nginx from Debian when they are missing (apt-get,
# as root or through sudo). Every process it starts is killed on exit, and its temporary
# directory removed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
export PATH="$PATH:/usr/sbin:/sbin"
export TCP_REDIRS_BIN=${TCP_REDIRS_BIN:-$ROOT/target/release/tcp-redirs}

if [[ ! -x $TCP_REDIRS_BIN ]]; then
    echo "error: $TCP_REDIRS_BIN not found: run \`cargo build --release\` first (or set TCP_REDIRS_BIN)" >&2
    exit 1
fi
command -v python3 >/dev/null || { echo "error: python3 is needed" >&2; exit 1; }

# ---- tools from Debian -----------------------------------------------------------------------
missing=()
for tool in iperf3 wrk haproxy socat nginx; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "error: missing ${missing[*]}, and not root" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "[bench] installing ${missing[*]} from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    pkgs=()
    for tool in "${missing[@]}"; do
        if [[ $tool == nginx ]]; then
            # nginx-light where the release still has it (it is the smallest), else nginx
            if apt-cache show nginx-light >/dev/null 2>&1; then pkgs+=(nginx-light); else pkgs+=(nginx); fi
        else
            pkgs+=("$tool")
        fi
    done
    $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
fi

# ---- file descriptors: 9,000 connections through a forwarder need ~18,000 -----------------------
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=1048576
ulimit -n "$hard"
if ((hard < 20000)); then
    echo "[bench] warning: the fd limit is $hard; set MEM_CONNS below $((hard / 2 - 500))" >&2
fi

# ---- run, then clean up whatever happens --------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tcp-redirs-bench.XXXXXX")
PY=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $PY ]] && kill -0 "$PY" 2>/dev/null; then
        kill -TERM "$PY" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PY" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PY" 2>/dev/null || true
    fi
    # The Python driver kills what it started and removes this file; if it died first, the
    # process groups it started are still listed here.
    if [[ -f $TMP/pgids ]]; then
        while read -r pg; do
            [[ -n $pg ]] && kill -KILL -- "-$pg" 2>/dev/null || true
        done <"$TMP/pgids"
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# In the background, so that a signal to this script runs the trap at once.
python3 "$HERE/bench.py" run "$TMP" &
PY=$!
rc=0
wait "$PY" || rc=$?
PY=""
exit "$rc"
