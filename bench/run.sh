#!/usr/bin/env bash
# The data-plane benchmark: tcp-redirs side by side with direct, HAProxy (mode tcp, splice)
# and socat, on loopback, interleaved, medians of several runs; prints one table and writes
# it to bench/results.md.
#
#   cargo build --release && bench/run.sh
#
# Settings (environment): QUICK=1 (about a minute), RUNS (5), DURATION (seconds per run, 4),
# MEM_CONNS (idle connections for the memory figure), TCP_REDIRS_BIN (the binary to measure,
# target/release/tcp-redirs by default). Everything runs on 127.0.0.1 and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in iperf3 wrk haproxy socat nginx; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if ((${#need[@]})); then
    echo "installing: ${need[*]}" >&2
    packages=()
    for tool in "${need[@]}"; do
        case "$tool" in
            nginx) packages+=(nginx-light) ;;
            *) packages+=("$tool") ;;
        esac
    done
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
fi

bin=${TCP_REDIRS_BIN:-target/release/tcp-redirs}
if [[ ! -x $bin ]]; then
    echo "error: $bin not found: run \`cargo build --release\` first, or set TCP_REDIRS_BIN" >&2
    exit 1
fi

tmp=$(mktemp -d)
cleanup() {
    # Whatever bench.py started, even if it died: each process group it recorded.
    if [[ -f $tmp/pgids ]]; then
        while read -r pgid; do kill -TERM -- "-$pgid" 2>/dev/null || true; done <"$tmp/pgids"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
TCP_REDIRS_BIN=$bin python3 bench/bench.py run "$tmp"
