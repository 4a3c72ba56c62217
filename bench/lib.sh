# Shell helpers of the bench/ scripts (sourced, not run).
#   apt_install TAG PACKAGE...  installs Debian packages, as root or through sudo
#   raise_fd_limit              raises the open-file soft limit to the hard one (FD_LIMIT)
#   run_driver NAME SCRIPT      runs `python3 SCRIPT run TMP` ($PYTHON if set) in a fresh temporary directory
#                               TMPDIR/tcp-redirs-NAME.XXXXXX, then kills whatever process group
#                               it listed in TMP/pgids and removes TMP, however it ends
#   enter_netns "$@"            re-runs the calling script in a network namespace of its own
#                               (unshare --net, as root; loopback up), unless it runs in one already
#   build_c NAME SOURCE         compiles a load generator of bench/ (C99, cc -O2) when its binary is
#                               missing or older than its source; prints the binary's path
#   need_tcp_redirs [HOW]       exports TCP_REDIRS_BIN ($ROOT/target/release/tcp-redirs unless set),
#                               or stops with one line saying how to build it (HOW, else `cargo
#                               build --release`)
# Sourcing it also puts /usr/sbin and /sbin on PATH (ip, sysctl, nginx, haproxy live there).

export PATH="$PATH:/usr/sbin:/sbin"

need_tcp_redirs() {
    export TCP_REDIRS_BIN=${TCP_REDIRS_BIN:-$ROOT/target/release/tcp-redirs}
    [[ -x $TCP_REDIRS_BIN ]] && return
    echo "error: $TCP_REDIRS_BIN not found: ${1:-run \`cargo build --release\` first} (or set TCP_REDIRS_BIN)" >&2
    exit 1
}

apt_install() {
    local tag=$1 SUDO=""
    shift
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || { echo "error: missing $*, and not root" >&2; exit 1; }
        SUDO="sudo"
    fi
    echo "[$tag] installing $* from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    # shellcheck disable=SC2046  # one word per package, deduplicated
    $SUDO apt-get install -y -q --no-install-recommends $(printf '%s\n' "$@" | sort -u) >&2
}

raise_fd_limit() {
    FD_LIMIT=$(ulimit -Hn)
    [[ $FD_LIMIT == unlimited ]] && FD_LIMIT=1048576
    ulimit -n "$FD_LIMIT"
}

run_driver() {
    local name=$1 script=$2
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/tcp-redirs-$name.XXXXXX")
    PY=""
    trap _driver_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # In the background, so that a signal to this script runs the trap at once.
    "${PYTHON:-python3}" "$script" run "$TMP" &
    PY=$!
    local rc=0
    wait "$PY" || rc=$?
    PY=""
    exit "$rc"
}

_driver_cleanup() {
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

# Steered mode attaches a BPF sk_lookup program to the network namespace the server runs in: a
# benchmark that may run it (as root, `serve`'s default `--port-mode auto` steers) runs in a
# namespace of its own, never in the machine's. Call it after anything that needs the network
# (apt-get): the new namespace has loopback only.
enter_netns() {
    local here
    here=$(readlink /proc/self/ns/net)
    if [[ ${TCP_REDIRS_BENCH_NETNS:-} == inside ]]; then
        # The namespace we left is in TCP_REDIRS_BENCH_HOST_NETNS (PID 1's may not be readable).
        if [[ -z $here || $here == "${TCP_REDIRS_BENCH_HOST_NETNS:-}" ]]; then
            echo "error: TCP_REDIRS_BENCH_NETNS is set but this is not a network namespace of the benchmark's own" >&2
            exit 1
        fi
        ip link set lo up
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: this benchmark runs its servers in a network namespace of its own (unshare --net): run it as root" >&2
        exit 1
    fi
    command -v unshare >/dev/null || { echo "error: unshare (util-linux) is needed" >&2; exit 1; }
    echo "[netns] running in a new network namespace (unshare --net)" >&2
    TCP_REDIRS_BENCH_NETNS=inside TCP_REDIRS_BENCH_HOST_NETNS=$here exec unshare --net -- "$BASH" "$0" "$@"
}

build_c() {
    local name=$1 src=$2 bin
    bin=$(dirname "$src")/$name
    if [[ ! -x $bin || $src -nt $bin ]]; then
        command -v cc >/dev/null || { echo "error: cc is needed to build $name" >&2; exit 1; }
        cc -O2 -std=c99 -Wall -Wextra -o "$bin" "$src" >&2
    fi
    echo "$bin"
}
