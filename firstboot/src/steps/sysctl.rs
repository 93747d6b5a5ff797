//! Kernel parameters now (`sysctl -p`) and at boot (`/etc/sysctl.d/`).

use anyhow::Result;

use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// The sysctl.d file this step owns.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-nodebake-kubernetes.conf";
/// Parameters and values.
pub const SETTINGS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
];

/// Sets kernel parameters.
pub struct Sysctl;

fn files() -> Vec<FileSpec> {
    let mut s = String::from("# Managed by nodebake-firstboot: parameters Kubernetes needs.\n");
    for (k, v) in SETTINGS {
        s += &format!("{k} = {v}\n");
    }
    vec![FileSpec::new(SYSCTL_FILE, s)]
}

fn runtime_pending(cx: &Ctx<'_>) -> Result<Vec<Pending>> {
    let mut p = Vec::new();
    if !cx.live() {
        return Ok(p);
    }
    for (k, v) in SETTINGS {
        let path = format!("/proc/sys/{}", k.replace('.', "/"));
        let now = cx.root.read_opt(&path)?.unwrap_or_default();
        if now.trim() != *v {
            p.push(Pending::Runtime(format!("{k} is `{}`", now.trim())));
        }
    }
    Ok(p)
}

impl Step for Sysctl {
    fn id(&self) -> &'static str {
        "sysctl"
    }

    fn describe(&self) -> &'static str {
        "bridge netfilter and IP forwarding on, now and at boot"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &files())?;
        p.extend(runtime_pending(cx)?);
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        write_files(cx, &files())?;
        cx.run(Cmd::new("sysctl", ["-p", SYSCTL_FILE]))?;
        Ok(())
    }
}
