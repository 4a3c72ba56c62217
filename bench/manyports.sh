#!/usr/bin/env bash
# Short connections at random over 10,000 redirections (issue 32, "Data plane, where steering
# matters"): tcp-redirs --port-mode steered, --port-mode bound, and HAProxy binding the same
# 10,000 ports (one `bind` with a port range), all to one nginx backend, interleaved rounds.
#
#   cargo build --release && bench/manyports.sh        # full run, about 8 minutes
#   QUICK=1 bench/manyports.sh                         # smoke run, about 2 minutes
#
# Runs as root, in a network namespace of its own (unshare --net, loopback only): steered mode
# attaches a BPF program to the namespace its server runs in. Installs haproxy and nginx from
# Debian when missing (before entering the namespace), builds the load generator
# bench/connload/connload with cc, then runs bench/manyports.py, which writes
# bench/manyports-results.md. Settings (environment; see bench/manyports.py): RUNS=5 DURATION=5
# COUNT=300000 INFLIGHT=8 PORTS=10000 PORT_LO=20000 PATHS=steered,bound,haproxy
# STRACE_CONNS=3000 PROFILE=1 HAPROXY_MAXCONN=2000 TCP_REDIRS_BIN=target/release/tcp-redirs
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
need_tcp_redirs
command -v python3 >/dev/null || { echo "error: python3 is needed" >&2; exit 1; }

missing=()
for tool in haproxy nginx cc perf strace; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    pkgs=()
    for tool in "${missing[@]}"; do
        case $tool in
            cc) pkgs+=(gcc libc6-dev) ;;
            perf) pkgs+=(linux-perf) ;;
            *) pkgs+=("$tool") ;;
        esac
    done
    apt_install manyports "${pkgs[@]}"
fi
export CONNLOAD_BIN
CONNLOAD_BIN=$(build_c connload "$HERE/connload/connload.c")

enter_netns "$@"
raise_fd_limit
run_driver manyports "$HERE/manyports.py"
