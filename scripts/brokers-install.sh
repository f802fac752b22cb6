#!/usr/bin/env bash
# brokers-install.sh: puts on this machine what scripts/kafka-up.sh and scripts/nats-up.sh need, for
# the integration tests that ship request records to Kafka and NATS JetStream. Idempotent: each
# check costs milliseconds once things are there. Installs with apt-get only when something is
# missing, and that needs root (CI and the developers' machines run as root).
#
#   brokers-install.sh kafka   Java 17+, mvn and unzip (apt-get: openjdk-17-jre-headless, maven, unzip);
#                              prints the path of the Java 17+ to use on stdout
#   brokers-install.sh nats    a nats-server binary; prints its path on stdout (see below)
#   brokers-install.sh all     both (the default)
#
# nats-server, in this order:
#   1. $NATS_SERVER, if set (an executable);
#   2. the one built before: $NATS_BIN/$NATS_VERSION/nats-server (NATS_BIN /tmp/nats-bin, NATS_VERSION v2.15.3);
#   3. `go install github.com/nats-io/nats-server/v2@$NATS_VERSION` from the Go module proxy, when a Go
#      toolchain new enough for it is here (go on PATH or /usr/local/go/bin/go; v2.15.3 needs Go 1.26);
#      GOTOOLCHAIN=local: it never downloads a toolchain;
#   4. a nats-server already on PATH;
#   5. Debian's package nats-server (apt-get; 2.9.10 on bookworm: older, JetStream works).
set -euo pipefail

NATS_VERSION="${NATS_VERSION:-v2.15.3}"
NATS_BIN="${NATS_BIN:-/tmp/nats-bin}"

die() { echo "brokers-install: error: $*" >&2; exit 1; }
say() { echo "brokers-install: $*" >&2; }

APT_UPDATED=""
apt_update() {
  command -v apt-get >/dev/null || die "need to install $* but there is no apt-get here"
  ((EUID == 0)) || die "need to install $* with apt-get, as root (or install them yourself)"
  [[ -n "$APT_UPDATED" ]] && return 0
  say "apt-get update"
  apt-get update -qq >&2 || die "apt-get update failed"
  APT_UPDATED=1
}
apt_install() {
  apt_update "$@"
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
    die "apt-get install $* failed"
}

# Has apt a candidate for this package? (Needs the lists: only called after an update.)
apt_has() { [[ "$(apt-cache policy "$1" 2>/dev/null)" == *"Candidate: "[0-9]* ]]; }

java_major() { "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print v[1]; exit}'; }

# Prints a Java 17+ on stdout: $JAVA, then java on PATH, then the JVMs Debian put in /usr/lib/jvm.
find_java() {
  local j m
  for j in "${JAVA:-}" "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [[ -n "$j" && -x "$j" ]] || continue
    m="$(java_major "$j" || true)"
    [[ "$m" =~ ^[0-9]+$ ]] && ((m >= 17)) && { echo "$j"; return 0; }
  done
  return 1
}

install_kafka() {
  local need=() pkg
  if ! find_java >/dev/null; then need+=(java); fi
  command -v mvn >/dev/null || need+=(maven)
  command -v unzip >/dev/null || need+=(unzip)
  ((${#need[@]} == 0)) && { find_java; return 0; }
  if [[ " ${need[*]} " == *" java "* ]]; then
    apt_update java # apt_has reads the lists
    pkg=default-jre-headless # 17 on bookworm, 21 on trixie
    apt_has openjdk-17-jre-headless && pkg=openjdk-17-jre-headless
    need=("${need[@]/java/$pkg}")
  fi
  apt_install "${need[@]}"
  find_java || die "no Java 17+ after installing ${need[*]}"
}

# Prints the minimal Go version a module's go.mod asks for (e.g. 1.26.0), from the module proxy.
go_needs() {
  local gomod
  gomod="$(GOTOOLCHAIN=local "$1" mod download -json "github.com/nats-io/nats-server/v2@$NATS_VERSION" 2>/dev/null |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] && awk '$1 == "go" {print $2; exit}' "$gomod"
}

# Is Go version $1 (1.26.8) at least $2 (1.26.0)?
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

install_nats() {
  local bin="$NATS_BIN/$NATS_VERSION/nats-server" go have want t0
  if [[ -n "${NATS_SERVER:-}" ]]; then
    [[ -x "$NATS_SERVER" ]] || die "NATS_SERVER=$NATS_SERVER is not an executable"
    echo "$NATS_SERVER"; return 0
  fi
  [[ -x "$bin" ]] && { echo "$bin"; return 0; }
  for go in "$(command -v go || true)" /usr/local/go/bin/go; do
    [[ -n "$go" && -x "$go" ]] || continue
    have="$(GOTOOLCHAIN=local "$go" env GOVERSION 2>/dev/null)" && have="${have#go}" || continue
    want="$(go_needs "$go" || true)"
    if [[ -z "$want" ]]; then say "$go could not read nats-server $NATS_VERSION's go.mod from the module proxy"; continue; fi
    if ! version_ge "$have" "$want"; then say "$go is $have; nats-server $NATS_VERSION needs Go $want"; continue; fi
    say "building nats-server $NATS_VERSION with $go ($have) into ${bin%/*} (first time only)"
    t0=$SECONDS
    mkdir -p "${bin%/*}"
    GOTOOLCHAIN=local GOBIN="${bin%/*}" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
      "$go" install "github.com/nats-io/nats-server/v2@$NATS_VERSION" >&2 || die "go install nats-server $NATS_VERSION failed"
    say "built nats-server in $((SECONDS - t0)) s"
    echo "$bin"; return 0
  done
  # Debian's package puts it in /usr/sbin, which a non-login PATH may lack.
  for bin in "$(command -v nats-server || true)" /usr/sbin/nats-server; do [[ -x "$bin" ]] && { echo "$bin"; return 0; }; done
  apt_install nats-server
  for bin in "$(command -v nats-server || true)" /usr/sbin/nats-server; do [[ -x "$bin" ]] && { echo "$bin"; return 0; }; done
  die "no nats-server after apt-get install nats-server"
}

case "${1:-all}" in
kafka) install_kafka ;;
nats) install_nats ;;
all) install_kafka && install_nats ;;
*) sed -n '2,18s/^# \{0,1\}//p' "$0" >&2 && exit 2 ;;
esac
