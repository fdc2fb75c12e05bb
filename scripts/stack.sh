#!/usr/bin/env bash
# The caching tier on loopback (see scripts/stack.py): `updown serve` behind two frontend cache units, each a real
# HAProxy + Varnish with configs rendered by charms/cache's workload code.
#   stack.sh start   start everything; prints where; stops what it started if anything fails
#   stack.sh env     the UPDOWN_TEST_STACK_* variables for the stack tests
#   stack.sh stop    stop everything it started, by PID
# State in $UPDOWN_RUN_DIR/stack (default: a directory under ${TMPDIR:-/tmp}); ports from UPDOWN_STACK_PORT (17000).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${UPDOWN_RUN_DIR:-${TMPDIR:-/tmp}/updown-stack}/stack
PY=${PYTHON:-.venv/bin/python}
case "${1:-}" in
  start) "$PY" scripts/stack.py start "$RUN" ;;
  stop) "$PY" scripts/stack.py stop "$RUN" ;;
  env) cat "$RUN/stack.env" ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
