#!/usr/bin/env bash
# End to end with REAL Kubernetes (issue 13): one nodebake disk image with
# the real v1.28.7 kubeadm, kubelet and kubectl (../shared/kubernetes), the
# control-plane, etcd, kube-proxy and pause images packed from real
# binaries (tests/e2e/real/make-images.sh), nodebake's crictl, and the demo
# inputs (Debian 12 base, containerd, runc, CNI plugins, keepalived,
# haproxy). An inventory of N masters + M workers (the seed's addresses)
# through `nodebake cluster init`; QEMU guests (TCG) booted from
# copy-on-write overlays of disk.qcow2 with their seeds, on a bridge in a
# network namespace this script creates. Every guest configures itself and
# runs the real kubeadm: init on k8s-master1, control-plane joins in turn,
# workers through the VIP. Nothing is done by hand inside a guest.
#
# Checks, with the real kubectl through the VIP (admin client certificate
# signed by the cluster CA) and etcdctl against the masters:
#   every node Ready; etcd has one healthy member per master; a pod pinned
#   to a worker runs (the baked busybox image).
# With 3 or more masters: the VIP holder's VM is killed (time until
#   `kubectl get nodes` through the VIP answers again), then that master is
#   rebuilt from a fresh overlay with the same seed (the stale etcd member
#   removed by peer URL, joined again: N healthy members, no manual step).
# Then the first worker is rebuilt the same way and must be Ready again.
#
# Usage: tests/e2e/real.sh [--masters N] [--workers M] [--bench]   (root)
# Last line:
#   e2e-real ready_nodes=<ready>/<total> etcd_members=<n> boot_to_ready_s=<s> vip_failover_s=<s> rebuild_master_s=<s>
# (`na` where a figure does not apply: no failover or master rebuild with
# one master.)
#
# TCG is slow (a TLS handshake takes seconds, the apiserver starts in
# minutes): the inventory raises kubeadm's control-plane wait
# (kubeadm.control_plane_timeout 30m) and join's wait for cluster-info
# (kubeadm.discovery_timeout 20m), the load balancer's timings and
# etcd's heartbeat/election (kubeadm.extra_args.etcd 500 ms / 5 s), etcd's
# and the API server's liveness/startup probes (kubeadm.patches: 30 and 60
# tries), and with several masters boots the guests one by one, each once
# the one before is Ready and has completed its first boot (E2E_STAGGER=0:
# all at once); E2E_BOOT_TIMEOUT (default 3600 s) bounds each wait.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
MASTERS=3 WORKERS=1 BENCH=0
while [ $# -gt 0 ]; do
  case $1 in
    --masters) MASTERS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --bench) BENCH=1; shift ;;
    *) echo "usage: $0 [--masters N] [--workers M] [--bench]" >&2; exit 2 ;;
  esac
