#!/usr/bin/env bash
# The whole stack on loopback (see scripts/stack.py): PostgreSQL, Swift (behind TLS), two `updown serve` app units,
# two frontend cache units (HAProxy + Varnish) and a backend cache unit (nginx), configs rendered by the charms' code.
#   stack.sh start   start everything; prints where; stops what it started if anything fails
#   stack.sh env     the UPDOWN_TEST_STACK_* variables for the stack tests
#   stack.sh stop    stop everything it started, by PID
#   stack.sh add-unit N / remove-unit N   a frontend unit joins / leaves the ring (N = 0..3)
# State in $UPDOWN_RUN_DIR/stack (default: a directory under ${TMPDIR:-/tmp}); ports from UPDOWN_STACK_PORT (17000).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${UPDOWN_RUN_DIR:-${TMPDIR:-/tmp}/updown-stack}/stack
PY=${PYTHON:-.venv/bin/python}
case "${1:-}" in
  start) "$PY" scripts/stack.py start "$RUN" ;;
  stop) "$PY" scripts/stack.py stop "$RUN" ;;
  env) cat "$RUN/stack.env" ;;
  add-unit|remove-unit) "$PY" scripts/stack.py "$1" "$RUN" "${2:?unit number}" ;;
  *) echo "usage: $0 start|stop|env|add-unit N|remove-unit N" >&2; exit 2 ;;
esac
