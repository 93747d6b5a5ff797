#!/usr/bin/env bash
# Checks, for real, the image archives tests/e2e/real/make-images.sh wrote to
# OUTDIR: a private containerd (Debian's containerd + runc; its own config,
# root, state, sockets, runc root and FIFO directory in a temporary directory)
# imports every archive of OUTDIR/images.tsv with
# `ctr -n k8s.io images import`, then:
#   - `ctr -n k8s.io images ls -q` lists exactly the references of images.tsv;
#   - pause runs as a container (the "pod sandbox": its network namespace is
#     the one the containers below join), keeps running, and exits 0 on
#     SIGTERM;
#   - kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy:
#     `<name> --version` (found through the image's PATH) prints v1.28.7;
#   - kube-proxy, privileged in the pause container's network namespace:
#     iptables-restore of kube-proxy-like rules (nat + filter; comment, mark,
#     statistic, addrtype, conntrack, MASQUERADE, DNAT, REJECT) and
#     iptables-save shows them; ip6tables-save; ipset create + list;
#     conntrack -L;
#   - etcd: `etcd --version` is 3.5; etcd serves in the pause container's
#     network namespace and etcdctl (from the image) puts and gets a key.
# Every wait is bounded; containerd (stopped by its PID), its shims, mounts and
# the temporary directory are cleaned up on exit (CHECK_KEEP=1 keeps the
# directory).
#
# Usage: tests/e2e/real/check-images.sh OUTDIR        (root)
set -euo pipefail

