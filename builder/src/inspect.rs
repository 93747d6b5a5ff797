//! `nodebake inspect DIR`: what is inside an output directory.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::manifest::Manifest;

/// A summary of an output directory.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Image name and version.
    pub image: String,
    /// Architecture.
    pub arch: String,
    /// Base distribution.
    pub base: String,
    /// Kubernetes version.
    pub kubernetes: String,
    /// CNI.
    pub cni: Option<String>,
    /// Kernel path in the image.
    pub kernel: Option<String>,
    /// The disk's boot: root label and kernel command line.
    pub disk: Option<String>,
    /// Container images (reference, format).
    pub images: Vec<String>,
    /// Profiles.
    pub profiles: Vec<String>,
    /// Packages: count and where the base list came from.
    pub packages: usize,
    /// Package database of the base.
    pub package_db: String,
    /// Paths in the image.
    pub files: usize,
    /// Bytes of regular files.
    pub content_bytes: u64,
    /// Outputs with sizes.
    pub outputs: Vec<(String, u64)>,
    /// Versions of the Kubernetes-relevant packages found.
    pub key_packages: Vec<String>,
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
        image: format!("{} {}", m.image.name, m.image.version),
        arch: m.image.arch.clone(),
        base: if m.base.pretty_name.is_empty() {
            format!("{} {}", m.base.id, m.base.version_id)
        } else {
            m.base.pretty_name.clone()
        },
        kubernetes: m.image.kubernetes_version.clone(),
        cni: m.image.cni.clone(),
        kernel: m.kernel.as_ref().map(|k| k.path.clone()),
        disk: m.disk.as_ref().map(|d| {
            format!(
                "{} MiB, ext4 root LABEL={}, stage 1 loads {} modules, cmdline `{}`",
                d.size >> 20,
                d.root_label,
                d.stage1_modules.len(),
                d.cmdline
            )
        }),
        images: m
            .images
            .iter()
            .map(|i| format!("{} ({})", i.reference, i.format))
            .collect(),
        profiles: m.profiles.clone(),
        packages: m.packages.len(),
        package_db: m.base.package_db.clone(),
        files: m.files.len(),
        content_bytes: m.files.iter().filter_map(|f| f.size).sum(),
        outputs: m.outputs.iter().map(|o| (o.name.clone(), o.size)).collect(),
        key_packages: m
            .packages
            .iter()
            .filter(|p| KEY.contains(&p.name.as_str()))
            .map(|p| format!("{} {}-{} ({})", p.name, p.version, p.release, p.source))
            .collect(),
    })
}

/// Human-readable rendering.
pub fn render(s: &Summary) -> String {
    let mut o = String::new();
    o.push_str(&format!("image:       {} ({})\n", s.image, s.arch));
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
        o.push_str(&format!("disk:        {d}\n"));
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
        o.push_str(&format!("             {k}\n"));
    }
    o.push_str(&format!("images:      {}\n", s.images.len()));
    for i in &s.images {
        o.push_str(&format!("             {i}\n"));
    }
    o.push_str(&format!(
        "files:       {} paths, {:.1} MiB of content\n",
        s.files,
        s.content_bytes as f64 / 1048576.0
    ));
    o.push_str("outputs:\n");
    for (n, sz) in &s.outputs {
        o.push_str(&format!(
            "             {n:<22} {:>10.1} MiB\n",
            *sz as f64 / 1048576.0
        ));
    }
    o
}
