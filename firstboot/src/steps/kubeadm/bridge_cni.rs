//! `cni = "bridge"`: no CNI manifest to apply; every node writes a CNI
//! configuration for the standard `bridge` + `host-local` + `portmap`
//! plugins (the image's `/opt/cni/bin`) with the pod CIDR the
//! controller-manager gave its Node (`spec.podCIDR`, a slice of the
//! cluster's `pod_cidr`). containerd picks the file up and the node turns
//! Ready. There is no overlay: pods reach pods of other nodes only where
//! the network routes the other nodes' pod CIDRs to them.

use anyhow::{bail, Context, Result};
use nodebake_contract::node::Ipv4Cidr;

use super::{kubeconfig, ran};
use crate::runner::Cmd;
use crate::step::{write_files, Ctx, FileSpec, Pending, Step};

/// The CNI configuration list this step writes.
pub const BRIDGE_CONFLIST: &str = "/etc/cni/net.d/10-nodebake-bridge.conflist";

/// Writes the bridge CNI configuration with this node's pod CIDR.
pub struct BridgeCni;

/// The configuration list for pod CIDR `subnet` (JSON, by serde_json).
pub fn render_conflist(subnet: &str) -> String {
    let v = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "nodebake-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    format!("{v:#}\n")
}

/// The pod CIDR of this node's Node object (empty until assigned).
fn pod_cidr_query(cx: &Ctx<'_>) -> Cmd {
    Cmd::new(
        "kubectl",
        [
            "--kubeconfig".to_string(),
            kubeconfig(cx),
            "get".into(),
            "node".into(),
            cx.node.hostname.clone(),
            "-o".into(),
            "jsonpath={.spec.podCIDR}".into(),
        ],
    )
}

/// Whether `s` is an IPv4 CIDR inside the cluster's pod CIDR.
fn checked_pod_cidr(cx: &Ctx<'_>, s: &str) -> Result<String> {
    let c = Ipv4Cidr::parse_block(s)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("node {} has pod CIDR `{s}`", cx.node.hostname))?;
    if !cx.node.pod_cidr.overlaps(&c) {
        bail!(
            "node {} has pod CIDR {c}, outside the cluster's pod_cidr {}",
            cx.node.hostname,
            cx.node.pod_cidr
        );
    }
    Ok(c.to_string())
}

impl Step for BridgeCni {
    fn id(&self) -> &'static str {
        "cni-bridge"
    }

    fn describe(&self) -> &'static str {
        "bridge + host-local CNI configuration with this node's pod CIDR (spec.podCIDR)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        Ok(match cx.root.read_opt(BRIDGE_CONFLIST)? {
            Some(_) => Vec::new(),
            None => vec![Pending::Runtime(format!(
                "write {BRIDGE_CONFLIST} with node {}'s pod CIDR",
                cx.node.hostname
            ))],
        })
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let b = cx.join.ready.clone();
        let tries = b.tries.max(1);
        let mut last = String::new();
        for n in 1..=tries {
            match cx.run(pod_cidr_query(cx)).map(ran) {
                Ok(None) => return Ok(()),
                Ok(Some(s)) if !s.trim().is_empty() => {
                    let cidr = checked_pod_cidr(cx, s.trim())?;
                    eprintln!(
                        "nodebake-firstboot: node {} has pod CIDR {cidr}: writing {BRIDGE_CONFLIST}",
                        cx.node.hostname
                    );
                    let f = FileSpec::new(BRIDGE_CONFLIST, render_conflist(&cidr));
                    write_files(cx, &[f])?;
                    return Ok(());
                }
                Ok(Some(_)) => last = "no pod CIDR assigned yet".into(),
                Err(e) => last = format!("{e:#}"),
            }
            eprintln!(
                "nodebake-firstboot: waiting for node {}'s pod CIDR: try {n}/{tries}: {last}",
                cx.node.hostname
            );
            if n < tries {
                std::thread::sleep(b.pause(n));
            }
        }
        bail!(
            "node {} got no pod CIDR after {tries} tries (is the controller-manager running with \
             --allocate-node-cidrs, i.e. a podSubnet in the kubeadm configuration?): {last}",
            cx.node.hostname
        )
    }
}

#[cfg(test)]
mod tests {
    use super::render_conflist;

    #[test]
    fn conflist_is_json_with_the_subnet() {
        let v: serde_json::Value = serde_json::from_str(&render_conflist("10.244.1.0/24")).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
    }
}
