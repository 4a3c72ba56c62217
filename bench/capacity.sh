#!/usr/bin/env bash
# One node's capacity (issue 32): 100,000 TCP redirections in two namespaces on two loopback
# addresses (50,000 ports each) plus 10,000 UDP ones, made by `tcp-redirs apply -f`, in steered
# mode; bound mode beside it as far as its descriptors go (one per port, under the open-file
# hard limit). Per size: descriptors, RSS and PSS per redirection, a sample of ports forwarding,
# and the time until every sampled port accepts after a SIGTERM and a new start.
#
#   cargo build --release && bench/capacity.sh          # full run, about 10 minutes
#   QUICK=1 bench/capacity.sh                           # smoke run
#   PYTHON=/work/bench-venv/bin/python3 bench/capacity.sh   # with matplotlib: the plot too
#
# Runs as root, in a network namespace of its own (unshare --net, loopback only; steered mode
# attaches a BPF program to the namespace), whose ephemeral port range it moves to 60001-65535
# (the namespaces' ports are 10001-60000). Installs nginx when missing, builds bench/udpload,
# runs bench/capacity.py, which writes bench/capacity-results.md and docs/scale-steered.png.
# Settings (environment; see bench/capacity.py): STEERED_SIZES=0,1000,10000,50000,100000
# BOUND_SIZES=0,1000,10000,15000 UDP_PORTS=10000 SAMPLE=1000 PLOT=docs/scale-steered.png
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
need_tcp_redirs
missing=()
for tool in nginx cc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    pkgs=()
    for tool in "${missing[@]}"; do
        case $tool in cc) pkgs+=(gcc libc6-dev) ;; *) pkgs+=("$tool") ;; esac
    done
    apt_install capacity "${pkgs[@]}"
fi
export UDPLOAD_BIN
UDPLOAD_BIN=$(build_c udpload "$HERE/udpload/udpload.c")

enter_netns "$@"
sysctl -qw net.ipv4.ip_local_port_range="60001 65535"
raise_fd_limit
run_driver capacity "$HERE/capacity.py"
