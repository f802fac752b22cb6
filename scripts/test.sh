#!/usr/bin/env bash
# The README's test command: sets up what the tests need on a fresh Debian machine (root),
# then runs every test: the Rust workspace and the official OpenAI SDK against real processes.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cargo >/dev/null || { echo "cargo is required (the machine's Rust toolchain)"; exit 1; }
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv python3-pip)
# The jepsen harness makes partitions with iptables.
command -v iptables >/dev/null || need_apt+=(iptables)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

# The records sink test ships to a real NATS JetStream server: $NATS_SERVER, the one
# scripts/brokers-install.sh built before, or one on PATH; else Debian's package (seconds, where
# building v2.15.3 with Go takes minutes: `scripts/brokers-install.sh nats` does that).
if [ -z "${NATS_SERVER:-}" ]; then
  for candidate in /tmp/nats-bin/v2.15.3/nats-server "$(command -v nats-server || true)" /usr/sbin/nats-server; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then NATS_SERVER="$candidate"; break; fi
  done
fi
if [ -z "${NATS_SERVER:-}" ]; then
  [ -n "${APT_UPDATED:-}" ] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server
  NATS_SERVER="$(command -v nats-server || echo /usr/sbin/nats-server)"
fi
export NATS_SERVER
echo "== nats-server: $NATS_SERVER ($("$NATS_SERVER" --version))"

# The records sink test produces to a real Kafka broker (KRaft, one node): scripts/kafka-up.sh
# installs Java 17 and maven when missing and fetches the broker's jars from Maven Central
# (cached). Started now, in the background, so the JVM's start overlaps the build; the test waits
# for it, stops it in the middle of its load and starts it again on its data.
export AIGW_TEST_KAFKA_PORT=19092
scripts/kafka-up.sh stop "$AIGW_TEST_KAFKA_PORT" >/dev/null 2>&1 || true
kafka_log="$(mktemp /tmp/aigw-kafka-up.XXXXXX)"
(scripts/kafka-up.sh start "$AIGW_TEST_KAFKA_PORT" >"$kafka_log" 2>&1 || echo "kafka-up.sh start failed" >>"$kafka_log") &
trap 'scripts/kafka-up.sh stop "$AIGW_TEST_KAFKA_PORT" >/dev/null 2>&1 || true' EXIT

target="${CARGO_TARGET_DIR:-$PWD/target}"
mkdir -p "$target"

echo "== cargo test (workspace)"
cargo build --workspace --bins --quiet
cargo test --workspace --quiet 2>&1 | tee "$target/cargo-test.log"
grep -q "test result:" "$target/cargo-test.log" || { echo "cargo ran no test"; exit 1; }
echo "== kafka-up.sh (for the records sink test):"; tail -n 3 "$kafka_log" || true

echo "== OpenAI Python SDK compatibility"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/sdk/requirements.txt
AIGW_BIN_DIR="$target/debug" .venv/bin/python -m pytest -q tests/sdk

echo "== jepsen: faults against a real 3-node cluster (CI profile)"
cargo build --release --quiet -p aigw --bin aigw -p aigw-jepsen --bins
"$target/release/aigw-jepsen" --profile ci --seed 7 --out "$target/jepsen"
