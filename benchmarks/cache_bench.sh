#!/bin/bash
# The caching tier vs nginx, through the same HAProxy TLS: a cache hit (HAProxy -> Varnish of the local stack) of a
# 4 KiB and a 100 MiB file vs nginx serving the same files at the same paths behind an HAProxy rendered by the same
# workload code, same certificate; hit ratio; extra latency of the peer hop. One run, one machine, one wrk.
#
#   benchmarks/cache_bench.sh            # full run (DUR=10s REPS=5), ~8 min
#   QUICK=1 benchmarks/cache_bench.sh    # smoke (DUR=3s REPS=1), ~2 min
#
# Knobs (environment): DUR REPS WARM (wrk), SRV_CPU=0 CLI_CPU=1, PORT_BASE (default 24000: the stack takes
#   PORT_BASE..+50, its own PostgreSQL +55, the nginx side's HAProxy +60..+63), BENCH_DIR (default: a new temp dir,
#   removed at the end unless KEEP=1), RESULTS (default benchmarks/results/<UTC time>), VENV (default .venv),
#   UPDATE_README=1 (write the report into benchmarks/README.md). Swift is reused when UPDOWN_TEST_SWIFT_URL is set.
# See "Caching tier" in benchmarks/README.md for the method.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CMDLINE="$(env | grep -E '^(QUICK|DUR|REPS|WARM|SRV_CPU|CLI_CPU|PORT_BASE|UPDATE_README)=' | sort | tr '\n' ' ')benchmarks/cache_bench.sh $*"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DUR=${DUR:-3s}; REPS=${REPS:-1}; WARM=${WARM:-1s}; fi
DUR=${DUR:-10s}; REPS=${REPS:-5}; WARM=${WARM:-2s}
SRV_CPU=${SRV_CPU:-0}; CLI_CPU=${CLI_CPU:-1}
PORT_BASE=${PORT_BASE:-24000}
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$HERE/results/$STAMP}
if [ -z "${BENCH_DIR:-}" ]; then BENCH_DIR=$(mktemp -d -t updown-cache-bench.XXXXXX); OWN_BENCH_DIR=1; else OWN_BENCH_DIR=0; fi
export BENCH_DIR

. "$HERE/lib.sh"
. "$HERE/servers.sh"   # start_nginx (the same static nginx as run.sh's ceiling)

