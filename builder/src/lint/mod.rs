//! `nodebake lint`: whether an image can really form the cluster its role
//! profiles describe, checked against what the configured Kubernetes
//! version and the first-boot agent need:
//!
//! * commands: kubeadm preflight's `FileExisting-*` list for that version
//!   with a CRI runtime (errors and warnings as kubeadm has them), the
//!   agent's own tools, keepalived + haproxy (with a version that reads the
//!   rendered configuration) where a profile carries the VIP, a network
//!   manager and a time daemon the agent can drive;
//! * the kernel: its configuration (kubeadm's `SystemVerification`) and
//!   the modules the node loads (br_netfilter, overlay, the IPVS set with
//!   the conntrack module of that kernel: `nf_conntrack_ipv4` before 4.19);
//! * every image kubeadm will ask for, under the exact name and tag, from
//!   one image repository; the CNI plugin binaries;
//! * closure: every ELF's interpreter and `DT_NEEDED` libraries resolve
//!   inside the image for its architecture ([`elf`]), every package's
//!   dependencies are met ([`deps`]).
//!
//! Each [`Finding`] names the requirement, who needs it and what to add.
//! The build runs the same checks on the finished tree (errors fail the
//! build when the spec says `[lint] level = "error"`).

pub mod deps;
pub mod elf;
pub mod inputs;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use nodebake_contract::image::ImageMetadata;
use nodebake_contract::layout;
use nodebake_contract::profile::{Role, RoleProfile};

use crate::arch::Arch;
use crate::blobs::{BlobId, BlobStore};
use crate::pkgdb::Package;
use crate::tree::{Kind, Tree};

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The node cannot form the cluster (kubeadm or the agent fails).
    Error,
    /// Something degrades or a feature the inventory may choose fails.
    Warning,
    /// An error or warning the spec allows (`[lint] allow`).
    Allowed,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Allowed => "allowed",
        })
    }
}

/// One unmet requirement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable identifier (`command:crictl`, `image:pause`, `elf:libssl.so.3`),
    /// what `[lint] allow` matches.
    pub id: String,
    /// Error, warning or allowed.
    pub severity: Severity,
    /// What is missing.
    pub requirement: String,
    /// Who needs it.
    pub needed_by: String,
    /// What to add.
    pub fix: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}[{}]: {} — needed by {}; {}",
            self.severity, self.id, self.requirement, self.needed_by, self.fix
        )
    }
}

/// Choices that are not in the image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// kube-proxy runs in IPVS mode (its modules become errors).
    pub ipvs: bool,
    /// The inventory's image repository; by default the one of the baked
    /// kube-apiserver image, else kubeadm's default for the version.
    pub image_repository: Option<String>,
    /// Globs over finding ids whose findings are allowed.
    pub allow: Vec<String>,
}

/// What lint found in one image.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Image name and version.
    pub image: String,
    /// Kubernetes version the image is for.
    pub kubernetes_version: String,
    /// Baked role profiles.
    pub profiles: Vec<String>,
    /// Kernel releases found.
    pub kernels: Vec<String>,
    /// ELF files whose dynamic linking was checked.
    pub elf_checked: usize,
    /// Packages whose dependencies were checked.
    pub packages_checked: usize,
    /// Findings, errors first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings of severity error.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// Findings of severity `s`.
    pub fn count(&self, s: Severity) -> usize {
        self.findings.iter().filter(|f| f.severity == s).count()
    }

    /// Human-readable report, one finding per line, then a summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s += &format!("{f}\n");
        }
        s += &format!(
            "lint {}: {} errors, {} warnings, {} allowed (Kubernetes {}, profiles {}, kernels {}, {} ELF files, {} packages checked)\n",
            self.image,
            self.errors(),
            self.count(Severity::Warning),
            self.count(Severity::Allowed),
            self.kubernetes_version,
            if self.profiles.is_empty() { "none".to_string() } else { self.profiles.join(", ") },
            if self.kernels.is_empty() { "none".to_string() } else { self.kernels.join(", ") },
            self.elf_checked,
            self.packages_checked,
        );
        s
    }
}

