#!/usr/bin/env bash
# Builds the binaries baked into every image as static x86_64 executables
# (glibc, crt-static, non-PIE), so the same files run on every EL release an
# image targets: nodebake-firstboot (the first-boot agent) and crictl
# (nodebake-crictl, the CRI client kubeadm needs on PATH), in one cargo
# invocation. Fails unless both are statically linked. Prints the path of
# nodebake-firstboot; crictl is beside it:
# target/x86_64-unknown-linux-gnu/PROFILE/crictl.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${1:-release}
cd "$REPO"
flag=--release; [ "$PROFILE" = debug ] && flag=
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --quiet $flag \
  --target x86_64-unknown-linux-gnu -p nodebake-firstboot -p nodebake-crictl
OUT="$REPO/target/x86_64-unknown-linux-gnu/$PROFILE"

# An ELF file is static when it has no PT_INTERP program header (no dynamic
# loader) and no PT_DYNAMIC one (no dynamic section): `file` says
# "statically linked" for exactly that (a static-pie would say otherwise).
check_static() {
  local bin=$1 what
  [ -x "$bin" ] || { echo "build-firstboot-static: $bin was not built" >&2; exit 1; }
  command -v file >/dev/null || return 0
  what=$(file -b "$bin")
  case "$what" in
    *"statically linked"*) ;;
    *) echo "build-firstboot-static: $bin is not statically linked: $what" >&2; exit 1 ;;
  esac
}
check_static "$OUT/nodebake-firstboot"
check_static "$OUT/crictl"
echo "$OUT/nodebake-firstboot"
