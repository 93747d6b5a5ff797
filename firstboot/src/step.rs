//! The step framework: each host change is a [`Step`] that first checks
//! its postcondition, applies only when something is pending, and is
//! verified afterwards. Steps see the node through a [`Ctx`]: every file
//! through [`Root`], every command through the [`Runner`].

use anyhow::Result;
use nodebake_contract::image::ImageMetadata;
use nodebake_contract::node::NodeConfig;
use nodebake_contract::profile::RoleProfile;

use crate::kubeadm::endpoint::Backoff;
use crate::root::Root;
use crate::runner::{Cmd, Outcome, Runner};

/// Something a step still has to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// A file under the root differs from what the step renders.
    File(String),
    /// The running system differs (checked only with a live runner, or
    /// read from the root where the state lives in files).
    Runtime(String),
}

impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::File(s) | Pending::Runtime(s) => f.write_str(s),
        }
    }
}

/// Where the agent finds containerd.
#[derive(Debug, Clone)]
pub struct ContainerdSettings {
    /// containerd socket for `ctr --address`.
    pub address: String,
}

impl Default for ContainerdSettings {
    fn default() -> Self {
        Self {
            address: "/run/containerd/containerd.sock".into(),
        }
    }
}

/// Bounds of the waits and retries of the kubeadm steps.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    /// Waiting for the control-plane endpoint.
    pub endpoint: Backoff,
    /// Probe this `host:port` instead of the endpoint (tests).
    pub endpoint_target: Option<String>,
    /// Probe these `(name, address)` instead of the other masters' etcd
    /// and apiserver ports when the initialiser decides (tests).
    pub peer_targets: Option<Vec<(String, std::net::SocketAddr)>>,
    /// `kubeadm init` / `join` attempts (with `kubeadm reset -f` between).
    pub attempts: Backoff,
    /// Waiting for the node to be Ready.
    pub ready: Backoff,
    /// Removing a stale etcd member (retried while etcd says `unhealthy
    /// cluster`).
    pub etcd: Backoff,
    /// The initialiser's look at the endpoint (answers: it was rebuilt).
    pub rebuild_probe: Backoff,
    /// The endpoint wait's check: a few quick probes, since a
    /// load balancer whose backends are still coming up (haproxy has not
    /// yet marked them down) answers some connections and not others.
    pub endpoint_confirm: Backoff,
    /// Waiting for this master's turn to join the control plane.
    pub turn: Backoff,
    /// Waiting, on a rebuild, until the control plane has noticed that the
    /// old machine of this name is gone (kubeadm refuses to join while a
    /// Node of the same name is Ready). Not counted in `attempts`.
    pub stale_node: Backoff,
    /// How long a master watches the Lease of a Ready Node of its own name
    /// (kubelets renew every 10 s): unchanged, the Node is stale.
    pub lease_watch: std::time::Duration,
    /// Cluster API calls after the join (the bootstrap token): retried
    /// while the API settles.
    pub api: Backoff,
    /// etcd client port on the masters.
    pub etcd_client_port: u16,
    /// etcd peer port on the masters.
    pub etcd_peer_port: u16,
}

impl Default for JoinSettings {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            // ~30 min: masters may boot long before the initialiser.
            endpoint: Backoff {
                tries: 90,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(30),
            },
            endpoint_target: None,
            peer_targets: None,
            attempts: Backoff {
                tries: 3,
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
            },
            ready: Backoff {
                tries: 60,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(10),
            },
            etcd: Backoff {
                tries: 10,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(10),
            },
            rebuild_probe: Backoff {
                tries: 3,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(2),
            },
            endpoint_confirm: Backoff {
                tries: 3,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(2),
            },
            // ~20 min: the masters before this one join first.
            turn: Backoff {
                tries: 60,
                initial: Duration::from_secs(5),
                max: Duration::from_secs(30),
            },
            // ~10 min: the node lifecycle controller marks a silent Node
            // Unknown after node-monitor-grace-period (40 s by default);
            // far longer means another machine holds the name, or no
            // controller-manager runs.
            stale_node: Backoff {
                tries: 24,
                initial: Duration::from_secs(10),
                max: Duration::from_secs(30),
            },
            lease_watch: Duration::from_secs(25),
            // ~5 min.
            api: Backoff {
                tries: 12,
                initial: Duration::from_secs(5),
                max: Duration::from_secs(30),
            },
            etcd_client_port: 2379,
            etcd_peer_port: 2380,
        }
    }
}

