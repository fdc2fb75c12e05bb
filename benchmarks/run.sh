#!/bin/bash
# updown vs nginx (ceiling) vs Docker registry (peer): downloads, uploads, 1,000 slow downloads. One run, one machine.
#
#   benchmarks/run.sh                 # full run (DUR=10s REPS=3), ~9 min
#   QUICK=1 benchmarks/run.sh         # smoke (DUR=3s REPS=1 UREPS=1, short slow-download hold), ~3 min
#
# Knobs (environment): DUR REPS WARM (wrk), UREPS (upload reps), SLOW_CONNS SLOW_RATE SLOW_HOLD (slow downloads),
#   SERVERS=nginx,registry,updown  PHASES=download,upload,slow  SLOW_SERVERS=updown,nginx,registry
#   SRV_CPU=0 CLI_CPU=1  BENCH_DIR=<work dir, default: a new temp dir, removed at the end unless KEEP=1>
#   RESULTS=<dir, default benchmarks/results/<UTC time>>  VENV=<default .venv at the repo root>
#   UPDATE_README=1: write the table into benchmarks/README.md.  REQUIRE_UPDOWN=1: fail instead of skipping updown.
# See benchmarks/README.md for the method.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
CMDLINE="$(env | grep -E '^(ASGI_SERVER|QUICK|DUR|REPS|WARM|UREPS|UPLOAD_SIZES|SLOW_[A-Z]+|SERVERS|PHASES|SRV_CPU|CLI_CPU|UPDATE_README)=' | sort | tr '\n' ' ')benchmarks/run.sh $*"

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
  DUR=${DUR:-3s}; REPS=${REPS:-1}; WARM=${WARM:-1s}; UREPS=${UREPS:-1}; SLOW_HOLD=${SLOW_HOLD:-8}
fi
DUR=${DUR:-10s}; REPS=${REPS:-3}; WARM=${WARM:-2s}; UREPS=${UREPS:-3}
SLOW_CONNS=${SLOW_CONNS:-1000}; SLOW_RATE=${SLOW_RATE:-32768}; SLOW_HOLD=${SLOW_HOLD:-20}
SRV_CPU=${SRV_CPU:-0}; CLI_CPU=${CLI_CPU:-1}
SERVERS=${SERVERS:-nginx,registry,updown}
PHASES=${PHASES:-download,upload,slow}
SLOW_SERVERS=${SLOW_SERVERS:-updown,nginx,registry}
VENV=${VENV:-$ROOT/.venv}
UPLOAD_SIZES=${UPLOAD_SIZES:-f100m.bin,f1g.bin}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=${RESULTS:-$HERE/results/$STAMP}
if [ -z "${BENCH_DIR:-}" ]; then BENCH_DIR=$(mktemp -d -t updown-bench.XXXXXX); OWN_BENCH_DIR=1; else OWN_BENCH_DIR=0; fi
export BENCH_DIR

. "$HERE/lib.sh"
. "$HERE/servers.sh"

has() { case ",$1," in *",$2,"*) return 0;; *) return 1;; esac; }

