//! firewalld, as the node config says: stopped and disabled, or kept with
//! the role's Kubernetes ports opened (`firewall-offline-cmd`, so it works
//! whether or not the daemon runs). Nothing to do when it is not installed.

use anyhow::Result;
use nodebake_contract::node::FirewalldPolicy;
use nodebake_contract::profile::Role;

use crate::runner::Cmd;
use crate::step::{Ctx, Pending, Step};

const UNIT_PATHS: &[&str] = &[
    "/usr/lib/systemd/system/firewalld.service",
    "/lib/systemd/system/firewalld.service",
    "/etc/systemd/system/firewalld.service",
];
const ENABLED_LINK: &str = "/etc/systemd/system/multi-user.target.wants/firewalld.service";

/// Applies the firewalld policy.
pub struct Firewalld;

/// Ports to open: the profile's, else the defaults for the role.
pub fn ports(cx: &Ctx<'_>) -> Vec<String> {
    if !cx.profile.firewall_ports.is_empty() {
        return cx.profile.firewall_ports.clone();
    }
    let mut p: Vec<String> = match cx.node.role {
        Role::Master => [
            "6443/tcp",
            "2379-2380/tcp",
            "10250/tcp",
            "10251/tcp",
            "10252/tcp",
            "10257/tcp",
            "10259/tcp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
        Role::Worker => vec!["10250/tcp".into(), "30000-32767/tcp".into()],
    };
    if cx.node.role == Role::Master {
        p.push(format!("{}/tcp", cx.node.endpoint.port));
    }
    if cx.node.cni == "flannel" {
        p.push("8472/udp".into());
    }
    p
}

fn installed(cx: &Ctx<'_>) -> bool {
    UNIT_PATHS.iter().any(|p| cx.root.exists(p))
}

/// The zone file firewalld keeps permanent settings in.
fn zone_file(cx: &Ctx<'_>) -> Result<String> {
    let conf = cx
        .root
        .read_opt("/etc/firewalld/firewalld.conf")?
        .unwrap_or_default();
    let zone = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("DefaultZone="))
        .unwrap_or("public")
        .trim()
        .to_string();
    Ok(format!("/etc/firewalld/zones/{zone}.xml"))
}

fn missing_ports(cx: &Ctx<'_>) -> Result<Vec<String>> {
    let zone = cx.root.read_opt(&zone_file(cx)?)?.unwrap_or_default();
    Ok(ports(cx)
        .into_iter()
        .filter(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            !zone.contains(&format!("port=\"{port}\" protocol=\"{proto}\""))
                && !zone.contains(&format!("protocol=\"{proto}\" port=\"{port}\""))
        })
        .collect())
}

impl Step for Firewalld {
    fn id(&self) -> &'static str {
        "firewalld"
    }

    fn describe(&self) -> &'static str {
        "firewalld disabled, or the role's Kubernetes ports opened, as the config says"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if !installed(cx) {
            return Ok(Vec::new());
        }
        Ok(match cx.node.firewalld {
            FirewalldPolicy::Disable if cx.root.exists(ENABLED_LINK) => {
                vec![Pending::Runtime("firewalld is enabled".into())]
            }
            FirewalldPolicy::Disable => Vec::new(),
            FirewalldPolicy::OpenPorts => missing_ports(cx)?
                .into_iter()
                .map(|p| Pending::Runtime(format!("port {p} not open")))
                .collect(),
        })
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        match cx.node.firewalld {
            FirewalldPolicy::Disable => {
                cx.run(Cmd::new(
                    "systemctl",
                    ["disable", "--now", "firewalld.service"],
                ))?;
            }
            FirewalldPolicy::OpenPorts => {
                for p in missing_ports(cx)? {
                    cx.run(Cmd::new(
                        "firewall-offline-cmd",
                        [format!("--add-port={p}")],
                    ))?;
                }
                if cx.node.role == Role::Master {
                    cx.run(Cmd::new("firewall-offline-cmd", ["--add-protocol=vrrp"]))?;
                }
                cx.run(Cmd::new(
                    "systemctl",
                    ["try-reload-or-restart", "firewalld.service"],
                ))?;
            }
        }
        Ok(())
    }
}
