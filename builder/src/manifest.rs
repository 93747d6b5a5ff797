//! `manifest.json`: every file of the image with its origin, every input,
//! every package (an SBOM of the whole image) and every output.

use serde::{Deserialize, Serialize};

use crate::output::OutputFile;
use crate::pkgdb::Package;
use nodebake_contract::image::BakedImage;

/// Current manifest format.
pub const MANIFEST_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub manifest_version: u32,
    /// Builder name and version.
    pub builder: String,
    /// Image identity.
    pub image: ImageInfo,
    /// Detected base distribution.
    pub base: BaseInfo,
    /// Kernel, when one was selected.
    pub kernel: Option<KernelInfo>,
    /// The `disk` output's layout, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::disk::DiskInfo>,
    /// Inputs in build order.
    pub inputs: Vec<InputInfo>,
    /// Packages of the base database plus unpacked packages.
    pub packages: Vec<Package>,
    /// Baked container images.
    pub images: Vec<BakedImage>,
    /// Baked role profiles.
    pub profiles: Vec<String>,
    /// What the role profiles need and the image lacks (kubeadm preflight,
    /// the agent, the load balancer, images, kernel, library and package
    /// closure), found at bake time by the lint (`crate::lint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint: Vec<crate::lint::Finding>,
    /// The spec's `[lint] allow`, which `nodebake lint DIR` applies too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lint_allow: Vec<String>,
    /// What manifests before the lint recorded instead (read, never written).
    #[serde(default, skip_serializing)]
    pub missing_requirements: Vec<String>,
    /// Every set-user-ID or set-group-ID regular file of the image.
    #[serde(default)]
    pub setid_files: Vec<String>,
    /// Output archives (not including manifest.json and SHA256SUMS).
    pub outputs: Vec<OutputFile>,
    /// Every path of the image, sorted.
    pub files: Vec<FileInfo>,
}

/// Image identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInfo {
    /// Spec `name`.
    pub name: String,
    /// Spec `version`.
    pub version: String,
    /// Target architecture.
    pub arch: String,
    /// Kubernetes version.
    pub kubernetes_version: String,
    /// CNI name.
    pub cni: Option<String>,
    /// Timestamp of every entry.
    pub source_date_epoch: u64,
    /// Spec file name.
    pub spec: String,
    /// `sha256:<hex>` of the spec file.
    pub spec_digest: String,
}

/// The base distribution as detected.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BaseInfo {
    /// os-release `ID`.
    pub id: String,
    /// os-release `VERSION_ID`.
    pub version_id: String,
    /// os-release `PRETTY_NAME`.
    pub pretty_name: String,
    /// Where the package list came from (`rpmdb.sqlite`, `dpkg`, or why
    /// none was read).
    pub package_db: String,
}

/// The kernel output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelInfo {
    /// Path in the image.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Kernel command line for PXE.
    pub cmdline: Option<String>,
}

/// One input.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputInfo {
    /// `base`, an artifact name, `firstboot` or `profile:<name>`.
    pub name: String,
    /// Source as written in the spec.
    pub source: String,
    /// Hex sha256 (absent for directories).
    pub sha256: Option<String>,
    /// Artifact kind, `base`, `firstboot` or `profile`.
    pub kind: String,
}

/// One path of the image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    /// Absolute path.
    pub path: String,
    /// `dir`, `file`, `symlink`, `char`, `block`, `fifo`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits, octal string.
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (regular files).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub size: Option<u64>,
    /// Hex sha256 (regular files).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Link target (symlinks) or `major:minor` (devices).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    /// Input that wrote it.
    pub origin: String,
    /// The path or link target is not UTF-8: both are written escaped,
    /// `\xNN` for a raw byte and `\\` for a backslash (see
    /// [`crate::names`]).
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub escaped: bool,
}

impl FileInfo {
    /// Puts `path` and `target`, held as image names, in the manifest's
    /// form.
    pub fn escape_names(&mut self) {
        use crate::names;
        self.escaped =
            names::is_raw(&self.path) || self.target.as_deref().is_some_and(names::is_raw);
        if self.escaped {
            self.path = names::escape(&self.path);
            if self.kind == "symlink" {
                self.target = self.target.as_deref().map(names::escape);
            }
        }
    }
}

/// Builds the file list from the tree.
pub fn file_list(tree: &crate::tree::Tree) -> Vec<FileInfo> {
    use crate::tree::Kind;
    tree.iter()
        .map(|(p, e)| {
            let (size, sha256, target) = match &e.kind {
                Kind::File(id) => (Some(id.size), Some(id.hex()), None),
                Kind::Symlink(t) => (None, None, Some(t.clone())),
                Kind::CharDev(a, b) | Kind::BlockDev(a, b) => {
                    (None, None, Some(format!("{a}:{b}")))
                }
                Kind::Dir | Kind::Fifo => (None, None, None),
            };
            let mut fi = FileInfo {
                path: format!("/{p}"),
                kind: e.kind.name().to_string(),
                mode: format!("{:04o}", e.mode),
                uid: e.uid,
                gid: e.gid,
                size,
                sha256,
                target,
                origin: tree.origin_name(e.origin).to_string(),
                escaped: false,
            };
            fi.escape_names();
            fi
        })
        .collect()
}