/// Directories searched for commands, as a node's `PATH`.
const PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Oldest haproxy that reads the rendered `haproxy.cfg` (`check-ssl`; the
/// agent renders 1.5's dialect for it).
pub const HAPROXY_MIN: (u32, u32) = (1, 5);
/// Oldest keepalived that reads the rendered `keepalived.conf`
/// (`script_user`, `enable_script_security`).
pub const KEEPALIVED_MIN: (u32, u32) = (1, 3);

/// Where each command comes from, for the finding's fix.
fn how_to_add(cmd: &str) -> &'static str {
    match cmd {
        "crictl" => "add crictl (the cri-tools RPM/DEB, or the cri-tools release tarball into /usr/local/bin)",
        "conntrack" => "add the conntrack-tools RPM (EL) or the conntrack DEB",
        "ip" => "add the iproute RPM (EL) or the iproute2 DEB",
        "tc" => "add iproute (EL7) / iproute-tc (EL9) or the iproute2 DEB",
        "iptables" => "add the iptables RPM (EL7), iptables-nft (EL9) or the iptables DEB",
        "ebtables" => "add the ebtables RPM (EL7), iptables-ebtables (EL9) or the ebtables DEB",
        "mount" | "nsenter" => "add util-linux",
        "touch" | "timeout" => "add coreutils (coreutils-single on EL9 container bases)",
        "ethtool" => "add ethtool",
        "socat" => "add socat",
        "kubeadm" | "kubelet" => "add the kubeadm/kubelet RPM, DEB or release binary of the image's Kubernetes version",
        "kubectl" => "add the kubectl RPM/DEB or release binary",
        "openssl" => "add the openssl RPM/DEB (the CLI, not only the libraries)",
        "modprobe" => "add kmod",
        "sysctl" => "add procps-ng (EL) or procps (Debian)",
        "ctr" => "add containerd (its release tarball carries ctr)",
        "etcdctl" => "add etcdctl (the etcd release tarball, the etcd RPM or the etcd-client DEB)",
        "keepalived" => "add keepalived",
        "haproxy" => "add haproxy",
        _ => "add the package that ships it",
    }
}

/// Kubernetes minor of `version` (`1.28.7` → 28).
fn minor(version: &str) -> Option<u32> {
    crate::kubeadm_images::parse_version(version)
        .ok()
        .map(|(_, m, _)| m)
}

/// The commands kubeadm's preflight looks for on a node with a CRI
/// runtime, as (command, mandatory), for Kubernetes `minor`.
pub fn kubeadm_commands(minor: u32) -> Vec<(&'static str, bool)> {
    let mut v = vec![("kubeadm", true), ("kubelet", true), ("crictl", true)];
    // kube-proxy stopped needing the conntrack binary in 1.32.
    if minor < 32 {
        v.push(("conntrack", true));
    }
    v.extend([
        ("ip", true),
        ("iptables", true),
        ("mount", true),
        ("nsenter", true),
        ("ebtables", false),
        ("ethtool", false),
        ("socat", false),
        ("tc", false),
        ("touch", false),
    ]);
    v
}

/// What a profile needs on the node's PATH, for Kubernetes `kminor`:
/// (command, severity, who needs it).
fn profile_commands(p: &RoleProfile, kminor: u32) -> Vec<(&'static str, Severity, String)> {
    let mut need = Vec::new();
    for (cmd, mandatory) in kubeadm_commands(kminor) {
        let (sev, what) = if mandatory {
            (Severity::Error, "fails")
        } else {
            (Severity::Warning, "warns")
        };
        need.push((
            cmd,
            sev,
            format!("kubeadm 1.{kminor} preflight ({what} without it)"),
        ));
    }
    for cmd in AGENT {
        need.push((*cmd, Severity::Error, "nodebake-firstboot".to_string()));
    }
    if p.role == Role::Master {
        need.push((
            "etcdctl",
            Severity::Error,
            "nodebake-firstboot on masters (removes a rebuilt master's stale etcd member)".into(),
        ));
    }
    if p.load_balancer {
        for cmd in ["keepalived", "haproxy"] {
            need.push((
                cmd,
                Severity::Error,
                "the VIP and load balancer of the profile".into(),
            ));
        }
    }
    need
}

/// Commands nodebake-firstboot runs on every node.
const AGENT: &[&str] = &["kubectl", "openssl", "timeout", "modprobe", "sysctl", "ctr"];

/// The image being linted: its tree and the blobs behind it.
pub struct Image<'a> {
    /// Paths of the image.
    pub tree: &'a Tree,
    /// File contents.
    pub blobs: &'a BlobStore,
    /// Target architecture.
    pub arch: Arch,
    /// Installed and artifact packages (name and version).
    pub packages: &'a [Package],
    /// Input each path came from (path without the leading `/`), when the
    /// tree was read back from an archive (the manifest knows).
    pub origins: Option<&'a HashMap<String, String>>,
}