done
case $MASTERS in 1|3) ;; *) echo "e2e-real: --masters must be 1 or 3 (the seed's addresses)" >&2; exit 2 ;; esac
case $WORKERS in 1|2|3) ;; *) echo "e2e-real: --workers must be 1..3" >&2; exit 2 ;; esac
T0=$(date +%s.%N)
export NODEBAKE_DEMO_CACHE=${NODEBAKE_DEMO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nodebake/demo}
BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-3600}
FAILOVER_TIMEOUT=${E2E_FAILOVER_TIMEOUT:-300}
M_MEM=${E2E_MASTER_MEM:-2048} W_MEM=${E2E_WORKER_MEM:-1536}
M_CPUS=2 W_CPUS=${E2E_WORKER_CPUS:-1}
# The guest CPU model: QEMU's default qemu64 lacks AES-NI, PCLMULQDQ,
# SSE4 and BMI2/ADX, so Go's TLS (AES-GCM, P-256) in etcd, the API server
# and the kubelet runs its generic code, instruction by instruction under
# TCG; with them it takes TCG's helpers (all supported by QEMU 7.2's TCG).
CPU_MODEL=${E2E_CPU:-qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+aes,+pclmulqdq,+bmi1,+bmi2,+adx,+movbe}
# QEMU's accelerator. The default (multi-threaded TCG) gives every vCPU a
# host thread: 3 masters x 2 vCPUs + a worker are 7 threads on 2 cores.
# `E2E_ACCEL=tcg,thread=single` runs each guest's vCPUs on one thread
# (kubeadm still sees 2 CPUs); `kvm` where the host has it.
ACCEL=${E2E_ACCEL:-tcg}
# Boot the guests one by one (default with several masters; see step 5).
STAGGER=${E2E_STAGGER:-$([ "$MASTERS" -gt 1 ] && echo 1 || echo 0)}
VIP=192.168.147.154
NS=nbreal-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodebake-e2e-real-XXXXXX")
PIDS=()
log() { echo "e2e-real: [$(printf '%6.0f' "$(echo "$(date +%s.%N) - $T0" | bc)") s] $*" >&2; }
clean() { tr -d '\r' <"$1" | sed 's/\x1b\[[0-9;]*[a-zA-Z]//g'; }
# Whether console $1 has a line matching $2. grep -c reads to the end: an
# early exit (grep -q) would SIGPIPE the cleaning pipe under pipefail.
has() { clean "$1" 2>/dev/null | grep -ac -- "$2" >/dev/null; }
fail() {
  echo "e2e-real: FAILED: $*" >&2
  for f in "$WORK"/*.serial; do
    [ -f "$f" ] || continue
    echo "--- $f (nodebake-firstboot lines, then the last 30 lines)" >&2
    clean "$f" | grep -a "nodebake-firstboot" | tail -40 >&2 || true
    clean "$f" | tail -30 >&2
  done
  # The cluster as it stood (bounded; nothing when the API does not answer).
  if [ -f "$WORK/admin.conf" ] && declare -F kc >/dev/null; then
    echo "--- the cluster at the failure" >&2
    timeout 60 bash -c "$(declare -f kc); NS=$NS K8S=${K8S:-} WORK=$WORK; kc get nodes -o wide; kc get pods -A -o wide; kc get leases -A" >&2 2>&1 || true
  fi
  exit 1
}
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  [ "${E2E_KEEP:-0}" = 1 ] && { log "kept $WORK"; return; }
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "needs root (network namespace, taps)"
for t in qemu-system-x86_64 qemu-img ip openssl etcdctl bc; do command -v $t >/dev/null || fail "$t is not installed (see .ci/packages.txt)"; done

# 1. Inputs: the demo cache and binaries (static agent and crictl), the
#    real Kubernetes binaries, the image archives kubeadm will ask for.
log "demo inputs and binaries (scripts/demo.sh)"
"$REPO/scripts/demo.sh" "$WORK/demo" >"$WORK/demo.log" 2>&1 || { tail -20 "$WORK/demo.log"; fail "scripts/demo.sh"; }
K8S=$("$REPO/scripts/kubernetes-bin.sh") || fail "no real Kubernetes binaries (scripts/kubernetes-bin.sh)"
IMAGES=${E2E_IMAGES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nodebake/k8s-images-v1.28.7}
"$REPO/tests/e2e/real/make-images.sh" "$IMAGES" registry.k8s.io >"$WORK/images.log" 2>&1 || { cat "$WORK/images.log"; fail "make-images.sh"; }
CRICTL=$REPO/target/x86_64-unknown-linux-gnu/release/crictl
[ -x "$CRICTL" ] || fail "no static crictl at $CRICTL (scripts/build-firstboot-static.sh)"

# 2. The image: the demo spec as a disk, with real Kubernetes.
SPEC=$WORK/e2e-real.toml
sed -e 's/^formats = .*/formats = ["disk"]/' -e 's/^name = "demo"/name = "e2e-real"/' \
  -e 's/^version = "1.20.2"/version = "1.28.7"/' \
  "$REPO/images/demo.toml" >"$SPEC"
grep -q 'boot/config-\*' "$SPEC" || fail "the demo spec lost the kernel config (kubeadm's SystemVerification reads it)"
# Everything kubeadm preflight and the agent need must be in the image
# (nodebake lint fails the build); CoreDNS cannot be had here, its addon
# phase is skipped.
sed -i 's/^allow = \["requires:linux-base"/level = "error"\nallow = ["image:coredns", "requires:linux-base"/' "$SPEC"
grep -q '^level = "error"' "$SPEC" || fail "could not set [lint] level = \"error\" in the spec"
{
  cat "$REPO/tests/e2e/real/node.toml"
  art() { # name kind source dest mode [overwrite] [reference]
    printf '\n[[artifact]]\nname = "%s"\nkind = "%s"\nsource = "%s"\nsha256 = "%s"\n' "$1" "$2" "$3" "$(sha256sum "$3" | cut -d' ' -f1)"
    [ -n "$4" ] && printf 'dest = "%s"\n' "$4"
    [ -n "$5" ] && printf 'mode = "%s"\n' "$5"
    [ -n "${6:-}" ] && printf 'overwrite = ["%s"]\n' "$6"
    [ -n "${7:-}" ] && printf 'reference = "%s"\n' "$7"
    return 0
  }
  art kubeadm file "$K8S/kubeadm" /usr/bin/kubeadm 0755
  art kubelet file "$K8S/kubelet" /usr/bin/kubelet 0755
  # The real kubectl replaces Debian's 1.20 client.
  art kubectl file "$K8S/kubectl" /usr/bin/kubectl 0755 /usr/bin/kubectl
  art crictl file "$CRICTL" /usr/bin/crictl 0755
  while IFS=$'\t' read -r file ref _; do
    art "k8s-$(basename "$file" .tar | tr '_.' '--')" image "$IMAGES/$file" "" "" "" "$ref"
  done <"$IMAGES/images.tsv"
  printf '\n[outputs.disk]\nfree = "3G"\n'
} >>"$SPEC"
T_BUILD=$(date +%s.%N)
"$REPO/target/release/nodebake" build "$SPEC" --quiet --profiles-dir "$REPO/profiles" --lock "$NODEBAKE_DEMO_CACHE/demo.lock" \
  --firstboot "$REPO/target/x86_64-unknown-linux-gnu/release/nodebake-firstboot" --out "$WORK/image" >"$WORK/build.log" 2>&1 \
  || { tail -20 "$WORK/build.log"; fail "nodebake build"; }
log "image built in $(echo "$(date +%s.%N) - $T_BUILD" | bc) s ($(du -h "$WORK/image/disk.qcow2" | cut -f1) qcow2)"

# 3. Inventory: the seed's first MASTERS masters and WORKERS workers,
#    Kubernetes 1.28.7, kubeadm's own image repository (what the baked
#    images are tagged with), the bridge CNI (flannel and CoreDNS images
#    cannot be had here, so the coredns addon phase is skipped), pull
#    policy Never (every image is baked; kubeadm 1.28's preflight would
#    still pull CoreDNS's), and timings for TCG guests on two cores.
rm -f "$WORK/ops_key" "$WORK/ops_key.pub"
ssh-keygen -q -t ed25519 -N '' -C ops@e2e-real -f "$WORK/ops_key" || fail "ssh-keygen"
declare -A SEED_IP=([k8s-master1]=137 [k8s-master2]=139 [k8s-master3]=140 [k8s-node1]=141 [k8s-node2]=142 [k8s-node3]=143)
NODES=()
for i in 1 2 3; do [ "$i" -le "$MASTERS" ] && NODES+=("k8s-master$i"); done
for i in 1 2 3; do [ "$i" -le "$WORKERS" ] && NODES+=("k8s-node$i"); done
{
  awk '/^\[\[machines\]\]/{exit} {print}' "$REPO/examples/seed-ha-cluster.toml" |
    sed -e 's|^image = .*|image = "images/demo.toml"|' -e 's|^kubernetes_version = .*|kubernetes_version = "1.28.7"|' \
      -e '/^image_repository = /d' -e 's|^cni = .*|cni = "bridge"|'
  # attempts: kubeadm 1.28's API (10 s) and etcd (2 s) call timeouts are
  # fixed; a join that hits one while the other guests are busy is
  # retried (kubeadm reset in between) rather than failing first boot.
  printf '\n[cluster.kubeadm]\nskip_phases = ["addon/coredns"]\ncontrol_plane_timeout = "30m0s"\ndiscovery_timeout = "20m0s"\nimage_pull_policy = "Never"\nattempts = 6\n'
  # etcd's defaults (heartbeat 100 ms, election 1 s) assume a member
  # answers in milliseconds; a TCG guest sharing two host cores with the
  # others misses heartbeats, the members re-elect, and kubeadm's member
  # add and the apiserver's writes time out.
  printf '\n[cluster.kubeadm.extra_args]\netcd = { heartbeat-interval = "500", election-timeout = "5000" }\n'
  # The controller-manager and scheduler exit when they cannot renew
  # their leader lease within 10 s, which a guest starved by another's
  # boot misses; restarted with back-off, no node lifecycle controller
  # marks a killed node NotReady for minutes (a rebuild then waits).
  printf 'controller_manager = { leader-elect-lease-duration = "60s", leader-elect-renew-deadline = "40s", leader-elect-retry-period = "5s" }\n'
  printf 'scheduler = { leader-elect-lease-duration = "60s", leader-elect-renew-deadline = "40s", leader-elect-retry-period = "5s" }\n'
  # The kubelet kills etcd or the API server after 8 failed liveness
  # probes 10 s apart (kubeadm's manifests; no flag changes them): a
  # member that is only starved for a minute then restarts, and with two
  # members that costs quorum (seen in a 3+1 run). kubeadm patches give
  # them 30 tries (5 min) and 60 startup tries.
  for c in etcd kube-apiserver; do
    printf '\n[[cluster.kubeadm.patches]]\ntarget = "%s"\npatch = """\nspec:\n  containers:\n  - name: %s\n    livenessProbe: {failureThreshold: 30}\n    startupProbe: {failureThreshold: 60}\n"""\n' "$c" "$c"
  done
  # A login account (sshd is in the demo image): key only, with sudo.
  printf '\n[[cluster.users]]\nname = "ops"\nssh_authorized_keys = ["%s"]\nsudo = true\n' "$(cat "$WORK/ops_key.pub")"
  printf '\n[load_balancer]\nconnect_timeout_ms = 5000\nbackend_inter_ms = 6000\nbackend_fall = 3\ncheck_interval_s = 5\ncheck_fall = 2\n'
  for n in "${NODES[@]}"; do
    role=worker; case $n in k8s-master*) role=master;; esac
    printf '\n[[machines]]\nname = "%s"\nrole = "%s"\nip = "192.168.147.%s"\nmac = "52:54:00:93:01:%s"\n' \
      "$n" "$role" "${SEED_IP[$n]}" "${SEED_IP[$n]#1}"
    [ "$n" = k8s-master1 ] && printf 'initialiser = true\n'
  done
} >"$WORK/inventory.toml"
"$REPO/target/release/nodebake" cluster init "$WORK/inventory.toml" --out "$WORK/cluster" >"$WORK/cluster.log" 2>&1 \
  || { cat "$WORK/cluster.log" "$WORK/inventory.toml"; fail "cluster init"; }
