#!/usr/bin/env bash
# mypy over everything that has Python: the service (pyproject's `files`), each charm, and scripts/. The charms
# are checked one at a time, each with its own src/ and the library both carry (charms/common) on the path, as
# dispatch puts them: both have modules named charm, state, models and workload.
set -euo pipefail
cd "$(dirname "$0")/.."
mypy=(.venv/bin/mypy --cache-dir .mypy_cache)
"${mypy[@]}"
MYPYPATH=charms/common:charms/cache/src "${mypy[@]}/cache" charms/common charms/cache/src
MYPYPATH=charms/common:charms/updown-app/src "${mypy[@]}/updown-app" charms/updown-app/src
# scripts/stack.py renders the cache units with the cache charm's modules (and the app units' through
# scripts/charm_modules.py, which mypy sees as plain modules).
MYPYPATH=scripts:charms/common:charms/cache/src "${mypy[@]}/scripts" scripts
