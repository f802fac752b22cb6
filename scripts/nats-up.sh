#!/usr/bin/env bash
# nats-up.sh: a throwaway single-node NATS server with JetStream on 127.0.0.1, for integration tests.
# The server binary comes from scripts/brokers-install.sh nats (built once with `go install` from the
# Go module proxy, or Debian's package where no recent Go is here).
#
#   nats-up.sh start [PORT]   start the server, or report the one running; prints host:port
#   nats-up.sh stop [PORT]    stop it, by its recorded PID only
#   nats-up.sh info [PORT]    print JetStream's account info (the $JS.API.INFO reply, JSON)
#   nats-up.sh smoke [PORT]   create a file stream, publish one message with an ack, read it back
#                             by sequence, delete the stream; exit 0 when all of that worked
#
# PORT is 14222-14229 (default 14222). Config, JetStream store (fresh at each start), PID and
# server.log live in /tmp/nats-PORT. Env: NATS_SERVER (a binary to use), NATS_VERSION (v2.15.3),
# NATS_BIN (/tmp/nats-bin), NATS_START_TIMEOUT (s, 30), NATS_JS_MAX_MEM (256MB), NATS_JS_MAX_FILE (2GB).
#
# No client tool is needed: readiness, info and smoke speak the NATS text protocol over bash's
# /dev/tcp, and "ready" means JetStream answered an API request.
set -euo pipefail
export LC_ALL=C # ${#s} counts bytes, as the protocol's sizes do

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

die() { echo "nats-up: error: $*" >&2; exit 1; }
say() { echo "nats-up: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

set_port() {
  PORT="${1:-14222}"
  if ! [[ "$PORT" =~ ^[0-9]+$ ]] || ((PORT < 14222 || PORT > 14229)); then
    die "PORT must be 14222-14229, got '$PORT'"
  fi
  DIR="/tmp/nats-$PORT" PIDFILE="/tmp/nats-$PORT/server.pid" HP="127.0.0.1:$PORT"
}

# The PID of our server on this port, if alive; its command line is checked, so a reused PID or a
# zombie is never taken for ours.
server_pid() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && return 1
  [[ "$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null)" == *"-c $DIR/nats.conf "* ]] && echo "$pid"
}

# One request-reply over a fresh connection: prints the reply's payload. Args: SUBJECT PAYLOAD [TIMEOUT].
request() {
  local subj="$1" body="$2" t="${3:-5}" line n payload
  exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
  IFS= read -r -t "$t" line <&3 && [[ "$line" == INFO* ]] || { exec 3<&-; return 1; }
  printf 'CONNECT {"verbose":false,"pedantic":false,"name":"nats-up"}\r\nSUB _INBOX.nats-up 1\r\nPUB %s _INBOX.nats-up %d\r\n%s\r\n' \
    "$subj" "${#body}" "$body" >&3
  while IFS= read -r -t "$t" line <&3; do
    line="${line%$'\r'}"
    case "$line" in
    PING) printf 'PONG\r\n' >&3 ;;
    MSG\ *)
      n="${line##* }"
      IFS= read -r -N "$n" -t "$t" payload <&3 || break
      exec 3<&-
      printf '%s\n' "$payload"
      return 0
      ;;
    -ERR*) say "server: $line"; break ;;
    esac
  done
  exec 3<&-
  return 1
}

# Prints JetStream's account info; fails unless JetStream answered without an error.
js_info() {
  local r
  r="$(request '$JS.API.INFO' '' "${1:-5}" 2>/dev/null)" || return 1
  [[ "$r" == *'"type":"io.nats.jetstream.api.v1.account_info_response"'* && "$r" != *'"error":'* ]] || return 1
  echo "$r"
}

