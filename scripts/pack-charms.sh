#!/usr/bin/env bash
# Pack both charms with charmcraft and check them with `charmcraft analyse`.
#
# Interface (kept stable: scripts/test.sh and the deployment rehearsal call it):
#
#   scripts/pack-charms.sh OUTDIR [CHARM...]
#
#   CHARM           updown-app and/or updown-cache (default: both)
#   OUTDIR          created if missing; receives OUTDIR/updown-app_amd64.charm and OUTDIR/updown-cache_amd64.charm,
#                   replacing earlier ones. Nothing else is left there.
#   UPDOWN_RELEASE  optional: pack updown-app carrying this version of the service (a second release for refresh
#                   tests), as charms/updown-app/pack.sh does.
#   CHARMCRAFT_VENV optional: where charmcraft is installed (default .run/charmcraft in the repository); reused
#                   while it holds the pinned charmcraft version.
#   Exit status 0 only if every charm packed and `charmcraft analyse` reported no error and no failed check for
#   each; the analysis is printed.
#
# How: charmcraft (pinned below, from PyPI) goes into its own venv; the charms are packed in destructive mode (on
# this host, no LXD), each from a clean build (parts/ stage/ prime/ removed first; only pip's download cache is
# reused). The charms' base is ubuntu@24.04 and charmcraft refuses to build for it on any other distribution. On a
# Debian host this script runs charmcraft through a small shim that lifts exactly that check (craft-application's
# LifecycleService._validate_build_plan, for an Ubuntu build base on a Debian host) and nothing else; on Ubuntu
# 24.04 the shim changes nothing. A Debian-built charm carries a venv for Debian's Python, so it is for rehearsals
# on Debian machines; the charm you deploy on Ubuntu 24.04 is packed there (README.md, "Packing the charms").
# craft-parts needs python-apt: the Debian package python3-apt is linked into the venv.
set -euo pipefail

CHARMCRAFT_VERSION=4.5.0  # the shim patches this version's internals: check it when raising the pin

usage() { echo "usage: $0 OUTDIR [updown-app|updown-cache ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
mkdir -p "$1"
out="$(cd "$1" && pwd)"
shift
charms=("$@")
[ ${#charms[@]} -gt 0 ] || charms=(updown-app updown-cache)
for c in "${charms[@]}"; do case "$c" in updown-app|updown-cache) ;; *) usage ;; esac; done

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${CHARMCRAFT_VENV:-$root/.run/charmcraft}"
host_python=/usr/bin/python3  # python3-apt is built for the distribution's own Python

if ! "$venv/bin/python" -c "import charmcraft, apt_pkg, sys; sys.exit(charmcraft.__version__ != '$CHARMCRAFT_VERSION')" \
    2>/dev/null; then
  echo "pack-charms: installing charmcraft $CHARMCRAFT_VERSION into $venv" >&2
  rm -rf "$venv"
  "$host_python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "charmcraft==$CHARMCRAFT_VERSION" \
    >"$out/.charmcraft-install.log" 2>&1 || { cat "$out/.charmcraft-install.log" >&2; exit 1; }
  rm -f "$out/.charmcraft-install.log"
  # python-apt is not on PyPI in a usable form: link the distribution's package into the venv.
  apt_dir="$("$host_python" -c 'import apt_pkg, os; print(os.path.dirname(apt_pkg.__file__))')"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  for name in apt aptsources "$(cd "$apt_dir" && ls apt_pkg.*.so)" "$(cd "$apt_dir" && ls apt_inst.*.so)"; do
    ln -sfn "$apt_dir/$name" "$site/$name"
  done
fi

shim="$venv/charmcraft-debian-host.py"
cat >"$shim" <<'EOF'
"""charmcraft, with one check lifted: an Ubuntu build base may be built on a Debian host (destructive mode).
Everything else is charmcraft's own code."""
import sys

import craft_platforms
from craft_application.services import lifecycle

_validate = lifecycle.LifecycleService._validate_build_plan


def _validate_build_plan(self: lifecycle.LifecycleService) -> None:
    host = craft_platforms.DistroBase.from_linux_distribution(lifecycle.distro.LinuxDistribution())
    if host.distribution == "debian" and self._build_info.build_base.distribution == "ubuntu":
        return
    _validate(self)


lifecycle.LifecycleService._validate_build_plan = _validate_build_plan  # type: ignore[method-assign]

from charmcraft.application.main import main  # noqa: E402

sys.argv[0] = "charmcraft"
sys.exit(main())
EOF
charmcraft=("$venv/bin/python" "$shim")
export CHARMCRAFT="${charmcraft[*]}"  # charms/updown-app/pack.sh runs it
# charmcraft writes its state and logs under $HOME; keep them per run of this script's venv.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$venv/runtime}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"

pack() {  # pack <charm name> <charm dir> <command...>
  local name=$1 dir=$2
  shift 2
  local start=$SECONDS
  rm -rf "$dir/parts" "$dir/stage" "$dir/prime" "$dir"/*.charm "$out/${name}_amd64.charm"
  if ! (cd "$dir" && "$@" --destructive-mode >"$out/.$name.pack.log" 2>&1); then
    tail -40 "$out/.$name.pack.log" >&2
    echo "pack-charms: packing $name failed (log above)" >&2
    return 1
  fi
  mv "$dir/${name}_amd64.charm" "$out/"
  rm -rf "$dir/parts" "$dir/stage" "$dir/prime" "$out/.$name.pack.log"
  echo "pack-charms: $out/${name}_amd64.charm ($((SECONDS - start)) s)" >&2
}

analyse() {  # analyse <charm file>: print the analysis, fail on an error or a failed check
  local report
  report="$("${charmcraft[@]}" analyse "$1" 2>&1)" || { echo "$report" >&2; return 1; }
  echo "$report" | grep -E '^[a-z-]+: ' >&2
  if echo "$report" | grep -qE '\[(ERROR|FATAL|FAILED)\]'; then
    echo "pack-charms: charmcraft analyse found errors in $1" >&2
    return 1
  fi
}

for c in "${charms[@]}"; do
  case "$c" in
    updown-app) pack updown-app "$root/charms/updown-app" "$root/charms/updown-app/pack.sh" ;;
    updown-cache) pack updown-cache "$root/charms/cache" "${charmcraft[@]}" pack ;;
  esac
done
for c in "${charms[@]}"; do analyse "$out/${c}_amd64.charm"; done
