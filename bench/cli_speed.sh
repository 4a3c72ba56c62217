#!/usr/bin/env bash
# How fast the CLI answers `tcp-redirs list --app X` against a local server: wall time
# (hyperfine) and peak memory (GNU time's maximum resident set size).
#
#   cargo build --release && bench/cli_speed.sh [BINARY] [RUNS]
#
# BINARY defaults to $CARGO_TARGET_DIR/release/tcp-redirs (else target/release/tcp-redirs).
# Starts its own server on loopback with a temporary data directory; the CLI finds it
# through the `local` profile the server writes, as on a workstation. Issue 4's targets:
# under 10 ms wall and under 15 MiB (the Node.js clever CLI takes over 500 ms and 150 MiB).
set -euo pipefail

BIN=$(realpath "${1:-${CARGO_TARGET_DIR:-target}/release/tcp-redirs}")
RUNS=${2:-300}
[ -x "$BIN" ] || { echo "no binary at $BIN: cargo build --release first" >&2; exit 1; }
command -v hyperfine >/dev/null || apt-get install -y hyperfine >/dev/null
[ -x /usr/bin/time ] || apt-get install -y time >/dev/null

tmp=$(mktemp -d)
server=
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

export TCP_REDIRS_CONFIG_DIR=$tmp/config
export TCP_REDIRS_ADMIN_TOKEN=bench-$$-$RANDOM$RANDOM
unset TCP_REDIRS_URL TCP_REDIRS_TOKEN TCP_REDIRS_APP NO_COLOR

mkfifo "$tmp/log"
# Bound mode: as root the default (auto) would steer in the machine's own network namespace.
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$tmp/data" --public-bind 127.0.0.1 --port-mode bound 2>"$tmp/log" &
server=$!
# Ready when it says so (the `local` profile is written by then); the rest of the log is drained.
exec 3<"$tmp/log"
url=
while IFS= read -r -t 30 line <&3; do
    case $line in *"listening on http://"*) url=${line##*listening on }; url=${url%% *}; break ;; esac
done
[ -n "$url" ] || { echo "the server did not start" >&2; exit 1; }
cat <&3 >/dev/null &

"$BIN" apps create speed --instance 127.0.0.1:9 >/dev/null
"$BIN" add --app speed --namespace default >/dev/null
"$BIN" add --app speed --namespace cleverapps >/dev/null

"$BIN" list --app speed | grep -q "^Enabled TCP redirections:" || { echo "list does not answer" >&2; exit 1; }
echo "binary: $BIN ($(du -h "$BIN" | cut -f1)), server: $url, $(nproc) cores"
hyperfine -N --warmup 20 --runs "$RUNS" --export-json "$tmp/wall.json" \
    "$BIN list --app speed" "$BIN list --app speed -F json"

# Peak memory: the largest of 20 runs.
peak=0
for _ in $(seq 20); do
    kib=$( { /usr/bin/time -f %M "$BIN" list --app speed >/dev/null; } 2>&1 | tail -1)
    [ "$kib" -gt "$peak" ] && peak=$kib
done

python3 - "$tmp/wall.json" "$peak" <<'EOF'
import json, sys
runs = json.load(open(sys.argv[1]))["results"]
peak_mib = int(sys.argv[2]) / 1024
for r in runs:
    times = sorted(r["times"])
    p50, p90 = times[len(times) // 2] * 1000, times[int(len(times) * 0.9)] * 1000
    print(f"{r['command'].split('/')[-1]}: median {p50:.2f} ms, p90 {p90:.2f} ms, "
          f"mean {r['mean'] * 1000:.2f} ms over {len(times)} runs")
print(f"peak RSS of `list --app speed`: {peak_mib:.1f} MiB")
ok = all(sorted(r["times"])[len(r["times"]) // 2] < 0.010 for r in runs) and peak_mib < 15
print("targets (< 10 ms median wall, < 15 MiB): " + ("met" if ok else "MISSED"))
EOF
