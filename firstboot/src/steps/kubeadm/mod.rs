//! The self-join steps: kubeadm configuration and shared PKI on disk, then
//! `kubeadm init` on the initialiser or — once the endpoint answers with
//! the cluster CA — `kubeadm join` (control plane or worker), the admin
//! kubeconfig, the CNI manifest, the wait for Ready and the bootstrap
//! token keep-alive. Every command goes through the runner; secrets only
//! travel in 0600 files, never on a command line.

pub mod bridge_cni;
pub mod join;
mod members;
mod post;

use anyhow::Result;
use nodebake_contract::node::NodeConfig;
use nodebake_contract::profile::{Role, RoleProfile};

use crate::kubeadm::config::{
    endpoint, patch_files, render_kubeadm_config, JoinPath, RenderOptions, PATCHES_DIR,
};
use crate::runner::{Cmd, Outcome};
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

pub use join::{KubeadmInit, KubeadmJoin, WaitEndpoint};
pub use members::EtcdMembers;
pub use post::{AdminKubeconfig, BootstrapToken, Cni, NodeReady};

/// The kubeadm configuration file (0600: holds the token).
pub const KUBEADM_CONFIG: &str = "/etc/nodebake/kubeadm.yaml";
/// The token-only configuration for `kubeadm token create` (0600).
pub const TOKEN_CONFIG: &str = "/etc/nodebake/kubeadm-token.yaml";
/// kubeadm's admin kubeconfig.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// The kubelet's kubeconfig, written by init and join.
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
/// The apiserver's static pod, written on control-plane nodes.
pub const APISERVER_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";
/// Where kubeadm keeps certificates.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";

/// The join path for `node` and the kubeadm steps it takes, in order.
pub fn join_steps(node: &NodeConfig, profile: &RoleProfile) -> Vec<Box<dyn Step>> {
    let keep_token = profile.keep_bootstrap_token != Some(false);
    let mut s: Vec<Box<dyn Step>> = match JoinPath::for_node(node) {
        // A rebuilt initialiser joins the cluster that already answers:
        // both kubeadm steps are listed, the recorded decision picks one.
        JoinPath::Init => vec![
            Box::new(Pki),
            Box::new(DecideJoinPath),
            Box::new(KubeadmConfig),
            Box::new(KubeadmInit),
            Box::new(WaitEndpoint),
            Box::new(KubeadmJoin),
            Box::new(AdminKubeconfig),
            Box::new(Cni),
            Box::new(NodeReady),
        ],
        JoinPath::ControlPlaneJoin => vec![
            Box::new(KubeadmConfig),
            Box::new(Pki),
            Box::new(WaitEndpoint),
            Box::new(KubeadmJoin),
            Box::new(AdminKubeconfig),
            Box::new(NodeReady),
        ],
        JoinPath::WorkerJoin => vec![
            Box::new(KubeadmConfig),
            Box::new(WaitEndpoint),
            Box::new(KubeadmJoin),
            Box::new(NodeReady),
        ],
    };
    if node.cni == BRIDGE {
        // Every node writes its own bridge configuration before it can be
        // Ready; there is no manifest to apply.
        s.retain(|st| st.id() != "cni");
        let ready = s
            .iter()
            .position(|st| st.id() == "node-ready")
            .unwrap_or(s.len());
        s.insert(ready, Box::new(bridge_cni::BridgeCni));
    }
    if node.role == Role::Master && keep_token {
        s.push(Box::new(BootstrapToken));
    }
    s
}

/// The `cni` value for the built-in bridge configuration (no manifest).
pub const BRIDGE: &str = "bridge";

/// The real path of `abs` for a command argument (under `--root` in tests).
pub fn arg_path(cx: &Ctx<'_>, abs: &str) -> String {
    cx.root.path(abs).display().to_string()
}

/// `kubeadm <args>`.
pub fn kubeadm<I: IntoIterator<Item = String>>(args: I) -> Cmd {
    Cmd::new("kubeadm", args)
}

/// Whether kubeadm already made this node part of the cluster (its files
/// are there: kubelet.conf, and on masters admin.conf + the apiserver).
pub fn joined(cx: &Ctx<'_>) -> bool {
    let base = cx.root.exists(KUBELET_CONF);
    match cx.node.role {
        Role::Master => base && cx.root.exists(ADMIN_CONF) && cx.root.exists(APISERVER_MANIFEST),
        Role::Worker => base,
    }
}

