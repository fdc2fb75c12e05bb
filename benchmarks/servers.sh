#!/bin/bash
# Start/stop helpers for the three servers under test. Sourced by run.sh after lib.sh.
# Each start_* function sets <NAME>_PID (registered with `track`) and <NAME>_URL, and returns non-zero on failure.

# ---------------------------------------------------------------------------------------------------- nginx
start_nginx() {
  NGINX_PORT=$(free_port)
  local mask; mask=$(python3 -c "print(format(1 << $SRV_CPU, 'b'))")
  mkdir -p "$BENCH_DIR/run/nginx"
  sed -e "s|@BENCH_DIR@|$BENCH_DIR|g" -e "s|@PORT@|$NGINX_PORT|g" -e "s|@SRV_CPU_MASK@|$mask|g" -e "s|@SRV_CPU@|$SRV_CPU|g" \
    "$HERE/conf/nginx.conf.in" > "$BENCH_DIR/conf/nginx.conf"
  taskset -c "$SRV_CPU" nginx -p "$BENCH_DIR/run/nginx/" -e "$BENCH_DIR/logs/nginx.err" -c "$BENCH_DIR/conf/nginx.conf" \
    > "$BENCH_DIR/logs/nginx.out" 2>&1 &
  NGINX_PID=$!; track "$NGINX_PID"
  NGINX_URL="http://127.0.0.1:$NGINX_PORT"
  wait_tcp "$NGINX_PORT"
}

# ---------------------------------------------------------------------------------------------------- docker registry
# Fresh, empty storage on every start. GOMAXPROCS=1 + taskset: one core, like the others.
start_registry() {
  REG_PORT=${REG_PORT:-$(free_port)}
  rm -rf "$BENCH_DIR/run/registry-data"; mkdir -p "$BENCH_DIR/run/registry-data"
  sed -e "s|@BENCH_DIR@|$BENCH_DIR|g" -e "s|@PORT@|$REG_PORT|g" "$HERE/conf/registry.yml.in" > "$BENCH_DIR/conf/registry.yml"
  GOMAXPROCS=1 taskset -c "$SRV_CPU" docker-registry serve "$BENCH_DIR/conf/registry.yml" >> "$BENCH_DIR/logs/registry.log" 2>&1 &
  REG_PID=$!; track "$REG_PID"
  REG_URL="http://127.0.0.1:$REG_PORT"
  wait_http200 "$REG_URL/v2/"
}

# POST /v2/<repo>/blobs/uploads/ -> absolute upload URL (Location)
registry_start_upload() { # repo
  local loc
  loc=$(curl -s -D - -o /dev/null -X POST "$REG_URL/v2/$1/blobs/uploads/" | awk 'tolower($1)=="location:"{print $2}' | tr -d '\r')
  case "$loc" in http*) ;; *) loc="$REG_URL$loc";; esac
  echo "$loc"
}

# Monolithic blob upload: POST, then one PUT <Location>&digest=sha256:<hex> streaming the file (curl -T reads it
# as it sends, it does not load it into memory). Prints "<http code> <PUT time_total s>".
registry_push() { # repo file-name-in-data
  local loc sep
  loc=$(registry_start_upload "$1")
  case "$loc" in *\?*) sep='&';; *) sep='?';; esac
  taskset -c "$CLI_CPU" curl -s -o /dev/null -w '%{http_code} %{time_total}\n' -X PUT -T "$BENCH_DIR/data/$2" \
    -H 'Content-Type: application/octet-stream' -H 'Expect:' "$loc${sep}digest=sha256:${SHA[$2]}"
}

# ---------------------------------------------------------------------------------------------------- updown
# One process, behind-proxy mode (plain HTTP on 127.0.0.1, trusts X-Forwarded-Proto from 127.0.0.1), fresh data dir.
UPDOWN_SECRET=${UPDOWN_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}
# ASGI_SERVER: the HTTP server the app runs under. uvicorn is `updown serve` (its protocol enforces the connection
# limits, http/protocol.py); granian and hypercorn run the same app factory, for comparison only.
ASGI_SERVER=${ASGI_SERVER:-uvicorn}
ASGI_PKGS="$BENCH_DIR/asgi-pkgs"
case "$ASGI_SERVER" in
  uvicorn) UPDOWN_CMD=("$VENV/bin/updown" serve) ;;
  granian) UPDOWN_CMD=(env PYTHONPATH="$ASGI_PKGS" "$VENV/bin/python" -m granian --interface asgi --factory
             --host 127.0.0.1 --port @PORT@ --workers 1 --loop uvloop --no-ws updown_app.http.app:create_app) ;;
  hypercorn) UPDOWN_CMD=(env PYTHONPATH="$ASGI_PKGS" "$VENV/bin/python" -m hypercorn --bind 127.0.0.1:@PORT@
               --workers 1 --worker-class uvloop "updown_app.http.app:create_app()") ;;
  *) echo "unknown ASGI_SERVER=$ASGI_SERVER (uvicorn, granian, hypercorn)" >&2; exit 2 ;;
esac
install_asgi_server() { # granian/hypercorn into their own directory, never into the project's venv
  [ "$ASGI_SERVER" = uvicorn ] || [ -d "$ASGI_PKGS/$ASGI_SERVER" ] \
    || "$VENV/bin/pip" install -q --target "$ASGI_PKGS" "granian==2.8.9" "hypercorn==0.18.0"
}
start_updown() { # [data-dir]
  UPDOWN_PORT=$(free_port)
  local cmd=("${UPDOWN_CMD[@]//@PORT@/$UPDOWN_PORT}")
  UPDOWN_DATA=${1:-$BENCH_DIR/run/updown-data}
  rm -rf "$UPDOWN_DATA"; mkdir -p "$UPDOWN_DATA"
  UPDOWN_DATA_DIR="$UPDOWN_DATA" UPDOWN_TLS=false UPDOWN_PORT="$UPDOWN_PORT" UPDOWN_BIND=127.0.0.1 \
  UPDOWN_PUBLIC_HOST=127.0.0.1 UPDOWN_TRUSTED_PROXIES='["127.0.0.1/32"]' UPDOWN_ACCESS_LOG=false \
  UPDOWN_LOG_LEVEL=warning UPDOWN_HMAC_KEYS="{\"bench\":\"$UPDOWN_SECRET\"}" \
    taskset -c "$SRV_CPU" "${cmd[@]}" >> "$BENCH_DIR/logs/updown.log" 2>&1 &
  UPDOWN_PID=$!; track "$UPDOWN_PID"
  UPDOWN_URL="http://127.0.0.1:$UPDOWN_PORT"
  wait_http200 "$UPDOWN_URL/readyz" 200 || { tail -20 "$BENCH_DIR/logs/updown.log" >&2; return 1; }
}

# environment for the updown CLI / Python client
updown_client_env() {
  export UPDOWN_URL UPDOWN_KEY_ID=bench UPDOWN_KEY="$UPDOWN_SECRET"
}

# upload + publish with the CLI (setup for the download runs; not timed)
updown_publish_file() { # file-name-in-data revision
  local rec id
  rec=$(updown_client_env; "$VENV/bin/updown" upload "$BENCH_DIR/data/$1" --package bench --revision "$2") \
    || { log "updown upload $1 failed: $rec"; return 1; }
  id=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["id"])' <<< "$rec") \
    || { log "no id in upload output: $rec"; return 1; }
  (updown_client_env; "$VENV/bin/updown" publish "$id" > /dev/null) || { log "updown publish $id failed"; return 1; }
}
