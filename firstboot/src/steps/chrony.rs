//! Time sync: a chrony configuration with the configured NTP servers.
//! Without servers in the metadata the node's time setup is left alone.

use anyhow::Result;

use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// Configures chrony.
pub struct Chrony;

/// chrony.conf for `servers`.
pub fn render(servers: &[String]) -> String {
    let mut s = String::from("# Managed by nodebake-firstboot from the node metadata.\n");
    for srv in servers {
        s += &format!("server {srv} iburst\n");
    }
    s += "driftfile /var/lib/chrony/drift\nmakestep 1.0 3\nrtcsync\nlogdir /var/log/chrony\n";
    s
}

/// (config path, unit name): Debian layout when `/etc/chrony/` exists,
/// else the EL one.
fn layout(cx: &Ctx<'_>) -> (&'static str, &'static str) {
    if cx.root.path("/etc/chrony").is_dir() {
        ("/etc/chrony/chrony.conf", "chrony.service")
    } else {
        ("/etc/chrony.conf", "chronyd.service")
    }
}

fn files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    if cx.node.ntp_servers.is_empty() {
        return Vec::new();
    }
    vec![FileSpec::new(layout(cx).0, render(&cx.node.ntp_servers))]
}

impl Step for Chrony {
    fn id(&self) -> &'static str {
        "time-sync"
    }

    fn describe(&self) -> &'static str {
        "chrony configured with the metadata's NTP servers, enabled and restarted"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        pending_files(cx.root, &files(cx))
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        write_files(cx, &files(cx))?;
        let unit = layout(cx).1;
        cx.run(Cmd::new("systemctl", ["enable", unit]))?;
        cx.run(Cmd::new("systemctl", ["restart", unit]))?;
        Ok(())
    }
}
