//! kubelet: node IP and extra flags in the environment file kubeadm's
//! drop-in (`10-kubeadm.conf`) reads, and the unit enabled.

use anyhow::Result;

use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

const UNIT_PATHS: &[&str] = &[
    "/usr/lib/systemd/system/kubelet.service",
    "/lib/systemd/system/kubelet.service",
];
const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/kubelet.service";

/// Configures the kubelet's extra arguments.
pub struct Kubelet;

/// The environment file: `/etc/default/kubelet` on Debian-like roots
/// (`/etc/default` exists, `/etc/sysconfig` does not), else the EL path.
pub fn env_file(cx: &Ctx<'_>) -> &'static str {
    if cx.root.path("/etc/default").is_dir() && !cx.root.path("/etc/sysconfig").is_dir() {
        "/etc/default/kubelet"
    } else {
        "/etc/sysconfig/kubelet"
    }
}

/// `KUBELET_EXTRA_ARGS=--node-ip=<ip> --<k>=<v>...` (keys sorted).
pub fn render(cx: &Ctx<'_>) -> String {
    let mut args = vec![format!("--node-ip={}", cx.node.node_ip.addr)];
    for (k, v) in &cx.node.kubelet_extra_args {
        args.push(format!("--{k}={v}"));
    }
    format!(
        "# Managed by nodebake-firstboot; read by kubeadm's kubelet drop-in.\nKUBELET_EXTRA_ARGS={}\n",
        args.join(" ")
    )
}

fn unit(cx: &Ctx<'_>) -> Option<&'static str> {
    UNIT_PATHS.iter().copied().find(|p| cx.root.exists(p))
}

impl Step for Kubelet {
    fn id(&self) -> &'static str {
        "kubelet"
    }

    fn describe(&self) -> &'static str {
        "kubelet node IP and extra flags for kubeadm's drop-in; kubelet enabled"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &[FileSpec::new(env_file(cx), render(cx))])?;
        if let Some(u) = unit(cx) {
            if std::fs::read_link(cx.root.path(WANTS_LINK)).ok().as_deref()
                != Some(std::path::Path::new(u))
            {
                p.push(Pending::File(format!("enable kubelet ({WANTS_LINK})")));
            }
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let f = [FileSpec::new(env_file(cx), render(cx))];
        write_files(cx, &f)?;
        if let Some(u) = unit(cx) {
            cx.symlink(WANTS_LINK, u)?;
        }
        Ok(())
    }
}
