//! The cluster inventory (`nodebake cluster init INVENTORY.toml`): the
//! cluster described once — endpoint, networks, versions and every machine
//! with its role, address and MAC — and its validation, which names every
//! problem at once (`machines[3].ip: ...`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result};
use nodebake_contract::node::{EndpointSettings, Ipv4Cidr, LoadBalancerSettings};
use nodebake_contract::profile::Role;
use serde::Deserialize;

/// The whole inventory file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// Cluster-wide settings.
    pub cluster: ClusterSettings,
    /// Control-plane endpoint (DNS name, VIP, port).
    pub control_plane_endpoint: EndpointSettings,
    /// The node network.
    pub network: NetworkSettings,
    /// Masters' VIP and load balancer settings (contract defaults when absent).
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Every machine, in order (masters keep their order in `masters`).
    #[serde(default)]
    pub machines: Vec<Machine>,
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSettings {
    /// Cluster name (kubeadm `clusterName`, also the instance-id prefix).
    pub name: String,
    /// Kubernetes version (`1.20.0`).
    pub kubernetes_version: String,
    /// Image spec the nodes boot (informational; `nodebake serve --image`
    /// serves the built output).
    #[serde(default)]
    pub image: Option<String>,
    /// Pod network CIDR.
    pub pod_cidr: String,
    /// Service network CIDR.
    pub service_cidr: String,
    /// Cluster DNS domain.
    #[serde(default = "default_dns_domain")]
    pub dns_domain: String,
    /// `iptables` or `ipvs`.
    #[serde(default = "default_kube_proxy_mode")]
    pub kube_proxy_mode: String,
    /// CNI name.
    #[serde(default = "default_cni")]
    pub cni: String,
    /// NTP servers.
    #[serde(default)]
    pub ntp_servers: Vec<String>,
    /// Registry of the control-plane images; default: kubeadm's for the
    /// version (`k8s.gcr.io` before 1.25, `registry.k8s.io` from 1.25),
    /// the same default as an image spec's `images = "auto"`.
    #[serde(default)]
    pub image_repository: Option<String>,
    /// Registry host → mirror URLs.
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// `disable` or `open-ports`.
    #[serde(default = "default_firewalld")]
    pub firewalld: String,
    /// Extra kubelet flags for every node (without dashes).
    #[serde(default)]
    pub kubelet_extra_args: BTreeMap<String, String>,
    /// Login accounts on every node (`[[cluster.users]]`), exactly
    /// `nodebake.users` of the node schema.
    #[serde(default)]
    pub users: Vec<nodebake_contract::node::UserSettings>,
    /// kubeadm choices (`[cluster.kubeadm]`: `skip_phases`,
    /// `control_plane_timeout`, `image_pull_policy`, `extra_args`), exactly `nodebake.kubeadm` of the node schema.
    #[serde(default)]
    pub kubeadm: nodebake_contract::node::KubeadmSettings,
    /// State disk of every machine (`/dev/vdb`, `/dev/disk/by-id/...`):
    /// PXE nodes keep /etc/kubernetes, /var/lib/etcd and /var/lib/kubelet
    /// on it across reboots. A machine's own `state_disk` wins; `"none"`
    /// there keeps it in RAM.
    #[serde(default)]
    pub state_disk: Option<String>,
}

fn default_dns_domain() -> String {
    "cluster.local".into()
}
fn default_kube_proxy_mode() -> String {
    "iptables".into()
}
fn default_cni() -> String {
    "flannel".into()
}
fn default_firewalld() -> String {
    "disable".into()
}

/// `[network]`: the node network.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSettings {
    /// Node network CIDR (`192.168.147.0/24`).
    pub cidr: String,
    /// Default gateway (inside `cidr`).
    pub gateway: String,
    /// DNS resolvers.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Interface carrying the node IP (and the VIP on masters).
    pub interface: String,
}

/// One `[[machines]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// Hostname and Kubernetes node name.
    pub name: String,
    /// `master` or `worker`.
    pub role: Role,
    /// Node IP (inside `network.cidr`).
    pub ip: String,
    /// MAC address of the boot interface (`52:54:00:..`, `-` also accepted).
    pub mac: String,
    /// The one master that runs `kubeadm init`.
    #[serde(default)]
    pub initialiser: bool,
    /// Overrides `network.interface`.
    #[serde(default)]
    pub interface: Option<String>,
    /// Role profile name (default: the role's name).
    #[serde(default)]
    pub profile: Option<String>,
    /// Extra kubelet flags, merged over `cluster.kubelet_extra_args`.
    #[serde(default)]
    pub kubelet_extra_args: BTreeMap<String, String>,
    /// VRRP priority override (masters).
    #[serde(default)]
    pub vrrp_priority: Option<u32>,
    /// Overrides `cluster.state_disk`; `"none"`: no state disk (RAM-only
    /// on PXE: the node starts over on every boot).
    #[serde(default)]
    pub state_disk: Option<String>,
}

