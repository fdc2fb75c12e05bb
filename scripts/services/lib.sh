# Shared by the service scripts (sourced, not run): processes tracked by PID files in the directory $PIDS, one
# file per process name.

running() {  # running NAME: its PID file names a live process
  [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null
}

wait_url() {  # wait_url URL NAME LOG [TRIES of 0.1 s]: until URL answers 2xx; gives up early when NAME exited
  for _ in $(seq 1 "${4:-200}"); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    running "$2" || break
    sleep 0.1
  done
  echo "$2 did not come up at $1; log:" >&2; tail -30 "$3" >&2
  return 1
}

stop_by_pid() {  # stop_by_pid NAME...: SIGTERM each, wait up to 10 s for all, then SIGKILL what is left
  local name pid alive pids=()
  for name in "$@"; do
    if [ -f "$PIDS/$name.pid" ]; then
      pid=$(cat "$PIDS/$name.pid"); rm -f "$PIDS/$name.pid"
      kill "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 1 100); do
    alive=0; for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && return 0; sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
}
