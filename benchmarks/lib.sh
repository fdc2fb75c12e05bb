#!/bin/bash
# Helpers shared by benchmarks/run.sh. Sourced, not executed.
# Conventions: servers run on CPU $SRV_CPU, clients (wrk, curl, Python clients) on CPU $CLI_CPU.
# Every server is started in the background by us and registered with `track PID`; `stop_all` (EXIT trap) stops them by PID.

CLK_TCK=$(getconf CLK_TCK)
PIDS_TO_STOP=()

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

track() { PIDS_TO_STOP+=("$1"); }

stop_pid() { # pid : TERM, wait up to 5 s, then KILL
  local p=$1 i
  [ -n "$p" ] && [ -d "/proc/$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 50); do [ -d "/proc/$p" ] || { wait "$p" 2>/dev/null || true; return 0; }; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

stop_all() {
  local i
  for ((i=${#PIDS_TO_STOP[@]}-1; i>=0; i--)); do stop_pid "${PIDS_TO_STOP[i]}"; done
  PIDS_TO_STOP=()
}

untrack_stop() { # pid : stop it and forget it
  local p=$1 i keep=()
  stop_pid "$p"
  for i in "${PIDS_TO_STOP[@]}"; do [ "$i" = "$p" ] || keep+=("$i"); done
  PIDS_TO_STOP=("${keep[@]}")
}

free_port() { # a TCP port on 127.0.0.1 that is free right now
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# all PIDs of the process trees rooted at the given PIDs (inclusive)
tree_pids() {
  local p c
  for p in "$@"; do
    [ -d "/proc/$p" ] || continue
    echo "$p"
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
  done
}
# reset the peak RSS (VmHWM) of every process of the trees to its current RSS
reset_hwm() { local p; for p in $(tree_pids "$@"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done; }
# sum over the trees of a /proc/PID/status field in kB (VmHWM = peak RSS, VmRSS = current RSS)
sum_status_kb() { # field pids...
  local f=$1 p t=0 v; shift
  for p in $(tree_pids "$@"); do v=$(awk -v f="$f:" '$1==f{print $2}' "/proc/$p/status" 2>/dev/null); t=$((t+${v:-0})); done
  echo "$t"
}
sum_hwm() { sum_status_kb VmHWM "$@"; }
sum_rss() { sum_status_kb VmRSS "$@"; }
list_hwm() { local p; for p in $(tree_pids "$@"); do echo -n "$p:$(cat /proc/"$p"/comm):$(awk '$1=="VmHWM:"{print $2}' /proc/"$p"/status) "; done; }
# CPU time (utime+stime, all threads) of the trees, in clock ticks
cpu_ticks() { local p t=0 v; for p in $(tree_pids "$@"); do v=$(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null); t=$((t+${v:-0})); done; echo "$t"; }
ticks_to_s() { awk -v a="$1" -v b="$2" -v h="$CLK_TCK" 'BEGIN{printf "%.3f", (b-a)/h}'; }
steal_ticks() { awk '/^cpu /{print $9}' /proc/stat; }
# "pid comm ticks" of every process (for naming the other CPU users during a run)
proc_ticks() { awk '{c=$2; for(i=3;i<=NF && c !~ /\)$/;i++) c=c"_"$i; sub(/^\(/,"",c); sub(/\)$/,"",c); print $1, c, $(i+11)+$(i+12)}' /proc/[0-9]*/stat 2>/dev/null; }
# top CPU users between two proc_ticks snapshots, excluding the given pids: "comm:seconds,..." (>= 0.2 s)
top_others() { # before after pids...
  local a=$1 b=$2; shift 2
  awk -v ex=" $* " -v h="$CLK_TCK" 'NR==FNR{t[$1]=$3; next} index(ex, " "$1" ")==0 && ($1 in t){d=$3-t[$1]; if (d>0) s[$2]+=d}
       END{for (k in s) if (s[k]/h >= 0.2) printf "%s:%.1f\n", k, s[k]/h}' "$a" "$b" | sort -t: -k2 -rn | head -5 | paste -sd, -
}
busy_ticks() { awk '/^cpu /{print $2+$3+$4}' /proc/stat; }   # user nice system, all CPUs (irq/softirq time is not attributable: loopback receive work lands there)
now() { date +%s.%N; }
dt() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.4f", b-a}'; }

wait_tcp() { # port [tries of 0.1 s]
  local i
  for i in $(seq "${2:-100}"); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  log "port $1 not up"; return 1
}
wait_http200() { # url [tries of 0.2 s]
  local i
  for i in $(seq "${2:-150}"); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0; sleep 0.2; done
  log "$1 never answered 200"; return 1
}

# GET url (extra curl args after it) and check status 200 and the sha256 of the body against data/sha256.txt
verify() { # url file [curl args...]
  local url=$1 f=$2 code got; shift 2
  code=$(curl -s -o "$BENCH_DIR/run/verify.tmp" -w '%{http_code}' "$@" "$url")
  got=$(sha256sum "$BENCH_DIR/run/verify.tmp" | cut -d' ' -f1); rm -f "$BENCH_DIR/run/verify.tmp"
  if [ "$code" = 200 ] && [ "$got" = "${SHA[$f]}" ]; then log "verify OK $url"; return 0; fi
  log "VERIFY FAILED $url code=$code sha=$got"; return 1
}

# One wrk run -> raw output file + one JSON line appended to $RESULTS/downloads.jsonl
wrk_one() { # server file conc rep url pids...   (WRK_HDR: optional extra header)
  local name=$1 file=$2 c=$3 r=$4 url=$5; shift 5
  local out="$RESULTS/raw/${name}__${file%.bin}__c${c}__r${r}.txt"
  local hdr=(); [ -n "${WRK_HDR:-}" ] && hdr=(-H "$WRK_HDR")
  reset_hwm "$@"
  local t0 s0 b0 t1 s1 b1 w0 w1 j hwm hl la ct srv busy
  la=$(cut -d' ' -f1 /proc/loadavg)
  proc_ticks > "$BENCH_DIR/run/procs0"
  t0=$(cpu_ticks "$@"); s0=$(steal_ticks); b0=$(busy_ticks); w0=$(now)
  local TIMEFORMAT='CLIENT_TIME %R %U %S'
  { time taskset -c "$CLI_CPU" wrk -t1 -c"$c" -d"$DUR" --timeout 60s --latency "${hdr[@]}" -s "$HERE/report.lua" "$url" \
      > "$out" 2>&1; } 2>> "$out" || true
  t1=$(cpu_ticks "$@"); s1=$(steal_ticks); b1=$(busy_ticks); w1=$(now)
  proc_ticks > "$BENCH_DIR/run/procs1"
  local others; others=$(top_others "$BENCH_DIR/run/procs0" "$BENCH_DIR/run/procs1" $(tree_pids "$@"))
  hwm=$(sum_hwm "$@"); hl=$(list_hwm "$@")
  echo "SERVER_HWM_KB $hwm $hl" >> "$out"
  j=$(sed -n 's/^JSON //p' "$out")
  [ -n "$j" ] || { log "wrk produced no result, see $out"; j=null; }
  ct=$(awk '/^CLIENT_TIME/{printf "%.3f", $3+$4}' "$out"); ct=${ct:-0}
  srv=$(ticks_to_s "$t0" "$t1"); busy=$(ticks_to_s "$b0" "$b1")
  # other_cpu_s: CPU time used on the box by anything but the server and wrk (a noise indicator)
  printf '{"server":"%s","file":"%s","conc":%d,"rep":%d,"rss_peak_kb":%d,"rss_by_proc":"%s","server_cpu_s":%s,"wrk_cpu_s":%s,"other_cpu_s":%s,"other_procs":"%s","wall_s":%s,"steal_s":%s,"loadavg1":%s,"wrk":%s}\n' \
    "$name" "$file" "$c" "$r" "$hwm" "${hl% }" "$srv" "$ct" "$(awk -v b="$busy" -v s="$srv" -v c="$ct" 'BEGIN{x=b-s-c; printf "%.2f", x<0?0:x}')" \
    "$others" "$(dt "$w0" "$w1")" "$(ticks_to_s "$s0" "$s1")" "$la" "$j" >> "$RESULTS/downloads.jsonl"
}

# warm-up + REPS measured runs for each (file, connections) of the download matrix
run_matrix() { # server urltemplate pids...   ({file} -> file name, {sha} -> its sha256)
  local name=$1 tmpl=$2 cfg file c r u hdr=(); shift 2
  [ -n "${WRK_HDR:-}" ] && hdr=(-H "$WRK_HDR")
  for cfg in "f4k.bin 16" "f1m.bin 16" "f100m.bin 4"; do
    read -r file c <<< "$cfg"
    u=${tmpl//\{file\}/$file}; u=${u//\{sha\}/${SHA[$file]}}
    log "$name $file c=$c: warm-up $WARM"
    taskset -c "$CLI_CPU" wrk -t1 -c"$c" -d"$WARM" --timeout 60s "${hdr[@]}" "$u" > /dev/null 2>&1 || true
    for r in $(seq "$REPS"); do
      log "$name $file c=$c rep $r/$REPS ($DUR)"
      wrk_one "$name" "$file" "$c" "$r" "$u" "$@"
      sleep 1
    done
  done
}
