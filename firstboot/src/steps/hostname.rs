//! Hostname: `/etc/hostname` plus the running hostname, through
//! systemd-hostnamed on D-Bus, or `sethostname(2)` when there is no bus.

use anyhow::{bail, Result};

use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// Sets the node's hostname.
pub struct Hostname;

fn files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    vec![FileSpec::new(
        "/etc/hostname",
        format!("{}\n", cx.node.hostname),
    )]
}

impl Step for Hostname {
    fn id(&self) -> &'static str {
        "hostname"
    }

    fn describe(&self) -> &'static str {
        "set the static and transient hostname (hostnamed over D-Bus, else /etc/hostname + sethostname)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &files(cx))?;
        if let Some(state) = cx.runner.query_hostname()? {
            let want = &cx.node.hostname;
            if &state.static_name != want || &state.transient != want {
                p.push(Pending::Runtime(format!(
                    "hostname is `{}` (static `{}`), want `{want}`",
                    state.transient, state.static_name
                )));
            }
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        write_files(cx, &files(cx))?;
        cx.runner.set_hostname(&cx.node.hostname)?;
        if let Some(state) = cx.runner.query_hostname()? {
            if state.transient != cx.node.hostname || state.static_name != cx.node.hostname {
                bail!(
                    "hostname is `{}` (static `{}`) after setting `{}`",
                    state.transient,
                    state.static_name,
                    cx.node.hostname
                );
            }
        }
        Ok(())
    }
}