KUBE_VERSION=v1.28.7
log() { echo "check-images: $*" >&2; }
fail() { echo "check-images: FAILED: $*" >&2; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
OUTDIR=$(cd "$1" 2>/dev/null && pwd) || fail "$1 is not a directory"
TSV=$OUTDIR/images.tsv
[ -f "$TSV" ] || fail "$TSV is missing (run tests/e2e/real/make-images.sh $1 first)"
[ "$(id -u)" = 0 ] || fail "needs root (containerd, runc)"
for t in containerd ctr runc containerd-shim-runc-v2 sha256sum timeout; do
  command -v "$t" >/dev/null || fail "$t is not installed (apt-get install containerd runc)"
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nbcheck-XXXXXX")
SOCK=$WORK/containerd.sock
CTRD_PID=""
SANDBOX_CTR=""
CG=nbcheck-$$                      # cgroup parent of every container here
RUN_CTRD_EXISTED=0; [ -e /run/containerd ] && RUN_CTRD_EXISTED=1
T0=$EPOCHREALTIME

c() { timeout 120 ctr --address "$SOCK" -n k8s.io "$@"; }
RUNOPTS=(--runc-root "$WORK/runc" --fifo-dir "$WORK/fifo")

cleanup() {
  local rc=$? id p
  set +e
  if [ -n "$CTRD_PID" ] && kill -0 "$CTRD_PID" 2>/dev/null; then
    for id in $(timeout 20 ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      timeout 20 ctr --address "$SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1
    done
    for id in $(timeout 20 ctr --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      timeout 20 ctr --address "$SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1
    done
    for id in $(timeout 20 ctr --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
      timeout 20 ctr --address "$SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1
    done
    kill -TERM "$CTRD_PID"
    for _ in $(seq 100); do kill -0 "$CTRD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$CTRD_PID" 2>/dev/null && { log "containerd (pid $CTRD_PID) did not stop on SIGTERM: SIGKILL"; kill -KILL "$CTRD_PID"; }
    wait "$CTRD_PID" 2>/dev/null
    log "containerd (pid $CTRD_PID) stopped"
  fi
  if [ -n "$SANDBOX_CTR" ] && kill -0 "$SANDBOX_CTR" 2>/dev/null; then
    kill -TERM "$SANDBOX_CTR" 2>/dev/null   # timeout(1), which passes it to its ctr
    wait "$SANDBOX_CTR" 2>/dev/null
  fi
  # Shims of this containerd that outlived it (they name its socket).
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q -- "-address $SOCK "; then
      log "killing leftover shim ${p#/proc/}"
      kill -KILL "${p#/proc/}" 2>/dev/null
    fi
  done
  # Mounts under the temporary directory (rootfs of containers), deepest first.
  awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m"; done
  # runc removes each container's cgroup; the parent is ours.
  find /sys/fs/cgroup -maxdepth 2 -type d -name "$CG" 2>/dev/null | while read -r d; do
    find "$d" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null
    rmdir "$d" 2>/dev/null
  done
  # The shims' socket directory, when this script created it (empty by now).
  [ "$RUN_CTRD_EXISTED" = 1 ] || rmdir /run/containerd/s /run/containerd 2>/dev/null
  if [ "${CHECK_KEEP:-0}" = 1 ]; then
    log "kept $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- containerd ---
mkdir -p "$WORK/root" "$WORK/state" "$WORK/opt" "$WORK/runc" "$WORK/fifo" "$WORK/rules"
cat >"$WORK/config.toml" <<EOF
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = "$WORK/debug.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"
EOF
containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CTRD_PID=$!
for i in $(seq 300); do
  kill -0 "$CTRD_PID" 2>/dev/null || { tail -20 "$WORK/containerd.log" >&2; fail "containerd exited at start"; }
  timeout 5 ctr --address "$SOCK" version >/dev/null 2>&1 && break
  [ "$i" = 300 ] && { tail -20 "$WORK/containerd.log" >&2; fail "containerd did not answer on $SOCK within 30 s"; }
  sleep 0.1
done
log "containerd $(containerd --version | awk '{print $3}') (pid $CTRD_PID) on $SOCK"

# --- import ---
declare -A REF_OF=()
WANT=()
while IFS=$'\t' read -r file ref sha; do
  [ -n "$file" ] || continue
  [ -f "$OUTDIR/$file" ] || fail "$ref: $OUTDIR/$file is missing"
  got=$(sha256sum "$OUTDIR/$file" | cut -d' ' -f1)
  [ "$got" = "$sha" ] || fail "$ref: $file has sha256 $got, images.tsv says $sha"
  out=$(c images import "$OUTDIR/$file" 2>&1) || { echo "$out" >&2; fail "$ref: ctr images import $file"; }
  log "imported $file ($(stat -c %s "$OUTDIR/$file") bytes): $(echo "$out" | tr '\n' ' ')"
  name=${ref##*/}; name=${name%%:*}
  REF_OF[$name]=$ref
  WANT+=("$ref")
done <"$TSV"
[ ${#WANT[@]} -gt 0 ] || fail "$TSV lists no image"

have=$(c images ls -q | sort)
want=$(printf '%s\n' "${WANT[@]}" | sort)
[ "$have" = "$want" ] || fail "ctr images ls -q lists
$have
but images.tsv has
$want"
log "ctr -n k8s.io images ls -q lists exactly the ${#WANT[@]} references of images.tsv:"
echo "$have" | sed 's/^/check-images:   /' >&2

for n in pause kube-apiserver kube-controller-manager kube-scheduler kube-proxy etcd; do
  [ -n "${REF_OF[$n]:-}" ] || fail "images.tsv has no $n image"
done

# --- helpers ---
run_rm() { # ID REF CMD...: runs to completion, prints its output
  local id=$1 ref=$2; shift 2
  c run --rm "${RUNOPTS[@]}" --cgroup "/$CG/$id" "$ref" "$id" "$@" </dev/null 2>&1
}
in_sandbox() { # ID REF CMD...: like run_rm, in the pause container's network namespace
  local id=$1 ref=$2; shift 2
  c run --rm "${RUNOPTS[@]}" --cgroup "/$CG/$id" --with-ns "network:$NETNS" "$ref" "$id" "$@" </dev/null 2>&1
}
status() { c tasks ls 2>/dev/null | awk -v id="$1" '$1 == id {print $3}'; }
wait_status() { # ID STATUS SECONDS
  local i
  for i in $(seq $(($3 * 10))); do
    [ "$(status "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
stop_task() { # ID: SIGTERM, bounded wait, delete (a detached task)
  local id=$1
  c tasks kill -s SIGTERM "$id" >/dev/null
  if ! wait_status "$id" STOPPED 20; then
    log "$id did not stop within 20 s of SIGTERM: SIGKILL"
    c tasks kill -s SIGKILL "$id" >/dev/null
    wait_status "$id" STOPPED 10 || fail "$id did not stop on SIGKILL"
  fi
  c tasks delete "$id" >/dev/null
  c containers delete "$id" >/dev/null
}

# --- pause: the sandbox ---
# `ctr run` (attached, in the background) exits with the task's exit status.
SANDBOX=nbcheck-$$-pause
timeout 600 ctr --address "$SOCK" -n k8s.io run --rm "${RUNOPTS[@]}" --cgroup "/$CG/$SANDBOX" \
  "${REF_OF[pause]}" "$SANDBOX" </dev/null >"$WORK/pause.log" 2>&1 &
SANDBOX_CTR=$!
wait_status "$SANDBOX" RUNNING 20 || { cat "$WORK/pause.log" >&2; fail "pause: the task is not RUNNING within 20 s (status '$(status "$SANDBOX")')"; }
sleep 1
[ "$(status "$SANDBOX")" = RUNNING ] || fail "pause: the task stopped by itself (status '$(status "$SANDBOX")')"
SANDBOX_PID=$(c tasks ls | awk -v id="$SANDBOX" '$1 == id {print $2}')
[ "$(tr '\0' ' ' </proc/"$SANDBOX_PID"/cmdline)" = "/pause " ] || fail "pause: the task's process is not /pause"
NETNS=/proc/$SANDBOX_PID/ns/net
[ "$(readlink "$NETNS")" != "$(readlink /proc/self/ns/net)" ] || fail "pause: the sandbox has the host's network namespace"
log "pause: ${REF_OF[pause]} runs as $SANDBOX (pid $SANDBOX_PID, own network namespace $(readlink "$NETNS"))"

# --- --version of the control-plane images, through their PATH ---
for n in kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  out=$(run_rm "nbcheck-$$-$n" "${REF_OF[$n]}" "$n" --version) || fail "$n: ctr run ${REF_OF[$n]} $n --version: $out"
  [ "$out" = "Kubernetes $KUBE_VERSION" ] || fail "$n: '$n --version' printed '$out', not 'Kubernetes $KUBE_VERSION'"
  log "$n: ctr run --rm ${REF_OF[$n]} $n --version -> $out"
done

# --- kube-proxy's tools in the sandbox's network namespace ---
KP=${REF_OF[kube-proxy]}
KPOPTS=(--privileged --with-ns "network:$NETNS")
cat >"$WORK/rules/v4" <<'EOF'
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-SVC-NBCHECK - [0:0]
:KUBE-SEP-NBCHECK - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment "default/kubernetes:https cluster IP" -m tcp --dport 443 -j KUBE-SVC-NBCHECK
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-NBCHECK -m comment --comment "default/kubernetes:https -> 10.0.0.1:6443" -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-NBCHECK
-A KUBE-SEP-NBCHECK -s 10.0.0.1/32 -m comment --comment "default/kubernetes:https" -j KUBE-MARK-MASQ
-A KUBE-SEP-NBCHECK -p tcp -m comment --comment "default/kubernetes:https" -m tcp -j DNAT --to-destination 10.0.0.1:6443
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FORWARD - [0:0]
:KUBE-SERVICES - [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-SERVICES -d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable
COMMIT
EOF
cat >"$WORK/rules/v6" <<'EOF'
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -d fd00::10/128 -p udp -m comment --comment "kube-system/kube-dns:dns has no endpoints" -m udp --dport 53 -j REJECT --reject-with icmp6-port-unreachable
COMMIT
EOF
kp() { # ID CMD...: a kube-proxy container in the sandbox's network namespace
  local id=$1; shift
  c run --rm "${RUNOPTS[@]}" --cgroup "/$CG/nbcheck-$$-kp-$id" "${KPOPTS[@]}" --mount "type=bind,src=$WORK/rules,dst=/nbcheck,options=rbind:ro" \
    "$KP" "nbcheck-$$-kp-$id" "$@" </dev/null 2>&1
}
out=$(kp v4restore iptables-restore --noflush /nbcheck/v4) || fail "kube-proxy: iptables-restore in the sandbox: $out"
out=$(kp v4save iptables-save) || fail "kube-proxy: iptables-save in the sandbox: $out"
for want in "(nf_tables)" "-j DNAT --to-destination 10.0.0.1:6443" "-m statistic --mode random --probability 0.5" \
  "-j MASQUERADE --random-fully" "-m addrtype --dst-type LOCAL" "-m conntrack --ctstate INVALID -j DROP" \
  "-j REJECT --reject-with icmp-port-unreachable" "-j MARK --set-xmark 0x4000/0x4000"; do
  case "$out" in *"$want"*) ;; *) echo "$out" >&2; fail "kube-proxy: iptables-save in the sandbox lacks '$want'" ;; esac
done
log "kube-proxy: iptables-restore + iptables-save in the sandbox: $(echo "$out" | grep -c '^-A') rules back ($(echo "$out" | head -1 | sed 's/ on .*//'))"
out=$(kp v6restore ip6tables-restore --noflush /nbcheck/v6) || fail "kube-proxy: ip6tables-restore in the sandbox: $out"
out=$(kp v6save ip6tables-save) || fail "kube-proxy: ip6tables-save in the sandbox: $out"
case "$out" in *"-j REJECT --reject-with icmp6-port-unreachable"*) ;; *) echo "$out" >&2; fail "kube-proxy: ip6tables-save lacks the rule" ;; esac
log "kube-proxy: ip6tables-restore + ip6tables-save in the sandbox: ok"
out=$(kp ipset-create ipset create KUBE-NBCHECK hash:ip,port) || fail "kube-proxy: ipset create in the sandbox: $out"
out=$(kp ipset-list ipset list -n) || fail "kube-proxy: ipset list in the sandbox: $out"
[ "$out" = KUBE-NBCHECK ] || fail "kube-proxy: ipset list -n printed '$out', not KUBE-NBCHECK"
log "kube-proxy: ipset create + ipset list -n in the sandbox: $out"
out=$(kp conntrack conntrack -L) || fail "kube-proxy: conntrack -L in the sandbox: $out"
log "kube-proxy: conntrack -L in the sandbox: $out"
[ "$(readlink "$NETNS")" != "$(readlink /proc/self/ns/net)" ] || fail "the sandbox has the host's network namespace"
iptables-save 2>/dev/null | grep -q NBCHECK && fail "kube-proxy: the test rules reached the host's tables"

# --- etcd ---
ETCD=${REF_OF[etcd]}
out=$(run_rm "nbcheck-$$-etcd-version" "$ETCD" etcd --version) || fail "etcd: ctr run $ETCD etcd --version: $out"
case "$out" in *"etcd Version: 3.5."*) ;; *) fail "etcd: 'etcd --version' printed '$out'" ;; esac
log "etcd: ctr run --rm $ETCD etcd --version -> $(echo "$out" | tr '\n' ' ')"
ETCD_ID=nbcheck-$$-etcd
c run -d "${RUNOPTS[@]}" --cgroup "/$CG/$ETCD_ID" --with-ns "network:$NETNS" --log-uri "file://$WORK/etcd.log" "$ETCD" "$ETCD_ID" \
  etcd --name nbcheck --data-dir /var/lib/etcd --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster nbcheck=http://127.0.0.1:2380 >/dev/null ||
  fail "etcd: ctr run -d $ETCD etcd"
ok=0
for i in $(seq 60); do
  [ "$(status "$ETCD_ID")" = RUNNING ] || [ "$i" -lt 10 ] || { tail -20 "$WORK/etcd.log" >&2; fail "etcd: the server stopped (status '$(status "$ETCD_ID")')"; }
  if out=$(in_sandbox "nbcheck-$$-etcdctl-$i" "$ETCD" etcdctl --endpoints http://127.0.0.1:2379 --dial-timeout 2s \
    put nodebake-check ok); then ok=1; break; fi
  sleep 0.5
done
[ "$ok" = 1 ] || { tail -20 "$WORK/etcd.log" >&2; fail "etcd: etcdctl put did not succeed within ~60 s: $out"; }
out=$(in_sandbox "nbcheck-$$-etcdctl-get" "$ETCD" etcdctl --endpoints http://127.0.0.1:2379 --dial-timeout 5s \
  get nodebake-check --print-value-only) || fail "etcd: etcdctl get in the sandbox: $out"
[ "$out" = ok ] || fail "etcd: etcdctl get in the sandbox printed '$out', not ok"
log "etcd: serving in the sandbox; etcdctl put + get nodebake-check -> $out"
stop_task "$ETCD_ID"
log "etcd: stopped on SIGTERM"

# --- pause exits 0 on SIGTERM ---
[ "$(status "$SANDBOX")" = RUNNING ] || fail "pause: not RUNNING any more at the end (status '$(status "$SANDBOX")')"
c tasks kill -s SIGTERM "$SANDBOX" >/dev/null
for _ in $(seq 200); do kill -0 "$SANDBOX_CTR" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SANDBOX_CTR" 2>/dev/null && fail "pause: still running 20 s after SIGTERM"
ec=0
wait "$SANDBOX_CTR" || ec=$?
SANDBOX_CTR=""
[ "$ec" = 0 ] || { cat "$WORK/pause.log" >&2; fail "pause: exit status $ec on SIGTERM, not 0"; }
log "pause: exited 0 on SIGTERM (ctr run's exit status)"

log "all checks passed in $(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s (containerd start to end)"