/// What a step works with.
pub struct Ctx<'a> {
    /// The root files are changed under.
    pub root: &'a Root,
    /// Commands and hostname.
    pub runner: &'a dyn Runner,
    /// The validated node.
    pub node: &'a NodeConfig,
    /// The validated `network-config`, when the metadata has one.
    pub network: Option<&'a crate::steps::network::NetworkConfig>,
    /// Image metadata baked by the builder, if present.
    pub image: Option<&'a ImageMetadata>,
    /// The role profile in effect.
    pub profile: &'a RoleProfile,
    /// containerd location.
    pub containerd: &'a ContainerdSettings,
    /// Waits and retries of the kubeadm steps.
    pub join: &'a JoinSettings,
    /// Paths changed during this run, in order.
    pub changed: Vec<String>,
}

impl Ctx<'_> {
    /// Whether commands act on the running system.
    pub fn live(&self) -> bool {
        self.runner.is_live()
    }

    /// Writes a file through the root, remembering it when it changed.
    pub fn write(&mut self, abs: &str, content: &str, mode: u32) -> Result<bool> {
        let changed = self.root.write(abs, content.as_bytes(), mode)?;
        if changed {
            self.changed.push(abs.to_string());
        }
        Ok(changed)
    }

    /// Removes a file through the root, remembering it when it existed.
    pub fn remove(&mut self, abs: &str) -> Result<bool> {
        let removed = self.root.remove(abs)?;
        if removed {
            self.changed.push(abs.to_string());
        }
        Ok(removed)
    }

    /// Makes a symlink through the root, remembering it when it changed.
    pub fn symlink(&mut self, abs: &str, target: &str) -> Result<bool> {
        let changed = self.root.symlink(abs, target)?;
        if changed {
            self.changed.push(abs.to_string());
        }
        Ok(changed)
    }

    /// Runs a command through the runner.
    pub fn run(&self, cmd: Cmd) -> Result<Outcome> {
        self.runner.run(&cmd)
    }
}

/// A file a step owns: path, content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// Absolute path in the image.
    pub path: String,
    /// Full content.
    pub content: String,
    /// Mode bits.
    pub mode: u32,
}

impl FileSpec {
    /// A 0644 file.
    pub fn new(path: &str, content: String) -> Self {
        Self {
            path: path.into(),
            content,
            mode: 0o644,
        }
    }
}

/// Pending entries for every file in `files` that differs on `root`.
pub fn pending_files(root: &Root, files: &[FileSpec]) -> Result<Vec<Pending>> {
    let mut out = Vec::new();
    for f in files {
        if !root.file_matches(&f.path, f.content.as_bytes(), f.mode)? {
            out.push(Pending::File(format!("write {}", f.path)));
        }
    }
    Ok(out)
}

/// Writes every file in `files`; returns whether any changed.
pub fn write_files(cx: &mut Ctx<'_>, files: &[FileSpec]) -> Result<bool> {
    let mut any = false;
    for f in files {
        any |= cx.write(&f.path, &f.content, f.mode)?;
    }
    Ok(any)
}

/// One idempotent host change.
pub trait Step {
    /// Stable id, used in the journal (`hostname`, `sysctl`, ...).
    fn id(&self) -> &'static str;
    /// One line saying what the step is for.
    fn describe(&self) -> &'static str;
    /// What is still to do; empty when the postcondition holds.
    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>>;
    /// What is still to do right after [`Step::apply`]; [`Step::check`]
    /// unless the step knows better (a wait on something another machine
    /// provides re-checks with its whole patience, not a quick look).
    fn verify(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        self.check(cx)
    }
    /// Makes the postcondition hold. Only called when [`Step::check`]
    /// found something pending; must be safe to repeat.
    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()>;
}
