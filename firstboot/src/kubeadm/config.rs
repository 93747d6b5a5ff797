//! Renders the kubeadm configuration a node uses: `InitConfiguration` +
//! `ClusterConfiguration` + `KubeletConfiguration` + `KubeProxyConfiguration`
//! on the initialiser, `JoinConfiguration` on every other node.
//!
//! The kubeadm API follows the Kubernetes version: `kubeadm.k8s.io/v1beta2`
//! for 1.15–1.21, `v1beta3` for 1.22–1.30, `v1beta4` for 1.31 and later.
//! Only fields of the published types are written (v1beta4: `extraArgs` and
//! `kubeletExtraArgs` are lists of `{name, value}`). The output holds the
//! bootstrap token and, on the upload-certs path, the certificate key: it
//! is written 0600 and printed only on request, never logged.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{bail, Context, Result};
use nodebake_contract::node::{
    kubeadm_phase_root, KubeProxyMode, KubeVersion, NodeConfig, KUBEADM_INIT_PHASES,
    KUBEADM_JOIN_PHASES,
};
use nodebake_contract::profile::{Role, RoleProfile};
use serde_yaml::{Mapping, Value};

use super::discovery::ca_cert_hash_from_pem;

/// The group kubeadm gives node bootstrap tokens.
pub const TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// Default TTL of the pre-generated bootstrap token.
pub const DEFAULT_TOKEN_TTL: &str = "24h0m0s";

/// A kubeadm configuration API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KubeadmApi {
    /// `kubeadm.k8s.io/v1beta2` (Kubernetes 1.15–1.21).
    V1beta2,
    /// `kubeadm.k8s.io/v1beta3` (Kubernetes 1.22–1.30).
    V1beta3,
    /// `kubeadm.k8s.io/v1beta4` (Kubernetes 1.31+).
    V1beta4,
}

impl KubeadmApi {
    /// The API for `v`; other versions are refused.
    pub fn for_version(v: KubeVersion) -> Result<Self> {
        match (v.major, v.minor) {
            (1, 15..=21) => Ok(Self::V1beta2),
            (1, 22..=30) => Ok(Self::V1beta3),
            (1, m) if m >= 31 => Ok(Self::V1beta4),
            _ => bail!(
                "field `nodebake.kubernetes_version`: Kubernetes {v} is not supported: \
                 kubeadm configuration is rendered for 1.15–1.21 (v1beta2), 1.22–1.30 (v1beta3) \
                 and 1.31+ (v1beta4)"
            ),
        }
    }

    /// `apiVersion` value.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1beta2 => "kubeadm.k8s.io/v1beta2",
            Self::V1beta3 => "kubeadm.k8s.io/v1beta3",
            Self::V1beta4 => "kubeadm.k8s.io/v1beta4",
        }
    }

    /// containerd's CRI socket as this API spells it (v1beta3+: URL).
    fn cri_socket(self) -> &'static str {
        match self {
            Self::V1beta2 => "/run/containerd/containerd.sock",
            _ => "unix:///run/containerd/containerd.sock",
        }
    }

    /// A flag map: a mapping before v1beta4, a `{name, value}` list after.
    fn args(self, args: &[(&str, String)]) -> Value {
        match self {
            Self::V1beta4 => Value::Sequence(
                args.iter()
                    .map(|(k, v)| map(&[("name", s(k)), ("value", s(v))]))
                    .collect(),
            ),
            _ => map(&args
                .iter()
                .map(|(k, v)| (*k, s(v)))
                .collect::<Vec<(&str, Value)>>()),
        }
    }
}

/// How this node becomes part of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JoinPath {
    /// `kubeadm init` (the initialiser on a fresh cluster).
    Init,
    /// `kubeadm join` with `controlPlane` (other masters; a rebuilt
    /// initialiser when the cluster already answers).
    ControlPlaneJoin,
    /// `kubeadm join` as a worker.
    WorkerJoin,
}

impl JoinPath {
    /// The path for `node` on a fresh cluster.
    pub fn for_node(node: &NodeConfig) -> Self {
        match node.role {
            Role::Master if node.is_initialiser() => Self::Init,
            Role::Master => Self::ControlPlaneJoin,
            Role::Worker => Self::WorkerJoin,
        }
    }
}

impl fmt::Display for JoinPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Init => "init",
            Self::ControlPlaneJoin => "control-plane join",
            Self::WorkerJoin => "worker join",
        })
    }
}

