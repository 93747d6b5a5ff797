//! Node metadata: who a machine is, as its NoCloud metadata says, and the
//! validated [`NodeConfig`] the first-boot agent acts on.
//!
//! # Wire form (schema version 1)
//!
//! NoCloud conventions: `meta-data` carries `instance-id` and
//! `local-hostname` (other cloud-init keys are ignored). nodebake's own
//! settings travel in `user-data` under one top-level `nodebake` key, so the
//! same file is also valid `#cloud-config` (cloud-init ignores the key and
//! nodebake ignores every other top-level key):
//!
//! ```yaml
//! #cloud-config
//! nodebake:
//!   schema_version: 1
//!   role: worker                  # master | worker
//!   initialiser: k8s-master1      # the master that runs `kubeadm init`
//!   node_ip: 192.168.147.141/24   # this node's address and prefix
//!   interface: ens33
//!   cluster_name: kubernetes
//!   kubernetes_version: 1.20.0
//!   control_plane_endpoint: { dns_name: master.k8s.io, vip: 192.168.147.154, port: 16443 }
//!   masters: [ { name: k8s-master1, ip: 192.168.147.137 } ]
//!   workers: [ { name: k8s-node1, ip: 192.168.147.141 } ]
//!   pod_cidr: 10.244.0.0/16
//!   service_cidr: 10.1.0.0/16
//!   dns_domain: cluster.local
//!   kube_proxy_mode: ipvs         # iptables | ipvs
//!   cni: flannel
//!   ntp_servers: [ ntp.example.org ]
//!   image_repository: registry.k8s.io
//!   registry_mirrors: { docker.io: [ "https://mirror.example.org" ] }
//!   firewalld: disable            # disable | open-ports
//!   kubelet_extra_args: {}
//!   users:                        # optional; key-only login accounts
//!     - { name: ops, ssh_authorized_keys: ["ssh-ed25519 AAAA... ops@example"], sudo: true }
//!   secrets:
//!     bootstrap_token: abcdef.0123456789abcdef
//!     ca_cert_hash: sha256:<64 hex>
//!     certificate_key: <64 hex>
//!     vrrp_password: <1-8 chars>
//!     ca: { ca_crt, ca_key, front_proxy_ca_crt, front_proxy_ca_key, etcd_ca_crt, etcd_ca_key, sa_key, sa_pub }
//!   load_balancer:                # optional, masters; every key has a default
//!     mode: host                  # host | static-pods
//!     virtual_router_id: 51       # 1-255; default derived from VIP + masters
//!     priority: 100               # default 100/90/80... by place in `masters`
//!     advert_interval_ms: 1000    # not whole seconds: VRRPv3, no auth
//!     unicast: true
//!     preempt_delay_s: 30         # absent: nopreempt
//!     check_interval_s: 1         # track script (TCP connect to haproxy)
//!     check_fall: 2
//!     check_rise: 2
//!     backend_inter_ms: 1000      # haproxy apiserver checks
//!     backend_fall: 2
//!     backend_rise: 2
//!     connect_timeout_ms: 1000    # haproxy timeout connect (and check TLS handshake)
//!     health_path: /healthz       # /healthz | /readyz
//!     verify_apiserver_ca: false  # true: check against secrets.ca.ca_crt
//!     apiserver_port: 6443
//!     stats_port: 8404            # 127.0.0.1 only; absent: no stats
//!   kubeadm:                      # optional
//!     skip_phases: [addon/coredns]  # init/join phases to skip (1.22+)
//!     control_plane_timeout: 4m0s # kubeadm init's wait for the control plane
//!     discovery_timeout: 5m0s     # kubeadm join's wait for cluster-info
//!     attempts: 3                 # kubeadm init/join attempts (1-20)
//!     image_pull_policy: Never    # Always | IfNotPresent | Never (baked images)
//!     extra_args:                 # control-plane flags, per component
//!       etcd: {heartbeat-interval: "500", election-timeout: "5000"}
//!       api_server: {}            # also controller_manager, scheduler
//!     feature_gates: {EtcdLearnerMode: true}  # kubeadm's (1.27/1.28: on by default here)
//!     patches:                    # kubeadm patches, applied in order (1.22+)
//!       - { target: etcd, type: strategic, patch: "spec: {...}" }
//!   state_disk: /dev/vdb          # optional; PXE nodes: keeps kubeadm's state on reboot
//! ```
//!
//! See [`load_balancer`] for the failover trade-off.
//!
//! The local override file ([`crate::layout::LOCAL_METADATA`]) is one YAML
//! mapping holding both: `instance-id`, `local-hostname` and `nodebake`.
//!
//! Unknown keys inside `nodebake` are errors. Validation is all or nothing:
//! [`NodeConfig::from_parts`] either returns a config every field of which
//! was checked, or every problem found, each naming its field.

