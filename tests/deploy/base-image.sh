#!/usr/bin/env bash
# The rehearsal's base machine image: Debian 12 (minbase) with systemd as init and what a unit needs before the
# charms' own apt-get (python3 for ./dispatch, python3-venv for the release venvs). Built once with debootstrap
# from the mirror the host's apt uses, cached in $UPDOWN_DEPLOY_CACHE (default /var/cache/updown-deploy) under a
# name that changes with the package list, rebuilt when missing. Prints the image's root directory.
set -euo pipefail
CACHE=${UPDOWN_DEPLOY_CACHE:-/var/cache/updown-deploy}
SUITE=bookworm
INCLUDE=systemd,systemd-sysv,dbus,iproute2,python3,python3-venv,ca-certificates,curl,procps
NAME=$SUITE-$(printf '%s' "$INCLUDE" | sha256sum | cut -c1-12)
ROOT=$CACHE/images/$NAME
mkdir -p "$CACHE/images"
exec 9>"$CACHE/images/.lock"
flock 9   # one build at a time; a second caller then finds it done
if [ ! -f "$ROOT/.complete" ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list)
  rm -rf "$ROOT.tmp" "$ROOT"
  debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$ROOT.tmp" "$mirror" >"$CACHE/images/$NAME.log" 2>&1 \
    || { tail -20 "$CACHE/images/$NAME.log" >&2; exit 1; }
  # What a cloud image has and minbase lacks: a machine id per boot, no getty on a console nobody reads.
  rm -f "$ROOT.tmp/etc/machine-id"; : >"$ROOT.tmp/etc/machine-id"
  chroot "$ROOT.tmp" systemctl mask console-getty.service getty@tty1.service systemd-timesyncd.service \
    >/dev/null 2>&1 || true
  rm -rf "$ROOT.tmp/var/cache/apt/archives/"*.deb "$ROOT.tmp/var/lib/apt/lists/"*
  touch "$ROOT.tmp/.complete"
  mv "$ROOT.tmp" "$ROOT"
fi
echo "$ROOT"
