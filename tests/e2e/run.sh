#!/usr/bin/env bash
# End to end (issue 8): one disk image built by
# `nodebake build` from the demo inputs (Debian 12 base + real containerd,
# runc, CNI plugins, keepalived, haproxy debs), a 4-node inventory (3
# masters + 1 worker, the seed's addresses) through `nodebake cluster init`,
# four QEMU guests (TCG) booted from copy-on-write overlays of disk.qcow2
# with their seeds, on a bridge inside a network namespace this script
# creates. Each guest's first boot configures it (address from
# network-config, hostname, /etc/hosts, modules, sysctls, swap, containerd
# with the baked image imported, haproxy + keepalived on masters); a TEST
# report unit baked into this image only prints the node's state on the
# serial console and, every 0.5 s, whether it holds the VIP and which
# apiserver stand-in answers TLS on VIP:16443.
#
# kubeadm and kubectl are the strict TEST DOUBLES of firstboot/tests/support
# (python3 + PyYAML added to this image), behind wrappers that, like
# kubeadm + the kubelet, start the control-plane STAND-INS on masters: a
# real etcd member and a TLS :6443 with a certificate of the cluster CA.
#
# Checks: every node's state and first boot complete; the doubles' calls
# (init once on k8s-master1, one join on every other node, masters joining
# in turn through the real etcd); exactly one master holds the VIP; the
# worker reaches an apiserver stand-in through VIP:16443; k8s-master2
# rebuilt from a fresh overlay with the same seed (stale etcd member
# removed, joined again); the VIP holder's VM killed: the VIP moves and
# VIP:16443 answers again (time measured).
#
# Usage: tests/e2e/run.sh [--bench]     (root; qemu-system-x86_64, iproute2)
# --bench prints, as its last line:
#   e2e boot_to_done_s=<median> vip_failover_s=<n> total_s=<n>
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=0; [ "${1:-}" = --bench ] && BENCH=1
T0=$(date +%s.%N)
export NODEBAKE_DEMO_CACHE=${NODEBAKE_DEMO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodebake/demo}
BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-900}
FAILOVER_TIMEOUT=60
MEM=${E2E_GUEST_MEM:-768}
NS=nbe2e-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodebake-e2e-XXXXXX")
PIDS=()
log() { echo "e2e: $*" >&2; }
fail() { echo "e2e: FAILED: $*" >&2; for f in "$WORK"/*.serial; do [ -f "$f" ] && { echo "--- $f (last 25 lines)" >&2; tr -d '\r' <"$f" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g' | tail -25 >&2; }; done; exit 1; }
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  [ "${E2E_KEEP:-0}" = 1 ] && { log "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "needs root (network namespace, taps)"
for t in qemu-system-x86_64 qemu-img ip; do command -v $t >/dev/null || fail "$t is not installed"; done

# 1. Image: the demo spec (same inputs, same lock) as a disk, plus the
#    e2e report unit. The demo build fills the cache and the binaries.
log "building the demo inputs and binaries (scripts/demo.sh)"
"$REPO/scripts/demo.sh" "$WORK/demo" >"$WORK/demo.log" 2>&1 || { tail -20 "$WORK/demo.log"; fail "scripts/demo.sh"; }
SPEC=$WORK/e2e.toml
# Extra packages for the TEST doubles and stand-ins inside the guests:
# python3 + PyYAML (the kubeadm/kubectl doubles), etcd (the control-plane
# stand-in; etcdctl is what the agent itself uses against etcd).
E2E_DEBS="python3.11-minimal libpython3.11-minimal libpython3.11-stdlib python3-minimal python3-yaml libyaml-0-2 etcd-server etcd-client"
mkdir -p "$NODEBAKE_DEMO_CACHE/debs-e2e"
for p in $E2E_DEBS; do
  [ -f "$NODEBAKE_DEMO_CACHE/debs-e2e/$p.deb" ] && continue
  tmp=$(mktemp -d "$NODEBAKE_DEMO_CACHE/.dl-XXXXXX")
  (cd "$tmp" && apt-get download -q "$p" >/dev/null 2>&1) || { apt-get update -qq && (cd "$tmp" && apt-get download -q "$p" >/dev/null); } || fail "apt-get download $p"
  mv "$tmp"/*.deb "$NODEBAKE_DEMO_CACHE/debs-e2e/$p.deb"; rmdir "$tmp"
done
sed -e 's/^formats = .*/formats = ["disk"]/' -e 's/^name = "demo"/name = "e2e"/' \
  -e 's/^enable = \["containerd.service"\]/enable = ["containerd.service", "nodebake-e2e-report.service"]/' "$REPO/images/demo.toml" >"$SPEC"
{
  cat "$REPO/tests/e2e/report.toml"
  for p in $E2E_DEBS; do
    f=$NODEBAKE_DEMO_CACHE/debs-e2e/$p.deb
    printf '\n[[artifact]]\nname = "e2e-%s"\nkind = "deb"\nsource = "%s"\nsha256 = "%s"\ninclude = ["usr/bin/*", "usr/lib/**", "lib/**"]\n' "$p" "$f" "$(sha256sum "$f" | cut -d' ' -f1)"
  done
  file_art() { # name source dest overwrite
    local mode=0755; case $3 in *.yml) mode=0644;; esac
    printf '\n[[artifact]]\nname = "%s"\nkind = "file"\nsource = "%s"\nsha256 = "%s"\ndest = "%s"\nmode = "%s"\n' "$1" "$2" "$(sha256sum "$2" | cut -d' ' -f1)" "$3" "$mode"
    [ -n "${4:-}" ] && printf 'overwrite = ["%s"]\n' "$4"
    return 0
  }
  file_art e2e-kubeadm-wrapper "$REPO/tests/e2e/kubeadm" /usr/bin/kubeadm
  file_art e2e-kubectl-wrapper "$REPO/tests/e2e/kubectl" /usr/bin/kubectl /usr/bin/kubectl
  file_art e2e-kubeadm-double "$REPO/firstboot/tests/support/kubeadm-double" /usr/lib/nodebake-e2e/kubeadm-double
  file_art e2e-kubectl-double "$REPO/firstboot/tests/support/kubectl-double" /usr/lib/nodebake-e2e/kubectl-double
  file_art e2e-standins "$REPO/tests/e2e/standins" /usr/lib/nodebake-e2e/standins
  file_art e2e-report "$REPO/tests/e2e/report" /usr/local/sbin/nodebake-e2e-report
  file_art e2e-flannel-manifest "$REPO/tests/e2e/kube-flannel.yml" /usr/lib/nodebake/manifests/kube-flannel.yml
  printf '\n[outputs.disk]\nfree = "512M"\n'
} >>"$SPEC"
T_BUILD=$(date +%s.%N)
"$REPO/target/release/nodebake" build "$SPEC" --quiet --profiles-dir "$REPO/profiles" --lock "$NODEBAKE_DEMO_CACHE/demo.lock" \
  --firstboot "$REPO/target/x86_64-unknown-linux-gnu/release/nodebake-firstboot" --out "$WORK/image" >/dev/null \
  || fail "nodebake build"