/// The kubeconfig commands on this node use: admin.conf on masters, the
/// kubelet's on workers.
pub fn kubeconfig(cx: &Ctx<'_>) -> String {
    match cx.node.role {
        Role::Master => arg_path(cx, ADMIN_CONF),
        Role::Worker => arg_path(cx, KUBELET_CONF),
    }
}

/// Standard output of a command that ran; `None` when skipped.
pub fn ran(o: Outcome) -> Option<String> {
    match o {
        Outcome::Ran(s) => Some(s),
        Outcome::Skipped => None,
    }
}

fn render_options(cx: &Ctx<'_>) -> Result<RenderOptions> {
    let mut o = RenderOptions::from_profile(cx.node, cx.profile);
    o.path = effective_path(cx)?;
    Ok(o)
}

/// Where the initialiser records whether it inits or (rebuilt) joins.
pub const JOIN_PATH_FILE: &str = "/var/lib/nodebake/join-path";

/// The path this node takes: the initialiser's recorded decision, else
/// the path its role gives.
pub fn effective_path(cx: &Ctx<'_>) -> Result<JoinPath> {
    let base = JoinPath::for_node(cx.node);
    if base != JoinPath::Init {
        return Ok(base);
    }
    Ok(
        match cx.root.read_opt(JOIN_PATH_FILE)?.as_deref().map(str::trim) {
            Some("control-plane-join") => JoinPath::ControlPlaneJoin,
            _ => JoinPath::Init,
        },
    )
}

/// On the initialiser: `init`, unless the control-plane endpoint already
/// answers (with the cluster CA when the node has it) — then this is a
/// rebuilt initialiser and it joins as a control-plane node instead of
/// starting a second cluster. Decided once and recorded.
pub struct DecideJoinPath;

impl Step for DecideJoinPath {
    fn id(&self) -> &'static str {
        "join-path"
    }

    fn describe(&self) -> &'static str {
        "initialiser: init, or join when the endpoint or another master's etcd/apiserver already answers (rebuilt initialiser)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        Ok(if cx.root.exists(JOIN_PATH_FILE) {
            Vec::new()
        } else {
            vec![Pending::File(format!(
                "decide init or join ({JOIN_PATH_FILE})"
            ))]
        })
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let existing = if joined(cx) {
            None
        } else if join::endpoint_answers(cx, &cx.join.rebuild_probe) {
            Some(format!(
                "the control-plane endpoint {} answers",
                endpoint(cx.node)
            ))
        } else {
            other_master_answers(cx)
        };
        let path = match existing {
            Some(why) => {
                eprintln!(
                    "nodebake-firstboot: {why}: a cluster exists, so this initialiser was rebuilt \
                     and joins it (never a second cluster)"
                );
                "control-plane-join"
            }
            None => "init",
        };
        cx.write(JOIN_PATH_FILE, &format!("{path}\n"), 0o644)?;
        Ok(())
    }
}

/// The first other master that answers on its etcd client or peer port or
/// its apiserver port (a TCP connect, `cx.join.rebuild_probe` rounds):
/// with the VIP down, a running etcd or apiserver on another master still
/// means the cluster exists. Masters of a fresh cluster wait for the
/// endpoint before they start either, so on a first boot nothing answers.
fn other_master_answers(cx: &Ctx<'_>) -> Option<String> {
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let me = cx.node.node_ip.addr;
    let targets: Vec<(String, SocketAddr)> = match &cx.join.peer_targets {
        Some(t) => t.clone(),
        // The masters' real addresses: only from the running system.
        None if !cx.live() => return None,
        None => {
            let ports = [
                ("etcd client", cx.join.etcd_client_port),
                ("etcd peer", cx.join.etcd_peer_port),
                ("apiserver", cx.node.load_balancer.apiserver_port),
            ];
            let others = cx.node.masters.iter().filter(|m| m.ip != me);
            others
                .flat_map(|m| {
                    ports.map(|(what, port)| (format!("{} ({what})", m.name), (m.ip, port).into()))
                })
                .collect()
        }
    };
    let b = &cx.join.rebuild_probe;
    let tries = b.tries.max(1);
    for n in 1..=tries {
        for (who, addr) in &targets {
            if TcpStream::connect_timeout(addr, Duration::from_secs(2)).is_ok() {
                return Some(format!("{who} answers on {addr}"));
            }
        }
        if n < tries {
            std::thread::sleep(b.pause(n));
        }
    }
    None
}

