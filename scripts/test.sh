#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. builds the demo image (scripts/demo.sh), which also fetches the
#      Debian inputs the tests share and builds the static first-boot agent;
#   2. checks the acceptance lines of the demo: a second build gives the same
#      SHA256SUMS, `nodebake verify` passes, and fails after one byte changes;
#   3. builds every binary and runs `cargo test --workspace`;
#   4. runs the end-to-end test with real Kubernetes v1.28.7
#      (tests/e2e/real.sh --masters 1 --workers 1 --bench: QEMU guests from
#      one disk image run the real kubeadm/kubelet/control plane, a pod on
#      the worker, the worker rebuilt; root). The 3-master run with VIP
#      failover and a master rebuild is `tests/e2e/real.sh --bench`; the
#      4-guest run with test doubles is tests/e2e/run.sh.
# Needs the packages .ci/run installs (Debian: see .ci/packages.txt).
set -euo pipefail
cd "$(dirname "$0")/.."

export NODEBAKE_DEMO_CACHE=${NODEBAKE_DEMO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodebake/demo}
work=$(mktemp -d "${TMPDIR:-/tmp}/nodebake-test-XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== demo image, twice"
scripts/demo.sh "$work/demo-a"
scripts/demo.sh "$work/demo-b"
cmp "$work/demo-a/SHA256SUMS" "$work/demo-b/SHA256SUMS"
target/release/nodebake build images/demo.toml --quiet --no-cache \
  --lock "$NODEBAKE_DEMO_CACHE/demo.lock" --out "$work/demo-c" >/dev/null
cmp "$work/demo-a/SHA256SUMS" "$work/demo-c/SHA256SUMS"
echo "demo: three builds (one without the build cache) have identical SHA256SUMS"
target/release/nodebake verify "$work/demo-a"
# The demo image has no kubeadm, kubelet or crictl (no registry reachable
# from here serves them): lint must say so, and fail; its kernel config
# and the library and package closure are in order.
if target/release/nodebake lint "$work/demo-a" >"$work/lint.out"; then
  echo "lint passed an image without kubeadm" >&2; exit 1
fi
grep -q '^error\[command:crictl\].*profiles master, worker' "$work/lint.out"
grep -q '^error\[command:kubeadm\]' "$work/lint.out"
if grep -E '^error\[(kernel-config|module|elf|requires|cni)' "$work/lint.out"; then
  echo "lint: unexpected errors on the demo image" >&2; exit 1
fi
echo "demo: lint names the missing crictl/kubeadm/kubelet and images; kernel, libraries and packages pass"
# Change one byte (to a different value) in place.
b=$(dd if="$work/demo-a/rootfs.tar.gz" bs=1 skip=1000 count=1 status=none | od -An -tu1 | tr -d ' ')
printf "\\$(printf %03o $(( (b + 1) % 256 )))" | dd of="$work/demo-a/rootfs.tar.gz" bs=1 seek=1000 conv=notrunc status=none
if target/release/nodebake verify "$work/demo-a" 2>"$work/verify.err"; then
  echo "verify accepted a changed rootfs.tar.gz" >&2; exit 1
fi
grep -q "rootfs.tar.gz" "$work/verify.err"
echo "demo: verify catches a changed byte and names rootfs.tar.gz"

echo "== cargo test --workspace"
cargo build --workspace --all-targets
cargo test --workspace 2>&1

echo "== end to end, real Kubernetes: 1 master + 1 worker (tests/e2e/real.sh --masters 1 --workers 1 --bench)"
tests/e2e/real.sh --masters 1 --workers 1 --bench