[ "$(ls "$WORK/cluster/nodes" | wc -l)" = "${#NODES[@]}" ] || fail "cluster init wrote $(ls "$WORK/cluster/nodes" | wc -l) nodes, want ${#NODES[@]}"
mac_suffix() { echo "${SEED_IP[$1]#1}"; }
ip_of() { echo "192.168.147.${SEED_IP[$1]}"; }

# 4. Host-side credentials from the cluster's CAs: the admin kubeconfig of
#    `nodebake cluster kubeconfig` for kubectl through the VIP, an etcd
#    client certificate (openssl) for etcdctl.
S=$WORK/cluster/secrets
mint() { # name ca key subject
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/$1.key" -subj "$4" -out "$WORK/$1.csr" 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n' >"$WORK/$1.ext"
  openssl x509 -req -in "$WORK/$1.csr" -CA "$2" -CAkey "$3" -CAcreateserial -days 2 -extfile "$WORK/$1.ext" -out "$WORK/$1.crt" 2>/dev/null
}
mint etcd-client "$S/etcd-ca.crt" "$S/etcd-ca.key" "/CN=nodebake-e2e-etcd"
# The admin kubeconfig an operator gets: `nodebake cluster kubeconfig`
# (client certificate signed by the cluster CA, group system:masters,
# server the VIP endpoint), used by every kubectl call below.
"$REPO/target/release/nodebake" cluster kubeconfig "$WORK/cluster" --user nodebake-e2e-admin --out "$WORK/admin.conf" 2>/dev/null \
  || fail "nodebake cluster kubeconfig"