/// One line for `plan`: the path and what it does.
pub fn join_path_summary(node: &NodeConfig) -> String {
    let certs = if uses_shared_ca(node) {
        "shared CA material in /etc/kubernetes/pki"
    } else {
        "--upload-certs with the certificate key"
    };
    match JoinPath::for_node(node) {
        JoinPath::Init => format!(
            "init (kubeadm init, {certs}; CNI; bootstrap token kept) — or, when {ep} already \
             answers (a rebuilt initialiser), control-plane join with the rebuild steps",
            ep = endpoint(node)
        ),
        JoinPath::ControlPlaneJoin => format!(
            "control-plane join (wait for {ep}, {certs}; before each attempt: remove the etcd \
             member with this node's peer URL, wait for the earlier masters and a healthy etcd, \
             delete a NotReady or lease-less Node of this name; kubeadm join; on failure kubeadm \
             reset -f and retry; a Ready Node of this name is waited out)",
            ep = endpoint(node)
        ),
        JoinPath::WorkerJoin => format!(
            "worker join (wait for {ep}, kubeadm join with token + discovery hash; \
             on failure kubeadm reset -f and retry; a Ready Node of this name is waited out)",
            ep = endpoint(node)
        ),
    }
}

/// Choices that are not in the node metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// Join path to render for.
    pub path: JoinPath,
    /// TTL of the pre-generated bootstrap token (Go duration).
    pub token_ttl: String,
    /// The directory kubeadm reads the node's patches from
    /// ([`PATCHES_DIR`] on a node; elsewhere to try them out).
    pub patches_dir: String,
}

impl RenderOptions {
    /// Defaults for `node`: its fresh-cluster path, the default TTL.
    pub fn for_node(node: &NodeConfig) -> Self {
        Self {
            path: JoinPath::for_node(node),
            token_ttl: DEFAULT_TOKEN_TTL.into(),
            patches_dir: PATCHES_DIR.into(),
        }
    }

    /// Defaults for `node`, with the token TTL the role profile asks for.
    pub fn from_profile(node: &NodeConfig, profile: &RoleProfile) -> Self {
        Self {
            path: JoinPath::for_node(node),
            token_ttl: profile
                .bootstrap_token_ttl
                .clone()
                .unwrap_or_else(|| DEFAULT_TOKEN_TTL.into()),
            patches_dir: PATCHES_DIR.into(),
        }
    }
}

/// Where the agent writes the inventory's kubeadm patches on a node.
pub const PATCHES_DIR: &str = "/etc/nodebake/kubeadm-patches";

/// The node's kubeadm patches as `(file name, content)`, in the order
/// kubeadm applies them (it sorts by name): `<target><NN>+<type>.yaml`,
/// `NN` the patch's place in the inventory.
pub fn patch_files(node: &NodeConfig) -> Vec<(String, String)> {
    node.kubeadm
        .patches
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut body = p.patch.clone();
            if !body.ends_with('\n') {
                body.push('\n');
            }
            (format!("{}{i:02}+{}.yaml", p.target, p.patch_type), body)
        })
        .collect()
}

/// `patches`: the directory, when the node has any.
fn patches(node: &NodeConfig, o: &RenderOptions) -> Option<Value> {
    (!node.kubeadm.patches.is_empty()).then(|| map(&[("directory", s(&o.patches_dir))]))
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn map(entries: &[(&str, Value)]) -> Value {
    let mut m = Mapping::new();
    for (k, v) in entries {
        m.insert(s(k), v.clone());
    }
    Value::Mapping(m)
}

fn strings<I: IntoIterator<Item = String>>(items: I) -> Value {
    Value::Sequence(items.into_iter().map(Value::String).collect())
}

/// Whether masters install shared CA material (else `--upload-certs` and
/// the certificate key carry the certificates).
pub fn uses_shared_ca(node: &NodeConfig) -> bool {
    node.secrets.ca.is_some()
}

/// `apiServer.certSANs`: every master name and IP, the VIP, the endpoint
/// DNS name and 127.0.0.1, without duplicates, in that order.
pub fn cert_sans(node: &NodeConfig) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: String| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    for m in &node.masters {
        add(m.name.clone());
        add(m.ip.to_string());
    }
    add(node.endpoint.vip.to_string());
    add(node.endpoint.dns_name.clone());
    add("127.0.0.1".into());
    out
}

/// `controlPlaneEndpoint` / discovery endpoint: `dns_name:port`.
pub fn endpoint(node: &NodeConfig) -> String {
    format!("{}:{}", node.endpoint.dns_name, node.endpoint.port)
}

