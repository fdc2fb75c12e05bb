#!/usr/bin/env bash
# Build the .deb of the apt transport method updown+https: /usr/lib/apt/methods/updown+https is
# src/updown_app/aptmethod.py itself (standard library only, run by /usr/bin/python3), plus an example of the
# apt configuration it reads. Usage: scripts/build-apt-method-deb.sh [output directory, default dist/]
# Prints the path of the .deb. The build is reproducible: file dates are SOURCE_DATE_EPOCH (default: the
# method file's last commit, or 0 outside git). DEB_MAINTAINER sets the Maintainer field.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-dist}
source=src/updown_app/aptmethod.py
name=updown-apt-transport
version=$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$source")
[ -n "$version" ] || { echo "build-apt-method-deb: no VERSION in $source" >&2; exit 2; }
head -1 "$source" | grep -qx '#!/usr/bin/python3 -I' || { echo "build-apt-method-deb: $source must start with #!/usr/bin/python3 -I" >&2; exit 2; }
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct -- "$source" 2>/dev/null || echo 0)}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -D -m 0755 "$source" "$root/usr/lib/apt/methods/updown+https"
doc="$root/usr/share/doc/$name"
install -d -m 0755 "$doc/examples"
cat > "$doc/examples/50updown-token.conf" <<'CONF'
// Copy to /etc/apt/apt.conf.d/50updown-token and name your updown private host.
// The token file holds the SSO access token on one line; it must be mode 0600 (root only).
Acquire::updown+https::private.example.com::Token-File "/etc/apt/auth.conf.d/updown.token";
CONF
cat > "$doc/README" <<'DOC'
updown+https: an apt transport method for updown's private downloads.

apt's https method sends only Basic credentials; updown's private host wants an SSO bearer token. This method
sends "Authorization: Bearer <token>", the token read from the file that Acquire::updown+https::<host>::Token-File
names (mode 0600, one line), never from a command line or a URL.

  echo 'deb updown+https://private.example.com/<package>/<revision>/ ./' > /etc/apt/sources.list.d/private.list

See examples/50updown-token.conf.
DOC
chmod 0644 "$doc/README" "$doc/examples/50updown-token.conf"
install -d -m 0755 "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: all
Maintainer: ${DEB_MAINTAINER:-updown maintainers <updown-maintainers@example.com>}
Depends: python3 (>= 3.10), apt
Section: admin
Priority: optional
Description: apt transport method updown+https (SSO bearer tokens)
 Lets apt download from updown's private host, which needs an SSO bearer token:
 sources.list entries with updown+https:// URIs send the token read from a
 root-only file that apt's configuration names.
CONTROL
find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$out"
deb="$out/${name}_${version}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