kc() { ip netns exec "$NS" "$K8S/kubectl" --kubeconfig "$WORK/admin.conf" --request-timeout=30s "$@"; }
# A kubectl call that changes something, retried (bounded): under TCG an
# apiserver busy with a joining node can miss a request timeout.
kc_retry() { local n; for n in 1 2 3 4 5 6; do kc "$@" && return 0; sleep 10; done; return 1; }
etcd_endpoints() { local e=(); for n in "${NODES[@]}"; do case $n in k8s-master*) [ -z "${DEAD[$n]:-}" ] && e+=("https://$(ip_of "$n"):2379");; esac; done; (IFS=,; echo "${e[*]}"); }
ectl() { ip netns exec "$NS" env ETCDCTL_API=3 etcdctl --endpoints="$(etcd_endpoints)" --cacert="$S/etcd-ca.crt" --cert="$WORK/etcd-client.crt" --key="$WORK/etcd-client.key" --dial-timeout=5s --command-timeout=15s "$@"; }

# 5. The network and the guests.
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge
ip -n "$NS" addr add 192.168.147.2/24 dev br0
ip -n "$NS" link set br0 up
declare -A PID_OF=() DEAD=() BOOTED_AT=()
start_guest() { # name
  local name=$1 sfx; sfx=$(mac_suffix "$1")
  local tap=tap$sfx mem=$W_MEM cpus=$W_CPUS
  case $name in k8s-master*) mem=$M_MEM cpus=$M_CPUS ;; esac
  if ! ip -n "$NS" link show "$tap" >/dev/null 2>&1; then
    ip -n "$NS" tuntap add dev "$tap" mode tap
    ip -n "$NS" link set "$tap" master br0 up
  fi
  qemu-img create -q -f qcow2 -F qcow2 -b "$WORK/image/disk.qcow2" "$WORK/$name.qcow2"
  ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -cpu "$CPU_MODEL" -m "$mem" -smp "$cpus" -nographic -no-reboot -display none -monitor none \
    -drive "file=$WORK/$name.qcow2,if=virtio,format=qcow2" \
    -drive "file=$WORK/cluster/nodes/$name/seed.iso,if=virtio,format=raw,readonly=on" \
    -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
    -device "virtio-net-pci,netdev=n0,mac=52:54:00:93:01:$sfx" \
    -serial "file:$WORK/$name.serial" </dev/null >"$WORK/$name.qemu" 2>&1 &
  PIDS+=($!); PID_OF[$name]=$!; BOOTED_AT[$name]=$(date +%s.%N); unset "DEAD[$name]"
}
alive() { # fails the run when a guest that should run has exited
  for n in "${NODES[@]}"; do
    [ -n "${DEAD[$n]:-}" ] && continue
    kill -0 "${PID_OF[$n]}" 2>/dev/null || fail "$n's QEMU exited: $(cat "$WORK/$n.qemu")"
    if has "$WORK/$n.serial" "Failed to start nodebake-f\|nodebake-firstboot.service: Failed"; then
      fail "$n: first boot failed"
    fi
  done
}
# Ready nodes as `name=True|False` lines (empty while the VIP does not answer).
readiness() { kc get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null || true; }
is_ready() { grep -qx "$1=True" <<<"$2"; }
declare -A READY_AT=()
# Waits until every node in $@ is Ready (first time each one is seen Ready
# is recorded, from its own boot).
wait_ready() {
  local deadline=$(( $(date +%s) + BOOT_TIMEOUT )) r n missing
  while :; do
    alive
    r=$(readiness); missing=()
    for n in "$@"; do
      if is_ready "$n" "$r"; then
        [ -n "${READY_AT[$n]:-}" ] || { READY_AT[$n]=$(echo "$(date +%s.%N) - ${BOOTED_AT[$n]}" | bc); log "$n Ready ${READY_AT[$n]} s after its boot"; }
      else missing+=("$n"); fi
    done
    [ ${#missing[@]} = 0 ] && return 0
    [ "$(date +%s)" -lt $deadline ] || fail "not Ready within $BOOT_TIMEOUT s: ${missing[*]} (nodes: $(tr '\n' ' ' <<<"$r"))"
    sleep 10
  done
}
# Waits until guest $1's first boot has completed (every step, the
# bootstrap token included).
wait_first_boot() {
  local deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
  until has "$WORK/$1.serial" "first boot complete"; do
    alive
    [ "$(date +%s)" -lt $deadline ] || fail "$1 did not complete its first boot within $BOOT_TIMEOUT s"
    sleep 10
  done
  log "$1 completed its first boot $(echo "$(date +%s.%N) - ${BOOTED_AT[$1]}" | bc) s after its boot"
}
# Waits (bounded) until the API answers through the VIP within 5 s three
# times in a row, 10 s apart: a control plane still settling after a
# join (controllers starting, etcd promoting a learner) starves the next
# guest's join past kubeadm's fixed timeouts.
wait_quiet() {
  local deadline=$(( $(date +%s) + 900 )) ok=0
  while [ $ok -lt 3 ]; do
    alive
    if ip netns exec "$NS" "$K8S/kubectl" --kubeconfig "$WORK/admin.conf" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
      ok=$((ok + 1))
    else
      ok=0
    fi
    [ "$(date +%s)" -lt $deadline ] || { log "the API did not settle within 900 s; going on"; return 0; }
    sleep 10
  done
  log "the API answers quickly through the VIP"
}
# Rebuilds $1: its VM killed (if still running) and its disk thrown away,
# a fresh overlay of the template booted with the same seed; waits for its
# first boot to complete and the node to be Ready. Sets REBUILT_S (seconds
# from the new boot to Ready).
rebuild() {
  local name=$1
  kill -9 "${PID_OF[$name]}" 2>/dev/null || true; wait "${PID_OF[$name]}" 2>/dev/null || true
  rm -f "$WORK/$name.qcow2"; mv "$WORK/$name.serial" "$WORK/$name-first.serial"
  unset "READY_AT[$name]"
  start_guest "$name"
  wait_first_boot "$name"
  wait_ready "$name"
  REBUILT_S=$(echo "$(date +%s.%N) - ${BOOTED_AT[$name]}" | bc)
}
# Guests not started yet count as down (alive() skips them, etcdctl does
# not ask them).
for n in "${NODES[@]}"; do DEAD[$n]=1; done
if [ "$STAGGER" = 1 ]; then
  # One guest at a time, each once the one before is Ready and has
  # completed its first boot (a master's last steps talk to the API while
  # the next one would start its control plane): on two host
  # cores, a master's control plane starting under TCG while another
  # joins starves both (kubeadm's fixed 10 s API and 2 s etcd timeouts
  # expire). The agent's own turn-taking (masters join one by one, after
  # a healthy etcd) is what E2E_STAGGER=0 runs, as hardware would.
  log "guests start one by one (TCG; masters ${M_CPUS} vCPU/${M_MEM} MiB, workers ${W_CPUS} vCPU/${W_MEM} MiB)"
  for n in "${NODES[@]}"; do start_guest "$n"; wait_ready "$n"; wait_first_boot "$n"; wait_quiet; done
else
  for n in "${NODES[@]}"; do start_guest "$n"; done
  log "${#NODES[@]} guests started (TCG; masters ${M_CPUS} vCPU/${M_MEM} MiB, workers ${W_CPUS} vCPU/${W_MEM} MiB)"
  wait_ready "${NODES[@]}"
fi
log "all ${#NODES[@]} nodes Ready"
declare -A FIRST_READY=()
for n in "${NODES[@]}"; do FIRST_READY[$n]=${READY_AT[$n]}; done

# 6. The cluster, seen from outside.
errors=0
want() { if [ "$2" = "$3" ]; then log "ok: $1 = $2"; else echo "e2e-real: $1 is '$2', want '$3'" >&2; errors=$((errors+1)); fi; }
etcd_check() { # expected member count
  local members healthy
  members=$(ectl member list 2>"$WORK/etcdctl.err" | grep -c ', started, ' || true)
  healthy=$(ectl endpoint health --cluster 2>&1 | grep -c 'is healthy' || true)
  want "etcd started members" "$members" "$1"
  want "etcd healthy members" "$healthy" "$1"
}
etcd_check "$MASTERS"
inits=0
for n in "${NODES[@]}"; do c=$(clean "$WORK/$n.serial" | grep -ac 'kubeadm init: attempt' || true); inits=$((inits + c)); done
want "kubeadm init runs (all guests)" "$inits" 1
WORKER=k8s-node1
cat >"$WORK/pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: nbe2e-on-worker, namespace: default}
spec:
  nodeName: $WORKER
  restartPolicy: Never
  containers:
  - name: sleeper
    image: docker.io/nodebake/demo:1.0
    imagePullPolicy: Never
    command: ["/bin/busybox", "sleep", "3600"]
EOF
kc get pod nbe2e-on-worker >/dev/null 2>&1 || kc_retry create -f "$WORK/pod.yaml" >/dev/null || fail "kubectl create of the test pod"
deadline=$(( $(date +%s) + 600 ))
until [ "$(kc get pod nbe2e-on-worker -o jsonpath='{.status.phase}' 2>/dev/null)" = Running ]; do
  [ "$(date +%s)" -lt $deadline ] || fail "the pod on $WORKER is not Running: $(kc get pod nbe2e-on-worker -o wide 2>&1; kc describe pod nbe2e-on-worker 2>&1 | tail -15)"
  sleep 5
done
log "a pod pinned to $WORKER runs (IP $(kc get pod nbe2e-on-worker -o jsonpath='{.status.podIP}'))"
# Into the nodes: the inventory's account over the image's sshd, its
# sudo rule, and host keys made by each node (none baked into the image).
SSH=(ip netns exec "$NS" ssh -i "$WORK/ops_key" -o BatchMode=yes -o StrictHostKeyChecking=no
  -o UserKnownHostsFile=/dev/null -o ConnectTimeout=30 -o LogLevel=ERROR)
out=$("${SSH[@]}" "ops@$(ip_of k8s-master1)" sudo -n kubectl --kubeconfig /etc/kubernetes/admin.conf get node k8s-master1 -o name 2>&1 | tail -1)
want "ssh ops@k8s-master1 sudo kubectl get node" "$out" "node/k8s-master1"
out=$("${SSH[@]}" "ops@$(ip_of "$WORKER")" hostname 2>&1 | tail -1)
want "ssh ops@$WORKER hostname" "$out" "$WORKER"
keys=$(for n in k8s-master1 "$WORKER"; do ip netns exec "$NS" ssh-keyscan -T 20 -t ed25519 "$(ip_of "$n")" 2>/dev/null | awk '{print $3}'; done | sort -u | grep -c . || true)
want "distinct ed25519 host keys (k8s-master1, $WORKER)" "$keys" 2
[ $errors = 0 ] || fail "$errors cluster check(s) failed"
boot_to_ready=$(printf '%s\n' "${READY_AT[@]}" | sort -n | tail -1)

# 7. With several masters: kill the VIP holder, measure until the API
#    answers through the VIP again; then rebuild that master from a fresh
#    disk (its stale etcd member is removed by peer URL, it joins again).
failover=na rebuild_master=na
if [ "$MASTERS" -ge 3 ]; then
  kc get nodes >/dev/null || fail "the VIP does not answer before the failover"
  mac=$(ip -n "$NS" neigh show "$VIP" | sed -n 's/.*lladdr \([0-9a-f:]*\).*/\1/p')
  holder=
  for n in "${NODES[@]}"; do [ "52:54:00:93:01:$(mac_suffix "$n")" = "$mac" ] && holder=$n; done
  case $holder in k8s-master*) ;; *) fail "cannot tell the VIP holder (VIP at MAC '$mac')";; esac
  kill -9 "${PID_OF[$holder]}"; wait "${PID_OF[$holder]}" 2>/dev/null || true
  T_KILL=$(date +%s.%N); DEAD[$holder]=1
  log "killed $holder (the VIP holder)"
  deadline=$(( $(date +%s) + FAILOVER_TIMEOUT ))
  until ip netns exec "$NS" "$K8S/kubectl" --kubeconfig "$WORK/admin.conf" --request-timeout=5s get nodes >/dev/null 2>&1; do
    [ "$(date +%s)" -lt $deadline ] || fail "kubectl get nodes through the VIP did not answer within $FAILOVER_TIMEOUT s of killing $holder"
    sleep 1
  done
  failover=$(echo "$(date +%s.%N) - $T_KILL" | bc)
  log "kubectl get nodes answered through the VIP $failover s after $holder was killed"

  # Its old Node is NotReady by now or soon; the rebuilt one must come back.
  rebuild "$holder"
  rebuild_master=$REBUILT_S
  has "$WORK/$holder.serial" "kubeadm init: attempt" && { echo "e2e-real: rebuilt $holder ran kubeadm init (a second cluster)" >&2; errors=$((errors+1)); }
  etcd_check "$MASTERS"
  [ $errors = 0 ] || fail "master rebuild: $errors check(s) failed"
  log "$holder rebuilt and Ready in $rebuild_master s; etcd has $MASTERS healthy members again"
