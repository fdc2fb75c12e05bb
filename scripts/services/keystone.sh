#!/usr/bin/env bash
# A throwaway Keystone v3 (SQLite, uwsgi with one process and one thread) on 127.0.0.1, plus a second Swift proxy
# that authenticates with it, in front of the storage servers of scripts/services/swift.sh (start that first).
#
#   keystone.sh start   bootstrap (first time), start uwsgi and the Keystone-auth Swift proxy; create the
#                       object-store endpoint, project 'store' and user 'updown' (role member); prints the URL
#   keystone.sh stop    stop both by PID
#   keystone.sh env     the variables the tests read (UPDOWN_TEST_KEYSTONE_*), as shell assignments
#
# Installs nothing (Debian: keystone, uwsgi, uwsgi-plugin-python3, python3-keystonemiddleware). Ports:
# UPDOWN_KEYSTONE_PORT (default 15000), UPDOWN_SWIFT_KEYSTONE_PORT (proxy, default 18081).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
RUN_DIR=${UPDOWN_RUN_DIR:-${TMPDIR:-/tmp}/updown-run}
K=$RUN_DIR/keystone
PIDS=$K/run
ETC=$RUN_DIR/swift/etc
PORT=${UPDOWN_KEYSTONE_PORT:-15000}
PROXY_PORT=${UPDOWN_SWIFT_KEYSTONE_PORT:-18081}
MEMCACHED_PORT=${UPDOWN_SWIFT_MEMCACHED_PORT:-11311}
URL=http://127.0.0.1:$PORT/v3
PROXY_URL=http://127.0.0.1:$PROXY_PORT
ADMIN_PASSWORD=adminpw
USER_NAME=updown
USER_PASSWORD=updownpw
PROJECT=store

render() {  # render TEMPLATE OUT
  sed -e "s|@K@|$K|g" -e "s|@PORT@|$PORT|g" -e "s|@PROXY_PORT@|$PROXY_PORT|g" -e "s|@ETC@|$ETC|g" \
      -e "s|@USER@|$(id -un)|g" -e "s|@MEMCACHED_PORT@|$MEMCACHED_PORT|g" \
      -e "s|@ADMIN_PASSWORD@|$ADMIN_PASSWORD|g" "$1" > "$2"
}

# Project, user, role and the object-store endpoint, through Keystone's REST API (idempotent).
provision() {
  python3 - "$URL" "$ADMIN_PASSWORD" "$PROJECT" "$USER_NAME" "$USER_PASSWORD" "$PROXY_URL" <<'PY'
import json, sys, urllib.request, urllib.error
url, admin_pw, project, user, user_pw, proxy = sys.argv[1:]

def call(method, path, body=None, token=None):
    req = urllib.request.Request(url + path, method=method, data=json.dumps(body).encode() if body else None,
                                 headers={"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        data = r.read()
        return r.headers, json.loads(data) if data else {}

headers, _ = call("POST", "/auth/tokens", {"auth": {
    "identity": {"methods": ["password"], "password": {"user": {"name": "admin", "domain": {"id": "default"},
                                                               "password": admin_pw}}},
    "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
token = headers["X-Subject-Token"]

def find_or_create(kind, plural, name, body, query):
    _, found = call("GET", f"/{plural}?{query}", token=token)
    if found[plural]:
        return found[plural][0]["id"]
    return call("POST", f"/{plural}", {kind: body}, token)[1][kind]["id"]

service = find_or_create("service", "services", "swift", {"type": "object-store", "name": "swift"}, "type=object-store")
_, eps = call("GET", f"/endpoints?service_id={service}&interface=public", token=token)
if not eps["endpoints"]:
    call("POST", "/endpoints", {"endpoint": {"service_id": service, "interface": "public", "region_id": "RegionOne",
                                             "url": proxy + "/v1/AUTH_%(project_id)s"}}, token)
project_id = find_or_create("project", "projects", project, {"name": project, "domain_id": "default"},
                            f"name={project}")
user_id = find_or_create("user", "users", user, {"name": user, "domain_id": "default", "password": user_pw},
                         f"name={user}")
_, roles = call("GET", "/roles?name=member", token=token)
call("PUT", f"/projects/{project_id}/users/{user_id}/roles/{roles['roles'][0]['id']}", token=token)
PY
}

case "${1:-}" in
  start)
    for bin in keystone-manage uwsgi swift-proxy-server; do
      command -v "$bin" >/dev/null || { echo "keystone: $bin is not installed (scripts/install-deps.sh)" >&2; exit 1; }
    done
    [ -f "$ETC/object.ring.gz" ] || { echo "keystone: start scripts/services/swift.sh first" >&2; exit 1; }
    mkdir -p "$K/fernet-keys" "$K/credential-keys" "$K/log" "$K/run"
    render "$HERE/keystone/keystone.conf.in" "$K/keystone.conf"
    render "$HERE/keystone/uwsgi.ini.in" "$K/uwsgi.ini"
    render "$HERE/keystone/proxy-server.conf.in" "$ETC/proxy-server-keystone.conf"
    KS=(keystone-manage --config-file "$K/keystone.conf")
    if [ ! -f "$K/bootstrapped" ]; then
      # db_sync prints a harmless eventlet traceback at exit.
      "${KS[@]}" db_sync >"$K/log/setup.log" 2>&1
      "${KS[@]}" fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" >>"$K/log/setup.log" 2>&1
      "${KS[@]}" credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)" >>"$K/log/setup.log" 2>&1
      "${KS[@]}" bootstrap --bootstrap-password "$ADMIN_PASSWORD" --bootstrap-region-id RegionOne \
        --bootstrap-admin-url "$URL/" --bootstrap-internal-url "$URL/" --bootstrap-public-url "$URL/" \
        >>"$K/log/setup.log" 2>&1
      touch "$K/bootstrapped"
    fi
    if ! running uwsgi; then
      uwsgi --ini "$K/uwsgi.ini" >/dev/null 2>&1 & echo $! > "$K/run/uwsgi.pid"
    fi
    wait_url "$URL" uwsgi "$K/log/uwsgi.log" 300
    provision
    if ! running proxy; then
      swift-proxy-server "$ETC/proxy-server-keystone.conf" -v >"$K/log/proxy.log" 2>&1 &
      echo $! > "$K/run/proxy.pid"
    fi
    wait_url "$PROXY_URL/healthcheck" proxy "$K/log/proxy.log" && echo "$URL"
    ;;
  stop)
    stop_by_pid proxy uwsgi
    ;;
  env)
    echo "UPDOWN_TEST_KEYSTONE_URL=$URL"
    echo "UPDOWN_TEST_KEYSTONE_USER=$USER_NAME"
    echo "UPDOWN_TEST_KEYSTONE_PASSWORD=$USER_PASSWORD"
    echo "UPDOWN_TEST_KEYSTONE_PROJECT=$PROJECT"
    ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
