#!/usr/bin/env bash
# Installs a private CRIU >= 4.1 for Hearth's function snapshots, without
# touching the host's libc: Debian bookworm's criu 3.17 fails on kernels
# >= 6.13, so this debootstraps a minimal Debian trixie root holding criu
# and its libraries. Hearth runs that criu through the root's own loader
# (ld-linux --library-path), in the host's namespaces; nothing is chrooted.
#
# Usage: scripts/criu.sh [DIR]   (default $HEARTH_CRIU_ROOT or
#        /var/lib/hearth/criu-root). Idempotent: an existing root whose criu
#        passes `criu check` is kept. Needs root and debootstrap.
set -euo pipefail

dir="${1:-${HEARTH_CRIU_ROOT:-/var/lib/hearth/criu-root}}"
# The mirror the host's apt sources use, unless one is given.
mirror="${HEARTH_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  hearth="$(dirname "$0")/../bin/hearth"
  [ -x "$hearth" ] && mirror="$("$hearth" image mirror 2>/dev/null || true)"
fi
[ -n "$mirror" ] || { echo "criu.sh: no Debian mirror found in the apt sources; set HEARTH_DEBIAN_MIRROR" >&2; exit 1; }

[ "$(id -u)" = 0 ] || { echo "criu.sh: run as root" >&2; exit 1; }

run_criu() { # root args...
  # In a private mount namespace with a tmpfs on /run: `criu check` writes
  # its probe cache there and must not litter the host's /run.
  local r="$1"; shift
  unshare -m sh -c 'mount --make-rprivate / && mount -t tmpfs -o size=4m tmpfs /run && exec "$@"' criu \
    "$r/lib64/ld-linux-x86-64.so.2" --library-path "$r/usr/lib/x86_64-linux-gnu" "$r/usr/sbin/criu" "$@"
}

if [ -x "$dir/usr/sbin/criu" ] && run_criu "$dir" check >/dev/null 2>&1; then
  echo "criu.sh: $(run_criu "$dir" --version | head -1) ready in $dir"
  exit 0
fi

command -v debootstrap >/dev/null || {
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

tmp="$dir.tmp"
rm -rf "$tmp"
echo "criu.sh: debootstrapping Debian trixie with criu into $tmp (about 1 min)"
if ! debootstrap --variant=minbase --include=criu trixie "$tmp" "$mirror" >"$tmp.log" 2>&1; then
  echo "criu.sh: debootstrap failed; see $tmp.log" >&2
  exit 1
fi
rm -rf "$tmp/var/cache/apt/archives/"*.deb "$tmp.log"
if ! out="$(run_criu "$tmp" check 2>&1)"; then
  echo "criu.sh: criu check failed in $tmp:" >&2
  echo "$out" >&2
  exit 1
fi
rm -rf "$dir"
mv "$tmp" "$dir"
echo "criu.sh: $(run_criu "$dir" --version | head -1) ready in $dir"