pub mod load_balancer;
mod net;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use load_balancer::{LoadBalancer, LoadBalancerMode, LoadBalancerSettings, Preempt};
pub use net::Ipv4Cidr;

use crate::profile::Role;

/// Version of the `nodebake` settings schema this crate reads and writes.
pub const NODE_SCHEMA_VERSION: u32 = 1;

/// The top-level `user-data` key that holds [`NodeSettings`].
pub const USER_DATA_KEY: &str = "nodebake";

/// NoCloud `meta-data`: the machine's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaData {
    /// Instance id; a change means "new machine" to cloud-init.
    #[serde(rename = "instance-id")]
    pub instance_id: String,
    /// The node's hostname (and Kubernetes node name).
    #[serde(rename = "local-hostname")]
    pub local_hostname: String,
}

/// A string that never shows up in logs: `Debug` and `Display` print
/// `<redacted>`; serialisation writes the value; a parse error never
/// repeats the value it refused.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom("a secret must be a string (value not shown)"))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a string (value not shown)"))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a string (value not shown)"))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom("a secret must be a string (value not shown)"))
            }
        }
        d.deserialize_any(V)
    }
}

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Control-plane endpoint as written in metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSettings {
    /// DNS name kubeadm and kubelets use (`master.k8s.io`).
    pub dns_name: String,
    /// Virtual IP held by keepalived.
    pub vip: String,
    /// Port haproxy listens on (the seed uses 16443).
    pub port: u16,
}

/// A cluster member as written in metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSettings {
    /// Hostname and node name.
    pub name: String,
    /// Node IP.
    pub ip: String,
}

/// Shared cluster CA material, given to masters so that every master,
/// including one rebuilt later, installs the same PKI. PEM text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaMaterial {
    /// Cluster CA certificate.
    pub ca_crt: String,
    /// Cluster CA key.
    pub ca_key: Secret,
    /// Front-proxy CA certificate.
    pub front_proxy_ca_crt: String,
    /// Front-proxy CA key.
    pub front_proxy_ca_key: Secret,
    /// etcd CA certificate.
    pub etcd_ca_crt: String,
    /// etcd CA key.
    pub etcd_ca_key: Secret,
    /// Service-account signing key.
    pub sa_key: Secret,
    /// Service-account public key.
    pub sa_pub: String,
}

/// Cluster secrets as written in metadata. Which are required depends on
/// the role; see [`NodeConfig::from_parts`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSettings {
    /// kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token: Option<Secret>,
    /// Discovery hash `sha256:<hex>` of the cluster CA's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_hash: Option<String>,
    /// kubeadm certificate key (64 hex) for `--upload-certs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<Secret>,
    /// keepalived VRRP authentication password (1–8 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_password: Option<Secret>,
    /// Shared CA material for masters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaMaterial>,
}

/// The `nodebake` mapping of `user-data`, exactly as written (strings are
/// checked by validation, not by parsing, so errors can name the field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Must be [`NODE_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `master` or `worker`.
    pub role: String,
    /// Name of the master that initialises the cluster.
    pub initialiser: String,
    /// This node's address with prefix (`192.168.147.141/24`).
    pub node_ip: String,
    /// Interface carrying `node_ip` (and the VIP on masters).
    pub interface: String,
    /// Cluster name.
    #[serde(default = "default_cluster_name")]
    pub cluster_name: String,
    /// Kubernetes version (`1.20.0`, optional leading `v`).
    pub kubernetes_version: String,
    /// Control-plane endpoint.
    pub control_plane_endpoint: EndpointSettings,
    /// Every master.
    pub masters: Vec<MemberSettings>,
    /// Every worker.
    #[serde(default)]
    pub workers: Vec<MemberSettings>,
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
    /// CNI name (`flannel`, `calico`, ...).
    #[serde(default = "default_cni")]
    pub cni: String,
    /// NTP servers for chrony; empty leaves time sync alone.
    #[serde(default)]
    pub ntp_servers: Vec<String>,
    /// Registry that control-plane images come from.
    #[serde(default = "default_image_repository")]
    pub image_repository: String,
    /// Registry host → mirror URLs, tried in order.
    #[serde(default)]
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// `disable` (stop and disable firewalld) or `open-ports`.
    #[serde(default = "default_firewalld")]
    pub firewalld: String,
    /// Extra kubelet flags without leading dashes (`max-pods: "200"`).
    #[serde(default)]
    pub kubelet_extra_args: BTreeMap<String, String>,
    /// Login accounts (key-only) written by first boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserSettings>,
    /// Role profile name under [`crate::layout::PROFILES_DIR`]; defaults
    /// to the role's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Cluster secrets.
    #[serde(default)]
    pub secrets: SecretSettings,
    /// Masters' VIP and load balancer; defaults when absent.
    #[serde(default, skip_serializing_if = "LoadBalancerSettings::is_default")]
    pub load_balancer: LoadBalancerSettings,
    /// kubeadm choices; defaults when absent.
    #[serde(default, skip_serializing_if = "KubeadmSettings::is_default")]
    pub kubeadm: KubeadmSettings,
    /// The local disk that keeps `/etc/kubernetes`, `/var/lib/etcd` and
    /// `/var/lib/kubelet` across reboots of a PXE (RAM-root) node; absent:
    /// they live in RAM (or on the disk image's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_disk: Option<String>,
}

