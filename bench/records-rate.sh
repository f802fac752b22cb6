#!/usr/bin/env bash
# Records written per second by one node with fsync on, and the log's bytes per call
# (BENCHMARKS.md, "Request records").
#
#   cargo build --release -p aigw --bin aigw -p aigw-jepsen
#   bench/records-rate.sh [REQUESTS] [CONCURRENCY]    # default 100000 at 256
#   BIN_DIR=DIR bench/records-rate.sh                 # binaries from another target dir
#   NATS_URL=nats://127.0.0.1:4222 bench/records-rate.sh   # with a JetStream sink too
#   STREAM=1 bench/records-rate.sh                    # streamed completions
#
# Starts aigw-mock and one aigw node with the benchmark's config (records on, capture "full",
# fsync every 50 ms), sends REQUESTS chat completions at CONCURRENCY with `aigw-bench load`,
# reads what the node shed or lost, stops it gracefully (every record fsynced), and measures
# the log: records, their bytes as JSON lines, and the bytes on disk (closed segments are
# zstd-compressed; segments roll at 64 MiB).
set -euo pipefail

requests="${1:-100000}"
concurrency="${2:-256}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN_DIR:-$root/target/release}"
work="$(mktemp -d /tmp/aigw-records-rate.XXXXXX)"
for b in aigw aigw-mock aigw-bench; do
  [ -x "$bin/$b" ] || { echo "$bin/$b missing: cargo build --release -p aigw --bin aigw -p aigw-jepsen" >&2; exit 1; }
done
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port="$(free_port)"; api_port="$(free_port)"; admin_port="$(free_port)"
"$bin/aigw-mock" --listen "127.0.0.1:$mock_port" >/dev/null 2>&1 &
pids+=($!)
"$bin/aigw-bench" config --listen "127.0.0.1:$api_port" --admin "127.0.0.1:$admin_port" \
  --mock "127.0.0.1:$mock_port" --data-dir "$work/data" >"$work/aigw.toml"
if [ -n "${NATS_URL:-}" ]; then
  printf '\n[[records.sinks]]\nname = "js"\nkind = "nats"\nurl = "%s"\n' "$NATS_URL" >>"$work/aigw.toml"
fi
token="$(sed -n 's/^token = "\(.*\)"/\1/p' "$work/aigw.toml" | head -1)"
AIGW_LOG=warn "$bin/aigw" serve --config "$work/aigw.toml" 2>"$work/aigw.log" &
aigw=$!
pids+=($aigw)
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$api_port/v1/models" && break
  sleep 0.1
done

stream=()
[ -n "${STREAM:-}" ] && stream=(--stream)
echo "== $requests calls at c=$concurrency${STREAM:+ (streamed)}${NATS_URL:+, JetStream sink $NATS_URL}"
"$bin/aigw-bench" load --target "127.0.0.1:$api_port" --requests "$requests" \
  --concurrency "$concurrency" "${stream[@]}"
sinks="$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$admin_port/admin/v1/records/sinks" || true)"
echo "== shed and lost: $sinks"
if [ -n "${NATS_URL:-}" ]; then
  for _ in $(seq 300); do
    sinks="$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$admin_port/admin/v1/records/sinks")"
    python3 -c 'import json,sys; s=json.loads(sys.argv[1])["sinks"][0]; sys.exit(0 if s["lag_records"]==0 else 1)' "$sinks" && break
    sleep 0.1
  done
  echo "== the sink after the load: $sinks"
fi

kill -TERM "$aigw"
wait "$aigw" || true
records="$work/data/records"
lines="$("$bin/aigw" records export --data-dir "$work/data" --format jsonl | wc -lc)"
python3 - "$lines" "$records" "$requests" <<'EOF'
import os, sys
count, text_bytes = map(int, sys.argv[1].split())
records, requests = sys.argv[2], int(sys.argv[3])
# A segment is named by the sequence number of its first record; closed ones are .jsonl.zst.
segments = sorted(f for f in os.listdir(records) if f.endswith((".jsonl", ".jsonl.zst")))
closed = [f for f in segments if f.endswith(".zst")]
print(f"== records: {count} of {requests} calls")
print(f"   as JSON lines: {text_bytes / max(count, 1):,.0f} bytes per call")
if closed:
    in_closed = int(segments[len(closed)].split(".")[0]) if len(segments) > len(closed) else count
    size = sum(os.path.getsize(os.path.join(records, f)) for f in closed)
    print(f"   closed segments (zstd): {size / max(in_closed, 1):,.0f} bytes per call ({in_closed} records)")
EOF
ls -la "$records"