log "image built in $(echo "$(date +%s.%N) - $T_BUILD" | bc) s"

# 2. Inventory: the seed's first three masters and first worker.
#    Load balancer timing for four TCG guests on two cores, where a TLS
#    handshake or a fork+exec takes seconds: with the defaults (1 s
#    handshake bound, 1 s track script) the stand-ins flapped out of
#    haproxy and the masters went to FAULT in turn (no VIP at all).
{
  awk 'BEGIN{n=0} /^\[\[machines\]\]/{n++} n<=4' "$REPO/examples/seed-ha-cluster.toml" |
    sed 's|^image = .*|image = "images/demo.toml"|'
  printf '\n[load_balancer]\nconnect_timeout_ms = 5000\nbackend_inter_ms = 3000\nbackend_fall = 3\ncheck_interval_s = 5\ncheck_fall = 2\n'
} >"$WORK/inventory.toml"
"$REPO/target/release/nodebake" cluster init "$WORK/inventory.toml" --out "$WORK/cluster" >"$WORK/cluster.log" 2>&1 \
  || { cat "$WORK/cluster.log"; fail "cluster init"; }

# 3. The network: a bridge with the gateway's address in a namespace.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add 192.168.147.2/24 dev br0
ip -n "$NS" link set br0 up
NODES="k8s-master1:37 k8s-master2:39 k8s-master3:40 k8s-node1:41"
declare -A PID_OF=()
start_guest() { # name suffix
  local name=$1 sfx=$2 tap=tap$2
  if ! ip -n "$NS" link show "$tap" >/dev/null 2>&1; then
    ip -n "$NS" tuntap add dev "$tap" mode tap
    ip -n "$NS" link set "$tap" master br0 up
  fi
  qemu-img create -q -f qcow2 -F qcow2 -b "$WORK/image/disk.qcow2" "$WORK/$name.qcow2"
  ip netns exec "$NS" nice -n "${E2E_NICE:-0}" qemu-system-x86_64 -m "$MEM" -smp 1 -nographic -no-reboot -display none -monitor none \
    -drive "file=$WORK/$name.qcow2,if=virtio,format=qcow2" \
    -drive "file=$WORK/cluster/nodes/$name/seed.iso,if=virtio,format=raw,readonly=on" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:93:01:$sfx" \
    -serial "file:$WORK/$name.serial" </dev/null >"$WORK/$name.qemu" 2>&1 &
  PIDS+=($!); PID_OF[$name]=$!
}
T_BOOT=$(date +%s.%N)
for n in $NODES; do start_guest "${n%%:*}" "${n##*:}"; done
log "4 guests started (TCG, $MEM MiB each)"

