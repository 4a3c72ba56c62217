#!/usr/bin/env bash
# UDP benchmark of tcp-redirs against direct loopback, nginx's stream module and socat (issue 22).
#
#   cargo build --release && bench/udp.sh        # full run, about 12 minutes
#   QUICK=1 bench/udp.sh                         # smoke run
#
# Installs what is missing from Debian (nginx with libnginx-mod-stream, socat, iperf3, dnsperf,
# unbound; as root or through sudo), builds the load generator bench/udpload/udpload with gcc,
# then runs bench/udp.py, which writes bench/udp-results.md. Settings (environment): RUNS=5
# DURATION=3 FLOWS=1000 INFLIGHT=64 SMALL=64 LARGE=1400 NGINX_WORKERS=2 DNS_CLIENTS=16
# DNS_OUTSTANDING=64 IPERF_BITRATE=300M IPERF_LEN=1400 PATHS=direct,tcp-redirs,nginx,socat
# TESTS=small1,small1k,large1,large1k,lat1,lat1k,dns,iperf TCP_REDIRS_BIN=target/release/tcp-redirs
#
# Steered against bound mode, side by side: PATHS=tcp-redirs,tcp-redirs-steered (any path list
# with tcp-redirs-steered runs the whole benchmark in a network namespace of its own, as root:
# a steered server attaches its BPF program to the namespace it runs in).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
export TCP_REDIRS_BIN=${TCP_REDIRS_BIN:-$ROOT/target/release/tcp-redirs}
if [[ ,${PATHS:-tcp-redirs}, == *,tcp-redirs,* && ! -x $TCP_REDIRS_BIN ]]; then
    echo "error: $TCP_REDIRS_BIN not found: run \`cargo build --release\` first (or set TCP_REDIRS_BIN)" >&2
    exit 1
fi

missing=()
for tool in nginx socat iperf3 dnsperf unbound gcc python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ -e /usr/lib/nginx/modules/ngx_stream_module.so ]] || missing+=(libnginx-mod-stream)
if ((${#missing[@]})); then
    pkgs=()
    for tool in "${missing[@]}"; do
        case $tool in
            nginx) pkgs+=(nginx libnginx-mod-stream) ;;
            *) pkgs+=("$tool") ;;
        esac
    done
    apt_install udp "${pkgs[@]}"
fi

# After the installs: the namespace has loopback only.
if [[ ,${PATHS:-}, == *,tcp-redirs-steered,* ]]; then
    enter_netns "$@"
fi

LOAD=$HERE/udpload/udpload
if [[ ! -x $LOAD || $HERE/udpload/udpload.c -nt $LOAD ]]; then
    gcc -O2 -Wall -Wextra -o "$LOAD" "$HERE/udpload/udpload.c"
fi

raise_fd_limit
run_driver udp "$HERE/udp.py"
