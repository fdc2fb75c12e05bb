#!/usr/bin/env bash
# A throwaway single-replica OpenStack Swift on 127.0.0.1 for the tests: tempauth, s3api, tempurl and SLO.
#
#   swift.sh start        render configs and rings into $UPDOWN_RUN_DIR/swift, start memcached, the account,
#                         container and object servers and the proxy; the last line printed is the proxy URL
#   swift.sh stop         stop what start started, by PID
#   swift.sh url          the proxy URL
#   swift.sh env          the variables the tests read (UPDOWN_TEST_SWIFT_*), as shell assignments
#   swift.sh proxy PORT   run one more proxy in the foreground on PORT, sharing the same storage servers
#                         (exec: its PID is the caller's child, so a test can kill it mid-transfer)
#
# Installs nothing: the Debian packages come from scripts/apt-packages.txt. Ports: UPDOWN_SWIFT_PORT (proxy,
# default 18080), storage servers on UPDOWN_SWIFT_PORT-8070..-8068, memcached on UPDOWN_SWIFT_MEMCACHED_PORT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
RUN_DIR=${UPDOWN_RUN_DIR:-${TMPDIR:-/tmp}/updown-run}
S=$RUN_DIR/swift
PIDS=$S/run
ETC=$S/etc
PORT=${UPDOWN_SWIFT_PORT:-18080}
OBJECT_PORT=$((PORT - 8070))
CONTAINER_PORT=$((PORT - 8069))
ACCOUNT_PORT=$((PORT - 8068))
MEMCACHED_PORT=${UPDOWN_SWIFT_MEMCACHED_PORT:-11311}
USER_NAME=$(id -un)
URL=http://127.0.0.1:$PORT
# tempauth account:user and key (see swift/proxy-server.conf.in)
SWIFT_USER=test:tester
SWIFT_KEY=testing

render() {  # render TEMPLATE OUT KIND PORT
  sed -e "s|@PORT@|$4|g" -e "s|@KIND@|$3|g" -e "s|@USER@|$USER_NAME|g" -e "s|@ETC@|$ETC|g" \
      -e "s|@DEVICES@|$S/devices|g" -e "s|@MEMCACHED_PORT@|$MEMCACHED_PORT|g" "$1" > "$2"
}

spawn() {  # spawn NAME COMMAND...: background a foreground server, PID in run/NAME.pid
  local name=$1; shift
  running "$name" && return 0
  "$@" >"$S/log/$name.log" 2>&1 &
  echo $! > "$S/run/$name.pid"
}

wait_port() {  # wait_port PORT NAME
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    running "$2" || { echo "swift: $2 exited; log:" >&2; tail -20 "$S/log/$2.log" >&2; return 1; }
    sleep 0.1
  done
  echo "swift: $2 did not listen on port $1" >&2; return 1
}

setup() {
  for bin in swift-proxy-server swift-object-server swift-ring-builder memcached; do
    command -v "$bin" >/dev/null || { echo "swift: $bin is not installed (scripts/install-deps.sh)" >&2; exit 1; }
  done
  if [ ! -f /etc/swift/swift.conf ]; then
    # Swift reads the hash prefix/suffix and storage policies from this fixed path only.
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO install -D -m 644 "$HERE/swift/swift.conf" /etc/swift/swift.conf
  fi
  mkdir -p "$ETC" "$S/devices/sdb1" "$S/run" "$S/log"
  render "$HERE/swift/server.conf.in" "$ETC/object-server.conf" object "$OBJECT_PORT"
  render "$HERE/swift/server.conf.in" "$ETC/container-server.conf" container "$CONTAINER_PORT"
  render "$HERE/swift/server.conf.in" "$ETC/account-server.conf" account "$ACCOUNT_PORT"
  render "$HERE/swift/proxy-server.conf.in" "$ETC/proxy-server.conf" proxy "$PORT"
  if [ ! -f "$ETC/object.ring.gz" ]; then
    for ring in object:$OBJECT_PORT container:$CONTAINER_PORT account:$ACCOUNT_PORT; do
      name=${ring%%:*}; port=${ring##*:}
      (cd "$ETC" && swift-ring-builder "$name.builder" create 10 1 1 \
        && swift-ring-builder "$name.builder" add "r1z1-127.0.0.1:$port/sdb1" 100 \
        && swift-ring-builder "$name.builder" rebalance) >"$S/log/rings.log" 2>&1
    done
  fi
}

case "${1:-}" in
  start)
    setup
    spawn memcached memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64 -u "$USER_NAME"
    for kind in account container object; do
      spawn "$kind" "swift-$kind-server" "$ETC/$kind-server.conf" -v
    done
    wait_port "$MEMCACHED_PORT" memcached
    wait_port "$ACCOUNT_PORT" account; wait_port "$CONTAINER_PORT" container; wait_port "$OBJECT_PORT" object
    spawn proxy swift-proxy-server "$ETC/proxy-server.conf" -v
    wait_url "$URL/healthcheck" proxy "$S/log/proxy.log" && echo "$URL"
    ;;
  stop)
    stop_by_pid proxy object container account memcached
    ;;
  url)
    echo "$URL"
    ;;
  env)
    echo "UPDOWN_TEST_SWIFT_URL=$URL"
    echo "UPDOWN_TEST_SWIFT_USER=$SWIFT_USER"
    echo "UPDOWN_TEST_SWIFT_KEY=$SWIFT_KEY"
    echo "UPDOWN_TEST_SWIFT_SCRIPT=$HERE/swift.sh"
    ;;
  proxy)
    port=${2:?usage: $0 proxy PORT}
    [ -f "$ETC/object.ring.gz" ] || { echo "swift: not set up (run '$0 start' first)" >&2; exit 1; }
    render "$HERE/swift/proxy-server.conf.in" "$ETC/proxy-server-$port.conf" proxy "$port"
    exec swift-proxy-server "$ETC/proxy-server-$port.conf" -v
    ;;
  *) echo "usage: $0 start|stop|url|env|proxy PORT" >&2; exit 2 ;;
esac
