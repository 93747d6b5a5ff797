#!/usr/bin/env python3
"""Makes a small, reproducible container image archive from local files.

Writes either a docker-archive (what `docker save` writes) or an OCI image
layout archive, both accepted by `ctr -n k8s.io images import`. Used by the
demo and the tests to have real image tarballs without a registry.

Usage:
  mkimage.py --format docker-archive|oci-archive --reference REF \
             --file SRC=/path/in/image [--file ...] [--entrypoint CMD] --out FILE
             [--symlink /path/in/image=TARGET ...] [--env NAME=VALUE ...]
Prints the manifest digest (sha256:...) on stdout.

--symlink adds a symbolic link (TARGET is stored as given, relative or
absolute); --env sets the image config's Env, in the order given. Without
them the output is what it always was.
"""
import argparse
import hashlib
import io
import json
import tarfile

EPOCH = 1700000000


def tar_bytes(members, links=()):
    """members: list of (name, bytes, mode), links: list of (name, target)
    -> deterministic tar bytes (parent directories first, then every file
    and link sorted by name)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        dirs = set()
        for name in [m[0] for m in members] + [l[0] for l in links]:
            parts = name.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                dirs.add("/".join(parts[:i]))
        for d in sorted(dirs):
            ti = tarfile.TarInfo(d)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            t.addfile(ti)
        entries = [(name, 0, data, mode) for name, data, mode in members]
        entries += [(name, 1, target, 0o777) for name, target in links]
        for name, kind, data, mode in sorted(entries):
            ti = tarfile.TarInfo(name.strip("/"))
            if kind == 1:
                ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.SYMTYPE, data, mode, EPOCH
                t.addfile(ti)
                continue
            ti.size, ti.mode, ti.mtime = len(data), mode, EPOCH
            t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--format", choices=["docker-archive", "oci-archive"], required=True)
    ap.add_argument("--reference", required=True)
    ap.add_argument("--file", action="append", default=[])
    ap.add_argument("--symlink", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    ap.add_argument("--entrypoint")
    ap.add_argument("--arch", default="amd64")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    members = []
    for spec in a.file:
        src, dst = spec.split("=", 1)
        with open(src, "rb") as f:
            members.append((dst, f.read(), 0o755))
    links = []
    for spec in a.symlink:
        dst, target = spec.split("=", 1)
        if not dst.strip("/") or not target:
            ap.error(f"--symlink {spec!r}: want /path/in/image=TARGET")
        links.append((dst, target))
    names = [m[0].strip("/") for m in members]
    for dst, _ in links:
        if dst.strip("/") in names:
            ap.error(f"--symlink {dst}: the image already has that path")
        names.append(dst.strip("/"))
    parents = {"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)}
    for dst, _ in links:
        if dst.strip("/") in parents:
            ap.error(f"--symlink {dst}: other paths are under it; add them at the link's target")
    for e in a.env:
        if "=" not in e or not e.split("=", 1)[0]:
            ap.error(f"--env {e!r}: want NAME=VALUE")
    layer = tar_bytes(members, links)
    config = {
        "architecture": a.arch,
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": {"Entrypoint": [a.entrypoint] if a.entrypoint else None},
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "nodebake mkimage.py"}],
    }
    if a.env:
        config["config"]["Env"] = list(a.env)
    config_b = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config_b), "size": len(config_b)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(layer), "size": len(layer)}],
    }
    manifest_b = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()

    out = []
    if a.format == "docker-archive":
        layer_dir = hashlib.sha256(layer).hexdigest()
        cfg_name = hashlib.sha256(config_b).hexdigest() + ".json"
        out.append((f"{layer_dir}/layer.tar", layer, 0o644))
        out.append((f"{layer_dir}/VERSION", b"1.0", 0o644))
        out.append((cfg_name, config_b, 0o644))
        dm = [{"Config": cfg_name, "RepoTags": [a.reference], "Layers": [f"{layer_dir}/layer.tar"]}]
        out.append(("manifest.json", json.dumps(dm, separators=(",", ":")).encode(), 0o644))
    else:
        tag = a.reference.rsplit(":", 1)[1] if ":" in a.reference.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest_b),
                "size": len(manifest_b),
                "annotations": {"org.opencontainers.image.ref.name": tag, "io.containerd.image.name": a.reference},
            }],
        }
        out.append(("oci-layout", b'{"imageLayoutVersion":"1.0.0"}', 0o644))
        out.append(("index.json", json.dumps(index, sort_keys=True, separators=(",", ":")).encode(), 0o644))
        for b in (layer, config_b, manifest_b):
            out.append(("blobs/sha256/" + hashlib.sha256(b).hexdigest(), b, 0o644))
    with open(a.out, "wb") as f:
        f.write(tar_bytes(out))
    print(sha(manifest_b))


if __name__ == "__main__":
    main()