cmd_start() {
  local pid bin deadline
  if pid="$(server_pid)"; then say "already running on $HP (pid $pid, log $DIR/server.log)"; echo "$HP"; return 0; fi
  listening "$PORT" && die "port $PORT is already in use by another process"
  if [[ -x "$HERE/brokers-install.sh" ]]; then
    bin="$("$HERE/brokers-install.sh" nats)" || die "could not get a nats-server (scripts/brokers-install.sh nats)"
  else
    bin="${NATS_SERVER:-$(command -v nats-server || true)}"
    [[ -x "$bin" ]] || die "no nats-server (set NATS_SERVER, or put scripts/brokers-install.sh beside this script)"
  fi
  mkdir -p "$DIR" && rm -rf "$DIR/js" "$PIDFILE"
  if [[ -f "$DIR/server.log" ]]; then mv -f "$DIR/server.log" "$DIR/server.log.prev"; fi
  cat >"$DIR/nats.conf" <<EOF
server_name: nats-up-$PORT
jetstream {
  max_memory_store: ${NATS_JS_MAX_MEM:-256MB}
  max_file_store: ${NATS_JS_MAX_FILE:-2GB}
}
EOF
  nohup "$bin" -c "$DIR/nats.conf" -a 127.0.0.1 -p "$PORT" -js -sd "$DIR/js" >"$DIR/server.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  echo "$bin" >"$DIR/binary"
  deadline=$((SECONDS + ${NATS_START_TIMEOUT:-30}))
  until listening "$PORT" && js_info 2 >/dev/null; do
    if ! server_pid >/dev/null || ((SECONDS >= deadline)); then
      tail -n 25 "$DIR/server.log" >&2 || true
      kill "$pid" 2>/dev/null || true
      rm -f "$PIDFILE"
      die "nats-server on port $PORT did not become ready (log: $DIR/server.log)"
    fi
    sleep 0.1
  done
  say "nats-server $("$bin" --version 2>/dev/null | awk '{print $NF}') with JetStream ready on $HP (pid $pid, store $DIR/js, log $DIR/server.log)"
  echo "$HP"
}

gone() { ! kill -0 "$1" 2>/dev/null || grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null; } # exited, or a zombie

cmd_stop() {
  local pid i
  if ! pid="$(server_pid)"; then rm -f "$PIDFILE"; say "no nats-server of ours running on port $PORT"; return 0; fi
  kill -TERM "$pid" # nats-server shuts down cleanly on SIGTERM (JetStream flushes its store)
  for ((i = 0; i < 120; i++)); do gone "$pid" && break; sleep 0.25; done
  if ! gone "$pid"; then say "pid $pid still up after 30s: SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$PIDFILE"
  say "stopped nats-server on port $PORT (pid $pid)"
}

cmd_smoke() {
  local s=NATS_UP_SMOKE r seq data want
  want="nats-up smoke $(date +%s%N)"
  r="$(request "\$JS.API.STREAM.CREATE.$s" "{\"name\":\"$s\",\"subjects\":[\"nats-up.smoke.>\"],\"storage\":\"file\",\"num_replicas\":1}")" ||
    die "no reply to STREAM.CREATE"
  [[ "$r" == *'"error":'* ]] && die "STREAM.CREATE: $r"
  say "stream $s created"
  r="$(request nats-up.smoke.1 "$want")" || die "no ack for the publish"
  [[ "$r" =~ \"seq\":([0-9]+) && "$r" != *'"error":'* ]] || die "publish: $r"
  seq="${BASH_REMATCH[1]}"
  say "published, ack $r"
  r="$(request "\$JS.API.STREAM.MSG.GET.$s" "{\"seq\":$seq}")" || die "no reply to STREAM.MSG.GET"
  [[ "$r" =~ \"data\":\"([^\"]*)\" ]] || die "STREAM.MSG.GET: $r"
  data="$(printf '%s' "${BASH_REMATCH[1]}" | base64 -d)"
  [[ "$data" == "$want" ]] || die "read back '$data', published '$want'"
  say "read back seq $seq: '$data'"
  r="$(request "\$JS.API.STREAM.DELETE.$s" '')" && [[ "$r" == *'"success":true'* ]] || die "STREAM.DELETE: $r"
  say "stream $s deleted: JetStream works on $HP"
}

cmd="${1:-}"
case "$cmd" in
start | stop) set_port "${2:-}" && "cmd_$cmd" ;;
info | smoke)
  set_port "${2:-}"
  server_pid >/dev/null || die "no nats-server of ours on port $PORT (run: nats-up.sh start $PORT)"
  if [[ "$cmd" == info ]]; then js_info || die "JetStream did not answer \$JS.API.INFO on $HP"; else cmd_smoke; fi
  ;;
*) sed -n '2,18s/^# \{0,1\}//p' "$0" >&2 && exit 2 ;;
esac