/// The discovery hash joins pin: computed from the CA certificate when
/// the node has it (and checked against `ca_cert_hash` when both are
/// given), else `secrets.ca_cert_hash`.
pub fn discovery_hash(node: &NodeConfig) -> Result<String> {
    let given = node.secrets.ca_cert_hash.clone();
    match &node.secrets.ca {
        Some(ca) => {
            let computed =
                ca_cert_hash_from_pem(&ca.ca_crt).context("field `nodebake.secrets.ca.ca_crt`")?;
            if let Some(g) = given {
                if !g.eq_ignore_ascii_case(&computed) {
                    bail!(
                        "field `nodebake.secrets.ca_cert_hash`: does not match the CA in \
                         `nodebake.secrets.ca.ca_crt` ({computed})"
                    );
                }
            }
            Ok(computed)
        }
        None => given.context(
            "field `nodebake.secrets.ca_cert_hash`: missing (a join needs the discovery hash)",
        ),
    }
}

/// Checks a Go duration as kubeadm's `ttl` takes it (`24h`, `1h30m`, `0s`).
pub fn check_token_ttl(ttl: &str) -> Result<()> {
    if !nodebake_contract::profile::is_go_duration(ttl) {
        bail!("bootstrap token TTL `{ttl}` is not a duration like 24h, 1h30m or 0s");
    }
    Ok(())
}

fn node_registration(api: KubeadmApi, node: &NodeConfig) -> Value {
    let mut e = vec![
        ("name", s(&node.hostname)),
        ("criSocket", s(api.cri_socket())),
        (
            "kubeletExtraArgs",
            api.args(&[("node-ip", node.node_ip.addr.to_string())]),
        ),
    ];
    if let Some(p) = &node.kubeadm.image_pull_policy {
        e.push(("imagePullPolicy", s(p)));
    }
    map(&e)
}

fn local_api_endpoint(node: &NodeConfig) -> Value {
    map(&[
        ("advertiseAddress", s(&node.node_ip.addr.to_string())),
        (
            "bindPort",
            Value::Number(node.load_balancer.apiserver_port.into()),
        ),
    ])
}

fn init_configuration(api: KubeadmApi, node: &NodeConfig, o: &RenderOptions) -> Value {
    let token = map(&[
        ("token", s(node.secrets.bootstrap_token.expose())),
        (
            "description",
            s("nodebake pre-generated bootstrap token (joins and rebuilds)"),
        ),
        ("ttl", s(&o.token_ttl)),
        (
            "usages",
            strings(["signing".into(), "authentication".into()]),
        ),
        ("groups", strings([TOKEN_GROUP.to_string()])),
    ]);
    let mut e = vec![
        ("apiVersion", s(api.api_version())),
        ("kind", s("InitConfiguration")),
        ("bootstrapTokens", Value::Sequence(vec![token])),
        ("nodeRegistration", node_registration(api, node)),
        ("localAPIEndpoint", local_api_endpoint(node)),
    ];
    if let (false, Some(k)) = (uses_shared_ca(node), &node.secrets.certificate_key) {
        e.push(("certificateKey", s(k.expose())));
    }
    if let Some(p) = skip_phases(node, KUBEADM_INIT_PHASES) {
        e.push(("skipPhases", p));
    }
    if let Some(p) = patches(node, o) {
        e.push(("patches", p));
    }
    if let (KubeadmApi::V1beta4, Some(t)) = (api, &node.kubeadm.control_plane_timeout) {
        e.push((
            "timeouts",
            map(&[("controlPlaneComponentHealthCheck", s(t))]),
        ));
    }
    map(&e)
}

/// The `skip_phases` of `node` that `phases` (init's or join's) knows.
fn skip_phases(node: &NodeConfig, phases: &[&str]) -> Option<Value> {
    let mine: Vec<String> = node
        .kubeadm
        .skip_phases
        .iter()
        .filter(|p| phases.contains(&kubeadm_phase_root(p)))
        .cloned()
        .collect();
    (!mine.is_empty()).then(|| strings(mine))
}

/// `apiServer`: the SANs, and before v1beta4 kubeadm's wait for the
/// control plane.
fn api_server(api: KubeadmApi, node: &NodeConfig) -> Value {
    let mut e = vec![("certSANs", strings(cert_sans(node)))];
    if let Some(a) = extra_args(api, &node.kubeadm.extra_args.api_server) {
        e.push(("extraArgs", a));
    }
    if let (false, Some(t)) = (
        api == KubeadmApi::V1beta4,
        &node.kubeadm.control_plane_timeout,
    ) {
        e.push(("timeoutForControlPlane", s(t)));
    }
    map(&e)
}