/// A login account: created when missing (home directory, `/bin/bash`,
/// no password: keys only), its SSH keys where sshd reads them, and with
/// `sudo` a passwordless sudoers rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// Account name (`[a-z_][a-z0-9_-]{0,31}`; `root` gets keys only).
    pub name: String,
    /// OpenSSH public keys (`ssh-ed25519 AAAA... comment`), at least one.
    pub ssh_authorized_keys: Vec<String>,
    /// Passwordless sudo.
    #[serde(default)]
    pub sudo: bool,
}

/// `nodebake.kubeadm`: choices passed to kubeadm itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeadmSettings {
    /// kubeadm phases to skip (`addon/coredns` where no CoreDNS image can
    /// be had); each goes to the init or join configuration that has it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_phases: Vec<String>,
    /// How long `kubeadm init` waits for the control plane to come up (Go
    /// duration; kubeadm's default is 4m0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_timeout: Option<String>,
    /// How long `kubeadm join` waits for the endpoint's cluster-info
    /// (Go duration; kubeadm's default is 5m0s): `discovery.timeout`,
    /// v1beta4 `timeouts.discovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_timeout: Option<String>,
    /// How many times the agent runs `kubeadm init` / `join` (with
    /// `kubeadm reset -f` between) before first boot fails; default 3.
    /// Raise it where the control plane answers slowly (kubeadm's own API
    /// and etcd call timeouts of 10 s and 2 s are fixed before 1.31).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// kubeadm's image pull policy (`Always`, `IfNotPresent`, `Never`;
    /// kubeadm's default `IfNotPresent`). `Never` for nodes whose images
    /// are baked: kubeadm's preflight then pulls nothing (not even the
    /// images of skipped addons, which kubeadm 1.28 still pulls), and the
    /// agent itself checks, before kubeadm runs, that every image the node
    /// will run is in containerd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Extra flags of the control-plane components kubeadm writes static
    /// pods for (`ClusterConfiguration` `etcd.local.extraArgs`,
    /// `apiServer.extraArgs`, `controllerManager.extraArgs`,
    /// `scheduler.extraArgs`): for example etcd's `heartbeat-interval` and
    /// `election-timeout` on slow disks or links.
    #[serde(default, skip_serializing_if = "ComponentArgs::is_empty")]
    pub extra_args: ComponentArgs,
    /// kubeadm feature gates (`ClusterConfiguration.featureGates`). On
    /// Kubernetes 1.27 and 1.28 `EtcdLearnerMode` is on unless set here:
    /// a joining master's etcd member is added as a learner, so a member
    /// add that times out (and succeeds later) cannot cost the cluster
    /// its quorum; kubeadm turns it on itself from 1.29.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
    /// kubeadm patches (`patches.directory` of the init and join
    /// configurations, Kubernetes 1.22+): changes to the static pod
    /// manifests kubeadm writes (probes, resources, volumes: what no flag
    /// sets) or, from 1.25, to the kubelet configuration. Applied by
    /// kubeadm in this order on every master it writes them for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<KubeadmPatch>,
}

/// One kubeadm patch: written by the agent as
/// `<target><NN>+<type>.yaml` into the patches directory kubeadm reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeadmPatch {
    /// What it patches: one of [`KUBEADM_PATCH_TARGETS`].
    pub target: String,
    /// `strategic` (default), `merge` or `json` (RFC 6902: a list of
    /// operations).
    #[serde(rename = "type", default = "default_patch_type")]
    pub patch_type: String,
    /// The patch itself, a YAML (or JSON) document.
    pub patch: String,
}

fn default_patch_type() -> String {
    "strategic".into()
}

