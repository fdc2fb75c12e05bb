#!/usr/bin/env bash
# The test command: installs what the tests need, starts the real services, runs lint, types and every suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export UPDOWN_RUN_DIR=${UPDOWN_RUN_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/updown-test.XXXXXX")}

scripts/install-deps.sh

# Both charms packed by charmcraft and checked by `charmcraft analyse` (about 3 minutes); the tests read the .charm
# files (tests/charms/test_packed_charms.py). A directory already given in UPDOWN_TEST_CHARMS_DIR is used as is.
if [ -z "${UPDOWN_TEST_CHARMS_DIR:-}" ]; then
  export UPDOWN_TEST_CHARMS_DIR="$UPDOWN_RUN_DIR/charms"
  scripts/pack-charms.sh "$UPDOWN_TEST_CHARMS_DIR"
fi

started=()
cleanup() {
  for ((i=${#started[@]}-1; i>=0; i--)); do "scripts/services/${started[$i]}.sh" stop || true; done
}
trap cleanup EXIT

UPDOWN_TEST_POSTGRES_URL=$(scripts/services/postgres.sh start | tail -1); started+=(postgres)
export UPDOWN_TEST_POSTGRES_URL UPDOWN_REQUIRE_SERVICES=1
# Swift (tempauth + s3api + tempurl): UPDOWN_TEST_SWIFT_URL/_USER/_KEY/_SCRIPT for tests/stack/test_storage_*.
scripts/services/swift.sh start >/dev/null; started+=(swift)
set -a; eval "$(scripts/services/swift.sh env)"; set +a
# Keystone v3 and a Keystone-auth Swift proxy (~25 s the first time): UPDOWN_TEST_KEYSTONE_*.
scripts/services/keystone.sh start >/dev/null; started+=(keystone)
set -a; eval "$(scripts/services/keystone.sh env)"; set +a
# The caching tier (scripts/stack.sh: updown serve behind two HAProxy + Varnish frontend units): UPDOWN_TEST_STACK_*.
scripts/stack.sh start >/dev/null; started+=(../stack)
set -a; eval "$(scripts/stack.sh env)"; set +a

.venv/bin/ruff check src tests benchmarks charms scripts
.venv/bin/ruff format --check src tests charms scripts
.venv/bin/mypy
.venv/bin/pytest -q -p no:cacheprovider "$@"