impl Image<'_> {
    fn origin(&self, path: &str, origin: u16) -> String {
        self.origins
            .and_then(|o| o.get(path).cloned())
            .unwrap_or_else(|| self.tree.origin_name(origin).to_string())
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let (_, e) = self.tree.lookup(path)?;
        match &e.kind {
            Kind::File(id) => self.blobs.read(id).ok(),
            _ => None,
        }
    }

    fn has_command(&self, cmd: &str) -> bool {
        PATH.iter().any(|dir| {
            matches!(self.tree.lookup(&format!("{dir}/{cmd}")),
                Some((_, e)) if matches!(e.kind, Kind::File(_)) && e.mode & 0o111 != 0)
        })
    }

    fn has_file(&self, path: &str) -> bool {
        matches!(self.tree.lookup(path), Some((_, e)) if matches!(e.kind, Kind::File(_)))
    }

    fn package_version(&self, name: &str) -> Option<&str> {
        self.packages
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.version.as_str())
    }
}

/// Leading `major.minor` of a version string.
fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    let a = it.next()?.parse().ok()?;
    let b = it.next().unwrap_or("0").parse().unwrap_or(0);
    Some((a, b))
}

/// Collects findings, merging the same id from several profiles.
#[derive(Default)]
struct Findings {
    by_id: BTreeMap<String, (Finding, BTreeSet<String>)>,
}

impl Findings {
    fn add(&mut self, profile: Option<&str>, f: Finding) {
        let e = self
            .by_id
            .entry(f.id.clone())
            .or_insert_with(|| (f, BTreeSet::new()));
        if let Some(p) = profile {
            e.1.insert(p.to_string());
        }
    }

    fn finish(self, allow: &[String]) -> Result<Vec<Finding>> {
        let mut b = globset::GlobSetBuilder::new();
        for a in allow {
            b.add(
                globset::Glob::new(a)
                    .with_context(|| format!("[lint] allow: bad pattern `{a}`"))?,
            );
        }
        let allow = b.build()?;
        let mut out: Vec<Finding> = self
            .by_id
            .into_values()
            .map(|(mut f, profiles)| {
                if !profiles.is_empty() {
                    f.needed_by = format!(
                        "{} (profile{} {})",
                        f.needed_by,
                        if profiles.len() > 1 { "s" } else { "" },
                        profiles.into_iter().collect::<Vec<_>>().join(", ")
                    );
                }
                if allow.is_match(&f.id) {
                    f.severity = Severity::Allowed;
                }
                f
            })
            .collect();
        out.sort_by(|a, b| (a.severity, &a.id).cmp(&(b.severity, &b.id)));
        Ok(out)
    }
}

fn finding(
    id: String,
    severity: Severity,
    requirement: String,
    needed_by: String,
    fix: String,
) -> Finding {
    Finding {
        id,
        severity,
        requirement,
        needed_by,
        fix,
    }
}