STACK=$BENCH_DIR/stack
# The stack gets its own PostgreSQL: nothing else loads the database during the runs.
stack_cmd() {
  (unset UPDOWN_TEST_POSTGRES_URL
   UPDOWN_RUN_DIR=$BENCH_DIR UPDOWN_STACK_PORT=$PORT_BASE UPDOWN_PG_PORT=$((PORT_BASE + 55)) PYTHON=$PY \
     "$ROOT/scripts/stack.sh" "$@")
}
STACK_STARTED=0
cleanup() {
  stop_all
  if [ "$STACK_STARTED" = 1 ]; then log "stopping the stack"; stack_cmd stop >> "$BENCH_DIR/logs/stack.log" 2>&1; fi
  if [ -d "$RESULTS" ]; then
    mkdir -p "$RESULTS/logs"
    cp "$BENCH_DIR"/logs/* "$STACK"/app*.log "$RESULTS/logs/" 2>/dev/null || true
  fi
  if [ "$OWN_BENCH_DIR" = 1 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$BENCH_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS/raw" "$BENCH_DIR"/{files,data,conf,run,logs}
chmod 755 "$BENCH_DIR" "$BENCH_DIR/data"   # nginx's workers and PostgreSQL run unprivileged
log "work dir $BENCH_DIR, results $RESULTS"

need=()
for c in nginx haproxy varnishd varnishstat wrk curl taskset; do command -v "$c" > /dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages (missing: ${need[*]})"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends nginx haproxy varnish wrk curl util-linux \
    || die "apt-get install failed"
fi
[ -x "$PY" ] && "$PY" -c 'import updown_app.client' 2>/dev/null || die "no updown venv at $VENV (python3 -m venv .venv && .venv/bin/pip install -e .)"
for p in $(seq "$PORT_BASE" $((PORT_BASE + 63))); do
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && die "port $p is in use: choose another PORT_BASE"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------------------------------------------- the stack
log "starting the local stack (ports $PORT_BASE..$((PORT_BASE + 55)))"
STACK_STARTED=1
stack_cmd start >> "$BENCH_DIR/logs/stack.log" 2>&1 || { tail -20 "$BENCH_DIR/logs/stack.log" >&2; die "stack start failed"; }
head -c 4096 /dev/urandom > "$BENCH_DIR/files/f4k.bin"
head -c 104857600 /dev/urandom > "$BENCH_DIR/files/f100m.bin"
chmod 644 "$BENCH_DIR"/files/*.bin
log "uploading, publishing and warming the files"
"$PY" "$HERE/cache_bench.py" publish "$STACK/stack.env" "$BENCH_DIR/files" "$BENCH_DIR/data" "cachebench" \
  > "$BENCH_DIR/run/paths.sh" 2>> "$BENCH_DIR/logs/publish.log" || { cat "$BENCH_DIR/logs/publish.log" >&2; die "publish failed"; }
. "$BENCH_DIR/run/paths.sh"
pidof_file() { cat "$1" 2>/dev/null | tr '\n' ' '; }
HAPROXY_PIDS=("$(pidof_file "$STACK/unit0/haproxy.pid")" "$(pidof_file "$STACK/unit1/haproxy.pid")")
VARNISH_PIDS=("$(pidof_file "$STACK/unit0/varnishd.pid")" "$(pidof_file "$STACK/unit1/varnishd.pid")")
FRONTENDS=("$FRONTEND_0" "$FRONTEND_1")

# ---------------------------------------------------------------------------------------------------- nginx side
start_nginx || die "nginx did not start"
NGX_HTTP=$((PORT_BASE + 60)); NGX_HTTPS=$((PORT_BASE + 61))
cfg=$("$PY" "$HERE/cache_bench.py" haproxy "$STACK" "$BENCH_DIR/nginx-side" "$NGINX_PORT" "$NGX_HTTP" "$NGX_HTTPS" \
        $((PORT_BASE + 62)) $((PORT_BASE + 63))) || die "rendering the nginx side's haproxy.cfg failed"
cp "$cfg" "$RESULTS/haproxy-nginx-side.cfg"; cp "$STACK/unit0/etc/haproxy/haproxy.cfg" "$RESULTS/haproxy-unit0.cfg"
# started exactly as the stack starts its HAProxy (same binary, flags, unpinned at start so the same thread count)
haproxy -D -p "$BENCH_DIR/run/haproxy-nginx.pid" -f "$cfg" || die "haproxy (nginx side) did not start"
HAPROXY_N=$(cat "$BENCH_DIR/run/haproxy-nginx.pid"); track "$HAPROXY_N"
NGX_URL="https://localhost:$NGX_HTTPS"
for i in $(seq 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$STACK/ca.pem" "$NGX_URL$PATH_F4K")" = 200 ] && break; sleep 0.2
done

# every server-side process (HAProxy, Varnish, nginx, the app units) on SRV_CPU, all threads
pin() { local p; for p in $(tree_pids "$@"); do taskset -a -p -c "$SRV_CPU" "$p" > /dev/null; done; }
pin ${HAPROXY_PIDS[*]} ${VARNISH_PIDS[*]} "$HAPROXY_N" "$NGINX_PID" $(cat "$STACK"/app*.pid)

sha() { curl -s --cacert "$STACK/ca.pem" "$1" | sha256sum | cut -d' ' -f1; }
for f in F4K F100M; do
  p=PATH_$f; o=OWNER_$f
  want=$(sha256sum < "$BENCH_DIR/files/$(basename "${!p}")" | cut -d' ' -f1)
  [ "$(sha "$NGX_URL${!p}")" = "$want" ] || die "nginx side: wrong body for ${!p}"
  [ "$(sha "${FRONTENDS[${!o}]}${!p}")" = "$want" ] || die "stack: wrong body for ${!p}"
done
curl -s -D - -o /dev/null --cacert "$STACK/ca.pem" "${FRONTENDS[$OWNER_F4K]}$PATH_F4K" > "$RESULTS/stack.headers.txt"
curl -s -D - -o /dev/null --cacert "$STACK/ca.pem" "$NGX_URL$PATH_F4K" > "$RESULTS/nginx.headers.txt"

{
  echo "date_utc: $STAMP"
  echo "command: $CMDLINE"
  echo "kernel: $(uname -r)"
  echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) x $(nproc)"
  echo "haproxy: $(haproxy -v | head -1 | awk '{print $3}')"
  echo "varnish: $(varnishd -V 2>&1 | head -1 | sed 's/^varnishd (\(.*\) revision.*/\1/')"
  echo "nginx: $(nginx -v 2>&1 | awk -F/ '{print $2}')"
  echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "updown: git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
  echo "settings: DUR=$DUR REPS=$REPS WARM=$WARM SRV_CPU=$SRV_CPU CLI_CPU=$CLI_CPU"
  echo "varnishd_params: $(varnishadm -n "$STACK/unit0/varnish" param.show 2>/dev/null | awk '/^(thread_pools|thread_pool_min|thread_pool_max|workspace_client|fetch_chunksize) /{printf "%s=%s ", $1, $2}')"
  threads() { awk '/^Threads/{print $2}' "/proc/$1/status"; }
  echo "threads: haproxy_unit0=$(threads ${HAPROXY_PIDS[0]}) haproxy_nginx_side=$(threads "$HAPROXY_N") varnish_unit0_child=$(threads "$(tree_pids ${VARNISH_PIDS[0]} | tail -1)")"
} > "$RESULTS/versions.txt"

