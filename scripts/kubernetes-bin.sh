#!/usr/bin/env bash
# Prints the directory holding the real Kubernetes test binaries (kubeadm,
# kubelet, kubectl, kube-apiserver, kube-controller-manager, kube-scheduler,
# kube-proxy; v1.28.7, static), unpacking them on first use.
#
#   $NODEBAKE_KUBERNETES_BIN   a directory that already holds them (used as is)
#   $NODEBAKE_KUBERNETES_DIST  the shared distribution directory
#                              (default: ../shared/kubernetes beside the repository)
#
# They are unpacked (and every sha256 checked by the distribution's own
# unpack.sh) into ~/.cache/nodebake/kubernetes-v1.28.7, never into the
# repository. Exit 2 when the distribution is not there.
set -euo pipefail
if [ -n "${NODEBAKE_KUBERNETES_BIN:-}" ]; then
  [ -x "$NODEBAKE_KUBERNETES_BIN/kubeadm" ] || { echo "kubernetes-bin: no kubeadm in \$NODEBAKE_KUBERNETES_BIN=$NODEBAKE_KUBERNETES_BIN" >&2; exit 2; }
  echo "$NODEBAKE_KUBERNETES_BIN"; exit 0
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
dist=${NODEBAKE_KUBERNETES_DIST:-$repo/../shared/kubernetes}
[ -x "$dist/unpack.sh" ] || { echo "kubernetes-bin: no Kubernetes distribution at $dist (set NODEBAKE_KUBERNETES_DIST or NODEBAKE_KUBERNETES_BIN)" >&2; exit 2; }
cache=${XDG_CACHE_HOME:-$HOME/.cache}/nodebake/kubernetes-v1.28.7
if [ ! -f "$cache/.complete" ]; then
  mkdir -p "$(dirname "$cache")"
  # One unpacker at a time (tests run in parallel); the marker is written last.
  exec 9>"$cache.lock"
  flock 9
  if [ ! -f "$cache/.complete" ]; then
    rm -rf "$cache"
    "$dist/unpack.sh" "$cache" >&2
    touch "$cache/.complete"
  fi
fi
echo "$cache"