/// Kernel releases of the image (`lib/modules/<release>` directories).
fn kernel_releases(tree: &Tree) -> Vec<String> {
    let mut out = BTreeSet::new();
    for (p, e) in tree.iter() {
        if !matches!(e.kind, Kind::Dir) {
            continue;
        }
        for prefix in ["usr/lib/modules/", "lib/modules/"] {
            if let Some(rel) = p.strip_prefix(prefix) {
                if !rel.is_empty() && !rel.contains('/') {
                    out.insert(rel.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

/// Module names (`-` as `_`) a kernel release has, as files or built in.
fn kernel_modules(img: &Image<'_>, release: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(dir) = crate::kmod::modules_dir(img.tree, release) else {
        return out;
    };
    let norm = |file: &str| -> Option<String> {
        let base = file.rsplit('/').next()?;
        let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
            .iter()
            .find_map(|ext| base.strip_suffix(ext))?;
        Some(stem.replace('-', "_"))
    };
    for (p, e) in img.tree.iter() {
        if matches!(e.kind, Kind::File(_)) && p.starts_with(&format!("{dir}/")) {
            if let Some(m) = norm(p) {
                out.insert(m);
            }
        }
    }
    if let Some(b) = img.read(&format!("/{dir}/modules.builtin")) {
        for line in String::from_utf8_lossy(&b).lines() {
            if let Some(m) = norm(line.trim()) {
                out.insert(m);
            }
        }
    }
    out
}

/// Whether `release` (`3.10.0-1160.el7.x86_64`) is older than 4.19, where
/// the IPv4 conntrack module is still `nf_conntrack_ipv4`.
pub fn conntrack_module(release: &str) -> &'static str {
    match major_minor(release) {
        Some(v) if v < (4, 19) => "nf_conntrack_ipv4",
        _ => "nf_conntrack",
    }
}

/// Lints the image. `image` names it in the report.
pub fn lint(img: &Image<'_>, opts: &Options) -> Result<Report> {
    let meta: ImageMetadata = match img.read(layout::IMAGE_METADATA) {
        Some(b) => serde_json::from_slice(&b)
            .with_context(|| format!("{}: not valid image metadata", layout::IMAGE_METADATA))?,
        None => bail!(
            "{} is missing: not a nodebake image (lint reads the Kubernetes version and role profiles from it)",
            layout::IMAGE_METADATA
        ),
    };
    let mut profiles = Vec::new();
    for name in &meta.profiles {
        let path = format!("{}/{name}.toml", layout::PROFILES_DIR);
        let b = img.read(&path).ok_or_else(|| {
            anyhow!("{path} is missing (the image metadata lists profile `{name}`)")
        })?;
        let p = RoleProfile::parse(&String::from_utf8_lossy(&b), name)
            .with_context(|| format!("{path}: not a valid role profile"))?;
        profiles.push(p);
    }
    let k8s = meta.kubernetes_version.clone();
    let kminor =
        minor(&k8s).ok_or_else(|| anyhow!("image metadata: bad Kubernetes version `{k8s}`"))?;
    let mut f = Findings::default();

    // Commands.
    for p in &profiles {
        for (cmd, sev, who) in profile_commands(p, kminor) {
            if !img.has_command(cmd) {
                f.add(
                    Some(&p.name),
                    finding(
                        format!("command:{cmd}"),
                        sev,
                        format!("`{cmd}` is not in the image"),
                        who,
                        how_to_add(cmd).to_string(),
                    ),
                );
            }
        }
    }
    for p in profiles.iter().filter(|p| p.load_balancer) {
        for (name, min, why) in [
            (
                "haproxy",
                HAPROXY_MIN,
                "`check-ssl` health checks in the rendered haproxy.cfg",
            ),
            (
                "keepalived",
                KEEPALIVED_MIN,
                "`script_user`/`enable_script_security` in the rendered keepalived.conf",
            ),
        ] {
            if !img.has_command(name) {
                continue;
            }
            match img.package_version(name) {
                Some(v) if major_minor(v).is_some_and(|mm| mm < min) => f.add(
                    Some(&p.name),
                    finding(
                        format!("version:{name}"),
                        Severity::Error,
                        format!("{name} {v} is older than {}.{}", min.0, min.1),
                        format!("{why}, which {name} {v} refuses"),
                        format!("bake {name} {}.{} or later", min.0, min.1),
                    ),
                ),
                Some(_) => {}
                None => f.add(
                    Some(&p.name),
                    finding(
                        format!("version:{name}"),
                        Severity::Warning,
                        format!("the version of {name} is unknown (no package lists it)"),
                        format!("{why} (needs {name} {}.{} or later)", min.0, min.1),
                        format!("bake {name} as an RPM or DEB so its version is known"),
                    ),
                ),
            }
        }
    }
    let net = img.has_file("/usr/bin/cloud-init")
        || img.has_file("/usr/sbin/NetworkManager")
        || img.has_file("/usr/lib/systemd/systemd-networkd")
        || img.has_file("/lib/systemd/systemd-networkd");
    if !net {
        f.add(None, finding(
            "network-manager".into(),
            Severity::Warning,
            "no network manager the agent can drive (NetworkManager, systemd-networkd or cloud-init)".into(),
            "nodebake-firstboot, to apply a node's network-config (static addresses)".into(),
            "add NetworkManager (EL) or systemd-networkd (Debian's systemd)".into(),
        ));
    }
    if !img.has_command("chronyd") {
        f.add(None, finding(
            "command:chronyd".into(),
            Severity::Warning,
            "`chronyd` is not in the image".into(),
            "nodebake-firstboot, to apply the inventory's NTP servers (certificates and etcd need synchronised clocks)".into(),
            "add chrony".into(),
        ));
    }

    // Kernel.
    let kernels = kernel_releases(img.tree);
    if kernels.is_empty() {
        f.add(None, finding(
            "kernel".into(),
            Severity::Warning,
            "no kernel modules directory (lib/modules/<release>)".into(),
            "kubeadm preflight (SystemVerification reads the kernel configuration) and the modules the node loads".into(),
            "bake the kernel package (with its modules and /boot/config-*) or boot a kernel whose modules the image carries".into(),
        ));
    }
    for rel in &kernels {
        let config = [
            format!("/boot/config-{rel}"),
            format!("/usr/lib/modules/{rel}/config"),
            format!("/lib/modules/{rel}/config"),
        ];
        if !config.iter().any(|c| img.has_file(c)) {
            f.add(
                None,
                finding(
                    format!("kernel-config:{rel}"),
                    Severity::Error,
                    format!("no kernel configuration for {rel} (/boot/config-{rel})"),
                    "kubeadm preflight's SystemVerification (fails without it)".into(),
                    "keep boot/config-* of the kernel package (include it in the kernel artifact)"
                        .into(),
                ),
            );
        }
        let have = kernel_modules(img, rel);
        let mut want: Vec<(String, Severity, String)> = Vec::new();
        for m in ["br_netfilter", "overlay"] {
            want.push((
                m.into(),
                Severity::Error,
                "the node (bridge netfilter for kube-proxy, overlayfs for containerd)".into(),
            ));
        }
        for p in &profiles {
            for m in &p.kernel_modules {
                want.push((
                    m.replace('-', "_"),
                    Severity::Error,
                    format!("profile `{}`", p.name),
                ));
            }
        }
        let ipvs_sev = if opts.ipvs {
            Severity::Error
        } else {
            Severity::Warning
        };
        for m in [
            "ip_vs",
            "ip_vs_rr",
            "ip_vs_wrr",
            "ip_vs_sh",
            conntrack_module(rel),
        ] {
            want.push((m.into(), ipvs_sev, "kube-proxy in IPVS mode".into()));
        }
        for (m, sev, who) in want {
            // Either conntrack module will do (EL8's 4.18 has nf_conntrack).
            let either = m.starts_with("nf_conntrack")
                && (have.contains("nf_conntrack") || have.contains("nf_conntrack_ipv4"));
            if !have.contains(&m) && !either {
                f.add(
                    None,
                    finding(
                        format!("module:{m}"),
                        sev,
                        format!(
                            "kernel module `{m}` is not in {rel} (neither a .ko file nor built in)"
                        ),
                        who,
                        format!("bake the kernel's modules (lib/modules/{rel}) with `{m}`"),
                    ),
                );
            }
        }
    }

    // Images kubeadm will ask for, from one repository.
    let baked: Vec<&str> = meta.images.iter().map(|i| i.reference.as_str()).collect();
    let repo_of = |r: &str| r.rsplit_once('/').map(|(repo, _)| repo.to_string());
    let baked_repo = baked
        .iter()
        .find(|r| {
            r.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("kube-apiserver:"))
        })
        .and_then(|r| repo_of(r));
    if let (Some(inv), Some(b)) = (&opts.image_repository, &baked_repo) {
        if inv != b {
            f.add(None, finding(
                "image-repository".into(),
                Severity::Error,
                format!("the inventory's image repository `{inv}` is not the baked images' `{b}`"),
                "kubeadm, which asks containerd for <imageRepository>/<image>:<tag> and finds nothing baked under that name".into(),
                format!("set image_repository = \"{b}\" in the inventory, or bake the images under `{inv}` (spec [kubernetes] image_repository)"),
            ));
        }
    }
    let repo = opts.image_repository.clone().or(baked_repo);
    let expected = expected_images(&k8s, repo.as_deref(), &mut f);
    for want in expected {
        if baked.contains(&want.reference.as_str()) {
            continue;
        }
        let leaf = |r: &str| {
            r.rsplit('/')
                .next()
                .unwrap_or(r)
                .split(':')
                .next()
                .unwrap_or("")
                .to_string()
        };
        let similar: Vec<&str> = baked
            .iter()
            .copied()
            .filter(|b| leaf(b) == leaf(&want.reference))
            .collect();
        let mut fix = format!(
            "bake it: `images = \"auto\"` in the spec's [kubernetes] (digests pinned with `nodebake fetch --pin`), or an image artifact with reference = \"{}\"",
            want.reference
        );
        if !similar.is_empty() {
            fix += &format!(
                " (the image has {}: another repository or tag)",
                similar.join(", ")
            );
        }
        f.add(None, finding(
            format!("image:{}", want.name),
            Severity::Error,
            format!("image `{}` is not baked", want.reference),
            format!("kubeadm {k8s} (an air-gapped node cannot pull it; containerd's sandbox image is the pause image)"),
            fix,
        ));
    }

    // CNI plugins.
    for plugin in ["loopback", "bridge", "host-local", "portmap"] {
        let path = format!("/opt/cni/bin/{plugin}");
        if !img.has_file(&path) {
            f.add(None, finding(
                format!("cni:{plugin}"),
                Severity::Error,
                format!("CNI plugin {path} is not in the image"),
                "pod networking (flannel and the bridge CNI delegate to bridge, host-local and portmap; the runtime needs loopback)".into(),
                "add the CNI plugins (containernetworking-plugins RPM/DEB or the cni-plugins tarball into /opt/cni/bin)".into(),
            ));
        }
    }

    // Closure.
    let elf_checked = elf_closure(img, &mut f)?;
    let packages_checked = package_closure(img, &mut f)?;

    Ok(Report {
        image: format!("{} {}", meta.name, meta.version),
        kubernetes_version: k8s,
        profiles: meta.profiles.clone(),
        kernels,
        elf_checked,
        packages_checked,
        findings: f.finish(&opts.allow)?,
    })
}

/// The images kubeadm `k8s` asks for from `repo`; for a version beyond
/// nodebake's table, none, with a warning in `f`.
fn expected_images(
    k8s: &str,
    repo: Option<&str>,
    f: &mut Findings,
) -> Vec<crate::kubeadm_images::ResolvedImage> {
    crate::kubeadm_images::kubeadm_images(k8s, repo).unwrap_or_else(|e| {
        f.add(
            None,
            finding(
                "images".into(),
                Severity::Warning,
                format!("the images kubeadm {k8s} asks for are not known to nodebake ({e})"),
                "the check of the baked images".into(),
                "compare `kubeadm config images list` of that version with the image by hand"
                    .into(),
            ),
        );
        Vec::new()
    })
}

/// `e_machine` of an architecture.
fn machine(a: Arch) -> u16 {
    match a {
        Arch::X86_64 => 62,
        Arch::Aarch64 => 183,
        Arch::I386 => 3,
        Arch::Arm => 40,
        Arch::Ppc64le => 21,
        Arch::S390x => 22,
        Arch::Riscv64 => 243,
    }
}

/// Debian's multiarch directory name of an architecture.
fn triplet(a: Arch) -> &'static str {
    match a {
        Arch::X86_64 => "x86_64-linux-gnu",
        Arch::Aarch64 => "aarch64-linux-gnu",
        Arch::I386 => "i386-linux-gnu",
        Arch::Arm => "arm-linux-gnueabihf",
        Arch::Ppc64le => "powerpc64le-linux-gnu",
        Arch::S390x => "s390x-linux-gnu",
        Arch::Riscv64 => "riscv64-linux-gnu",
    }
}

/// The dynamic loader's directories: `/etc/ld.so.conf` (with its
/// includes), then the multiarch and lib64/lib defaults.
fn loader_dirs(img: &Image<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let mut files = vec!["/etc/ld.so.conf".to_string()];
    let mut seen = BTreeSet::new();
    while let Some(file) = files.pop() {
        if !seen.insert(file.clone()) || seen.len() > 256 {
            continue;
        }
        let Some(b) = img.read(&file) else { continue };
        for line in String::from_utf8_lossy(&b).lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pat) = line.strip_prefix("include") {
                let pat = pat.trim();
                let pat = if pat.starts_with('/') {
                    pat.to_string()
                } else {
                    format!("/etc/{pat}")
                };
                let mut found = img.tree.glob(&pat).unwrap_or_default();
                found.sort();
                found.reverse();
                files.extend(found);
            } else if line.starts_with('/') {
                out.push(line.to_string());
            }
        }
    }
    let t = triplet(img.arch);
    out.extend([
        format!("/lib/{t}"),
        format!("/usr/lib/{t}"),
        "/lib64".into(),
        "/usr/lib64".into(),
        "/lib".into(),
        "/usr/lib".into(),
    ]);
    out
}

