#!/usr/bin/env bash
# Starts a 3-node aigw cluster on this machine (nodes on 127.0.0.11, .12 and .13) in front of
# an aigw-mock upstream, and prints its status. `scripts/cluster-up.sh stop` stops it all.
# State and logs go to ./data/cluster (delete it to start from a new cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=data/cluster
bin=target/release

stop() {
  for pidfile in "$dir"/*.pid; do
    [ -f "$pidfile" ] || continue
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = stop ]; then stop; echo "stopped"; exit 0; fi

cargo build --release --quiet --bin aigw -p aigw
cargo build --release --quiet --bin aigw-mock -p aigw-jepsen
mkdir -p "$dir"
stop

export AIGW_ADMIN_TOKEN=${AIGW_ADMIN_TOKEN:-admin-token-change-me}
export AIGW_DEMO_KEY=${AIGW_DEMO_KEY:-sk-cluster-demo-key}

"$bin/aigw-mock" --listen 127.0.0.1:9001 --chunks 8 --chunk-interval-ms 20 >"$dir/mock.log" 2>&1 &
echo $! >"$dir/mock.pid"

for id in 1 2 3; do
  cat >"$dir/node$id.toml" <<TOML
[node]
id = $id
api_listen = "127.0.0.1$id:8080"
admin_listen = "127.0.0.1$id:8081"
cluster_listen = "127.0.0.1$id:7001"
data_dir = "$dir/node$id"

[cluster]
name = "local"
initial_members = ["1@127.0.0.11:7001", "2@127.0.0.12:7001", "3@127.0.0.13:7001"]

[admin]
token = "\${AIGW_ADMIN_TOKEN}"

[[bootstrap.upstreams]]
id = "mock"
kind = "openai"
base_url = "http://127.0.0.1:9001/v1"

[[bootstrap.models]]
name = "chat-default"
targets = [{ upstream = "mock", model = "mock-model" }]

[[bootstrap.keys]]
name = "demo"
secret = "\${AIGW_DEMO_KEY}"
TOML
  "$bin/aigw" serve --config "$dir/node$id.toml" >"$dir/node$id.log" 2>&1 &
  echo $! >"$dir/node$id.pid"
done

# Up once every node is live in gossip (or after 10 s, with what there is).
for _ in $(seq 1 100); do
  if [ "$("$bin/aigw" cluster status --config "$dir/node1.toml" 2>/dev/null | grep -c ' voter .*true')" = 3 ]; then break; fi
  sleep 0.1
done
"$bin/aigw" cluster status --config "$dir/node1.toml"
cat <<MSG

Three nodes are up (logs in $dir/node*.log). Any node serves the API:
  curl -s http://127.0.0.12:8080/v1/chat/completions -H "Authorization: Bearer $AIGW_DEMO_KEY" \\
    -H "Content-Type: application/json" -d '{"model":"chat-default","messages":[{"role":"user","content":"Hi"}]}'
Create a key through node 3 and use it on node 1:
  curl -s -X POST http://127.0.0.13:8081/admin/v1/keys -H "Authorization: Bearer $AIGW_ADMIN_TOKEN" -d '{"name":"team-a"}'
Kill a node (kill \$(cat $dir/node2.pid)) and the others keep serving and accepting admin writes.
Stop everything: scripts/cluster-up.sh stop
MSG
