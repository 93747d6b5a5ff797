#!/usr/bin/env bash
# 50 machines booting at once: 50 concurrent initramfs downloads with curl
# from `nodebake serve` on loopback; prints the aggregate throughput.
#
#   benches/serve-bench.sh [IMAGE_DIR] [CLIENTS]
#
# IMAGE_DIR: a built image output (vmlinuz, initramfs.cpio.gz,
# manifest.json); default: a synthetic 64 MiB initramfs. CLIENTS default 50.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${1:-}
CLIENTS=${2:-50}
# The newer of the release and debug builds, unless $NODEBAKE names one.
if [ -z "${NODEBAKE:-}" ]; then
    NODEBAKE=target/release/nodebake
    if [ ! -x "$NODEBAKE" ] || [ target/debug/nodebake -nt "$NODEBAKE" ]; then NODEBAKE=target/debug/nodebake; fi
fi
[ -x "$NODEBAKE" ] || { echo "build nodebake first: cargo build --release -p nodebake" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is missing (apt-get install curl)" >&2; exit 1; }

WORK=$(mktemp -d)
SERVE_PID=
cleanup() {
    if [ -n "$SERVE_PID" ]; then kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

"$NODEBAKE" cluster init examples/seed-ha-cluster.toml --out "$WORK/cluster" >/dev/null 2>"$WORK/init.log" \
    || { cat "$WORK/init.log" >&2; exit 1; }
if [ -z "$IMAGE" ]; then
    IMAGE=$WORK/image
    mkdir -p "$IMAGE"
    head -c $((64 << 20)) /dev/urandom >"$IMAGE/initramfs.cpio.gz"
    head -c $((8 << 20)) /dev/urandom >"$IMAGE/vmlinuz"
    echo '{"kernel":{"cmdline":"console=ttyS0"}}' >"$IMAGE/manifest.json"
fi
SIZE=$(stat -c %s "$IMAGE/initramfs.cpio.gz")

"$NODEBAKE" serve "$WORK/cluster" --image "$IMAGE" --listen 127.0.0.1:0 \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE_PID=$!
ADDR=
for _ in $(seq 1 100); do
    ADDR=$(sed -n 's|.*listening on http://||p' "$WORK/serve.out")
    [ -n "$ADDR" ] && break
    sleep 0.1
done
[ -n "$ADDR" ] || { echo "serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1; }

START=$(date +%s.%N)
PIDS=()
for i in $(seq 1 "$CLIENTS"); do
    curl -sf --max-time 300 -o /dev/null -w '%{size_download}' \
        "http://$ADDR/image/initramfs.cpio.gz" >"$WORK/size.$i" &
    PIDS+=($!)
done
FAIL=0
for p in "${PIDS[@]}"; do wait "$p" || FAIL=$((FAIL + 1)); done
END=$(date +%s.%N)
for i in $(seq 1 "$CLIENTS"); do
    [ "$(cat "$WORK/size.$i" 2>/dev/null)" = "$SIZE" ] || FAIL=$((FAIL + 1))
done
awk -v n="$CLIENTS" -v size="$SIZE" -v s="$START" -v e="$END" -v f="$FAIL" 'BEGIN {
    t = e - s; mib = n * size / 1048576;
    printf "serve-bench: %d clients x %.1f MiB = %.0f MiB in %.2f s: %.0f MiB/s aggregate, %.1f MiB/s per client, %d failed\n",
        n, size / 1048576, mib, t, mib / t, mib / t / n, f }'
[ "$FAIL" = 0 ]
