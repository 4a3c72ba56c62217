#!/usr/bin/env bash
# Steered against bound UDP ports (issue 32): descriptors and memory with 10,000 UDP
# redirections, round trips/s and CPU per datagram, system calls per datagram (strace -c -f).
#
#   cargo build --release && bench/udp_steered.sh     # about 2 minutes
#
# As root, in a network namespace of its own (a steered server attaches its BPF program to
# the namespace it runs in). Settings: UDPS=10000 RUNS=5 DURATION=3 FLOWS=100
# TCP_REDIRS_BIN=target/release/tcp-redirs. Writes bench/udp-steered-results.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
enter_netns "$@"
need_tcp_redirs
command -v strace >/dev/null || apt_install udp-steered strace
build_c udpload "$HERE/udpload/udpload.c" >/dev/null
raise_fd_limit
run_driver udp-steered "$HERE/udp_steered.py"