fi

# 8. Thirty days on: the pre-generated bootstrap token (24 h TTL) has long
#    expired. Expire it now, run what the baked timer runs on a master,
#    and rebuild the worker with its original metadata: it joins only if
#    keep-token made the token valid again (the expired Secret, if the
#    token cleaner has not removed it yet, is deleted first).
TOKEN_ID=$(cut -d. -f1 "$S/bootstrap-token")
kc -n kube-system patch secret "bootstrap-token-$TOKEN_ID" --type merge \
  -p '{"stringData":{"expiration":"2000-01-01T00:00:00Z"}}' >/dev/null || fail "could not expire the bootstrap token"
want "keep-token timer on k8s-master1" "$("${SSH[@]}" "ops@$(ip_of k8s-master1)" systemctl is-active nodebake-keep-token.timer 2>&1 | tail -1)" active
"${SSH[@]}" "ops@$(ip_of k8s-master1)" sudo -n systemctl start nodebake-keep-token.service >"$WORK/keep-token.log" 2>&1 \
  || { cat "$WORK/keep-token.log"; "${SSH[@]}" "ops@$(ip_of k8s-master1)" sudo -n journalctl -u nodebake-keep-token.service --no-pager | tail -20; fail "nodebake-keep-token.service failed"; }
exp=$(kc -n kube-system get secret "bootstrap-token-$TOKEN_ID" -o jsonpath='{.data.expiration}' | base64 -d)
[ -n "$exp" ] && [ "$(date -d "$exp" +%s)" -gt "$(date +%s)" ] || fail "the bootstrap token was not made valid again (expiration '$exp')"
log "bootstrap token expired and re-created by nodebake-keep-token.service (expires $exp)"
[ $errors = 0 ] || fail "$errors token check(s) failed"

