#!/usr/bin/env bash
# Install what the tests need: Debian packages (scripts/apt-packages.txt) and the Python venv (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t pkgs < <(sed -e 's/#.*//' -e '/^\s*$/d' scripts/apt-packages.txt)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Packages whose postinst starts a daemon the tests never use (a Prometheus server on :9090, exporters on their
  # default ports): stopped and disabled again, only when this run installed them.
  for p in "${missing[@]}"; do
    case "$p" in
      prometheus | prometheus-varnish-exporter | prometheus-nginx-exporter)
        if [ -d /run/systemd/system ]; then $SUDO systemctl disable --now "$p.service" >/dev/null 2>&1 || true; fi ;;
    esac
  done
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e ".[test]"
