//! `nodebake cluster init`: one inventory → a secrets bundle generated
//! once, and per node the NoCloud `meta-data`, `user-data`,
//! `network-config` and a `cidata` seed image.
//!
//! Output layout:
//!
//! ```text
//! DIR/secrets/            0700; every file 0600 (see secrets::FILES)
//! DIR/nodes.json          name, role, IP, MAC of every node (for `serve`)
//! DIR/nodes/<hostname>/   0700: meta-data, user-data, network-config, seed.iso
//!                         (+ seed.img, FAT, with --vfat); files 0600
//! ```
//!
//! Re-running with the same inventory changes no byte; a machine added
//! to the inventory gets its files with the same secrets.

pub mod inventory;
pub mod kubeconfig;
pub mod render;
pub mod secrets;

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::seed;
pub use inventory::{CheckedInventory, InventoryError, InventoryProblem};
pub use secrets::{ClusterSecrets, SecretsOrigin};

/// The seed image's volume label (NoCloud).
pub const SEED_LABEL: &str = "cidata";

/// One node in `DIR/nodes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIndexEntry {
    /// Hostname (directory under `DIR/nodes/`).
    pub name: String,
    /// `master` or `worker`.
    pub role: String,
    /// Node IP.
    pub ip: String,
    /// MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// State disk (`nodebake.state=` on the PXE command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_disk: Option<String>,
}

/// `DIR/nodes.json`: what `nodebake serve` looks machines up in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeIndex {
    /// Cluster name.
    pub cluster: String,
    /// Every node in inventory order.
    pub nodes: Vec<NodeIndexEntry>,
}

impl NodeIndex {
    /// Reads `DIR/nodes.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let p = dir.join("nodes.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!(
                "reading {} (run `nodebake cluster init` first)",
                p.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
    }
}

/// What `init` did.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    /// Output directory.
    pub out: PathBuf,
    /// `loaded`, `generated` or `rotated`.
    pub secrets: String,
    /// Discovery hash of the cluster CA.
    pub ca_cert_hash: String,
    /// Node names in inventory order.
    pub nodes: Vec<String>,
    /// Files written (changed or new), relative to `out`.
    pub changed: Vec<String>,
    /// Inventory warnings.
    pub warnings: Vec<String>,
    /// Node directories present but no longer in the inventory (kept).
    pub stale: Vec<String>,
}

fn mkdir_private(p: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("creating {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Writes `bytes` atomically unless `path` already holds exactly them;
/// returns whether it wrote. The mode is set either way.
fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        return Ok(false);
    }
    atomic::write_file(path, bytes, mode)?;
    Ok(true)
}

/// Runs `cluster init`: validates the inventory, loads or generates the
/// secrets and writes every node's files.
pub fn init(inventory: &Path, out: &Path, rotate: bool, vfat: bool) -> Result<InitReport> {
    let inv = inventory::load(inventory)?;
    // Nothing is written until every node validated: new secrets stay in
    // memory until then.
    let (secrets, origin) = secrets::load_or_generate(&out.join("secrets"), rotate)?;
    let docs = render::render_nodes(&inv, &secrets)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    if origin != SecretsOrigin::Loaded {
        secrets::save(&out.join("secrets"), &secrets)?;
    }
    let mut changed = Vec::new();
    let nodes_dir = out.join("nodes");
    mkdir_private(&nodes_dir)?;
    for d in &docs {
        let dir = nodes_dir.join(&d.name);
        mkdir_private(&dir)?;
        let files: [(&str, &[u8]); 3] = [
            ("meta-data", d.meta_data.as_bytes()),
            ("network-config", d.network_config.as_bytes()),
            ("user-data", d.user_data.as_bytes()),
        ];
        let iso = seed::iso9660(SEED_LABEL, &files)?;
        let img = if vfat {
            Some(seed::vfat(SEED_LABEL, &files)?)
        } else {
            None
        };
        let images = [("seed.iso", iso.as_slice())]
            .into_iter()
            .chain(img.as_deref().map(|b| ("seed.img", b)));
        for (name, bytes) in files.into_iter().chain(images) {
            if write_if_changed(&dir.join(name), bytes, 0o600)? {
                changed.push(format!("nodes/{}/{name}", d.name));
            }
        }
    }
    let index = NodeIndex {
        cluster: inv.inventory.cluster.name.clone(),
        nodes: inv
            .inventory
            .machines
            .iter()
            .map(|m| NodeIndexEntry {
                name: m.name.clone(),
                role: match m.role {
                    nodebake_contract::profile::Role::Master => "master",
                    nodebake_contract::profile::Role::Worker => "worker",
                }
                .into(),
                ip: m.ip.clone(),
                mac: m.canonical_mac().expect("validated"),
                state_disk: m.state_disk(&inv.inventory.cluster).map(str::to_string),
            })
            .collect(),
    };
    let mut json = serde_json::to_string_pretty(&index)?;
    json.push('\n');
    if write_if_changed(&out.join("nodes.json"), json.as_bytes(), 0o644)? {
        changed.push("nodes.json".into());
    }
    let mut stale = Vec::new();
    for e in std::fs::read_dir(&nodes_dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !docs.iter().any(|d| d.name == name) {
            stale.push(name);
        }
    }
    stale.sort();
    Ok(InitReport {
        out: out.to_path_buf(),
        secrets: match origin {
            SecretsOrigin::Loaded => "loaded",
            SecretsOrigin::Generated => "generated",
            SecretsOrigin::Rotated => "rotated",
        }
        .into(),
        ca_cert_hash: secrets.ca_cert_hash.clone(),
        nodes: docs.iter().map(|d| d.name.clone()).collect(),
        changed,
        warnings: inv.warnings.iter().map(ToString::to_string).collect(),
        stale,
    })
}
