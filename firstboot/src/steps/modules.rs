//! Kernel modules now (`modprobe`) and at boot (`/etc/modules-load.d/`).

use anyhow::Result;
use nodebake_contract::node::KubeProxyMode;

use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// The modules-load.d file this step owns.
pub const MODULES_FILE: &str = "/etc/modules-load.d/nodebake-kubernetes.conf";
/// Modules every node needs.
pub const BASE_MODULES: &[&str] = &["br_netfilter", "overlay"];
/// Extra modules for kube-proxy in IPVS mode.
pub const IPVS_MODULES: &[&str] = &["ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack"];

/// Loads kernel modules.
pub struct KernelModules;

/// The IPv4 conntrack module of kernel `release` whose `modules.dep` is
/// `modules_dep` (when readable): `nf_conntrack_ipv4` where the kernel
/// still has it (before 4.19: EL7's 3.10), else `nf_conntrack`.
pub fn conntrack_module(release: &str, modules_dep: Option<&str>) -> &'static str {
    match modules_dep {
        Some(dep) if dep.contains("/nf_conntrack_ipv4.ko") => "nf_conntrack_ipv4",
        Some(_) => "nf_conntrack",
        None => {
            let mut it = release.split(|c: char| !c.is_ascii_digit());
            let major: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let minor: u32 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            if major > 0 && (major, minor) < (4, 19) {
                "nf_conntrack_ipv4"
            } else {
                "nf_conntrack"
            }
        }
    }
}

/// The running kernel's conntrack module (`nf_conntrack` under `--root`).
fn running_conntrack_module(cx: &Ctx<'_>) -> &'static str {
    if !cx.live() {
        return "nf_conntrack";
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let dep =
        std::fs::read_to_string(cx.root.path(&format!("/lib/modules/{release}/modules.dep"))).ok();
    conntrack_module(release, dep.as_deref())
}

/// The modules for this node, in load order, without duplicates.
pub fn modules(cx: &Ctx<'_>) -> Vec<String> {
    let mut out: Vec<String> = BASE_MODULES.iter().map(|s| s.to_string()).collect();
    if cx.node.kube_proxy_mode == KubeProxyMode::Ipvs {
        let conntrack = running_conntrack_module(cx);
        out.extend(
            IPVS_MODULES
                .iter()
                .map(|s| if *s == "nf_conntrack" { conntrack } else { s })
                .map(|s| s.to_string()),
        );
    }
    out.extend(cx.profile.kernel_modules.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    out.retain(|m| seen.insert(m.clone()));
    out
}

fn files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    let mut s = String::from("# Managed by nodebake-firstboot: modules Kubernetes needs.\n");
    for m in modules(cx) {
        s += &m;
        s.push('\n');
    }
    vec![FileSpec::new(MODULES_FILE, s)]
}

fn not_loaded(cx: &Ctx<'_>) -> Vec<String> {
    if !cx.live() {
        return Vec::new();
    }
    modules(cx)
        .into_iter()
        .filter(|m| !cx.root.exists(&format!("/sys/module/{m}")))
        .collect()
}

impl Step for KernelModules {
    fn id(&self) -> &'static str {
        "kernel-modules"
    }

    fn describe(&self) -> &'static str {
        "load br_netfilter, overlay (and IPVS modules) now and at boot"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &files(cx))?;
        p.extend(
            not_loaded(cx)
                .into_iter()
                .map(|m| Pending::Runtime(format!("module {m} not loaded"))),
        );
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        write_files(cx, &files(cx))?;
        let load = if cx.live() {
            not_loaded(cx)
        } else {
            modules(cx)
        };
        for m in load {
            cx.run(Cmd::new("modprobe", [m]))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod conntrack_tests {
    use super::conntrack_module;

    #[test]
    fn the_kernel_decides_the_conntrack_module() {
        // EL7's 3.10 has nf_conntrack_ipv4; EL8's 4.18 has merged it away.
        let el7 = "kernel/net/ipv4/netfilter/nf_conntrack_ipv4.ko.xz: kernel/net/netfilter/nf_conntrack.ko.xz\n";
        let el8 = "kernel/net/netfilter/nf_conntrack.ko.xz: kernel/lib/libcrc32c.ko.xz\n";
        assert_eq!(
            conntrack_module("3.10.0-1160.el7.x86_64", Some(el7)),
            "nf_conntrack_ipv4"
        );
        assert_eq!(
            conntrack_module("4.18.0-553.el8_10.x86_64", Some(el8)),
            "nf_conntrack"
        );
        assert_eq!(
            conntrack_module("3.10.0-1160.el7.x86_64", None),
            "nf_conntrack_ipv4"
        );
        assert_eq!(
            conntrack_module("6.1.0-28-cloud-amd64", None),
            "nf_conntrack"
        );
    }
}
