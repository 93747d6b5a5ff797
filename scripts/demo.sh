#!/usr/bin/env bash
# Builds the demo node image (images/demo.toml) into OUTDIR.
#
# On first use it fetches what the demo needs from Debian's archive into a
# cache outside the repository (default ~/.cache/nodebake/demo):
#   - a Debian 12 base root filesystem made with debootstrap (systemd, plus
#     the libraries the node packages need), as a tarball;
#   - the node packages themselves as .deb files, unpacked by nodebake:
#     containerd, runc, containernetworking-plugins, keepalived, haproxy,
#     kubernetes-client, etcd-client (etcdctl: masters remove a rebuilt
#     master's stale etcd member with it), and the Debian cloud kernel;
#   - a small container image archive (scripts/mkimage.py);
# and pins every input's sha256 in a lock file next to them.
# Later runs reuse the cache and need no network.
#
# Usage: scripts/demo.sh OUTDIR
set -euo pipefail

OUT=${1:?usage: scripts/demo.sh OUTDIR}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${NODEBAKE_DEMO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodebake/demo}
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
NODE_PKGS="containerd runc containernetworking-plugins keepalived haproxy kubernetes-client etcd-client"
BASE_PKGS="systemd,systemd-sysv,dbus,udev,kmod,iproute2,iptables,ipset,conntrack,ethtool,socat,ca-certificates,chrony,procps,util-linux,openssh-server,sudo"
export NODEBAKE_DEMO_CACHE=$CACHE