/// Whether the ELF file's own loader could start it: the paths skipped are
/// kernel modules, debug files and container image archives.
fn elf_candidate(path: &str, mode: u32) -> bool {
    const SKIP: &[&str] = &[
        "lib/modules/",
        "usr/lib/modules/",
        "usr/lib/debug/",
        "boot/",
        "usr/lib/nodebake/images/",
    ];
    if SKIP.iter().any(|s| path.starts_with(s)) {
        return false;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    mode & 0o111 != 0 || name.contains(".so")
}

/// Checks every ELF's interpreter and needed libraries; returns how many
/// dynamically linked files were checked.
fn elf_closure(img: &Image<'_>, f: &mut Findings) -> Result<usize> {
    let want_machine = machine(img.arch);
    let dirs = loader_dirs(img);
    let mut ident_cache: HashMap<BlobId, Option<(bool, u16)>> = HashMap::new();
    let mut ident_of = |id: &BlobId| -> Option<(bool, u16)> {
        *ident_cache.entry(*id).or_insert_with(|| {
            let mut head = [0u8; 20];
            let mut file = img.blobs.open(id).ok()?;
            file.read_exact(&mut head).ok()?;
            elf::ident(&head)
        })
    };
    // missing library → (who needs it)
    let mut missing: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
    let mut checked = 0;
    let mut found_cache: HashMap<(String, bool), bool> = HashMap::new();
    let mut files: Vec<(&String, BlobId, u16)> = Vec::new();
    for (p, e) in img.tree.iter() {
        if let Kind::File(id) = &e.kind {
            if elf_candidate(p, e.mode) {
                files.push((p, *id, e.origin));
            }
        }
    }
    for (p, id, origin) in files {
        let Some((class64, m)) = ident_of(&id) else {
            continue;
        };
        if m != want_machine {
            continue;
        }
        let file = img.blobs.open(&id)?;
        let d = match elf::read(std::io::BufReader::new(file)) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                f.add(
                    None,
                    finding(
                        format!("elf-unreadable:/{p}"),
                        Severity::Warning,
                        format!("/{p} is a damaged ELF file ({e})"),
                        format!(
                            "the node that runs it (from {})",
                            img.tree.origin_name(origin)
                        ),
                        "re-fetch the input that ships it".into(),
                    ),
                );
                continue;
            }
        };
        if d.interp.is_none() && d.needed.is_empty() {
            continue;
        }
        checked += 1;
        let who = format!("/{p} ({})", img.origin(p, origin));
        let origin_dir = format!("/{}", p.rsplit_once('/').map(|(d, _)| d).unwrap_or(""));
        let mut own: Vec<String> = if d.runpath.is_empty() {
            &d.rpath
        } else {
            &d.runpath
        }
        .iter()
        .map(|r| {
            r.replace("${ORIGIN}", &origin_dir)
                .replace("$ORIGIN", &origin_dir)
        })
        .collect();
        // A private library (systemd's libsystemd-core) is loaded by a
        // program whose RUNPATH also loaded its siblings, which the loader
        // then matches by soname.
        if d.interp.is_none() && !dirs.contains(&origin_dir) {
            own.push(origin_dir.clone());
        }
        // Programs on the PATH and libraries in the loader's directories
        // fail outright; a plugin fails only in what loads it.
        let primary = dirs.contains(&origin_dir) || PATH.contains(&origin_dir.as_str());
        if let Some(interp) = &d.interp {
            if !matches!(img.tree.lookup(interp), Some((_, e)) if matches!(e.kind, Kind::File(_))) {
                missing
                    .entry(interp.clone())
                    .or_default()
                    .push((primary, who.clone()));
            }
        }
        for lib in &d.needed {
            let ok = if lib.contains('/') {
                img.tree.lookup(lib).is_some()
            } else if let Some(&hit) = found_cache
                .get(&(lib.clone(), d.class64))
                .filter(|_| own.is_empty())
            {
                hit
            } else {
                let hit = own.iter().chain(dirs.iter()).any(|dir| {
                    match img.tree.lookup(&format!("{dir}/{lib}")) {
                        Some((_, e)) => match &e.kind {
                            Kind::File(lid) => ident_of(lid) == Some((class64, m)),
                            _ => false,
                        },
                        None => false,
                    }
                });
                if own.is_empty() {
                    found_cache.insert((lib.clone(), d.class64), hit);
                }
                hit
            };
            if !ok {
                missing
                    .entry(lib.clone())
                    .or_default()
                    .push((primary, who.clone()));
            }
        }
    }
    for (lib, users) in missing {
        let primary = users.iter().any(|(p, _)| *p);
        let mut needed_by = users
            .iter()
            .take(4)
            .map(|(_, w)| w.clone())
            .collect::<Vec<_>>()
            .join(", ");
        if users.len() > 4 {
            needed_by += &format!(" and {} more", users.len() - 4);
        }
        if !primary {
            needed_by += " (plugins: only what loads them fails)";
        }
        f.add(
            None,
            finding(
                format!("elf:{lib}"),
                if primary {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                format!(
                    "shared library `{lib}` ({}) is not in the image",
                    img.arch.name()
                ),
                needed_by,
                "add the package that ships it for the image's architecture".into(),
            ),
        );
    }
    Ok(checked)
}

