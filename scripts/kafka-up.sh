#!/usr/bin/env bash
# kafka-up.sh: a throwaway single-node Apache Kafka broker (KRaft, no ZooKeeper) on 127.0.0.1, for
# integration tests. Jars come from Maven Central through mvn (no tarball) and are cached.
#
#   kafka-up.sh start [PORT]               start the broker, or report the one running; prints host:port
#   kafka-up.sh stop [PORT]                stop it, by its recorded PID only
#   kafka-up.sh topic NAME [PORT]          create a topic (ok if it exists)
#   kafka-up.sh produce NAME [PORT]        send stdin to the topic, one message per line
#   kafka-up.sh consume NAME [PORT] [MAX]  print up to MAX (100) messages from the beginning, then exit
#
# PORT is 19092-19095 (default 19092); the KRaft controller listens on PORT+4. Config, data, PID and
# broker.log live in /tmp/kafka-PORT. Env: KAFKA_JARS (cache, /tmp/kafka-jars), KAFKA_VERSION (4.1.1),
# KAFKA_HEAP (-Xmx256m -Xms64m), KAFKA_JVM_OPTS (serial GC, C1 only, capped code cache and metaspace),
# JAVA (a Java 17+), KAFKA_START_TIMEOUT (s, 90),
# KAFKA_CONSUME_TIMEOUT_MS (10000: consume gives up after this long without a new message),
# KAFKA_KEEP_DATA (set: start on the data the last start left, instead of a fresh log dir).
#
# start first runs scripts/brokers-install.sh kafka (beside this script), which apt-gets Java 17,
# maven and unzip when missing (as root). Needs Maven Central for the first start; on a machine that
# cannot reach it, it stops with a clear error unless $KAFKA_JARS is pre-filled.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

VERSION="${KAFKA_VERSION:-4.1.1}"
JARS="${KAFKA_JARS:-/tmp/kafka-jars}/$VERSION" # one folder per version: mixed versions break the classpath
JAVA="${JAVA:-}" # set in start (brokers-install.sh finds or installs a Java 17+); tools reuse the broker's

die() { echo "kafka-up: error: $*" >&2; exit 1; }
say() { echo "kafka-up: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

set_port() {
  PORT="${1:-19092}"
  if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 19092 || PORT > 19095)); then
    die "PORT must be 19092-19095 (PORT+4 is the controller's), got '$PORT'"
  fi
  CPORT=$((PORT + 4)) DIR="/tmp/kafka-$PORT" PIDFILE="/tmp/kafka-$PORT/broker.pid" BS="127.0.0.1:$PORT"
}

# The PID of our broker on this port, if alive; its command line is checked, so a reused PID or a
# zombie is never taken for ours.
broker_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ "$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" == *"kafka.Kafka $DIR/server.properties"* ]] && echo "$pid"
}

