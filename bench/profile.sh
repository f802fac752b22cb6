#!/usr/bin/env bash
# Instructions per request of aigw (and of the bare proxy, for the floor) under callgrind:
# deterministic, so it compares changes on a noisy machine where wall-clock numbers cannot.
#
#   cargo build --release --workspace --bins
#   bench/profile.sh [REQUESTS]          # default 2000; writes bench/profile/
#   AIGW=/path/to/aigw bench/profile.sh  # profile another aigw build (before/after a change)
#   BIN_DIR=DIR OUT_DIR=DIR bench/profile.sh   # binaries from another target dir, output elsewhere
#   STREAM=1 bench/profile.sh [REQUESTS] # streamed completions instead: 16 chunks 1 ms apart
#
# Collection is off while the process starts and warms up (pools, first-touch allocations),
# on for exactly REQUESTS non-streaming chat completions at concurrency 1, then the process is
# stopped. Needs valgrind (apt-get install valgrind).
set -euo pipefail

requests="${1:-2000}"
warmup=200
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN_DIR:-$root/target/release}"
out="${OUT_DIR:-$root/bench/profile}"
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
# Waits until PID has used under 20 ms of CPU in 500 ms: start-up work on other threads (the
# tokenizer's vocabulary load, Raft's first entries) must not land in the measured window.
wait_idle() {
  local before after
  for _ in $(seq 1 240); do
    before="$(awk '{print $14 + $15}' "/proc/$1/stat")"
    sleep 0.5
    after="$(awk '{print $14 + $15}' "/proc/$1/stat")"
    [ $((after - before)) -lt 2 ] && return 0
  done
  echo "process $1 never went idle" >&2; return 1
}
wait_port() { for _ in $(seq 1 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

load_flags=()
mock_flags=()
if [ -n "${STREAM:-}" ]; then
  load_flags=(--stream)
  mock_flags=(--chunks 16 --chunk-interval-ms 1)
fi

mock_port="$(free_port)"
"$bin/aigw-mock" --listen "127.0.0.1:$mock_port" "${mock_flags[@]}" >/dev/null 2>&1 &
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
  "$bin/aigw-bench" load --target "127.0.0.1:$port" --requests "$warmup" "${load_flags[@]}" >/dev/null 2>&1
  wait_idle "$pid"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  "$bin/aigw-bench" load --target "127.0.0.1:$port" --requests "$requests" "${load_flags[@]}" 2>&1 | sed 's/^ *//'
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