/// Checks every package's dependencies; returns how many packages.
fn package_closure(img: &Image<'_>, f: &mut Findings) -> Result<usize> {
    let mut pkgs = Vec::new();
    for db in ["/var/lib/rpm/rpmdb.sqlite", "/var/lib/rpm/Packages"] {
        if let Some((_, e)) = img.tree.lookup(db) {
            if let Kind::File(id) = &e.kind {
                // The reader names the file: copy it under its own name.
                let dir = tempfile::tempdir()?;
                let copy = dir.path().join(db.rsplit('/').next().unwrap_or("db"));
                std::fs::copy(img.blobs.path(id), &copy)?;
                pkgs.extend(
                    crate::pkgdb::read_rpmdb_deps(&copy)
                        .with_context(|| format!("reading {db}"))?,
                );
                break;
            }
        }
    }
    if let Some(b) = img.read("/var/lib/dpkg/status") {
        pkgs.extend(deps::from_dpkg_status(&String::from_utf8_lossy(&b)));
    }
    let prefix = format!("{}/", deps::ARTIFACT_DEPS_DIR.trim_start_matches('/'));
    for (p, e) in img.tree.iter() {
        if let (Some(_), Kind::File(id)) = (p.strip_prefix(&prefix), &e.kind) {
            let d: deps::PackageDeps = serde_json::from_slice(&img.blobs.read(id)?)
                .with_context(|| format!("/{p}: not a package-deps record"))?;
            pkgs.push(d);
        }
    }
    let mut by_req: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    for u in deps::unmet(img.tree, &pkgs) {
        let e = by_req
            .entry(u.requirement)
            .or_insert((u.unsupported, Vec::new()));
        e.1.push(format!("{} ({})", u.package, u.source));
    }
    for (req, (unsupported, users)) in by_req {
        let mut needed_by = users.iter().take(4).cloned().collect::<Vec<_>>().join(", ");
        if users.len() > 4 {
            needed_by += &format!(" and {} more", users.len() - 4);
        }
        f.add(
            None,
            if unsupported {
                finding(
                    format!("requires:{req}"),
                    Severity::Warning,
                    format!("rich dependency `{req}` is not evaluated (unsupported)"),
                    needed_by,
                    "check it by hand, or allow it in [lint] allow".into(),
                )
            } else {
                finding(
                    format!("requires:{req}"),
                    Severity::Error,
                    format!("dependency `{req}` is not met by any package or file of the image"),
                    needed_by,
                    "add the package that provides it".into(),
                )
            },
        );
    }
    Ok(pkgs.len())
}

