//! Image metadata: what the builder baked, as the agent sees it.

use serde::{Deserialize, Serialize};

/// Version of the [`ImageMetadata`] schema.
pub const IMAGE_METADATA_VERSION: u32 = 1;

/// Written by the builder to [`crate::layout::IMAGE_METADATA`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageMetadata {
    /// Schema version, [`IMAGE_METADATA_VERSION`].
    pub schema_version: u32,
    /// Image name from the spec.
    pub name: String,
    /// Image version from the spec.
    pub version: String,
    /// Target architecture (`x86_64`, `aarch64`, ...).
    pub arch: String,
    /// Kubernetes version the image carries binaries for.
    pub kubernetes_version: String,
    /// Base distribution (`ID` and `VERSION_ID` of the base's os-release).
    pub base_os: String,
    /// Container images baked under [`crate::layout::IMAGES_DIR`].
    pub images: Vec<BakedImage>,
    /// Role profiles baked under [`crate::layout::PROFILES_DIR`].
    pub profiles: Vec<String>,
    /// CNI manifest path in the image, if one was baked.
    pub cni_manifest: Option<String>,
    /// Digest of the spec the image was built from (`sha256:<hex>`).
    pub spec_digest: String,
}

/// One container image archive baked into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BakedImage {
    /// Image reference, e.g. `registry.k8s.io/pause:3.10`.
    pub reference: String,
    /// Manifest digest, if pinned.
    pub digest: Option<String>,
    /// Path of the archive in the image.
    pub path: String,
    /// `docker-archive` or `oci-archive`.
    pub format: String,
}