# ---------------------------------------------------------------------------------------------------- measuring
varnish_counts() { # -> "hit miss" summed over the units
  local u h=0 m=0 a b
  for u in 0 1; do
    read -r a b < <(varnishstat -n "$STACK/unit$u/varnish" -1 -f MAIN.cache_hit -f MAIN.cache_miss \
                      | awk '$1=="MAIN.cache_hit"{h=$2} $1=="MAIN.cache_miss"{m=$2} END{print h+0, m+0}')
    h=$((h + a)); m=$((m + b))
  done
  echo "$h $m"
}
# one wrk_one run; beside its line in downloads.jsonl, split.jsonl gets the CPU time of the HAProxy and of the cache
# (Varnish or nginx) trees and, for the stack, the Varnish hit/miss deltas of the run (both units)
measure() { # name file conc rep url haproxy-pids cache-pids
  local name=$1 file=$2 c=$3 r=$4 url=$5 hp=$6 cp=$7 h0=0 m0=0 h1=0 m1=0 a0 b0
  [ "$name" = nginx ] || read -r h0 m0 < <(varnish_counts)
  a0=$(cpu_ticks $hp); b0=$(cpu_ticks $cp)
  wrk_one "$name" "$file" "$c" "$r" "$url" $hp $cp
  printf '{"server":"%s","file":"%s","conc":%d,"rep":%d,"haproxy_cpu_s":%s,"cache_cpu_s":%s' "$name" "$file" "$c" "$r" \
    "$(ticks_to_s "$a0" "$(cpu_ticks $hp)")" "$(ticks_to_s "$b0" "$(cpu_ticks $cp)")" >> "$RESULTS/split.jsonl"
  [ "$name" = nginx ] || { read -r h1 m1 < <(varnish_counts); printf ',"hit":%d,"miss":%d' $((h1 - h0)) $((m1 - m0)) >> "$RESULTS/split.jsonl"; }
  echo "}" >> "$RESULTS/split.jsonl"
}
warm() { taskset -c "$CLI_CPU" wrk -t1 -c"$2" -d"$WARM" --timeout 60s "$1" > /dev/null 2>&1 || true; }

for cfg in "F4K f4k.bin 16" "F100M f100m.bin 4"; do
  read -r key file c <<< "$cfg"
  p=PATH_$key; o=OWNER_$key
  s_url="${FRONTENDS[${!o}]}${!p}"; n_url="$NGX_URL${!p}"
  log "$file c=$c: warm-up $WARM each"
  warm "$s_url" "$c"; warm "$n_url" "$c"
  for r in $(seq "$REPS"); do
    # alternate which side goes first, so a slow drift of the machine's load hits both alike
    for side in $( ((r % 2)) && echo "stack nginx" || echo "nginx stack"); do
      log "$side $file c=$c rep $r/$REPS ($DUR)"
      if [ "$side" = stack ]; then measure stack "$file" "$c" "$r" "$s_url" "${HAPROXY_PIDS[${!o}]}" "${VARNISH_PIDS[${!o}]}"
      else measure nginx "$file" "$c" "$r" "$n_url" "$HAPROXY_N" "$NGINX_PID"; fi
      sleep 1
    done
  done
done

# the peer hop: the 4 KiB file, one connection, entering through its owner's frontend vs the other unit's
own_url="${FRONTENDS[$OWNER_F4K]}$PATH_F4K"; other_url="${FRONTENDS[$OTHER_F4K]}$PATH_F4K"
log "peer hop: warm-up $WARM each"
warm "$own_url" 1; warm "$other_url" 1
for r in $(seq "$REPS"); do
  for side in $( ((r % 2)) && echo "owner other" || echo "other owner"); do
    log "peer-$side f4k.bin c=1 rep $r/$REPS ($DUR)"
    if [ "$side" = owner ]; then
      measure peer-owner f4k.bin 1 "$r" "$own_url" "${HAPROXY_PIDS[$OWNER_F4K]}" "${VARNISH_PIDS[$OWNER_F4K]}"
    else
      measure peer-other f4k.bin 1 "$r" "$other_url" "${HAPROXY_PIDS[$OTHER_F4K]}" "${VARNISH_PIDS[$OWNER_F4K]}"
    fi
    sleep 1
  done
done

# ---------------------------------------------------------------------------------------------------- report
README_ARGS=()
[ "${UPDATE_README:-0}" = 1 ] && README_ARGS=(--readme "$HERE/README.md")
"$PY" "$HERE/cache_bench.py" summary "$RESULTS" --command "$CMDLINE" "${README_ARGS[@]}"
cp "$RESULTS/summary.md" "$HERE/results/cache-latest.md" 2>/dev/null || true
log "results in $RESULTS"