/// `extraArgs` of a component, absent when it has none.
fn extra_args(api: KubeadmApi, flags: &BTreeMap<String, String>) -> Option<Value> {
    let flags: Vec<(&str, String)> = flags.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    (!flags.is_empty()).then(|| api.args(&flags))
}

/// `featureGates`: the inventory's, and on Kubernetes 1.27 and 1.28
/// `EtcdLearnerMode` unless the inventory sets it. Without it kubeadm adds
/// a joining master as a voting etcd member: when that add times out on
/// the client (2 s in kubeadm 1.28) but commits, the cluster counts a
/// member that never starts, loses quorum, and every later step (and the
/// API) fails. As a learner the new member does not count until kubeadm
/// promotes it once it has caught up. kubeadm 1.29 turns it on itself.
pub fn feature_gates(node: &NodeConfig) -> BTreeMap<String, bool> {
    let mut g = node.kubeadm.feature_gates.clone();
    let v = node.kubernetes_version;
    if (v.major, v.minor) == (1, 27) || (v.major, v.minor) == (1, 28) {
        g.entry("EtcdLearnerMode".into()).or_insert(true);
    }
    g
}

fn cluster_configuration(api: KubeadmApi, node: &NodeConfig) -> Value {
    let x = &node.kubeadm.extra_args;
    let mut e = vec![
        ("apiVersion", s(api.api_version())),
        ("kind", s("ClusterConfiguration")),
        ("clusterName", s(&node.cluster_name)),
        (
            "kubernetesVersion",
            s(&format!("v{}", node.kubernetes_version)),
        ),
        ("controlPlaneEndpoint", s(&endpoint(node))),
        ("imageRepository", s(&node.image_repository)),
        ("apiServer", api_server(api, node)),
        (
            "networking",
            map(&[
                ("dnsDomain", s(&node.dns_domain)),
                ("podSubnet", s(&node.pod_cidr.to_string())),
                ("serviceSubnet", s(&node.service_cidr.to_string())),
            ]),
        ),
    ];
    let gates = feature_gates(node);
    if !gates.is_empty() {
        e.push((
            "featureGates",
            Value::Mapping(
                gates
                    .into_iter()
                    .map(|(k, v)| (Value::String(k), Value::Bool(v)))
                    .collect(),
            ),
        ));
    }
    if let Some(a) = extra_args(api, &x.etcd) {
        e.push(("etcd", map(&[("local", map(&[("extraArgs", a)]))])));
    }
    if let Some(a) = extra_args(api, &x.controller_manager) {
        e.push(("controllerManager", map(&[("extraArgs", a)])));
    }
    if let Some(a) = extra_args(api, &x.scheduler) {
        e.push(("scheduler", map(&[("extraArgs", a)])));
    }
    map(&e)
}

fn kubelet_configuration() -> Value {
    map(&[
        ("apiVersion", s("kubelet.config.k8s.io/v1beta1")),
        ("kind", s("KubeletConfiguration")),
        ("cgroupDriver", s("systemd")),
    ])
}

fn kube_proxy_configuration(node: &NodeConfig) -> Value {
    let mut e = vec![
        ("apiVersion", s("kubeproxy.config.k8s.io/v1alpha1")),
        ("kind", s("KubeProxyConfiguration")),
    ];
    match node.kube_proxy_mode {
        KubeProxyMode::Ipvs => {
            e.push(("mode", s("ipvs")));
            e.push(("ipvs", map(&[("strictARP", Value::Bool(true))])));
        }
        KubeProxyMode::Iptables => e.push(("mode", s("iptables"))),
    }
    map(&e)
}