clean() { tr -d '\r' <"$1" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g'; }
# Whether console $1 has a line matching $2. grep -c reads to the end: an
# early exit (grep -q, -m1) would SIGPIPE the cleaning pipe once a console
# outgrows the pipe buffer, and pipefail would turn a match into a miss.
has() { clean "$1" 2>/dev/null | grep -c -- "$2" >/dev/null; }
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

# 4. Every node reports once its first boot is over.
declare -A DONE_AT=()
# Whether guest $1 has reported on its console $2; a QEMU that exited
# fails the run.
reported() {
  kill -0 "${PID_OF[$1]}" 2>/dev/null || fail "$1's QEMU exited: $(cat "$WORK/$1.qemu")"
  has "$2" "^NBE2E-NODE-OK "
}
wait_report() { # name serial-file deadline-seconds
  local deadline=$(( $(date +%s) + $3 ))
  until reported "$1" "$2"; do
    [ "$(date +%s)" -lt $deadline ] || fail "$1 did not report within $3 s"
    sleep 2
  done
}
# All four polled together, so each one's time is its own.
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while [ ${#DONE_AT[@]} -lt 4 ]; do
  for n in $NODES; do
    name=${n%%:*}
    [ -n "${DONE_AT[$name]:-}" ] && continue
    if reported "$name" "$WORK/$name.serial"; then
      DONE_AT[$name]=$(echo "$(date +%s.%N) - $T_BOOT" | bc); log "$name: first boot over after ${DONE_AT[$name]} s"
    fi
  done
  [ "$(date +%s)" -lt $deadline ] || fail "not every node's first boot was over within $BOOT_TIMEOUT s"
  sleep 2
done

errors=0
FIGURES=()
check() { if [ "$2" = "$3" ]; then :; else echo "e2e: $1: $4 is '$2', want '$3'" >&2; errors=$((errors+1)); fi; }
calls() { clean "$2" | sed -n "s/^NBE2E-CALL-OK host=$1 n=[0-9]* call=//p"; }
check_node() { # name suffix serial [label for the figures]
  local name=$1 sfx=$2 line
  line=$(clean "$3" | grep "^NBE2E-NODE-OK " | awk 'NR == 1')
  log "$line"
  FIGURES+=("${4:-$name}: guest boot to first-boot-done $(field "$line" boot_s) s, agent's own run $(field "$line" agent_s) s")
  check "$name" "$(field "$line" host)" "$name" hostname
  check "$name" "$(field "$line" firstboot)" complete "first boot"
  check "$name" "$(field "$line" addr)" "192.168.147.1$sfx/24" "ens33 address"
  check "$name" "$(field "$line" hosts)" 1 "/etc/hosts managed block"
  check "$name" "$(field "$line" bridge_nf)" 1 net.bridge.bridge-nf-call-iptables
  check "$name" "$(field "$line" ip_forward)" 1 net.ipv4.ip_forward
  check "$name" "$(field "$line" br_netfilter)" 1 "br_netfilter loaded"
  check "$name" "$(field "$line" swap)" 0 "active swap areas"
  check "$name" "$(field "$line" containerd)" active containerd
  check "$name" "$(field "$line" image)" 1 "baked image docker.io/nodebake/demo:1.0 in containerd"
  local c; c=$(calls "$name" "$3")
  local inits joins cpjoins
  inits=$(grep -c '^\["init"' <<<"$c" || true)
  joins=$(grep -c '^\["join"' <<<"$c" || true)
  case $name in
    k8s-master*)
      check "$name" "$(field "$line" haproxy)" active haproxy
      check "$name" "$(field "$line" keepalived)" active keepalived
      check "$name" "$(field "$line" etcd)" active "etcd stand-in" ;;
    *)
      check "$name" "$(field "$line" haproxy)" inactive "haproxy (worker)"
      check "$name" "$(field "$line" etcd)" inactive "etcd (a worker join starts no control plane)" ;;
  esac
  case $name in
    k8s-master1) check "$name" "$inits/$joins" "1/0" "kubeadm init/join calls" ;;
    *)           check "$name" "$inits/$joins" "0/1" "kubeadm init/join calls" ;;
  esac
}
for n in $NODES; do check_node "${n%%:*}" "${n##*:}" "$WORK/${n%%:*}.serial"; done
[ $errors = 0 ] || fail "$errors node check(s) failed"
log "every node configured itself: kubeadm init once (k8s-master1), control-plane joins (k8s-master2, k8s-master3), worker join (k8s-node1)"