# Copies the runtime jars of kafka_2.13 (broker) and kafka-tools (CLI classes) into $JARS with mvn,
# unless they are there already, then records which classes this version uses (they moved over time).
fetch_jars() {
  [[ -f "$JARS/classes.env" ]] && return 0
  local work f st tp pr co
  work="$(mktemp -d)"
  mkdir -p "$JARS"
  if [[ ! -f "$JARS/kafka_2.13-$VERSION.jar" ]]; then
    command -v mvn >/dev/null || die "mvn not found (apt-get install -y maven)"
    local dep='<dependency><groupId>org.apache.kafka</groupId><artifactId>%s</artifactId><version>%s</version></dependency>'
    # shellcheck disable=SC2059
    printf "<project><modelVersion>4.0.0</modelVersion><groupId>local</groupId><artifactId>kafka-up</artifactId>
      <version>1</version><packaging>pom</packaging><dependencies>$dep$dep%s</dependencies></project>\n" \
      kafka_2.13 "$VERSION" kafka-tools "$VERSION" '<dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>' >"$work/pom.xml"
    say "fetching Apache Kafka $VERSION jars with mvn into $JARS (first start only)"
    if ! mvn -B -q -U -f "$work/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DoutputDirectory="$JARS" -DincludeScope=runtime >"$work/mvn.log" 2>&1; then
      sed 's/\x1b\[[0-9;]*m//g' "$work/mvn.log" | grep -m1 '^\[ERROR\] .' | cut -c1-300 >&2 || true
      die "mvn could not fetch the jars (log: $work/mvn.log). Maven Central must be reachable; or copy a filled $JARS here"
    fi
    [[ -f "$JARS/kafka_2.13-$VERSION.jar" ]] || die "no kafka_2.13-$VERSION.jar after mvn (log: $work/mvn.log)"
  fi
  for f in "$JARS"/kafka*.jar; do unzip -Z1 "$f" 2>/dev/null || jar tf "$f"; done >"$work/classes"
  pick() {
    local c
    for c in "$@"; do grep -qx "${c//.//}.class" "$work/classes" && { echo "$c"; return 0; }; done
    die "none of $* in the jars of Kafka $VERSION"
  }
  st="$(pick kafka.tools.StorageTool org.apache.kafka.tools.StorageTool)"
  tp="$(pick org.apache.kafka.tools.TopicCommand kafka.admin.TopicCommand)"
  pr="$(pick org.apache.kafka.tools.ConsoleProducer kafka.tools.ConsoleProducer)"
  co="$(pick org.apache.kafka.tools.consumer.ConsoleConsumer kafka.tools.ConsoleConsumer)"
  # The broker logs INFO to stdout (into broker.log); the tools log WARN+ to stderr, so that
  # consume's stdout carries the messages only.
  printf '%s\n' appender.o.type=Console appender.o.name=O appender.o.layout.type=PatternLayout \
    'appender.o.layout.pattern=[%d] %p %m (%c)%n' rootLogger.level=INFO rootLogger.appenderRef.o.ref=O >"$JARS/log4j2-broker.properties"
  sed -e 's/=INFO/=WARN/' -e '$a appender.o.target=SYSTEM_ERR' "$JARS/log4j2-broker.properties" >"$JARS/log4j2-tools.properties"
  printf 'STORAGE=%s\nTOPIC=%s\nPRODUCER=%s\nCONSUMER=%s\n' "$st" "$tp" "$pr" "$co" >"$JARS/classes.env"
  rm -rf "$work"
}

# shellcheck disable=SC1091
load_jars() {
  [[ -f "$JARS/classes.env" ]] || die "no Kafka $VERSION jars in $JARS (run: kafka-up.sh start)"
  . "$JARS/classes.env"
  [[ -n "$JAVA" ]] || JAVA="$(cat "$DIR/java" 2>/dev/null || echo java)"
}