fn join_configuration(
    api: KubeadmApi,
    node: &NodeConfig,
    o: &RenderOptions,
    control_plane: bool,
) -> Result<Value> {
    let bootstrap = map(&[
        ("apiServerEndpoint", s(&endpoint(node))),
        ("token", s(node.secrets.bootstrap_token.expose())),
        ("caCertHashes", strings([discovery_hash(node)?])),
    ]);
    let mut discovery = vec![("bootstrapToken", bootstrap)];
    // kubeadm's wait for the cluster-info of the endpoint (default 5m0s):
    // `discovery.timeout`, v1beta4 `timeouts.discovery`.
    let discovery_timeout = node.kubeadm.discovery_timeout.as_ref();
    if let (false, Some(t)) = (api == KubeadmApi::V1beta4, discovery_timeout) {
        discovery.push(("timeout", s(t)));
    }
    let mut e = vec![
        ("apiVersion", s(api.api_version())),
        ("kind", s("JoinConfiguration")),
        ("nodeRegistration", node_registration(api, node)),
        ("discovery", map(&discovery)),
    ];
    if let Some(p) = skip_phases(node, KUBEADM_JOIN_PHASES) {
        e.push(("skipPhases", p));
    }
    if let Some(p) = patches(node, o) {
        e.push(("patches", p));
    }
    if let (true, Some(t)) = (api == KubeadmApi::V1beta4, discovery_timeout) {
        e.push(("timeouts", map(&[("discovery", s(t))])));
    }
    if control_plane {
        let mut cp = vec![("localAPIEndpoint", local_api_endpoint(node))];
        if !uses_shared_ca(node) {
            let key = node.secrets.certificate_key.as_ref().context(
                "field `nodebake.secrets.certificate_key`: missing (a control-plane join \
                 without `secrets.ca` needs it)",
            )?;
            cp.push(("certificateKey", s(key.expose())));
        }
        e.push(("controlPlane", map(&cp)));
    }
    Ok(map(&e))
}

/// The documents for `o.path`, in order.
pub fn documents(node: &NodeConfig, o: &RenderOptions) -> Result<Vec<Value>> {
    let api = KubeadmApi::for_version(node.kubernetes_version)?;
    check_token_ttl(&o.token_ttl)?;
    if api == KubeadmApi::V1beta2 {
        for (set, field, what) in [
            (
                !node.kubeadm.skip_phases.is_empty(),
                "skip_phases",
                "skipPhases",
            ),
            (
                node.kubeadm.image_pull_policy.is_some(),
                "image_pull_policy",
                "imagePullPolicy",
            ),
            (!node.kubeadm.patches.is_empty(), "patches", "patches"),
        ] {
            if set {
                bail!(
                    "field `nodebake.kubeadm.{field}`: kubeadm.k8s.io/v1beta2 (Kubernetes {}) has \
                     no {what}; it needs Kubernetes 1.22 or later",
                    node.kubernetes_version
                );
            }
        }
    }
    if o.path != JoinPath::WorkerJoin && node.role != Role::Master {
        bail!("a worker cannot take the {} path", o.path);
    }
    Ok(match o.path {
        JoinPath::Init => vec![
            init_configuration(api, node, o),
            cluster_configuration(api, node),
            kubelet_configuration(),
            kube_proxy_configuration(node),
        ],
        JoinPath::ControlPlaneJoin => vec![join_configuration(api, node, o, true)?],
        JoinPath::WorkerJoin => vec![join_configuration(api, node, o, false)?],
    })
}

/// The multi-document YAML kubeadm reads with `--config`. Holds secrets:
/// write it 0600, never log it.
pub fn render_kubeadm_config(node: &NodeConfig, o: &RenderOptions) -> Result<String> {
    // The comment belongs to the first document: kubeadm refuses a
    // document without `apiVersion`/`kind`, and a comment-only document
    // before the first `---` is one.
    let mut out = String::from(
        "# kubeadm configuration rendered by nodebake-firstboot (holds secrets: keep 0600)\n",
    );
    for (n, d) in documents(node, o)?.iter().enumerate() {
        if n > 0 {
            out.push_str("---\n");
        }
        out.push_str(&crate::yaml::to_string(d));
    }
    Ok(out)
}

/// An `InitConfiguration` holding only the pre-generated bootstrap token,
/// for `kubeadm token create --config` (keeps the token off the command
/// line). Holds a secret: write it 0600.
pub fn render_token_config(node: &NodeConfig, ttl: &str) -> Result<String> {
    let api = KubeadmApi::for_version(node.kubernetes_version)?;
    check_token_ttl(ttl)?;
    let o = RenderOptions {
        path: JoinPath::Init,
        token_ttl: ttl.into(),
        patches_dir: PATCHES_DIR.into(),
    };
    let Value::Mapping(full) = init_configuration(api, node, &o) else {
        unreachable!("init configuration is a mapping");
    };
    let mut m = Mapping::new();
    for k in ["apiVersion", "kind", "bootstrapTokens", "nodeRegistration"] {
        if let Some(v) = full.get(k) {
            m.insert(s(k), v.clone());
        }
    }
    Ok(format!(
        "---\n{}",
        crate::yaml::to_string(&Value::Mapping(m))
    ))
}

#[cfg(test)]
mod tests;
