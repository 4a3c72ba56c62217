#!/usr/bin/env bash
# `apply` of a large manifest: how long N redirections take through `tcp-redirs apply -f`
# (batched: up to 1000 per call), and how long a second apply that changes nothing takes.
#
# Usage: cargo build --release
#        bench/apply_scale.sh target/release/tcp-redirs [N=100000]
#
# Starts one server on 127.0.0.1 (SQLite, a temporary data directory) with six namespaces
# of 18,000 ports each, of which it serves one (`--namespaces n0`: the open-file limit of a
# machine like this one, 20,000, holds one namespace's ports, not six); writes a manifest
# of N redirections, one per application and namespace (N/6 applications, each with one
# instance), applies it twice, and prints the wall and CPU times, the server's descriptors
# and resident memory, and how many batches the server logged. Stops the server on exit.
set -euo pipefail
bin=$(realpath "${1:?usage: bench/apply_scale.sh PATH/TO/tcp-redirs [N]}")
n=${2:-100000}
tmp=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

for k in 0 1 2 3 4 5; do printf '[[namespace]]\nname = "n%s"\nports = "10000-27999"\n' "$k"; done >"$tmp/config.toml"
python3 - "$n" "$tmp/manifest.toml" <<'PY'
import sys
n, out = int(sys.argv[1]), sys.argv[2]
made = 0
with open(out, "w") as f:
    app = 0
    while made < n:
        f.write(f'[[application]]\nname = "app{app}"\ninstances = [{{ address = "127.0.0.1:9" }}]\n')
        for k in range(min(6, n - made)):
            f.write(f'[[application.redirection]]\nnamespace = "n{k}"\n')
            made += 1
        app += 1
PY
# Bound mode: as root the default (auto) would steer in the machine's own network namespace.
export TCP_REDIRS_CONFIG_DIR=$tmp/cfg TCP_REDIRS_ADMIN_TOKEN=bench-token TCP_REDIRS_PORT_MODE=${TCP_REDIRS_PORT_MODE:-bound}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --listen "127.0.0.1:$port" --data-dir "$tmp/data" --public-bind 127.0.0.1 \
    --config "$tmp/config.toml" --namespaces n0 2>"$tmp/server.log" &
pid=$!
for _ in $(seq 300); do grep -qs "control API listening" "$tmp/server.log" && break; sleep 0.1; done
grep -q "control API listening" "$tmp/server.log" || { cat "$tmp/server.log" >&2; exit 1; }
client=("$bin" --server "http://127.0.0.1:$port" --token bench-token)
cpu() { awk '{print ($14+$15)/100}' "/proc/$pid/stat"; }

before=$(cpu)
/usr/bin/time -f "apply of $n: %e s wall, client %U s user %S s sys" "${client[@]}" apply -f "$tmp/manifest.toml" -F json >"$tmp/first.json"
echo "server CPU for it: $(awk -v a="$(cpu)" -v b="$before" 'BEGIN {print a - b}') s"
made=$(python3 -c "import json,sys; c=json.load(open(sys.argv[1]))['changes']; print(sum(1 for x in c if x['kind']=='redirection' and x.get('port')))" "$tmp/first.json")
echo "redirections made (with a port in the answer): $made of $n"
echo "batches the server logged: $(grep -c 'redirections added' "$tmp/server.log" || true)"
/usr/bin/time -f "second apply (changes nothing): %e s wall" "${client[@]}" apply -f "$tmp/manifest.toml" -F json >"$tmp/second.json"
echo "changes in the second apply: $(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['changes']))" "$tmp/second.json")"
echo "server: $(ls "/proc/$pid/fd" | wc -l) descriptors, $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") KiB resident"
