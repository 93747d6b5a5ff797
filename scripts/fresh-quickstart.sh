#!/usr/bin/env bash
# The README's first command on a fresh Debian 12 that has only Rust:
# debootstraps a minimal bookworm root (minbase plus curl and
# ca-certificates, what rustup's installer itself needs), lends it this
# machine's Rust toolchain read-only (rustup and cargo, no crates, no
# target directory), copies this repository in (committed files only) and
# runs `scripts/demo.sh out/demo` inside it as root with an empty cache.
# Nothing else is installed up front: demo.sh must install or name what it
# needs. Passes when out/demo verifies. Takes 20-30 minutes on 2 cores
# (a release build from nothing, two debootstraps); not part of the test
# suite.
#
#   scripts/fresh-quickstart.sh [WORKDIR]     # as root; default /tmp/nodebake-fresh
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${1:-/tmp/nodebake-fresh}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "fresh-quickstart: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot, mounts)"; exit 1; }
for t in debootstrap git; do command -v $t >/dev/null || { log "$t is not installed"; exit 1; }; done
RUSTUP=${RUSTUP_HOME:-$HOME/.rustup}
CARGO_BIN=${CARGO_HOME:-$HOME/.cargo}/bin
[ -d "$RUSTUP/toolchains" ] && [ -x "$CARGO_BIN/cargo" ] || { log "no rustup toolchain under $RUSTUP / $CARGO_BIN"; exit 1; }

mounts=()
cleanup() {
  local i
  for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
bind() { # src dest [ro]
  mkdir -p "$2"
  mount --bind "$1" "$2"; mounts+=("$2")
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$2"
  return 0
}

if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  log "debootstrap bookworm (minbase + curl, ca-certificates) into $ROOT"
  rm -rf "$ROOT"
  debootstrap --variant=minbase --include=curl,ca-certificates bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; exit 1; }
fi
rm -rf "$ROOT/root/nodebake" "$ROOT/root/.cache/nodebake" "$ROOT/root/.cargo/registry"
mkdir -p "$ROOT/root/nodebake"
git -C "$REPO" archive HEAD | tar -x -C "$ROOT/root/nodebake"
# ../shared beside the repository is not part of a fresh checkout's world.
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The site's own CA certificates (an egress proxy here), as every machine
# on this network has them: without them no HTTPS reaches crates.io.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1
fi
bind /proc "$ROOT/proc"
bind /sys "$ROOT/sys"
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"
bind "$RUSTUP" "$ROOT/root/.rustup" ro
bind "$CARGO_BIN" "$ROOT/root/.cargo/bin" ro

log "running scripts/demo.sh out/demo inside (log: $ROOT/root/quickstart.log)"
T0=$(date +%s)
if ! chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    bash -c 'cd /root/nodebake && scripts/demo.sh out/demo' >"$ROOT/root/quickstart.log" 2>&1; then
  tail -30 "$ROOT/root/quickstart.log" >&2
  log "FAILED after $(( $(date +%s) - T0 )) s"
  exit 1
fi
chroot "$ROOT" /root/nodebake/target/release/nodebake verify /root/nodebake/out/demo >&2
log "passed in $(( $(date +%s) - T0 )) s: out/demo built and verified on a fresh Debian 12 with only Rust"
