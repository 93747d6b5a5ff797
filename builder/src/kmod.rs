//! Kernel modules: the index files `depmod` writes at package install time
//! (the builder never runs package scripts, so a kernel package unpacked
//! by it has modules but no `modules.dep`/`modules.alias` — udev could not
//! load a single driver) and the dependency closure of the modules a
//! stage-1 initramfs must load to find the root disk.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::arch::Arch;
use crate::blobs::BlobStore;
use crate::tools::{self, DEPMOD};
use crate::tree::{Kind, Tree};
use crate::unpack::Sink;

/// Index files `depmod` derives; everything else in the modules directory
/// comes from the kernel package.
const INDEX_FILES: &[&str] = &[
    "modules.alias",
    "modules.alias.bin",
    "modules.builtin.alias.bin",
    "modules.builtin.bin",
    "modules.dep",
    "modules.dep.bin",
    "modules.devname",
    "modules.softdep",
    "modules.symbols",
    "modules.symbols.bin",
    "modules.weakdep",
];

/// The kernel release of a kernel image path (`/boot/vmlinuz-6.1.0-56-cloud-amd64`
/// → `6.1.0-56-cloud-amd64`), when the tree has a modules directory for it.
pub fn release(tree: &Tree, kernel_path: &str) -> Option<String> {
    let name = kernel_path.rsplit('/').next()?;
    let rel = name
        .strip_prefix("vmlinuz-")
        .or_else(|| name.strip_prefix("bzImage-"))?;
    modules_dir(tree, rel).map(|_| rel.to_string())
}

/// The resolved path (no leading slash) of `/lib/modules/<release>`.
pub fn modules_dir(tree: &Tree, release: &str) -> Option<String> {
    let p = tree
        .resolve(&format!("/lib/modules/{release}"), true)
        .ok()?;
    matches!(tree.get(&p)?.kind, Kind::Dir).then_some(p)
}

/// Module files under `dir`, relative to it (`kernel/drivers/...ko`).
fn module_files(tree: &Tree, dir: &str) -> Vec<(String, crate::blobs::BlobId)> {
    let prefix = format!("{dir}/");
    tree.iter()
        .filter_map(|(p, e)| {
            let rel = p.strip_prefix(&prefix)?;
            let is_ko = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|s| rel.ends_with(s));
            match &e.kind {
                Kind::File(id) if is_ko => Some((rel.to_string(), *id)),
                _ => None,
            }
        })
        .collect()
}

/// Adds depmod's index files for `release` to the tree when the kernel
/// package brought modules without them. Runs the host's `depmod -b` on a
/// staged copy of the modules directory (hard links to the blobs, nothing
/// else); the image's own `depmod.d` configuration applies, the host's
/// does not. Returns whether anything was added.
pub fn index(
    tree: &mut Tree,
    blobs: &BlobStore,
    arch: Arch,
    release: &str,
    work: &Path,
) -> Result<bool> {
    let Some(dir) = modules_dir(tree, release) else {
        return Ok(false);
    };
    if tree.get(&format!("{dir}/modules.dep.bin")).is_some() {
        return Ok(false);
    }
    let modules = module_files(tree, &dir);
    if modules.is_empty() {
        return Ok(false);
    }
    let stage = tempfile::Builder::new()
        .prefix("depmod-")
        .tempdir_in(work)?;
    let mdir = stage.path().join("lib/modules").join(release);
    for (rel, id) in &modules {
        let dst = mdir.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap())?;
        let src = blobs.path(id);
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst)?;
        }
    }
    for f in [
        "modules.order",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if let Some(e) = tree.get(&format!("{dir}/{f}")) {
            if let Kind::File(id) = &e.kind {
                std::fs::copy(blobs.path(id), mdir.join(f))?;
            }
        }
    }
    // The image's depmod configuration (search order, overrides), never
    // the build host's.
    let conf = stage.path().join("depmod.d");
    std::fs::create_dir(&conf)?;
    for d in ["/etc/depmod.d", "/lib/depmod.d", "/usr/lib/depmod.d"] {
        let Ok(rd) = tree.resolve(d, true) else {
            continue;
        };
        let prefix = format!("{rd}/");
        for (p, e) in tree.iter() {
            if let (Some(name), Kind::File(id)) = (p.strip_prefix(&prefix), &e.kind) {
                if name.ends_with(".conf") && !name.contains('/') {
                    std::fs::copy(blobs.path(id), conf.join(name))?;
                }
            }
        }
    }
    tools::run(
        DEPMOD,
        DEPMOD
            .command()?
            .arg("-b")
            .arg(stage.path())
            .arg("-C")
            .arg(&conf)
            .arg(release),
        &format!("indexing the kernel modules of {release}"),
    )?;
    let mut sink = Sink::new(tree, blobs, arch, "depmod", None);
    let mut added = false;
    for f in INDEX_FILES {
        let p = mdir.join(f);
        if p.is_file() {
            let mut r = std::fs::File::open(&p)?;
            sink.file(&format!("/{dir}/{f}"), &mut r, 0o644, 0, 0)
                .with_context(|| format!("adding {f}"))?;
            added = true;
        }
    }
    Ok(added)
}

