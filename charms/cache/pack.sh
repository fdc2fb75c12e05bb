#!/usr/bin/env bash
# Pack the updown-cache charm. The build instance only sees this directory, so the library both charms carry
# (charms/common/updown_charms) is copied to lib/ first (dispatch puts lib/ on the charm's path).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rm -rf "$here/lib/updown_charms" && mkdir -p "$here/lib" && cp -r "$root/charms/common/updown_charms" "$here/lib/"
find "$here/lib/updown_charms" -name '__pycache__' -prune -exec rm -rf {} +
cd "$here"
charmcraft=(${CHARMCRAFT:-charmcraft})  # scripts/pack-charms.sh passes its own (see there)
"${charmcraft[@]}" pack "$@"
