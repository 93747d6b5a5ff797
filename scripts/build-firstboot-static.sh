#!/usr/bin/env bash
# Builds nodebake-firstboot as a static x86_64 binary (glibc, crt-static),
# so the same agent runs on every EL release an image targets. Prints the
# path of the binary.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=${1:-release}
cd "$REPO"
flag=--release; [ "$PROFILE" = debug ] && flag=
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" cargo build --quiet $flag --target x86_64-unknown-linux-gnu -p nodebake-firstboot
echo "$REPO/target/x86_64-unknown-linux-gnu/$PROFILE/nodebake-firstboot"
