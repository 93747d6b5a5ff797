//! The state disk step: first, before anything else, on a node whose
//! metadata names a state disk. `nodebake-state.service` normally mounted
//! it already (from the kernel command line); if it did not — a PXE
//! server that does not add `nodebake.state=` — the agent mounts it
//! itself. Without it mounted, the agent stops here: a PXE master that
//! went on in RAM would lose its etcd member on the next reboot.

use anyhow::{bail, Result};
use std::time::Duration;

use crate::state_disk;
use crate::step::{Ctx, Pending, Step};

/// How long the agent waits for a state disk to appear.
const WAIT: Duration = Duration::from_secs(120);

/// See the module documentation.
pub struct StateDisk;

impl Step for StateDisk {
    fn id(&self) -> &'static str {
        "state-disk"
    }

    fn describe(&self) -> &'static str {
        "state disk mounted on /etc/kubernetes, /var/lib/etcd, /var/lib/kubelet (PXE nodes that keep kubeadm's state)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let Some(want) = &cx.node.state_disk else {
            return Ok(Vec::new());
        };
        Ok(match state_disk::marker(cx.root)? {
            Some(m) if &m.device == want => Vec::new(),
            Some(m) => vec![Pending::Runtime(format!(
                "the state disk mounted is {}, the metadata names {want}",
                m.device
            ))],
            None => vec![Pending::Runtime(format!("mount state disk {want}"))],
        })
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let Some(want) = cx.node.state_disk.clone() else {
            return Ok(());
        };
        if let Some(m) = state_disk::marker(cx.root)? {
            if m.device != want {
                bail!(
                    "state disk: {} is mounted (kernel command line nodebake.state=), but the \
                     metadata's state_disk is {want}: fix whichever is wrong and reboot; \
                     nothing was changed",
                    m.device
                );
            }
            return Ok(());
        }
        if !cx.live() {
            bail!(
                "state disk {want} is not mounted under {} (run `nodebake-firstboot state-disk \
                 --root ROOT --device {want}` first); nothing was changed",
                cx.root.path("/").display()
            );
        }
        state_disk::setup(cx.root, &want, WAIT)?;
        Ok(())
    }
}
