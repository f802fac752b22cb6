#!/usr/bin/env bash
# Instructions per request of aigw (and of the bare proxy, for the floor) under callgrind:
# deterministic, so it compares changes on a noisy machine where wall-clock numbers cannot.
#
#   cargo build --release --workspace --bins
#   bench/profile.sh [REQUESTS]          # default 2000; writes bench/profile/
#   AIGW=/path/to/aigw bench/profile.sh  # profile another aigw build (before/after a change)
#
# Collection is off while the process starts and warms up (pools, first-touch allocations),
# on for exactly REQUESTS non-streaming chat completions at concurrency 1, then the process is
# stopped. Needs valgrind (apt-get install valgrind).
set -euo pipefail

requests="${1:-2000}"
warmup=200
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$root/target/release"
out="$root/bench/profile"
work="$(mktemp -d /tmp/aigw-profile.XXXXXX)"
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
for b in aigw aigw-mock aigw-bench; do
  [ -x "$bin/$b" ] || { echo "$bin/$b missing: cargo build --release --workspace --bins" >&2; exit 1; }
done

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

mock_port="$(free_port)"
"$bin/aigw-mock" --listen "127.0.0.1:$mock_port" >/dev/null 2>&1 &
pids+=($!)
wait_port "$mock_port"

# profile NAME PORT COMMAND...: runs COMMAND under callgrind, drives it, prints Ir per request.
profile() {
  local name="$1" port="$2"; shift 2
  local file="$out/callgrind.$name.out"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$file" "$@" \
    >"$work/$name.stdout" 2>"$work/$name.stderr" &
  local pid=$!
  pids+=("$pid")
  wait_port "$port"
  "$bin/aigw-bench" load --target "127.0.0.1:$port" --requests "$warmup" >/dev/null 2>&1
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "$bin/aigw-bench" load --target "127.0.0.1:$port" --requests "$requests" 2>&1 | sed 's/^ *//'
  callgrind_control -i off "$pid" >/dev/null 2>&1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  callgrind_annotate --inclusive=yes "$file" >"$work/$name.inclusive.txt" 2>/dev/null
  callgrind_annotate "$file" >"$work/$name.self.txt" 2>/dev/null
  head -80 "$work/$name.inclusive.txt" >"$out/$name.inclusive.txt"
  head -60 "$work/$name.self.txt" >"$out/$name.self.txt"
  local total
  total="$(awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}' "$work/$name.self.txt")"
  echo "$name: $total instructions for $requests requests = $((total / requests)) per request"
}

aigw_port="$(free_port)"
"$bin/aigw-bench" config --listen "127.0.0.1:$aigw_port" --mock "127.0.0.1:$mock_port" \
  --data-dir "$work/aigw-data" >"$work/aigw.toml"
profile aigw "$aigw_port" "${AIGW:-$bin/aigw}" serve --config "$work/aigw.toml"

bare_port="$(free_port)"
profile bare "$bare_port" "$bin/aigw-bench" bare-proxy --listen "127.0.0.1:$bare_port" --upstream "127.0.0.1:$mock_port"

echo "annotations in $out/{aigw,bare}.{inclusive,self}.txt"
