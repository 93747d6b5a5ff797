//! `nodebake inspect DIR`: what is inside an output directory.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::manifest::Manifest;

/// A summary of an output directory. With `--json` every field is data
/// (names, numbers, lists), never a sentence: the text form is
/// [`render`]'s.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Image name.
    pub name: String,
    /// Image version.
    pub version: String,
    /// Architecture.
    pub arch: String,
    /// Base distribution (pretty name, else `ID VERSION_ID`).
    pub base: String,
    /// Kubernetes version.
    pub kubernetes: String,
    /// CNI.
    pub cni: Option<String>,
    /// Kernel path in the image.
    pub kernel: Option<String>,
    /// The disk output's boot, when there is one.
    pub disk: Option<DiskSummary>,
    /// Container images.
    pub images: Vec<ImageSummary>,
    /// Profiles.
    pub profiles: Vec<String>,
    /// Number of packages.
    pub packages: usize,
    /// Package database the base list came from.
    pub package_db: String,
    /// Paths in the image.
    pub files: usize,
    /// Bytes of regular files.
    pub content_bytes: u64,
    /// Outputs with their sizes.
    pub outputs: Vec<OutputSummary>,
    /// The Kubernetes-relevant packages found.
    pub key_packages: Vec<PackageSummary>,
}

/// The disk output's boot.
#[derive(Debug, Serialize)]
pub struct DiskSummary {
    /// Disk size in bytes.
    pub size_bytes: u64,
    /// ext4 label of the root.
    pub root_label: String,
    /// Modules stage 1 loads.
    pub stage1_modules: usize,
    /// Kernel command line.
    pub cmdline: String,
}

/// One baked container image.
#[derive(Debug, Serialize)]
pub struct ImageSummary {
    /// Reference it is imported under.
    pub reference: String,
    /// Archive format.
    pub format: String,
}

/// One output file.
#[derive(Debug, Serialize)]
pub struct OutputSummary {
    /// File name.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

/// One package.
#[derive(Debug, Serialize)]
pub struct PackageSummary {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
    /// Where it came from (base or artifact).
    pub source: String,
}

/// Reads `manifest.json` and summarises it.
pub fn inspect(dir: &Path) -> Result<Summary> {
    let p = dir.join("manifest.json");
    let m: Manifest = serde_json::from_slice(
        &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
    )
    .with_context(|| format!("parsing {}", p.display()))?;
    const KEY: [&str; 10] = [
        "containerd",
        "containerd.io",
        "runc",
        "kubelet",
        "kubeadm",
        "kubectl",
        "kubernetes-client",
        "keepalived",
        "haproxy",
        "containernetworking-plugins",
    ];
    Ok(Summary {
        name: m.image.name.clone(),
        version: m.image.version.clone(),
        arch: m.image.arch.clone(),
        base: if m.base.pretty_name.is_empty() {
            format!("{} {}", m.base.id, m.base.version_id)
        } else {
            m.base.pretty_name.clone()
        },
        kubernetes: m.image.kubernetes_version.clone(),
        cni: m.image.cni.clone(),
        kernel: m.kernel.as_ref().map(|k| k.path.clone()),
        disk: m.disk.as_ref().map(|d| DiskSummary {
            size_bytes: d.size,
            root_label: d.root_label.clone(),
            stage1_modules: d.stage1_modules.len(),
            cmdline: d.cmdline.clone(),
        }),
        images: m
            .images
            .iter()
            .map(|i| ImageSummary {
                reference: i.reference.clone(),
                format: i.format.to_string(),
            })
            .collect(),
        profiles: m.profiles.clone(),
        packages: m.packages.len(),
        package_db: m.base.package_db.clone(),
        files: m.files.len(),
        content_bytes: m.files.iter().filter_map(|f| f.size).sum(),
        outputs: m
            .outputs
            .iter()
            .map(|o| OutputSummary {
                name: o.name.clone(),
                size_bytes: o.size,
            })
            .collect(),
        key_packages: m
            .packages
            .iter()
            .filter(|p| KEY.contains(&p.name.as_str()))
            .map(|p| PackageSummary {
                name: p.name.clone(),
                version: p.version.clone(),
                release: p.release.clone(),
                source: p.source.to_string(),
            })
            .collect(),
    })
}

/// Human-readable rendering.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "image:       {} {} ({})\n",
        s.name, s.version, s.arch
    ));
    o.push_str(&format!("base:        {}\n", s.base));
    o.push_str(&format!(
        "kubernetes:  {}{}\n",
        s.kubernetes,
        s.cni
            .as_ref()
            .map(|c| format!(", CNI {c}"))
            .unwrap_or_default()
    ));
    o.push_str(&format!(
        "kernel:      {}\n",
        s.kernel.as_deref().unwrap_or("-")
    ));
    if let Some(d) = &s.disk {
        o.push_str(&format!(
            "disk:        {} MiB, ext4 root LABEL={}, stage 1 loads {} modules, cmdline `{}`\n",
            d.size_bytes >> 20,
            d.root_label,
            d.stage1_modules,
            d.cmdline
        ));
    }
    o.push_str(&format!(
        "profiles:    {}\n",
        if s.profiles.is_empty() {
            "-".into()
        } else {
            s.profiles.join(", ")
        }
    ));
    o.push_str(&format!(
        "packages:    {} (base list from {})\n",
        s.packages, s.package_db
    ));
    for k in &s.key_packages {
        o.push_str(&format!(
            "             {} {}-{} ({})\n",
            k.name, k.version, k.release, k.source
        ));
    }
    o.push_str(&format!("images:      {}\n", s.images.len()));
    for i in &s.images {
        o.push_str(&format!("             {} ({})\n", i.reference, i.format));
    }
    o.push_str(&format!(
        "files:       {} paths, {:.1} MiB of content\n",
        s.files,
        s.content_bytes as f64 / 1048576.0
    ));
    o.push_str("outputs:\n");
    for out in &s.outputs {
        o.push_str(&format!(
            "             {:<22} {:>10.1} MiB\n",
            out.name,
            out.size_bytes as f64 / 1048576.0
        ));
    }
    o
}
