#!/usr/bin/env bash
# VIP failover benchmark (root; creates and removes its own network
# namespaces through the vip_failover test): runs the crash / haproxy /
# link-cut / dead-backend scenarios N times for the default and the fast
# load balancer settings and prints medians. The last line is for the fast
# settings (100 ms VRRPv3 adverts, check_fall 1):
#   vip-bench crash_client_back_ms=<median> haproxy_client_back_ms=<median> linkcut_client_back_ms=<median> split_brain=<count>
# Usage: bench.sh [N]   (default 5; N rounds per setting)
set -euo pipefail
cd "$(dirname "$0")/../../.."
rounds=${1:-5}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
log=$(mktemp "${TMPDIR:-/tmp}/vip-bench-XXXXXX")
trap 'rm -f "$log"' EXIT
# One settings run per test invocation, so a split brain in one does not
# hide the other's figures.
for s in default fast; do
  NODEBAKE_VIP_SETTINGS=$s NODEBAKE_VIP_ROUNDS=$rounds \
    cargo test -q -p nodebake-firstboot --test vip_failover -- --nocapture --test-threads=1 \
    >>"$log" 2>&1 || echo "vip-bench: settings $s: test failed (see output above)" >&2
done
grep -E '^vip-(scenario|split-brain|settled)' "$log" || true
median() { # settings kind field
  grep -E "^vip-scenario settings=$1 kind=$2 " "$log" | sed -E "s/.* $3=([0-9]+).*/\1/" | sort -n |
    awk '{v[NR]=$1} END {if (NR==0) print "NA"; else if (NR%2) print v[(NR+1)/2]; else print int((v[NR/2]+v[NR/2+1])/2)}'
}
split=$(grep -c '^vip-split-brain' "$log" || true)
for s in default fast; do
  echo "vip-bench-$s crash_vip_move_ms=$(median $s crash vip_move_ms) crash_client_back_ms=$(median $s crash client_back_ms)" \
    "haproxy_vip_move_ms=$(median $s haproxy vip_move_ms) haproxy_client_back_ms=$(median $s haproxy client_back_ms)" \
    "linkcut_vip_move_ms=$(median $s linkcut vip_move_ms) linkcut_client_back_ms=$(median $s linkcut client_back_ms)" \
    "backend_failed_requests_max=$(grep -E "^vip-scenario settings=$s kind=backend" "$log" | sed -E 's/.*failed_requests=([0-9]+).*/\1/' | sort -n | tail -1)"
done
echo "vip-bench crash_client_back_ms=$(median fast crash client_back_ms) haproxy_client_back_ms=$(median fast haproxy client_back_ms) linkcut_client_back_ms=$(median fast linkcut client_back_ms) split_brain=$split"