/// kubeadm's patch targets; `kubeletconfiguration` from Kubernetes 1.25.
pub const KUBEADM_PATCH_TARGETS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubeletconfiguration",
];

/// `nodebake.kubeadm.extra_args`: flag name (without dashes) to value, per
/// control-plane component. Given to kubeadm, which writes them into the
/// static pod manifests of every master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentArgs {
    /// etcd (stacked, `etcd.local.extraArgs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub etcd: BTreeMap<String, String>,
    /// kube-apiserver.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub api_server: BTreeMap<String, String>,
    /// kube-controller-manager.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub controller_manager: BTreeMap<String, String>,
    /// kube-scheduler.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scheduler: BTreeMap<String, String>,
}

impl ComponentArgs {
    /// Whether no component has a flag.
    pub fn is_empty(&self) -> bool {
        self.components().iter().all(|(_, m)| m.is_empty())
    }

    /// `(field name, flags)` of every component, in rendering order.
    pub fn components(&self) -> [(&'static str, &BTreeMap<String, String>); 4] {
        [
            ("etcd", &self.etcd),
            ("api_server", &self.api_server),
            ("controller_manager", &self.controller_manager),
            ("scheduler", &self.scheduler),
        ]
    }
}

impl KubeadmSettings {
    /// Whether every field has its default (not written then).
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

/// Phases of `kubeadm init` (1.22 and later) that may be skipped, by
/// top-level name (a sub-phase such as `addon/coredns` belongs to its
/// top-level phase).
pub const KUBEADM_INIT_PHASES: &[&str] = &[
    "preflight",
    "certs",
    "kubeconfig",
    "etcd",
    "control-plane",
    "kubelet-start",
    "upload-config",
    "upload-certs",
    "mark-control-plane",
    "bootstrap-token",
    "kubelet-finalize",
    "addon",
];

/// Phases of `kubeadm join` that may be skipped, by top-level name.
pub const KUBEADM_JOIN_PHASES: &[&str] = &[
    "preflight",
    "control-plane-prepare",
    "kubelet-start",
    "control-plane-join",
];

/// The top-level phase of `phase` (`addon` for `addon/coredns`).
pub fn kubeadm_phase_root(phase: &str) -> &str {
    phase.split('/').next().unwrap_or(phase)
}

fn default_cluster_name() -> String {
    "kubernetes".into()
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
fn default_image_repository() -> String {
    "registry.k8s.io".into()
}
fn default_firewalld() -> String {
    "disable".into()
}

/// kube-proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeProxyMode {
    /// iptables rules.
    Iptables,
    /// IPVS (needs the `ip_vs*` modules).
    Ipvs,
}

/// What to do with firewalld when it is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirewalldPolicy {
    /// Stop and disable it.
    Disable,
    /// Keep it and open the role's Kubernetes ports.
    OpenPorts,
}

/// A Kubernetes release version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Major version (1).
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A validated cluster member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Hostname and node name.
    pub name: String,
    /// Node IP.
    pub ip: Ipv4Addr,
}

/// Validated control-plane endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// DNS name.
    pub dns_name: String,
    /// Virtual IP.
    pub vip: Ipv4Addr,
    /// Load-balancer port.
    pub port: u16,
}

/// Validated secrets; presence was checked for the node's role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Bootstrap token (always present).
    pub bootstrap_token: Secret,
    /// Discovery hash (required for joins).
    pub ca_cert_hash: Option<String>,
    /// Certificate key.
    pub certificate_key: Option<Secret>,
    /// VRRP password (required on masters).
    pub vrrp_password: Option<Secret>,
    /// Shared CA material.
    pub ca: Option<CaMaterial>,
}

