#!/usr/bin/env bash
# Build throughput: `nodebake build` against the plain shell pipeline that
# does the same minimum work, on the same synthetic inputs, in one run.
#
#   1. builds the release `nodebake` (shared target dir; waits for the cargo
#      lock if another build holds it);
#   2. generates BENCH_SIZE_MIB (default 1024) MiB of deterministic
#      synthetic inputs: a base root filesystem tarball (~68%: thousands of
#      text-like, binary-like and incompressible files of varied sizes, the
#      usual top-level dirs, usrmerge and library symlinks, /etc/os-release),
#      two tarball artifacts (~10% each, extracted under /opt) and three
#      single-file artifacts (~4% each). No input holds an ELF file;
#   3. writes a spec for them (x86_64, formats = ["rootfs"], gzip_level 6);
#   4. times, on those inputs:
#      a. the baseline: tar -xzf base + artifacts into a staging dir, copy
#         the single files in, `tar -c --sort=name | gzip -6 > rootfs.tar.gz`,
#         then sha256sum of every file of the staging tree;
#      b. `nodebake build --no-cache --without-firstboot` (wall + peak RSS by
#         /usr/bin/time), with its progress lines time-stamped per phase;
#      c. a cached rebuild (same spec and store, new out dir).
#
# The page cache cannot be dropped reliably here (/proc/sys/vm/drop_caches is
# not writable in every sandbox or container), so both contenders run warm
# instead: every input is read once (cat > /dev/null) before any timing, and
# `sync` runs before each timed run so one run's dirty pages are not written
# back during the next.
#
# The last line printed is exactly
#   build-bench ratio=<nodebake wall / baseline wall> peak_rss_mib=<n> cached_ratio=<cached wall / first nodebake wall>
#
# Environment:
#   BENCH_SIZE_MIB  total input size in MiB (default 1024, at least 16)
#   BENCH_DIR       where the temporary work dir is made (default $TMPDIR or /tmp)
#   BENCH_SEED      generator seed (default 1700000000)
#   BENCH_KEEP=1    keep the work dir (prints its path) instead of removing it
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
SEED=${BENCH_SEED:-1700000000}
PARENT=${BENCH_DIR:-${TMPDIR:-/tmp}}

if ! [[ $SIZE_MIB =~ ^[0-9]+$ ]] || ((SIZE_MIB < 16)); then
    echo "build-bench: BENCH_SIZE_MIB must be an integer >= 16 (got '$SIZE_MIB')" >&2
    exit 2
fi

say() { printf 'build-bench: %s\n' "$*"; }

# Microseconds since the epoch (bash 5's EPOCHREALTIME, locale C).
now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
# Seconds with 2 decimals from a microsecond interval.
secs() { awk -v d="$1" 'BEGIN {printf "%.2f", d / 1e6}'; }

# ---------------------------------------------------------------- 1. build
say "building nodebake (release)"
cargo build --release -q -p nodebake
BIN=$CARGO_TARGET_DIR/release/nodebake
[[ -x $BIN ]] || { echo "build-bench: $BIN missing after the build" >&2; exit 1; }

TIME=/usr/bin/time
if [[ ! -x $TIME ]]; then
    say "installing GNU time"
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
    fi
    [[ -x $TIME ]] || { echo "build-bench: /usr/bin/time (package 'time') is required" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "build-bench: python3 is required" >&2; exit 1; }