# 5. Exactly one VIP holder; the worker reaches an apiserver stand-in.
latest() { clean "$2" | grep "^NBE2E-TICK-OK host=$1 " | tail -1; }
serial_of() { if [ -f "$WORK/$1-rebuilt.serial" ]; then echo "$WORK/$1-rebuilt.serial"; else echo "$WORK/$1.serial"; fi; }
vip_holders() {
  local h=()
  for n in k8s-master1 k8s-master2 k8s-master3; do
    [ -n "${DEAD[$n]:-}" ] && continue
    [ "$(field "$(latest $n "$(serial_of $n)")" vip)" = 1 ] && h+=("$n")
  done
  echo "${h[*]:-}"
}
declare -A DEAD=()
sleep 3
holders=$(vip_holders)
[ "$(wc -w <<<"$holders")" = 1 ] || fail "VIP holders: '${holders}' (want exactly one)"
answer=$(field "$(latest k8s-node1 "$WORK/k8s-node1.serial")" answer)
case $answer in kube-apiserver-k8s-master*) ;; *) fail "worker: VIP:16443 answered '$answer'";; esac
log "VIP on $holders; the worker reaches $answer through VIP:16443"

# 6. Rebuild k8s-master2: its VM and disk destroyed, a fresh overlay of
#    the template booted with the same seed. First boot takes the rebuild
#    path: the stale etcd member removed, the control-plane join redone.
kill -9 "${PID_OF[k8s-master2]}"; wait "${PID_OF[k8s-master2]}" 2>/dev/null || true
rm -f "$WORK/k8s-master2.qcow2"
T_REBUILD=$(date +%s.%N)
mv "$WORK/k8s-master2.serial" "$WORK/k8s-master2-first.serial"
start_guest k8s-master2 39
wait_report k8s-master2 "$WORK/k8s-master2.serial" "$BOOT_TIMEOUT"
rebuild_s=$(echo "$(date +%s.%N) - $T_REBUILD" | bc)
check_node k8s-master2 39 "$WORK/k8s-master2.serial" "k8s-master2 (rebuilt)"
has "$WORK/k8s-master2.serial" "removing stale etcd member" || { echo "e2e: k8s-master2: no stale etcd member removal on the console" >&2; errors=$((errors+1)); }
[ $errors = 0 ] || fail "rebuild: $errors check(s) failed"
log "k8s-master2 rebuilt in $rebuild_s s (stale etcd member removed, joined again)"

# 7. Kill the VIP holder's VM: the VIP moves, VIP:16443 answers again.
holder=$(vip_holders)
[ "$(wc -w <<<"$holder")" = 1 ] || fail "VIP holders before the failover: '$holder'"
before=$(clean "$WORK/k8s-node1.serial" | grep -c "^NBE2E-TICK-OK " || true)
kill -9 "${PID_OF[$holder]}"; T_KILL=$(date +%s.%N); DEAD[$holder]=1
deadline=$(( $(date +%s) + FAILOVER_TIMEOUT ))
new=
while [ -z "$new" ]; do
  [ "$(date +%s)" -lt $deadline ] || fail "the VIP did not move within $FAILOVER_TIMEOUT s"
  sleep 0.2
  new=$(vip_holders)
done
T_MOVED=$(date +%s.%N)
while :; do
  [ "$(date +%s)" -lt $deadline ] || fail "VIP:16443 did not answer again within $FAILOVER_TIMEOUT s"
  last=$(clean "$WORK/k8s-node1.serial" | grep "^NBE2E-TICK-OK " | tail -n +$((before+1)) | tail -1)
  case $(field "$last" answer) in kube-apiserver-*) [ "$(echo "$(date +%s.%N) > $T_MOVED" | bc)" = 1 ] && break ;; esac
  sleep 0.2
done
T_BACK=$(date +%s.%N)
failover=$(echo "$T_BACK - $T_KILL" | bc)
log "VIP moved from $holder to $new $(echo "$T_MOVED - $T_KILL" | bc) s after the kill; VIP:16443 answered again ($(field "$last" answer)) after $failover s"

total=$(echo "$(date +%s.%N) - $T0" | bc)
median=$(printf '%s\n' "${DONE_AT[@]}" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}')
log "passed (machine: $(nproc) cores, QEMU TCG, $MEM MiB per guest; rebuild ${rebuild_s} s)"
if [ $BENCH = 1 ]; then
  for n in $NODES; do name=${n%%:*}; echo "e2e guest $name host_boot_to_done_s=${DONE_AT[$name]}"; done
  printf 'e2e %s\n' "${FIGURES[@]}"
  echo "e2e rebuild k8s-master2 host_s=$rebuild_s"
  printf 'e2e boot_to_done_s=%.1f vip_failover_s=%.1f total_s=%.1f\n' "$median" "$failover" "$total"
fi
exit 0
