#!/usr/bin/env bash
# Where a redirection's memory goes (issue 32): a steered server with N redirections made by
# `apply -f`, run under heaptrack, killed once the apply has returned; what it still held is
# grouped by the innermost function of this crate that allocated it, per redirection.
#
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_PROFILE_RELEASE_STRIP=false \
#     cargo build --release --features server && bench/heap.sh
#
# (heaptrack needs the symbols that the release profile strips.) Runs as root, in a network
# namespace of its own (steered mode attaches a BPF program to it). Installs heaptrack when
# missing. Writes bench/heap-results.md. Settings (environment; see bench/heap.py): N=20000 PROTOCOL=tcp LOAD=0
# MODE=steered TOP=25 TCP_REDIRS_BIN=target/release/tcp-redirs
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=bench/lib.sh
source "$HERE/lib.sh"
need_tcp_redirs "build it with symbols first (see the top of $0)"
command -v heaptrack >/dev/null 2>&1 && command -v heaptrack_print >/dev/null 2>&1 || apt_install heap heaptrack

enter_netns "$@"
raise_fd_limit
run_driver heap "$HERE/heap.py"