SAMPLER_PID=""
cleanup() {
  [ -n "$SAMPLER_PID" ] && stop_pid "$SAMPLER_PID"
  stop_all
  if [ -d "$BENCH_DIR/logs" ] && [ -d "$RESULTS" ]; then cp -r "$BENCH_DIR/logs" "$RESULTS/" 2>/dev/null || true; fi
  if [ "$OWN_BENCH_DIR" = 1 ] && [ "${KEEP:-0}" != 1 ]; then rm -rf "$BENCH_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS/raw" "$BENCH_DIR"/{data,conf,run,logs}
# nginx workers run as an unprivileged user: they must be able to reach the data (mktemp -d makes mode 700)
chmod 755 "$BENCH_DIR" "$BENCH_DIR/data"
log "work dir $BENCH_DIR, results $RESULTS"

# ---------------------------------------------------------------------------------------------------- tools
need=()
for c in nginx wrk docker-registry curl taskset; do command -v "$c" > /dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  log "installing Debian packages (missing: ${need[*]})"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO apt-get install -y -q nginx-light wrk docker-registry curl util-linux \
    || die "apt-get install failed"
fi
[ "$(nproc)" -ge 2 ] || log "WARNING: fewer than 2 CPUs, server and client will share a core"

# ---------------------------------------------------------------------------------------------------- updown venv
HAVE_UPDOWN=0
if has "$SERVERS" updown; then
  # (re)install when the venv is missing or pyproject.toml changed since the last install by this script
  stamp="$VENV/.bench-pyproject.sha256"; want=$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/updown" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing the project into $VENV (python3 -m venv; pip install -e .)"
    { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } && "$VENV/bin/pip" install -q -e "$ROOT" \
      && echo "$want" > "$stamp" || log "WARNING: installing updown failed"
  fi
  if [ -x "$VENV/bin/updown" ] && "$VENV/bin/python" -c 'import updown_app.cli, updown_app.client' 2>/dev/null; then
    HAVE_UPDOWN=1
    install_asgi_server || die "installing $ASGI_SERVER failed"
  else
    [ "${REQUIRE_UPDOWN:-0}" = 1 ] && die "updown is not installable/importable from $VENV"
    log "WARNING: updown not available (no updown_app.cli/client in $VENV): updown runs are SKIPPED"
    SERVERS=$(echo ",$SERVERS," | sed 's/,updown,/,/; s/^,//; s/,$//')
  fi
fi

# ---------------------------------------------------------------------------------------------------- limits, data
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "open files limit: $(ulimit -n)"
cd "$BENCH_DIR/data"
mk() { # name bytes
  [ "$(stat -c %s "$1" 2>/dev/null)" = "$2" ] && return 0
  log "creating $1 ($2 random bytes)"
  head -c "$2" /dev/urandom > "$1.tmp" && chmod 644 "$1.tmp" && mv "$1.tmp" "$1"
}
mk f4k.bin 4096; mk f1m.bin 1048576; mk f100m.bin 104857600
has "$PHASES" upload && case ",$UPLOAD_SIZES," in *,f1g.bin,*) mk f1g.bin 1073741824;; esac
if [ ! -s sums.txt ] || [ "$(wc -l < sums.txt)" != "$(ls f*.bin | wc -l)" ] || [ -n "$(find . -name 'f*.bin' -newer sums.txt)" ]; then
  log "hashing test files"
  for f in f*.bin; do echo "$f $(stat -c %s "$f") $(sha256sum < "$f" | cut -d' ' -f1) $(md5sum < "$f" | cut -d' ' -f1)"; done > sums.txt
fi
declare -A SHA SIZE MD5
while read -r f s h m; do SHA[$f]=$h; SIZE[$f]=$s; MD5[$f]=$m; done < sums.txt
cd "$ROOT"

# fingerprint of the updown code (HEAD + uncommitted changes): the venv is an editable install, so every updown
# start loads the tree as it is at that moment; a change during the run is reported
src_state() {
  { git -C "$ROOT" rev-parse HEAD 2>/dev/null; git -C "$ROOT" diff HEAD -- src pyproject.toml 2>/dev/null
    git -C "$ROOT" ls-files -o --exclude-standard -- src 2>/dev/null | (cd "$ROOT" && xargs -r cat); } | sha256sum | cut -c1-12
}
SRC_STATE0=$(src_state)
{
  echo "date_utc: $STAMP"
  echo "command: $CMDLINE"
  echo "kernel: $(uname -r)"
  echo "cpu: $(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo) x $(nproc)"
  echo "mem: $(awk '/MemTotal/{print $2" kB"}' /proc/meminfo)"
  echo "nginx: $(nginx -v 2>&1)"
  echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "docker-registry: $(docker-registry --version 2>&1 | awk '{print $NF}')"
  echo "curl: $(curl --version | head -1)"
  echo "python: $(python3 --version 2>&1)"
  [ "$HAVE_UPDOWN" = 1 ] && echo "updown: $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("updown-app"))') git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet -- src 2>/dev/null || echo ' (+local changes)')"
  echo "asgi_server: $ASGI_SERVER"
  echo "src_state_start: $SRC_STATE0"
  echo "settings: DUR=$DUR REPS=$REPS WARM=$WARM UREPS=$UREPS SLOW_CONNS=$SLOW_CONNS SLOW_RATE=$SLOW_RATE SLOW_HOLD=$SLOW_HOLD SRV_CPU=$SRV_CPU CLI_CPU=$CLI_CPU"
} > "$RESULTS/versions.txt"