mkdir -p "$PARENT"
WORK=$(mktemp -d "$PARENT/build-bench.XXXXXX")
cleanup() {
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        echo "build-bench: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

IN=$WORK/inputs
mkdir -p "$IN" "$WORK/gen"

# ------------------------------------------------------ 2. synthetic inputs
say "generating ${SIZE_MIB} MiB of inputs in $WORK (seed $SEED)"
gen_start=$(now_us)
python3 - "$WORK/gen" "$SIZE_MIB" "$SEED" >"$WORK/gen.txt" <<'PY'
"""Deterministic synthetic node-image inputs (trees on disk; tar is done by
the shell). Content is sliced from three pools made by a seeded generator:
word-like text (compresses ~3x), binary-like blocks (skewed random bytes,
string tables, zero padding; ~2x) and random bytes (already-compressed
files). Every file starts with a header naming its path, so no two files
share content and none starts with an ELF magic."""
import itertools
import math
import os
import random
import sys

out, size_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 1 << 20
TOTAL = size_mib * MiB
rng = random.Random(seed)
os.umask(0o022)

POOL = max(1 * MiB, min(32 * MiB, TOTAL // 8))

# --- pools
syll = ["ka", "to", "ri", "mon", "sel", "ex", "pa", "tur", "in", "de", "lo", "us",
        "ne", "tra", "con", "fig", "ser", "vi", "ce", "da", "ta", "net", "work", "sys",
        "tem", "lib", "mod", "ule", "path", "file", "user", "group", "id", "log"]
words = sorted({"".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(6000)})
rng.shuffle(words)
vocab = words + ["=", "{", "}", "(", ")", ";", "#", "//", "0", "1", "true", "false", "None",
          "return", "if", "else", "def", "self", "const", "\n", "\n", "\n\t", "\n    "]
weights = [1.0 / (i + 1) ** 0.9 for i in range(len(vocab))]
for i in range(len(vocab) - 5, len(vocab)):   # newlines: lines of ~8-12 tokens
    weights[i] = sum(weights) / 40
text = " ".join(rng.choices(vocab, cum_weights=list(itertools.accumulate(weights)), k=POOL // 5)).encode()
text = (text * (POOL // len(text) + 1))[:POOL]

# Binary-like: "machine code" made of recurring basic blocks of opcode-like
# tokens with random 4-byte immediates, interleaved with string tables
# (text) and zero padding, as in real executables and libraries.
ops = [rng.randbytes(rng.choice([1, 2, 2, 3, 3, 3, 4, 5, 6, 7])) for _ in range(700)]
ops_cum = list(itertools.accumulate(1.0 / (i + 1) ** 1.1 for i in range(len(ops))))
blocks = [b"".join(rng.choices(ops, cum_weights=ops_cum, k=rng.randint(3, 20))) for _ in range(20000)]
blocks_cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.6 for i in range(len(blocks))))
code_parts, n = [], 0
while n < POOL:
    seq = rng.choices(blocks, cum_weights=blocks_cum, k=4096)
    for i in range(0, len(seq), 3):
        seq[i] = seq[i] + rng.randbytes(4)
    chunk = b"".join(seq)
    code_parts.append(chunk)
    n += len(chunk)
code = b"".join(code_parts)
parts, n = [], 0
while n < POOL:
    r = rng.random()
    if r < 0.65:
        k = rng.randint(1024, 16384)
        o = rng.randrange(len(code) - k)
        chunk = code[o:o + k]
    elif r < 0.85:
        k = rng.randint(64, 4096)
        o = rng.randrange(len(text) - k)
        chunk = text[o:o + k]
    else:
        k = rng.randint(16, 1024)
        chunk = bytes(k)
    parts.append(chunk)
    n += k
binpool = b"".join(parts)[:POOL]
randpool = rng.randbytes(POOL // 2)
POOLS = {"text": text, "bin": binpool, "rand": randpool}

stats = {"files": 0, "bytes": 0, "symlinks": 0, "dirs": 0}


def write_file(root, rel, kind, size, mode=0o644):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "text":
        head = ("# %s\n" % rel).encode()
    elif kind == "bin":
        head = b"NBBIN\x00\x02\x01" + rel.encode() + b"\x00"
    else:
        head = b"\x89NBR\r\n\x1a\n" + rel.encode() + b"\x00"
    pool = POOLS[kind]
    size = max(size, len(head))
    left = size - len(head)
    with open(path, "wb") as f:
        f.write(head)
        while left > 0:
            k = min(left, rng.randint(64 * 1024, 1 * MiB), len(pool) - 1)
            o = rng.randrange(len(pool) - k)
            f.write(memoryview(pool)[o:o + k])
            left -= k
    os.chmod(path, mode)
    stats["files"] += 1
    stats["bytes"] += size
    return size


def symlink(root, rel, target):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.lexists(path):
        os.symlink(target, path)
        stats["symlinks"] += 1


def mkdir(root, rel, mode=0o755):
    path = os.path.join(root, rel)
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    stats["dirs"] += 1


def lognormal(median, sigma, cap):
    return int(min(cap, max(16, rng.lognormvariate(math.log(median), sigma))))


def word():
    return rng.choice(words)


PKGS = sorted({word() for _ in range(400)})
LANGS = ["de", "fr", "es", "it", "ja", "pt_BR", "ru", "zh_CN", "pl", "nl", "sv", "cs"]

# category: weight (by count), path maker, (kind or kinds), size (median, sigma, cap), mode
CATS = [
    ("py", 20, lambda p: "usr/lib/python3/dist-packages/%s/%s/%s.py" % (p, word(), word()),
     ["text"], (8000, 1.2, 4 * MiB), 0o644),
    ("share", 15, lambda p: "usr/share/%s/%s/%s.%s" % (p, word(), word(), rng.choice(["xml", "json", "png", "svg", "dat"])),
     ["text", "text", "rand", "bin"], (6000, 1.6, 8 * MiB), 0o644),
    ("lib", 8, lambda p: "usr/lib/x86_64-linux-gnu/lib%s.so.%d.%d.%d" % (word(), rng.randint(0, 9), rng.randint(0, 20), rng.randint(0, 9)),
     ["bin"], (120000, 1.4, 48 * MiB), 0o644),
    ("bin", 8, lambda p: "usr/%s/%s" % (rng.choice(["bin", "bin", "sbin", "libexec/" + p]), word()),
     ["bin"], (60000, 1.5, 48 * MiB), 0o755),
    ("doc", 10, lambda p: "usr/share/doc/%s/%s" % (p, rng.choice(["copyright", "README", "NEWS", "changelog.gz", "changelog.Debian.gz"])),
     None, (3000, 1.3, 1 * MiB), 0o644),
    ("man", 10, lambda p: "usr/share/man/man%s/%s.%s.gz" % ((s := rng.choice("158")), word(), s),
     ["rand"], (2500, 0.9, 256 * 1024), 0o644),
    ("locale", 8, lambda p: "usr/share/locale/%s/LC_MESSAGES/%s.mo" % (rng.choice(LANGS), p),
     ["bin"], (18000, 1.0, 2 * MiB), 0o644),
    ("etc", 6, lambda p: "etc/%s/%s%s.conf" % (p, rng.choice(["", "conf.d/"]), word()),
     ["text"], (1500, 1.0, 256 * 1024), 0o644),
    ("include", 8, lambda p: "usr/include/%s/%s.h" % (p, word()),
     ["text"], (6000, 1.1, 1 * MiB), 0o644),
    ("var", 3, lambda p: "var/lib/%s/%s.db" % (p, word()),
     ["bin", "text"], (30000, 1.5, 16 * MiB), 0o644),
    ("big", 0.3, lambda p: "usr/lib/x86_64-linux-gnu/%s/%s.so" % (p, word()),
     ["bin"], (4 * MiB, 0.8, 32 * MiB), 0o644),
]
CAT_CUM = []
acc = 0.0
for c in CATS:
    acc += c[1]
    CAT_CUM.append(acc)


def fill_tree(root, budget, prefix="", pkgs=PKGS):
    """Writes files under root/prefix until budget bytes are used."""
    used, seen = 0, set()
    libs = []
    while used < budget:
        name, _, mk, kinds, (med, sig, cap), mode = rng.choices(CATS, cum_weights=CAT_CUM)[0]
        rel = prefix + mk(rng.choice(pkgs))
        if rel in seen:
            rel += ".%d" % len(seen)
        seen.add(rel)
        if kinds is None:
            kind = "rand" if rel.endswith(".gz") else "text"
        else:
            kind = rng.choice(kinds)
        size = min(lognormal(med, sig, cap), budget - used + 16)
        used += write_file(root, rel, kind, size, mode)
        if name == "lib":
            libs.append(rel)
    for rel in libs:   # libfoo.so.1.2.3 <- libfoo.so.1 <- libfoo.so
        d, b = os.path.split(rel)
        stem = b.split(".so.")[0]
        major = b.split(".so.")[1].split(".")[0]
        symlink(root, os.path.join(d, "%s.so.%s" % (stem, major)), b)
        symlink(root, os.path.join(d, "%s.so" % stem), "%s.so.%s" % (stem, major))
    return used


# --- base root filesystem
base = os.path.join(out, "base")
for d in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/share", "etc", "var/log", "var/cache",
          "var/lib", "var/spool", "dev", "proc", "sys", "run", "home", "srv", "mnt", "media", "opt", "boot"]:
    mkdir(base, d)
mkdir(base, "tmp", 0o1777)
mkdir(base, "var/tmp", 0o1777)
mkdir(base, "root", 0o700)
for l, t in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]:
    symlink(base, l, t)
osr = ('PRETTY_NAME="Bench Linux 1.0"\nNAME="Bench Linux"\nID=benchos\nVERSION_ID="1.0"\n'
       'HOME_URL="https://example.invalid/"\n')
with open(os.path.join(base, "etc/os-release"), "w") as f:
    f.write(osr)
for rel, body in [("etc/hostname", "bench\n"), ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                  ("etc/group", "root:x:0:\n"), ("etc/fstab", "# empty\n")]:
    with open(os.path.join(base, rel), "w") as f:
        f.write(body)
base_bytes = fill_tree(base, int(TOTAL * 0.68))
for _ in range(60):   # alternatives: /usr/bin/x -> /etc/alternatives/x -> /usr/bin/y (absolute)
    a, b = word(), word()
    symlink(base, "etc/alternatives/alt-" + a, "/usr/bin/" + b)
    symlink(base, "usr/bin/alt-" + a, "/etc/alternatives/alt-" + a)

# --- two tarball artifacts (top dir stripped, extracted under /opt/<name>)
art_pkgs = sorted({word() for _ in range(40)})
for name in ["agent", "runtime"]:
    root = os.path.join(out, name)
    fill_tree(root, int(TOTAL * 0.10), prefix="%s-1.0/" % name, pkgs=art_pkgs)

# --- three single files
singles = [("model.bin", "bin"), ("dataset.csv", "text"), ("cache.img", "rand")]
os.makedirs(os.path.join(out, "files"), exist_ok=True)
for name, kind in singles:
    write_file(os.path.join(out, "files"), name, kind, int(TOTAL * 0.04))

print("files=%d symlinks=%d dirs=%d bytes=%d" % (stats["files"], stats["symlinks"], stats["dirs"], stats["bytes"]))
PY

# Deterministic tarballs: sorted members, fixed owner and mtime, no gzip name/time.
mktar() { # DIR MEMBER OUT
    tar -C "$1" --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
        --mtime=@1700000000 -cf - "$2" | gzip -n -6 >"$3"
}
mktar "$WORK/gen/base" . "$IN/base.tar.gz" &
base_pid=$!
# Artifact tarballs hold one top directory (name-1.0/), stripped by the spec.
mktar "$WORK/gen/agent" agent-1.0 "$IN/agent.tar.gz"
mktar "$WORK/gen/runtime" runtime-1.0 "$IN/runtime.tar.gz"
wait "$base_pid"
cp "$WORK/gen/files/"* "$IN/"
rm -rf "$WORK/gen"
say "inputs: $(cat "$WORK/gen.txt") in $(secs $(($(now_us) - gen_start)))s"
for f in "$IN"/*; do
    printf '  %-16s %6d MiB\n' "${f##*/}" $(($(stat -c %s "$f") / 1048576))
done

# -------------------------------------------------------------- 3. spec
sha() { sha256sum "$1" | cut -d' ' -f1; }
SPEC=$WORK/bench.toml
cat >"$SPEC" <<EOF
spec_version = 1
name = "build-bench"
version = "1.0.0-1"
arch = "x86_64"
source_date_epoch = 1700000000

[base]
source = "inputs/base.tar.gz"
sha256 = "$(sha "$IN/base.tar.gz")"

[kubernetes]
version = "1.31.0"

[[artifact]]
name = "agent"
kind = "tarball"
source = "inputs/agent.tar.gz"
sha256 = "$(sha "$IN/agent.tar.gz")"
strip_components = 1
dest = "/opt/agent"

[[artifact]]
name = "runtime"
kind = "tarball"
source = "inputs/runtime.tar.gz"
sha256 = "$(sha "$IN/runtime.tar.gz")"
strip_components = 1
dest = "/opt/runtime"

[[artifact]]
name = "model"
kind = "file"
source = "inputs/model.bin"
sha256 = "$(sha "$IN/model.bin")"
dest = "/opt/data/model.bin"

[[artifact]]
name = "dataset"
kind = "file"
source = "inputs/dataset.csv"
sha256 = "$(sha "$IN/dataset.csv")"
dest = "/usr/share/bench/dataset.csv"

[[artifact]]
name = "cache"
kind = "file"
source = "inputs/cache.img"
sha256 = "$(sha "$IN/cache.img")"
dest = "/var/lib/bench/cache.img"

[outputs]
formats = ["rootfs"]
gzip_level = 6
EOF

# Warm the page cache for both contenders alike (see the header).
cat "$IN"/* "$BIN" >/dev/null

# ------------------------------------------------------------ 4a. baseline
B=$WORK/baseline
STAGE=$B/stage
mkdir -p "$STAGE"
sync
say "baseline: extract, tar | gzip -6, sha256sum"
t0=$(now_us)
tar -xzf "$IN/base.tar.gz" -C "$STAGE"
for a in agent runtime; do
    mkdir -p "$STAGE/opt/$a"
    tar -xzf "$IN/$a.tar.gz" -C "$STAGE/opt/$a" --strip-components=1
done
install -D -m 0644 "$IN/model.bin" "$STAGE/opt/data/model.bin"
install -D -m 0644 "$IN/dataset.csv" "$STAGE/usr/share/bench/dataset.csv"
install -D -m 0644 "$IN/cache.img" "$STAGE/var/lib/bench/cache.img"
t1=$(now_us)
tar -C "$STAGE" -c --sort=name . | gzip -6 >"$B/rootfs.tar.gz"
t2=$(now_us)
(cd "$STAGE" && find . -type f -print0 | xargs -0 sha256sum >"$B/files.sha256")
t3=$(now_us)
base_wall=$(secs $((t3 - t0)))
say "baseline: extract $(secs $((t1 - t0)))s, tar|gzip $(secs $((t2 - t1)))s, sha256sum $(secs $((t3 - t2)))s; wall ${base_wall}s"

# ------------------------------------------------------------ 4b. nodebake
STORE=$WORK/store
# Prefixes each stderr line with the ms elapsed since $1 (µs).
stamp() {
    local t0=$1 line t
    while IFS= read -r line; do
        t=$EPOCHREALTIME
        printf '%9.3f %s\n' "$(awk -v a="$t0" -v b="${t/./}" 'BEGIN {print (b - a) / 1e6}')" "$line"
    done
}
run_nodebake() { # NAME OUTDIR [extra args]
    local name=$1 out=$2
    shift 2
    sync
    local t0
    t0=$(now_us)
    if ! "$TIME" -f '%e %M' -o "$WORK/$name.time" "$BIN" build "$SPEC" --out "$out" \
        --without-firstboot --store "$STORE" "$@" 2>&1 >"$WORK/$name.stdout" |
        stamp "$t0" >"$WORK/$name.log"; then
        cat "$WORK/$name.log" >&2
        echo "build-bench: nodebake build ($name) failed" >&2
        exit 1
    fi
    sed 's/^/    /' "$WORK/$name.log"
}

say "nodebake build --no-cache"
run_nodebake first "$WORK/nb-first" --no-cache
read -r nb_wall nb_rss_kib <"$WORK/first.time"
nb_rss_mib=$(((nb_rss_kib + 512) / 1024))

# Phases from the stamped progress lines: each lasts until the next line.
say "nodebake phases (seconds, from its progress lines):"
awk '{t[NR] = $1; $1 = ""; l[NR] = substr($0, 2)}
     END {p = 0; for (i = 1; i <= NR; i++) {if (i < NR) printf "  %8.2f  %s\n", t[i+1] - t[i], l[i]; else printf "  (end at %.2f)  %s\n", t[i], l[i]}}' \
    "$WORK/first.log"

say "nodebake cached rebuild"
run_nodebake cached "$WORK/nb-cached"
read -r cached_wall _ <"$WORK/cached.time"
grep -q 'from the build cache' "$WORK/cached.log" ||
    say "WARNING: the rebuild was not served from the build cache"

# Sanity: the two pipelines saw the same files with the same contents.
python3 - "$WORK/nb-first/manifest.json" "$B/files.sha256" <<'PY' || say "WARNING: file sets differ"
import json, sys
m = json.load(open(sys.argv[1]))
nb = {f["path"]: f["sha256"] for f in m["files"] if f["type"] == "file"}
bl = {}
for line in open(sys.argv[2], encoding="utf-8", errors="surrogateescape"):
    d, p = line.rstrip("\n").split("  ", 1)
    bl[p[1:]] = d
extra = sorted(set(nb) - set(bl))
missing = sorted(set(bl) - set(nb))
diff = sorted(p for p in set(nb) & set(bl) if nb[p] != bl[p])
print("build-bench: files: nodebake %d, baseline %d; only in nodebake: %s; only in baseline: %d; differing: %d"
      % (len(nb), len(bl), extra if len(extra) < 5 else len(extra), len(missing), len(diff)))
sys.exit(1 if missing or diff else 0)
PY

size_mib() { awk -v s="$(stat -c %s "$1")" 'BEGIN {printf "%.1f", s / 1048576}'; }
say "rootfs.tar.gz: baseline $(size_mib "$B/rootfs.tar.gz") MiB, nodebake $(size_mib "$WORK/nb-first/rootfs.tar.gz") MiB"
say "baseline wall ${base_wall}s"
say "nodebake wall ${nb_wall}s, peak RSS ${nb_rss_mib} MiB"
say "nodebake cached rebuild wall ${cached_wall}s"

ratio=$(awk -v a="$nb_wall" -v b="$base_wall" 'BEGIN {printf "%.2f", a / b}')
cached_ratio=$(awk -v a="$cached_wall" -v b="$nb_wall" 'BEGIN {printf "%.2f", a / b}')
echo "build-bench ratio=$ratio peak_rss_mib=$nb_rss_mib cached_ratio=$cached_ratio"
