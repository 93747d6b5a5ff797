//! Per-node NoCloud documents from a checked inventory and the secrets
//! bundle: `meta-data`, `user-data` (through the contract's renderer, so the
//! agent reads exactly what is written) and a cloud-init `network-config`
//! (v2) with the static address, gateway and resolvers. Masters get the CA
//! material; workers only the bootstrap token and the discovery hash.

use anyhow::{anyhow, Result};
use nodebake_contract::node::{
    render_meta_data, render_user_data, MemberSettings, MetaData, NodeConfig, NodeSettings,
    SecretSettings, NODE_SCHEMA_VERSION,
};
use nodebake_contract::profile::Role;

use super::inventory::{CheckedInventory, Machine};
use super::secrets::ClusterSecrets;

/// The documents of one node.
#[derive(Debug, Clone)]
pub struct NodeDocuments {
    /// Hostname.
    pub name: String,
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data` (`#cloud-config` + `nodebake`).
    pub user_data: String,
    /// cloud-init network config v2.
    pub network_config: String,
}

/// The `nodebake` settings for `m`.
pub fn node_settings(inv: &CheckedInventory, s: &ClusterSecrets, m: &Machine) -> NodeSettings {
    let i = &inv.inventory;
    let members = |role: Role| -> Vec<MemberSettings> {
        i.machines
            .iter()
            .filter(|x| x.role == role)
            .map(|x| MemberSettings {
                name: x.name.clone(),
                ip: x.ip.clone(),
            })
            .collect()
    };
    let secrets = match m.role {
        Role::Master => SecretSettings {
            bootstrap_token: Some(s.bootstrap_token.clone()),
            ca_cert_hash: Some(s.ca_cert_hash.clone()),
            certificate_key: Some(s.certificate_key.clone()),
            vrrp_password: Some(s.vrrp_password.clone()),
            ca: Some(s.ca.clone()),
        },
        Role::Worker => SecretSettings {
            bootstrap_token: Some(s.bootstrap_token.clone()),
            ca_cert_hash: Some(s.ca_cert_hash.clone()),
            ..SecretSettings::default()
        },
    };
    let load_balancer = match m.role {
        Role::Master => {
            let mut lb = i.load_balancer.clone().unwrap_or_default();
            if m.vrrp_priority.is_some() {
                lb.priority = m.vrrp_priority;
            }
            lb
        }
        Role::Worker => Default::default(),
    };
    let mut kubelet_extra_args = i.cluster.kubelet_extra_args.clone();
    kubelet_extra_args.extend(m.kubelet_extra_args.clone());
    NodeSettings {
        schema_version: NODE_SCHEMA_VERSION,
        role: match m.role {
            Role::Master => "master",
            Role::Worker => "worker",
        }
        .into(),
        initialiser: inv.initialiser().to_string(),
        node_ip: format!("{}/{}", m.ip, inv.network.prefix),
        interface: m
            .interface
            .clone()
            .unwrap_or_else(|| i.network.interface.clone()),
        cluster_name: i.cluster.name.clone(),
        kubernetes_version: i.cluster.kubernetes_version.clone(),
        control_plane_endpoint: i.control_plane_endpoint.clone(),
        masters: members(Role::Master),
        workers: members(Role::Worker),
        pod_cidr: i.cluster.pod_cidr.clone(),
        service_cidr: i.cluster.service_cidr.clone(),
        dns_domain: i.cluster.dns_domain.clone(),
        kube_proxy_mode: i.cluster.kube_proxy_mode.clone(),
        cni: i.cluster.cni.clone(),
        ntp_servers: i.cluster.ntp_servers.clone(),
        image_repository: i.image_repository(),
        registry_mirrors: i.cluster.registry_mirrors.clone(),
        firewalld: i.cluster.firewalld.clone(),
        kubelet_extra_args,
        users: i.cluster.users.clone(),
        profile: m.profile.clone(),
        secrets,
        load_balancer,
        kubeadm: i.cluster.kubeadm.clone(),
        state_disk: m.state_disk(&i.cluster).map(str::to_string),
    }
}

/// The instance id of `m`: stable across runs, so re-running changes
/// nothing for cloud-init.
pub fn instance_id(inv: &CheckedInventory, m: &Machine) -> String {
    format!("{}-{}", inv.inventory.cluster.name, m.name)
}

/// cloud-init network config v2 for `m` (matched by MAC).
pub fn network_config(inv: &CheckedInventory, m: &Machine) -> String {
    use serde_yaml::{Mapping, Value};
    fn map(e: Vec<(&str, Value)>) -> Value {
        Value::Mapping(
            e.into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect::<Mapping>(),
        )
    }
    let s = |v: String| Value::String(v);
    let n = &inv.inventory.network;
    let iface = m.interface.as_deref().unwrap_or(&n.interface);
    let mut eth = vec![
        (
            "match",
            map(vec![(
                "macaddress",
                s(m.canonical_mac().unwrap_or_default()),
            )]),
        ),
        ("set-name", s(iface.to_string())),
        (
            "addresses",
            Value::Sequence(vec![s(format!("{}/{}", m.ip, inv.network.prefix))]),
        ),
        (
            "routes",
            Value::Sequence(vec![map(vec![
                ("to", s("0.0.0.0/0".into())),
                ("via", s(n.gateway.clone())),
            ])]),
        ),
    ];
    if !n.dns.is_empty() {
        eth.push((
            "nameservers",
            map(vec![(
                "addresses",
                Value::Sequence(n.dns.iter().cloned().map(s).collect()),
            )]),
        ));
    }
    let mut ethernets = Mapping::new();
    ethernets.insert(s(iface.to_string()), map(eth));
    // By the YAML serializer: an interface named `true` or `1.5` stays a
    // string key.
    serde_yaml::to_string(&map(vec![
        ("version", Value::from(2)),
        ("ethernets", Value::Mapping(ethernets)),
    ]))
    .expect("a mapping of strings serializes")
}

/// Renders every node's documents and validates each with the agent's own
/// [`NodeConfig`] validation; errors name the machine.
pub fn render_nodes(inv: &CheckedInventory, s: &ClusterSecrets) -> Result<Vec<NodeDocuments>> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for m in &inv.inventory.machines {
        let settings = node_settings(inv, s, m);
        let meta = MetaData {
            instance_id: instance_id(inv, m),
            local_hostname: m.name.clone(),
        };
        if let Err(e) = NodeConfig::from_parts(&meta, &settings) {
            problems.push(format!("machine `{}`: {e}", m.name));
            continue;
        }
        out.push(NodeDocuments {
            name: m.name.clone(),
            meta_data: render_meta_data(&meta),
            user_data: render_user_data(&settings),
            network_config: network_config(inv, m),
        });
    }
    if !problems.is_empty() {
        return Err(anyhow!(
            "the inventory gives invalid node metadata:\n  {}",
            problems.join("\n  ")
        ));
    }
    Ok(out)
}