/// The validated node configuration: everything the agent needs to make
/// this machine the node its metadata describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Instance id from meta-data.
    pub instance_id: String,
    /// Hostname (RFC 1123, lower case).
    pub hostname: String,
    /// Role.
    pub role: Role,
    /// Name of the initialising master.
    pub initialiser: String,
    /// This node's address and prefix.
    pub node_ip: Ipv4Cidr,
    /// Interface carrying the node IP.
    pub interface: String,
    /// Cluster name.
    pub cluster_name: String,
    /// Kubernetes version.
    pub kubernetes_version: KubeVersion,
    /// Control-plane endpoint.
    pub endpoint: Endpoint,
    /// Every master, in metadata order.
    pub masters: Vec<Member>,
    /// Every worker, in metadata order.
    pub workers: Vec<Member>,
    /// Pod CIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Service CIDR.
    pub service_cidr: Ipv4Cidr,
    /// DNS domain.
    pub dns_domain: String,
    /// kube-proxy mode.
    pub kube_proxy_mode: KubeProxyMode,
    /// CNI name.
    pub cni: String,
    /// NTP servers.
    pub ntp_servers: Vec<String>,
    /// Image repository.
    pub image_repository: String,
    /// Registry mirrors.
    pub registry_mirrors: BTreeMap<String, Vec<String>>,
    /// firewalld policy.
    pub firewalld: FirewalldPolicy,
    /// Extra kubelet args (without dashes).
    pub kubelet_extra_args: BTreeMap<String, String>,
    /// Login accounts.
    pub users: Vec<UserSettings>,
    /// Role profile name.
    pub profile: String,
    /// Secrets.
    pub secrets: Secrets,
    /// Load balancer settings (used on masters).
    pub load_balancer: LoadBalancer,
    /// kubeadm choices (validated phase names and timeout).
    pub kubeadm: KubeadmSettings,
    /// The state disk (`/dev/...`) the node must have mounted before it
    /// touches kubeadm's state; see [`crate::state_disk`].
    pub state_disk: Option<String>,
    /// Problems that do not stop the node (e.g. an even number of
    /// masters), each naming its field.
    pub warnings: Vec<FieldError>,
}

impl NodeConfig {
    /// Whether this node is the master that runs `kubeadm init`.
    pub fn is_initialiser(&self) -> bool {
        self.role == Role::Master && self.hostname == self.initialiser
    }

    /// Every member, masters first.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.masters.iter().chain(self.workers.iter())
    }

    /// Validates `meta` and `settings` together. All or nothing: every
    /// problem found is returned, each naming its field.
    pub fn from_parts(meta: &MetaData, settings: &NodeSettings) -> Result<Self, NodeError> {
        validate::validate(meta, settings).map_err(NodeError::Invalid)
    }

    /// Parses and validates NoCloud `meta-data` and `user-data` texts.
    pub fn from_nocloud(meta_data: &str, user_data: &str) -> Result<Self, NodeError> {
        let meta = parse_meta_data(meta_data)?;
        let settings = parse_user_data(user_data)?;
        Self::from_parts(&meta, &settings)
    }

    /// Parses and validates the local override file: one mapping with
    /// `instance-id`, `local-hostname` and `nodebake`.
    pub fn from_local_file(text: &str) -> Result<Self, NodeError> {
        let meta = parse_meta_data(text)?;
        let settings = parse_user_data(text)?;
        Self::from_parts(&meta, &settings)
    }
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted field path, e.g. `nodebake.pod_cidr`.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field `{}`: {}", self.field, self.reason)
    }
}

/// Why node metadata was refused.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A document did not parse (bad YAML, unknown field, wrong type).
    #[error("{document}: {message}")]
    Parse {
        /// `meta-data` or `user-data`.
        document: &'static str,
        /// Parser message (names the field where the parser knows it).
        message: String,
    },
    /// Values parsed but are not acceptable.
    #[error("invalid node metadata: {}", join_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn join_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Parses NoCloud `meta-data` (other cloud-init keys are ignored).
pub fn parse_meta_data(text: &str) -> Result<MetaData, NodeError> {
    serde_yaml::from_str(text).map_err(|e| NodeError::Parse {
        document: "meta-data",
        message: e.to_string(),
    })
}

/// Parses the `nodebake` mapping out of `user-data` (other top-level keys
/// are ignored; unknown keys inside `nodebake` are errors).
pub fn parse_user_data(text: &str) -> Result<NodeSettings, NodeError> {
    let err = |message: String| NodeError::Parse {
        document: "user-data",
        message,
    };
    /// The whole document: other top-level keys (cloud-config) ignored.
    #[derive(Deserialize)]
    struct UserData {
        nodebake: Option<NodeSettings>,
    }
    let doc: UserData = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
    doc.nodebake
        .ok_or_else(|| err(format!("no top-level `{USER_DATA_KEY}` key")))
}

/// Renders `user-data` for `settings` (`#cloud-config` header, then the
/// `nodebake` mapping). The builder's inventory command writes this.
pub fn render_user_data(settings: &NodeSettings) -> String {
    let mut doc = BTreeMap::new();
    doc.insert(USER_DATA_KEY, settings);
    let body = serde_yaml::to_string(&doc).expect("node settings always serialise");
    format!("#cloud-config\n{body}")
}

/// Renders NoCloud `meta-data` for `meta` (`instance-id`,
/// `local-hostname`). The builder's inventory command writes this.
pub fn render_meta_data(meta: &MetaData) -> String {
    serde_yaml::to_string(meta).expect("meta-data always serialises")
}

#[cfg(test)]
mod tests;
