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

/// The modules for this node, in load order, without duplicates.
pub fn modules(cx: &Ctx<'_>) -> Vec<String> {
    let mut out: Vec<String> = BASE_MODULES.iter().map(|s| s.to_string()).collect();
    if cx.node.kube_proxy_mode == KubeProxyMode::Ipvs {
        out.extend(IPVS_MODULES.iter().map(|s| s.to_string()));
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