impl Machine {
    /// This machine's state disk: its own `state_disk`, else the
    /// cluster's; `none` means none.
    pub fn state_disk<'a>(&'a self, cluster: &'a ClusterSettings) -> Option<&'a str> {
        match self.state_disk.as_deref().or(cluster.state_disk.as_deref()) {
            Some("none") | None => None,
            Some(d) => Some(d),
        }
    }

    /// The MAC in canonical form (`aa:bb:cc:dd:ee:ff`), if it is one.
    pub fn canonical_mac(&self) -> Option<String> {
        canonical_mac(&self.mac)
    }
}

/// `aa:bb:cc:dd:ee:ff` from `AA:BB:..` or `aa-bb-..`; `None` when not a MAC.
pub fn canonical_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

/// One inventory problem, naming its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryProblem {
    /// Field path (`machines[3].ip`, `control_plane_endpoint.vip`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for InventoryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why an inventory was refused: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid inventory:\n  {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
pub struct InventoryError(pub Vec<InventoryProblem>);

/// A checked inventory: addresses parsed, problems that do not stop the
/// run kept as warnings.
#[derive(Debug, Clone)]
pub struct CheckedInventory {
    /// The inventory as written.
    pub inventory: Inventory,
    /// Node network.
    pub network: Ipv4Cidr,
    /// Warnings (e.g. an even number of masters).
    pub warnings: Vec<InventoryProblem>,
}

impl CheckedInventory {
    /// The initialising master's name.
    pub fn initialiser(&self) -> &str {
        self.inventory
            .machines
            .iter()
            .find(|m| m.initialiser)
            .map(|m| m.name.as_str())
            .expect("validated: one initialiser")
    }
}

/// Reads and validates an inventory file.
impl Inventory {
    /// The image repository kubeadm pulls from: the inventory's, else
    /// kubeadm's default for the Kubernetes version.
    pub fn image_repository(&self) -> String {
        match &self.cluster.image_repository {
            Some(r) => r.clone(),
            None => {
                let minor = crate::kubeadm_images::parse_version(&self.cluster.kubernetes_version)
                    .map(|(_, m, _)| m)
                    .unwrap_or(u32::MAX);
                crate::kubeadm_images::default_repository(minor).to_string()
            }
        }
    }
}

pub fn load(path: &Path) -> Result<CheckedInventory> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let inv: Inventory =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(check(inv)?)
}

