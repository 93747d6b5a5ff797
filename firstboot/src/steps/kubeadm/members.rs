//! `etcd-members` (run by `reconcile` on masters): the etcd members of
//! masters that are no longer in the metadata are removed through a
//! member that answers, with the API server's own etcd client
//! certificate. See [`crate::kubeadm::etcd::remove_foreign_members`] for
//! what is refused.

use anyhow::Result;
use nodebake_contract::profile::Role;

use super::{arg_path, PKI_DIR};
use crate::kubeadm::etcd::{foreign_members, member_list, remove_foreign_members, EtcdAccess};
use crate::step::{Ctx, Pending, Step};

/// Removes the etcd members of masters the metadata no longer lists.
pub struct EtcdMembers;

/// The metadata's masters as etcd peer URLs.
fn wanted(cx: &Ctx<'_>) -> Vec<String> {
    cx.node
        .masters
        .iter()
        .map(|m| format!("https://{}:{}", m.ip, cx.join.etcd_peer_port))
        .collect()
}

/// etcd as the API server reaches it: this master's member first, then
/// the others of the metadata; kubeadm's apiserver-etcd-client certificate.
fn access(cx: &Ctx<'_>) -> EtcdAccess {
    let me = cx.node.node_ip.addr;
    let mut endpoints = vec![format!("https://{me}:{}", cx.join.etcd_client_port)];
    endpoints.extend(
        cx.node
            .masters
            .iter()
            .filter(|m| m.ip != me)
            .map(|m| format!("https://{}:{}", m.ip, cx.join.etcd_client_port)),
    );
    EtcdAccess {
        endpoints,
        cacert: arg_path(cx, &format!("{PKI_DIR}/etcd/ca.crt")),
        cert: arg_path(cx, &format!("{PKI_DIR}/apiserver-etcd-client.crt")),
        key: arg_path(cx, &format!("{PKI_DIR}/apiserver-etcd-client.key")),
    }
}

fn applies(cx: &Ctx<'_>) -> bool {
    cx.node.role == Role::Master
        && cx
            .root
            .exists(&format!("{PKI_DIR}/apiserver-etcd-client.key"))
}

impl Step for EtcdMembers {
    fn id(&self) -> &'static str {
        "etcd-members"
    }

    fn describe(&self) -> &'static str {
        "masters: remove the etcd members of masters no longer in the metadata (never half or more at once)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if !applies(cx) {
            return Ok(Vec::new());
        }
        // Nothing to ask when commands are skipped (a --root run).
        let Some((_, members)) = member_list(cx.runner, &access(cx))? else {
            return Ok(Vec::new());
        };
        Ok(foreign_members(&members, &wanted(cx))
            .into_iter()
            .map(|m| {
                Pending::Runtime(format!(
                    "remove etcd member {:x} ({}, {}): not a master in the metadata",
                    m.id,
                    if m.name.is_empty() {
                        "unstarted"
                    } else {
                        &m.name
                    },
                    m.peer_urls.join(",")
                ))
            })
            .collect())
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let removed = remove_foreign_members(cx.runner, &access(cx), &wanted(cx), &cx.join.etcd)?;
        for u in removed {
            eprintln!(
                "nodebake-firstboot: removed the etcd member {u} (its master left the metadata)"
            );
        }
        Ok(())
    }
}
