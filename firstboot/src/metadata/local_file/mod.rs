//! The local override file `/etc/nodebake/node.yaml` (VM templates): one
//! mapping with `instance-id`, `local-hostname` and `nodebake`.

use anyhow::{Context, Result};
use nodebake_contract::layout;

use super::decode::{decode, read_capped};
use super::{Documents, Metadata, MetadataProvider};
use crate::root::Root;

/// Reads [`layout::LOCAL_METADATA`] under the root.
pub struct LocalFile {
    root: Root,
}

impl LocalFile {
    /// A provider for the root's local file.
    pub fn new(root: Root) -> Self {
        Self { root }
    }
}

impl MetadataProvider for LocalFile {
    fn name(&self) -> String {
        format!("local file {}", layout::LOCAL_METADATA)
    }

    fn fetch(&self) -> Result<Option<Metadata>> {
        let p = self.root.path(layout::LOCAL_METADATA);
        match read_capped(&p) {
            Ok(bytes) => Ok(Some(Metadata {
                source: format!("local file {}", p.display()),
                documents: Documents::Local(
                    decode(&bytes).with_context(|| p.display().to_string())?,
                ),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }
}