/// Lints an output directory: the image is read back from its root
/// filesystem archive (or its PXE initramfs).
pub fn lint_output(dir: &Path, opts: &Options) -> Result<Report> {
    let mp = dir.join("manifest.json");
    let m: crate::manifest::Manifest = serde_json::from_slice(
        &std::fs::read(&mp).with_context(|| format!("reading {}", mp.display()))?,
    )
    .with_context(|| format!("parsing {}", mp.display()))?;
    let arch = Arch::from_name(&m.image.arch)?;
    let names: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
    let archive = names
        .iter()
        .find(|n| n.starts_with("rootfs.tar"))
        .or_else(|| names.iter().find(|n| n.starts_with("initramfs")))
        .ok_or_else(|| {
            anyhow!(
                "{}: lint reads the image from its rootfs or pxe output, and this output has neither (outputs: {})",
                dir.display(),
                names.join(", ")
            )
        })?;
    let work = tempfile::Builder::new()
        .prefix("nodebake-lint-")
        .tempdir()?;
    let blobs = BlobStore::new(work.path())?;
    let mut tree = Tree::new();
    let path = dir.join(archive);
    let file = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let (_, mut r) =
        crate::compress::auto_decoder(std::io::BufReader::with_capacity(1 << 20, file))?;
    {
        let mut sink = crate::unpack::Sink::new(&mut tree, &blobs, arch, archive, None);
        let place = crate::unpack::Placement::at("/");
        if archive.starts_with("rootfs") {
            crate::unpack::unpack_tar(&mut sink, &mut r, &place)
        } else {
            crate::unpack::unpack_cpio(&mut sink, r, &place, &HashMap::new())
        }
        .with_context(|| format!("reading {}", path.display()))?;
    }
    let mut opts = opts.clone();
    opts.allow.extend(m.lint_allow.iter().cloned());
    let opts = &opts;
    let origins: HashMap<String, String> = m
        .files
        .iter()
        .map(|f| (f.path.trim_start_matches('/').to_string(), f.origin.clone()))
        .collect();
    lint(
        &Image {
            tree: &tree,
            blobs: &blobs,
            arch,
            packages: &m.packages,
            origins: Some(&origins),
        },
        opts,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_module_follows_the_kernel() {
        assert_eq!(
            conntrack_module("3.10.0-1160.el7.x86_64"),
            "nf_conntrack_ipv4"
        );
        assert_eq!(
            conntrack_module("4.18.0-553.el8.x86_64"),
            "nf_conntrack_ipv4"
        );
        assert_eq!(conntrack_module("4.19.0"), "nf_conntrack");
        assert_eq!(conntrack_module("5.14.0-427.el9.x86_64"), "nf_conntrack");
        assert_eq!(conntrack_module("6.1.0-28-cloud-amd64"), "nf_conntrack");
    }

    #[test]
    fn kubeadm_commands_follow_the_version() {
        let c20 = kubeadm_commands(20);
        assert!(c20.contains(&("crictl", true)) && c20.contains(&("conntrack", true)));
        assert!(c20.contains(&("socat", false)) && c20.contains(&("touch", false)));
        assert!(!kubeadm_commands(32).iter().any(|(c, _)| *c == "conntrack"));
    }

    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(major_minor("1.4.27").unwrap() < HAPROXY_MIN);
        assert!(major_minor("1.5.18").unwrap() >= HAPROXY_MIN);
        assert!(major_minor("2.6.12").unwrap() >= HAPROXY_MIN);
        assert!(major_minor("1.3.5").unwrap() >= KEEPALIVED_MIN);
        assert!(major_minor("1.2.13").unwrap() < KEEPALIVED_MIN);
    }
}
