#!/usr/bin/env bash
# Pack the updown-app charm. The build instance only sees this directory, so the app's source (this repository's
# package) and the cache charm's relation schema are copied next to charmcraft.yaml first; charmcraft's
# `wheelhouse` part then builds the wheels of the app and its dependencies for the base's Python.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rm -rf "$here/dist"
mkdir -p "$here/dist/updown-app"
cp -r "$root/pyproject.toml" "$root/README.md" "$root/src" "$here/dist/updown-app/"
find "$here/dist/updown-app" -name '__pycache__' -prune -exec rm -rf {} +
if [ -n "${UPDOWN_RELEASE:-}" ]; then  # pack another release of the same code (refresh tests)
    sed -i "s/^version = \".*\"/version = \"$UPDOWN_RELEASE\"/" "$here/dist/updown-app/pyproject.toml"
fi
cp "$root/charms/cache/src/interface.py" "$here/src/interface.py"  # one schema: the cache charm's (not in git)
cd "$here"
charmcraft=(${CHARMCRAFT:-charmcraft})  # scripts/pack-charms.sh passes its own (see there)
[ -e lib/charms/grafana_agent/v0/cos_agent.py ] ||
    echo "pack.sh: no cos_agent library in lib/ (see charmcraft.yaml): the cos-agent endpoint stays inert" >&2
"${charmcraft[@]}" pack "$@"