log() { echo "demo: $*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "$1 needs root the first time (sudo $0 $OUT), or set NODEBAKE_DEMO_CACHE to a prepared cache"; exit 1; }; }

# Every host tool the demo needs, checked before any slow work and all
# listed at once: installed in one apt-get call when root on Debian,
# otherwise named with their packages (Debian; EL 9 in README.md).
check_tools() {
  local missing=() pkgs=() tp t
  local want=("cc:gcc" "python3:python3" "dpkg-deb:dpkg" "file:file" "depmod:kmod" "mke2fs:e2fsprogs"
    "debugfs:e2fsprogs" "mkfs.fat:dosfstools" "mcopy:mtools" "syslinux:syslinux" "qemu-img:qemu-utils")
  [ -f "$CACHE/debian-$SUITE-amd64.tar.gz" ] || want+=("debootstrap:debootstrap")
  for tp in "${want[@]}"; do
    t=${tp%%:*}
    PATH=$PATH:/usr/sbin:/sbin command -v "$t" >/dev/null || { missing+=("$t"); pkgs+=("${tp#*:}"); }
  done
  if [ ! -f /usr/lib/syslinux/mbr/mbr.bin ] && [ ! -f /usr/share/syslinux/mbr.bin ]; then
    missing+=("syslinux mbr.bin"); pkgs+=(syslinux-common)
  fi
  [ ${#missing[@]} = 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${pkgs[*]} (for ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  else
    log "missing host tools: ${missing[*]}"
    log "install (Debian): apt-get install $(printf '%s\n' "${pkgs[@]}" | sort -u | paste -sd' ')"
    log "EL 9 and others: see README.md (Quickstart)"
    exit 1
  fi
}

build_binaries() {
  log "building nodebake and the static nodebake-firstboot"
  (cd "$REPO" && cargo build --quiet --release -p nodebake)
  "$REPO/scripts/build-firstboot-static.sh" >/dev/null
}

make_base() {
  local tarball=$CACHE/debian-$SUITE-amd64.tar.gz
  # The package lists the base was made from travel next to it: a cache
  # made before a package was added is made again.
  local made_from="base=$BASE_PKGS node=$NODE_PKGS"
  [ -f "$tarball" ] && [ "$(cat "$tarball.pkgs" 2>/dev/null)" = "$made_from" ] && return 0
  need_root "debootstrap"
  local work; work=$(mktemp -d "$CACHE/.base-XXXXXX")
  # The base carries the node packages' dependencies but not the packages
  # themselves: those are the builder's job. debootstrap resolves both
  # closures; the difference of the two is what the base adds.
  log "resolving package closures with debootstrap --print-debs"
  local with without extra
  with=$(debootstrap --print-debs --variant=minbase --include="$BASE_PKGS,${NODE_PKGS// /,}" "$SUITE" "$work/r1" "$MIRROR" | tr ' ' '\n' | sort -u)
  rm -rf "$work/r1"
  extra=$(comm -23 <(echo "$with") <(tr ' ' '\n' <<<"$NODE_PKGS" | sort -u) | paste -sd, -)
  log "debootstrap $SUITE (minbase + systemd + node dependencies) — a few minutes"
  debootstrap --variant=minbase --include="$extra" "$SUITE" "$work/root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"* "$work/root/var/log/"*
  # openssh-server's postinst made host keys: every node of the image
  # would share them. Each node makes its own at first start of sshd
  # (images/demo.toml: ssh.service drop-in running ssh-keygen -A).
  rm -f "$work/root/etc/ssh/ssh_host_"*
  : >"$work/root/etc/machine-id"
  tar --sort=name --numeric-owner --mtime=@1700000000 --clamp-mtime -C "$work/root" -cf - . | gzip -n -6 >"$work/base.tar.gz"
  mv "$work/base.tar.gz" "$tarball"
  echo "$made_from" >"$tarball.pkgs"
  rm -rf "$work"
}

fetch_debs() {
  mkdir -p "$CACHE/debs"
  local kernel
  kernel=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  if [ -z "$kernel" ]; then
    need_root "apt-get update"
    apt-get update -qq
    kernel=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  fi
  for p in $NODE_PKGS kernel:$kernel busybox-static; do
    local name=${p%%:*} pkg=${p#*:}
    [ -f "$CACHE/debs/$name.deb" ] && continue
    log "apt-get download $pkg"
    local tmp; tmp=$(mktemp -d "$CACHE/.dl-XXXXXX")
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null)
    mv "$tmp"/*.deb "$CACHE/debs/$name.deb"
    rmdir "$tmp"
  done
}

make_image() {
  [ -f "$CACHE/demo-image.tar" ] && return 0
  local tmp; tmp=$(mktemp -d "$CACHE/.img-XXXXXX")
  dpkg-deb -x "$CACHE/debs/busybox-static.deb" "$tmp/bb"
  python3 "$REPO/scripts/mkimage.py" --format docker-archive --reference docker.io/nodebake/demo:1.0 \
    --file "$tmp/bb/bin/busybox=/bin/busybox" --entrypoint /bin/busybox --out "$tmp/image.tar"
  mv "$tmp/image.tar" "$CACHE/demo-image.tar"
  rm -rf "$tmp"
}

write_lock() {
  local lock=$CACHE/demo.lock.tmp
  {
    echo "# Digests of the demo inputs in this cache, written by scripts/demo.sh."
    echo "lock_version = 1"
    pin() { printf '\n[[input]]\nname = "%s"\nsource = "%s"\nsha256 = "%s"\n' "$1" "$2" "$(sha256sum "$2" | cut -d' ' -f1)"; }
    pin base "$CACHE/debian-$SUITE-amd64.tar.gz"
    for p in $NODE_PKGS kernel; do pin "$p" "$CACHE/debs/$p.deb"; done
    pin demo-image "$CACHE/demo-image.tar"
  } >"$lock"
  mv "$lock" "$CACHE/demo.lock"
}

mkdir -p "$CACHE"
check_tools
build_binaries
make_base
fetch_debs
make_image
write_lock
log "building images/demo.toml into $OUT"
"$REPO/target/release/nodebake" build "$REPO/images/demo.toml" --lock "$CACHE/demo.lock" --out "$OUT"