# Runs one of Kafka's command-line classes in a small JVM that starts fast (C1 only, serial GC).
tool() {
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$JARS/log4j2-tools.properties" -cp "$JARS/*" "$@"
}

cmd_start() {
  local pid p v deadline next_tool id
  if pid="$(broker_pid)"; then say "already running on $BS (pid $pid, log $DIR/broker.log)"; echo "$BS"; return 0; fi
  for p in "$PORT" "$CPORT"; do listening "$p" && die "port $p is already in use by another process"; done
  if [[ -x "$HERE/brokers-install.sh" ]]; then
    JAVA="$("$HERE/brokers-install.sh" kafka)" || die "could not install Java 17+, maven and unzip (scripts/brokers-install.sh kafka)"
  fi
  JAVA="${JAVA:-java}"
  v="$("$JAVA" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')" || true
  if ! [[ "${v%%.*}" =~ ^[0-9]+$ ]] || ((${v%%.*} < 17)); then die "Kafka $VERSION needs Java 17+; '$JAVA' is '${v:-missing}'"; fi
  fetch_jars
  load_jars
  mkdir -p "$DIR" && rm -f "$PIDFILE" "$DIR/ready.log"
  # KAFKA_KEEP_DATA=1 restarts on the data of the last start (a broker restart in a test); else fresh.
  format=1
  if [[ -n "${KAFKA_KEEP_DATA:-}" && -f "$DIR/data/meta.properties" ]]; then format=""; else rm -rf "$DIR/data"; fi
  echo "$JAVA" >"$DIR/java"
  if [[ -f "$DIR/broker.log" ]]; then mv -f "$DIR/broker.log" "$DIR/broker.log.prev"; fi
  cat >"$DIR/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
num.network.threads=2
num.io.threads=2
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Small for tests: the log cleaner's dedupe buffer is 128 MiB of heap by default.
log.cleaner.dedupe.buffer.size=8388608
log.cleaner.threads=1
background.threads=2
num.recovery.threads.per.data.dir=1
group.coordinator.threads=1
EOF
  # A fresh log dir each start, under a random cluster id (16 random bytes, base64url, as Kafka's own).
  # Like Kafka's Uuid.randomUuid, never one that starts with '-': the tool would take it for an option
  # (1 start in 64 failed so).
  if [[ -n "$format" ]]; then
    while id="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')" && [[ "$id" == -* ]]; do :; done
    tool "$STORAGE" format -t "$id" \
      -c "$DIR/server.properties" >"$DIR/format.log" 2>&1 || { cat "$DIR/format.log" >&2; die "formatting $DIR/data failed"; }
  fi
  # shellcheck disable=SC2086 # KAFKA_HEAP holds several JVM flags
  # Small on purpose (CI has 2 cores and runs cargo beside it): about 160 MiB RSS when ready.
  nohup "$JAVA" ${KAFKA_HEAP:--Xmx256m -Xms64m} \
    ${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=48m -XX:MaxMetaspaceSize=128m} \
    -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$JARS/log4j2-broker.properties" -cp "$JARS/*" \
    kafka.Kafka "$DIR/server.properties" >"$DIR/broker.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-90})) next_tool=$((SECONDS + 20))
  # Ready means: the port accepts connections and the broker logged that it started (it is
  # unfenced and serves requests then). Should another version word that line differently, a topic
  # created through the port counts too: tried every 5 s after 20 s, as each try starts a JVM.
  until listening "$PORT" && { grep -q '\] Kafka Server started' "$DIR/broker.log" ||
    { ((SECONDS >= next_tool)) && next_tool=$((SECONDS + 5)) && tool "$TOPIC" --bootstrap-server "$BS" --create \
      --if-not-exists --topic kafka-up-ready --partitions 1 --replication-factor 1 >>"$DIR/ready.log" 2>&1; }; }; do
    if ! broker_pid >/dev/null || ((SECONDS >= deadline)); then
      tail -n 25 "$DIR/broker.log" >&2 || true
      kill "$pid" 2>/dev/null || true
      rm -f "$PIDFILE"
      die "the broker on port $PORT did not become ready (log: $DIR/broker.log)"
    fi
    sleep 0.2
  done
  say "Kafka $VERSION ready on $BS (pid $pid, log $DIR/broker.log)"
  echo "$BS"
}

gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; } # exited, or a zombie

cmd_stop() {
  local pid i
  if ! pid="$(broker_pid)"; then rm -f "$PIDFILE"; say "no broker of ours running on port $PORT"; return 0; fi
  kill -TERM "$pid" # Kafka shuts down cleanly on SIGTERM
  for ((i = 0; i < 120; i++)); do gone "$pid" && break; sleep 0.25; done
  if ! gone "$pid"; then say "pid $pid still up after 30s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  say "stopped the broker on port $PORT (pid $pid)"
}

cmd="${1:-}"
case "$cmd" in
start | stop) set_port "${2:-}" && "cmd_$cmd" ;;
topic | produce | consume)
  [[ -n "${2:-}" ]] || die "usage: kafka-up.sh $cmd NAME [PORT]$([[ $cmd == consume ]] && echo ' [MAX]')"
  set_port "${3:-}"
  broker_pid >/dev/null || die "no broker of ours on port $PORT (run: kafka-up.sh start $PORT)"
  load_jars
  case "$cmd" in
  topic) tool "$TOPIC" --bootstrap-server "$BS" --create --if-not-exists --topic "$2" --partitions 1 --replication-factor 1 ;;
  produce) tool "$PRODUCER" --bootstrap-server "$BS" --topic "$2" ;;
  consume)
    [[ "${4:-100}" =~ ^[0-9]+$ ]] || die "MAX must be a number, got '$4'"
    tool "$CONSUMER" --bootstrap-server "$BS" --topic "$2" --from-beginning \
      --max-messages "${4:-100}" --timeout-ms "${KAFKA_CONSUME_TIMEOUT_MS:-10000}"
    ;;
  esac
  ;;
*) sed -n '2,19s/^# \{0,1\}//p' "$0" >&2 && exit 2 ;;
esac