# ---------------------------------------------------------------------------------------------------- downloads
if has "$PHASES" download; then
  if has "$SERVERS" nginx; then
    start_nginx || die "nginx did not start"
    for f in f4k.bin f1m.bin f100m.bin; do
      verify "$NGINX_URL/$f" "$f" || die "nginx verify (403: can nginx's worker user read $BENCH_DIR/data?)"
    done
    WRK_HDR="" run_matrix nginx "$NGINX_URL/{file}" "$NGINX_PID"
    untrack_stop "$NGINX_PID"
  fi
  if has "$SERVERS" registry; then
    start_registry || die "registry did not start"
    for f in f4k.bin f1m.bin f100m.bin; do
      r=$(registry_push bench/files "$f"); [ "${r%% *}" = 201 ] || die "registry push $f: $r"
    done
    for f in f4k.bin f1m.bin f100m.bin; do verify "$REG_URL/v2/bench/files/blobs/sha256:${SHA[$f]}" "$f" || die "registry verify"; done
    WRK_HDR="" run_matrix registry "$REG_URL/v2/bench/files/blobs/sha256:{sha}" "$REG_PID"
    untrack_stop "$REG_PID"
  fi
  if has "$SERVERS" updown; then
    start_updown || die "updown did not start"
    for f in f4k.bin f1m.bin f100m.bin; do updown_publish_file "$f" 1 || die "updown upload/publish $f"; done
    for f in f4k.bin f1m.bin f100m.bin; do
      verify "$UPDOWN_URL/bench/1/$f" "$f" -H 'X-Forwarded-Proto: https' || die "updown verify"
    done
    curl -s -D - -o /dev/null -H 'X-Forwarded-Proto: https' "$UPDOWN_URL/bench/1/f4k.bin" > "$RESULTS/updown.headers.txt"
    WRK_HDR="X-Forwarded-Proto: https" run_matrix updown "$UPDOWN_URL/bench/1/{file}" "$UPDOWN_PID"
    untrack_stop "$UPDOWN_PID"
  fi
fi

