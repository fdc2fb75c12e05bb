#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on 127.0.0.1 for the tests: start | stop | url.
# Runs as the 'postgres' OS user when started by root (PostgreSQL refuses to run as root).
set -euo pipefail
RUN_DIR=${UPDOWN_RUN_DIR:-${TMPDIR:-/tmp}/updown-run}
PORT=${UPDOWN_PG_PORT:-15432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
DATA=$RUN_DIR/pg/data
SOCK=$RUN_DIR/pg/sock
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
  start)
    [ -n "$BIN" ] || { echo "postgresql is not installed" >&2; exit 1; }
    mkdir -p "$RUN_DIR"; chmod 755 "$RUN_DIR"
    install -d -m 700 "$DATA" "$SOCK"
    [ "$(id -u)" -ne 0 ] || chown -R postgres:postgres "$RUN_DIR/pg"
    if [ ! -f "$DATA/PG_VERSION" ]; then
      as_pg "$BIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$RUN_DIR/pg/initdb.log"
      cat >> "$DATA/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
    fi
    if as_pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
      echo "postgres already running"
    else
      as_pg "$BIN/pg_ctl" -D "$DATA" -l "$SOCK/server.log" -w -t 60 start >/dev/null
    fi
    echo "postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    [ -f "$DATA/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || true
    ;;
  url)
    echo "postgresql+asyncpg://postgres@127.0.0.1:$PORT/postgres"
    ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