/// Normalised module name of a path or name (`virtio-blk`, `virtio_blk.ko.xz`
/// → `virtio_blk`).
fn module_name(s: &str) -> String {
    let base = s.rsplit('/').next().unwrap_or(s);
    let base = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    base.replace('-', "_")
}

/// Result of resolving wanted modules.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Closure {
    /// Module files (relative to the modules directory), dependencies first.
    pub load_order: Vec<String>,
    /// Wanted modules that are built into the kernel.
    pub builtin: Vec<String>,
    /// Wanted modules this kernel does not have.
    pub missing: Vec<String>,
}

/// Resolves `wanted` module names against `modules.dep` text and the
/// `modules.builtin` list into a load order, dependencies first.
pub fn closure(modules_dep: &str, builtin: &str, wanted: &[String]) -> Result<Closure> {
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for (n, line) in modules_dep.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (m, rest) = line
            .split_once(':')
            .ok_or_else(|| anyhow!("modules.dep line {}: no `:`", n + 1))?;
        deps.insert(
            module_name(m),
            (
                m.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            ),
        );
    }
    let builtin: BTreeSet<String> = builtin.lines().map(module_name).collect();
    let by_path: BTreeMap<&str, &str> = deps
        .iter()
        .map(|(name, (path, _))| (path.as_str(), name.as_str()))
        .collect();
    let mut out = Closure::default();
    let mut seen = BTreeSet::new();
    for w in wanted {
        let name = module_name(w);
        if let Some((path, list)) = deps.get(&name) {
            // modules.dep lists the whole transitive closure, the module
            // needing the others first; modprobe loads it back to front.
            for d in list.iter().rev().chain(std::iter::once(path)) {
                if !by_path.contains_key(d.as_str()) {
                    bail!("modules.dep: `{path}` depends on `{d}`, which has no entry");
                }
                if seen.insert(d.clone()) {
                    out.load_order.push(d.clone());
                }
            }
        } else if builtin.contains(&name) {
            out.builtin.push(name);
        } else {
            out.missing.push(name);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/virtio/virtio_ring.ko:\n\
kernel/drivers/virtio/virtio_pci_modern_dev.ko:\n\
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:\n";

    #[test]
    fn closure_loads_dependencies_first_once() {
        let c = closure(
            DEP,
            "kernel/fs/ext4/ext4.ko\n",
            &[
                "virtio-pci".into(),
                "virtio_blk".into(),
                "ext4".into(),
                "nvme".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            c.load_order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
                "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
                "kernel/drivers/virtio/virtio_pci.ko",
                "kernel/drivers/block/virtio_blk.ko",
            ]
        );
        assert_eq!(c.builtin, ["ext4"]);
        assert_eq!(c.missing, ["nvme"]);
    }

    #[test]
    fn broken_dep_file_is_named() {
        let e = closure("kernel/a.ko: kernel/b.ko\n", "", &["a".into()]).unwrap_err();
        assert!(e.to_string().contains("kernel/b.ko"), "{e}");
        assert!(closure("garbage\n", "", &[]).is_err());
    }
}