# ---------------------------------------------------------------------------------------------------- uploads
# One record per rep: fresh server + empty storage, one untimed 4 KiB warm-up upload, then VmHWM reset and the
# measured upload. rss_before = RSS after the warm-up; growth = peak RSS during the upload - rss_before.
upload_rec() { # server file rep ok transfer_s wall_s srv_cpu_s rss_before_kb pids...
  local s=$1 f=$2 r=$3 ok=$4 ts=$5 ws=$6 cpu=$7 rb=$8; shift 8
  local hwm; hwm=$(sum_hwm "$@")
  printf '{"server":"%s","file":"%s","bytes":%s,"rep":%d,"ok":"%s","transfer_s":%s,"wall_s":%s,"server_cpu_s":%s,"rss_before_kb":%d,"rss_peak_kb":%d,"digests_after_s":%s,"method":"%s"}\n' \
    "$s" "$f" "${SIZE[$f]}" "$r" "$ok" "${ts:-null}" "$ws" "$cpu" "$rb" "$hwm" "${DIGESTS_AFTER:-null}" "$UPLOAD_METHOD" | tee -a "$RESULTS/uploads.jsonl" >&2
}
if has "$PHASES" upload; then
  IFS=, read -r -a usizes <<< "$UPLOAD_SIZES"
  for f in "${usizes[@]}"; do
    cat "$BENCH_DIR/data/$f" > /dev/null   # page cache
    for r in $(seq "$UREPS"); do
      if has "$SERVERS" registry; then
        sync; sleep 1
        start_registry || die "registry did not start"
        registry_push bench/warm f4k.bin > /dev/null
        reset_hwm "$REG_PID"; rb=$(sum_rss "$REG_PID"); c0=$(cpu_ticks "$REG_PID")
        log "upload registry $f rep $r/$UREPS"
        t0=$(now); res=$(registry_push bench/up "$f"); t1=$(now)
        cpu=$(ticks_to_s "$c0" "$(cpu_ticks "$REG_PID")")
        head=$(curl -s -o /dev/null -w '%{http_code}' -I "$REG_URL/v2/bench/up/blobs/sha256:${SHA[$f]}")
        ok=ok; [ "${res%% *}" = 201 ] && [ "$head" = 200 ] || ok="FAIL:put=$res:head=$head"
        UPLOAD_METHOD="monolithic PUT (curl -T)" upload_rec registry "$f" "$r" "$ok" "${res#* }" "$(dt "$t0" "$t1")" "$cpu" "$rb" "$REG_PID"
        untrack_stop "$REG_PID"
      fi
      if has "$SERVERS" updown; then
        sync; sleep 1
        start_updown || die "updown did not start"
        (updown_client_env; taskset -c "$CLI_CPU" "$VENV/bin/python" "$HERE/updown_upload.py" "$BENCH_DIR/data/f4k.bin" \
           --package warm --revision 1 > /dev/null) || die "updown warm-up upload failed"
        reset_hwm "$UPDOWN_PID"; rb=$(sum_rss "$UPDOWN_PID"); c0=$(cpu_ticks "$UPDOWN_PID")
        log "upload updown $f rep $r/$UREPS"
        t0=$(now)
        out=$(updown_client_env; taskset -c "$CLI_CPU" "$VENV/bin/python" "$HERE/updown_upload.py" "$BENCH_DIR/data/$f" \
                --package bench --revision "$r" --sha256 "${SHA[$f]}" --md5 "${MD5[$f]}")
        t1=$(now)
        cpu=$(ticks_to_s "$c0" "$(cpu_ticks "$UPDOWN_PID")")
        read -r ok ts da UPLOAD_METHOD < <(python3 "$HERE/upload_check.py" "${SIZE[$f]}" "${SHA[$f]}" <<< "$out")
        UPLOAD_METHOD=${UPLOAD_METHOD//_/ } DIGESTS_AFTER=$da \
          upload_rec updown "$f" "$r" "$ok" "$ts" "$(dt "$t0" "$t1")" "$cpu" "$rb" "$UPDOWN_PID"
        untrack_stop "$UPDOWN_PID"
      fi
    done
  done
fi

# ---------------------------------------------------------------------------------------------------- slow downloads
# SLOW_CONNS connections each reading the 100 MiB file at SLOW_RATE bytes/s, held SLOW_HOLD s after the ramp.
# Peak RSS = VmHWM of the server tree (reset before the ramp); the RSS curve is sampled every 0.5 s.
slow_run() { # server url pid [header]
  local s=$1 url=$2 pid=$3 hdr=(); [ -n "${4:-}" ] && hdr=(--header "$4")
  reset_hwm "$pid"; local rb c0 out
  rb=$(sum_rss "$pid"); c0=$(cpu_ticks "$pid")
  ( while sleep 0.5; do echo "$(date +%s.%N) $(sum_rss "$pid")"; done ) > "$RESULTS/raw/slow_${s}_rss.txt" &
  SAMPLER_PID=$!
  log "slow downloads: $s, $SLOW_CONNS connections x $SLOW_RATE B/s, hold ${SLOW_HOLD}s"
  out=$(taskset -c "$CLI_CPU" python3 "$HERE/slow_downloads.py" "$url" "${hdr[@]}" --conns "$SLOW_CONNS" \
          --rate "$SLOW_RATE" --duration "$SLOW_HOLD" 2> "$RESULTS/raw/slow_${s}.err")
  stop_pid "$SAMPLER_PID"; SAMPLER_PID=""
  [ -n "$out" ] || out=null
  printf '{"server":"%s","rss_before_kb":%d,"rss_peak_kb":%d,"server_cpu_s":%s,"threads":%s,"client":%s}\n' "$s" "$rb" \
    "$(sum_hwm "$pid")" "$(ticks_to_s "$c0" "$(cpu_ticks "$pid")")" "$(awk '/^Threads/{print $2}' /proc/"$pid"/status)" "$out" \
    | tee -a "$RESULTS/slow.jsonl" >&2
}
if has "$PHASES" slow; then
  IFS=, read -r -a sservers <<< "$SLOW_SERVERS"
  for s in "${sservers[@]}"; do
    has "$SERVERS" "$s" || continue
    case $s in
      updown)
        start_updown || die "updown did not start"
        updown_publish_file f100m.bin 1 || die "updown upload/publish"
        slow_run updown "$UPDOWN_URL/bench/1/f100m.bin" "$UPDOWN_PID" "X-Forwarded-Proto: https"
        untrack_stop "$UPDOWN_PID" ;;
      nginx)
        start_nginx || die "nginx did not start"
        slow_run nginx "$NGINX_URL/f100m.bin" "$NGINX_PID"
        untrack_stop "$NGINX_PID" ;;
      registry)
        start_registry || die "registry did not start"
        registry_push bench/files f100m.bin > /dev/null
        slow_run registry "$REG_URL/v2/bench/files/blobs/sha256:${SHA[f100m.bin]}" "$REG_PID"
        untrack_stop "$REG_PID" ;;
    esac
    sleep 2
  done
fi

# ---------------------------------------------------------------------------------------------------- report
SRC_STATE1=$(src_state)
echo "src_state_end: $SRC_STATE1" >> "$RESULTS/versions.txt"
if [ "$HAVE_UPDOWN" = 1 ] && [ "$SRC_STATE1" != "$SRC_STATE0" ]; then
  echo "src_changed: the updown source changed during the run; later phases may have run different code" >> "$RESULTS/versions.txt"
  log "WARNING: the updown source changed during the run"
fi
README_ARGS=()
[ "${UPDATE_README:-0}" = 1 ] && README_ARGS=(--readme "$HERE/README.md")
# The ratios are compared with the last recorded run (benchmarks/recorded.json, rewritten with UPDATE_README=1):
# a warning names any that fell by more than the run-to-run noise. Only for the server updown ships with.
REC_ARGS=(); [ "$ASGI_SERVER" = uvicorn ] && REC_ARGS=(--recorded "$HERE/recorded.json")
python3 "$HERE/summarize.py" "$RESULTS" --command "$CMDLINE" "${README_ARGS[@]}" "${REC_ARGS[@]}"
cp "$RESULTS/summary.md" "$HERE/results/latest.md" 2>/dev/null || true
log "results in $RESULTS"