# 9. Rebuild the worker.
rebuild "$WORKER"
rebuild_worker=$REBUILT_S
log "$WORKER rebuilt and Ready in $rebuild_worker s"

# 10. The final state.
r=$(readiness)
ready=$(grep -c '=True$' <<<"$r" || true)
total=$(grep -c '=' <<<"$r" || true)
members=$(ectl member list 2>/dev/null | grep -c ', started, ' || true)
etcd_check "$MASTERS"
want "Ready nodes" "$ready/$total" "${#NODES[@]}/${#NODES[@]}"
[ $errors = 0 ] || fail "$errors final check(s) failed"
total_s=$(echo "$(date +%s.%N) - $T0" | bc)
log "passed in $total_s s (machine: $(nproc) cores, QEMU TCG)"
if [ $BENCH = 1 ]; then
  for n in "${NODES[@]}"; do echo "e2e-real node $n boot_to_ready_s=${FIRST_READY[$n]} (rebuilt: ${READY_AT[$n]})"; done
  echo "e2e-real rebuild_worker_s=$rebuild_worker total_s=$total_s"
fi
printf 'e2e-real ready_nodes=%s/%s etcd_members=%s boot_to_ready_s=%.0f vip_failover_s=%s rebuild_master_s=%s\n' \
  "$ready" "$total" "$members" "$boot_to_ready" "$failover" "$rebuild_master"