#[derive(Default)]
struct Problems(Vec<InventoryProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(InventoryProblem {
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn parse_ip(p: &mut Problems, field: &str, s: &str) -> Option<Ipv4Addr> {
    match s.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.add(field, format!("`{s}` is not an IPv4 address"));
            None
        }
    }
}

/// Validates an inventory: duplicate names, IPs and MACs, IPs outside the
/// node network, the VIP colliding with a node, the initialiser count and
/// CIDR overlaps are errors; an even number of masters is a warning.
pub fn check(inv: Inventory) -> Result<CheckedInventory, InventoryError> {
    let mut p = Problems::default();
    let mut warnings = Problems::default();
    let network = match Ipv4Cidr::parse_block(&inv.network.cidr) {
        Ok(n) => Some(n),
        Err(e) => {
            p.add("network.cidr", e);
            None
        }
    };
    let in_network = |p: &mut Problems, field: &str, ip: Ipv4Addr| {
        let Some(n) = network else { return };
        if !n.contains(ip) {
            p.add(
                field,
                format!("{ip} is outside the node network {}", inv.network.cidr),
            );
        } else if n.prefix < 31 && (ip == n.network() || ip == n.broadcast()) {
            p.add(field, format!("{ip} is the network or broadcast address"));
        }
    };
    if let Some(gw) = parse_ip(&mut p, "network.gateway", &inv.network.gateway) {
        in_network(&mut p, "network.gateway", gw);
    }
    for (i, d) in inv.network.dns.iter().enumerate() {
        parse_ip(&mut p, &format!("network.dns[{i}]"), d);
    }
    let vip = parse_ip(
        &mut p,
        "control_plane_endpoint.vip",
        &inv.control_plane_endpoint.vip,
    );
    if let Some(vip) = vip {
        in_network(&mut p, "control_plane_endpoint.vip", vip);
        if inv.network.gateway.parse() == Ok(vip) {
            p.add(
                "control_plane_endpoint.vip",
                format!("{vip} is the gateway (`network.gateway`)"),
            );
        }
    }
    if let Some(d) = inv.cluster.state_disk.as_deref().filter(|d| *d != "none") {
        if let Err(e) = nodebake_contract::state_disk::check_device(d) {
            p.add("cluster.state_disk", e);
        }
    }
    let mut cidrs = Vec::new();
    for (field, s) in [
        ("cluster.pod_cidr", &inv.cluster.pod_cidr),
        ("cluster.service_cidr", &inv.cluster.service_cidr),
    ] {
        match Ipv4Cidr::parse_block(s) {
            Ok(c) => cidrs.push((field, c)),
            Err(e) => p.add(field, e),
        }
    }
    if let Some(n) = network {
        cidrs.push(("network.cidr", n));
    }
    for (i, (fa, a)) in cidrs.iter().enumerate() {
        for (fb, b) in &cidrs[i + 1..] {
            if a.overlaps(b) {
                p.add(*fb, format!("overlaps `{fa}`"));
            }
        }
    }

    if inv.machines.is_empty() {
        p.add("machines", "no machines");
    }
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ips: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    let mut macs: BTreeMap<String, usize> = BTreeMap::new();
    for (i, m) in inv.machines.iter().enumerate() {
        let f = |x: &str| format!("machines[{i}].{x}");
        if let Some(j) = names.insert(&m.name, i) {
            p.add(
                f("name"),
                format!("duplicate name `{}` (also machines[{j}])", m.name),
            );
        }
        if let Some(ip) = parse_ip(&mut p, &f("ip"), &m.ip) {
            in_network(&mut p, &f("ip"), ip);
            if let Some(j) = ips.insert(ip, i) {
                p.add(
                    f("ip"),
                    format!(
                        "duplicate IP {ip} (also machines[{j}] `{}`)",
                        inv.machines[j].name
                    ),
                );
            }
            if Some(ip) == vip {
                p.add(
                    "control_plane_endpoint.vip",
                    format!("VIP {ip} collides with machine `{}`", m.name),
                );
            }
            if inv.network.gateway.parse() == Ok(ip) {
                p.add(f("ip"), format!("{ip} is the gateway"));
            }
        }
        match m.canonical_mac() {
            None => p.add(f("mac"), format!("`{}` is not a MAC address", m.mac)),
            Some(mac) if mac == "00:00:00:00:00:00" => {
                p.add(f("mac"), "00:00:00:00:00:00 is no interface's address")
            }
            // The group bit: broadcast and multicast addresses name no NIC.
            Some(mac) if u8::from_str_radix(&mac[..2], 16).is_ok_and(|b| b & 1 == 1) => p.add(
                f("mac"),
                format!("{mac} is a broadcast/multicast address (first octet odd), not a NIC's"),
            ),
            Some(mac) => {
                if let Some(j) = macs.insert(mac.clone(), i) {
                    p.add(
                        f("mac"),
                        format!(
                            "duplicate MAC {mac} (also machines[{j}] `{}`)",
                            inv.machines[j].name
                        ),
                    );
                }
            }
        }
        if m.initialiser && m.role != Role::Master {
            p.add(f("initialiser"), "only a master can initialise the cluster");
        }
        if m.vrrp_priority.is_some() && m.role != Role::Master {
            p.add(f("vrrp_priority"), "only masters run keepalived");
        }
        if let Some(d) = m.state_disk.as_deref().filter(|d| *d != "none") {
            if let Err(e) = nodebake_contract::state_disk::check_device(d) {
                p.add(f("state_disk"), format!("{e} (or \"none\")"));
            }
        }
    }
    let masters = inv
        .machines
        .iter()
        .filter(|m| m.role == Role::Master)
        .count();
    if masters == 0 {
        p.add("machines", "no master");
    } else if masters.is_multiple_of(2) {
        warnings.add(
            "machines",
            format!("{masters} masters: an even count tolerates no more failures than one master fewer (etcd quorum)"),
        );
    }
    let inits: Vec<&str> = inv
        .machines
        .iter()
        .filter(|m| m.initialiser)
        .map(|m| m.name.as_str())
        .collect();
    match inits.len() {
        0 => p.add(
            "machines",
            "no initialiser: mark exactly one master `initialiser = true`",
        ),
        1 => {}
        _ => p.add(
            "machines",
            format!(
                "{} initialisers ({}): exactly one master may run `kubeadm init`",
                inits.len(),
                inits.join(", ")
            ),
        ),
    }
    if !p.0.is_empty() {
        return Err(InventoryError(p.0));
    }
    Ok(CheckedInventory {
        inventory: inv,
        network: network.expect("checked"),
        warnings: warnings.0,
    })
}