/// Writes the kubeadm configuration for this node's path and the
/// inventory's kubeadm patches (removing patches no longer listed: kubeadm
/// applies every file in the directory).
pub struct KubeadmConfig;

fn config_files(cx: &Ctx<'_>) -> Result<Vec<FileSpec>> {
    let mut f = vec![FileSpec {
        path: KUBEADM_CONFIG.into(),
        content: render_kubeadm_config(cx.node, &render_options(cx)?)?,
        mode: 0o600,
    }];
    for (name, content) in patch_files(cx.node) {
        f.push(FileSpec::new(&format!("{PATCHES_DIR}/{name}"), content));
    }
    Ok(f)
}

/// Files in the patches directory that are not the node's patches.
fn stale_patches(cx: &Ctx<'_>) -> Result<Vec<String>> {
    let mine: Vec<String> = patch_files(cx.node).into_iter().map(|(n, _)| n).collect();
    Ok(cx
        .root
        .list_dir(PATCHES_DIR)?
        .into_iter()
        .filter(|n| !mine.contains(n))
        .map(|n| format!("{PATCHES_DIR}/{n}"))
        .collect())
}

impl Step for KubeadmConfig {
    fn id(&self) -> &'static str {
        "kubeadm-config"
    }

    fn describe(&self) -> &'static str {
        "kubeadm configuration for this node's join path (0600: holds the token) and its patches"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &config_files(cx)?)?;
        for stale in stale_patches(cx)? {
            p.push(Pending::File(format!(
                "remove {stale} (not a patch of this node)"
            )));
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let f = config_files(cx)?;
        for stale in stale_patches(cx)? {
            cx.remove(&stale)?;
        }
        write_files(cx, &f)?;
        Ok(())
    }
}

/// Installs the shared CA material under `/etc/kubernetes/pki` on masters
/// (keys 0600), so kubeadm signs with the cluster's CAs and no master
/// needs the `kubeadm-certs` secret.
pub struct Pki;

/// The CA files for a master with shared CA material; empty otherwise.
pub fn pki_files(node: &NodeConfig) -> Vec<FileSpec> {
    let Some(ca) = node
        .secrets
        .ca
        .as_ref()
        .filter(|_| node.role == Role::Master)
    else {
        return Vec::new();
    };
    let f = |name: &str, content: &str, mode| FileSpec {
        path: format!("{PKI_DIR}/{name}"),
        content: content.to_string(),
        mode,
    };
    vec![
        f("ca.crt", &ca.ca_crt, 0o644),
        f("ca.key", ca.ca_key.expose(), 0o600),
        f("front-proxy-ca.crt", &ca.front_proxy_ca_crt, 0o644),
        f("front-proxy-ca.key", ca.front_proxy_ca_key.expose(), 0o600),
        f("etcd/ca.crt", &ca.etcd_ca_crt, 0o644),
        f("etcd/ca.key", ca.etcd_ca_key.expose(), 0o600),
        f("sa.key", ca.sa_key.expose(), 0o600),
        f("sa.pub", &ca.sa_pub, 0o644),
    ]
}

impl Step for Pki {
    fn id(&self) -> &'static str {
        "pki"
    }

    fn describe(&self) -> &'static str {
        "shared cluster, front-proxy and etcd CAs and service-account keys in /etc/kubernetes/pki (keys 0600)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        pending_files(cx.root, &pki_files(cx.node))
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let files = pki_files(cx.node);
        write_files(cx, &files)?;
        Ok(())
    }
}

/// `kubeadm reset -f` of a partial init or join, then the files reset
/// removed that the next attempt needs (the shared PKI; static-pod load
/// balancer manifests).
pub fn reset_partial_state(cx: &mut Ctx<'_>) -> Result<()> {
    eprintln!("nodebake-firstboot: kubeadm reset -f (clearing the partial state before retrying)");
    if let Err(e) = cx.run(kubeadm(["reset".to_string(), "-f".into()])) {
        eprintln!("nodebake-firstboot: kubeadm reset failed: {e:#}");
    }
    let files = pki_files(cx.node);
    write_files(cx, &files)?;
    use crate::steps::load_balancer::{Haproxy, Keepalived};
    for s in [&Haproxy as &dyn Step, &Keepalived] {
        if !s.check(cx)?.is_empty() {
            s.apply(cx)?;
        }
    }
    Ok(())
}
