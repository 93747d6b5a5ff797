//! An explicit path: a directory in NoCloud layout (`meta-data`,
//! `user-data`), a seed image or block device (ISO 9660 or FAT), or a local
//! file in the `node.yaml` form.

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use super::decode::{decode, read_capped};
use super::{nocloud_seed, Documents, Metadata, MetadataProvider};

/// Metadata at a path.
pub struct PathSource {
    path: PathBuf,
    live: bool,
}

impl PathSource {
    /// A provider for `path`; `live` allows mounting block devices.
    pub fn new(path: PathBuf, live: bool) -> Self {
        Self { path, live }
    }
}

/// Reads `meta-data` and `user-data` from a NoCloud directory.
pub fn read_nocloud_dir(dir: &std::path::Path) -> Result<Documents> {
    let read = |name: &str| -> Result<String> {
        let p = dir.join(name);
        let bytes = read_capped(&p).with_context(|| format!("reading {}", p.display()))?;
        decode(&bytes).with_context(|| format!("decoding {}", p.display()))
    };
    let nc = dir.join("network-config");
    Ok(Documents::NoCloud {
        meta_data: read("meta-data")?,
        user_data: read("user-data")?,
        network_config: if nc.exists() {
            Some(read("network-config")?)
        } else {
            None
        },
    })
}

impl MetadataProvider for PathSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn fetch(&self) -> Result<Option<Metadata>> {
        let p = &self.path;
        let md =
            std::fs::metadata(p).with_context(|| format!("metadata source {}", p.display()))?;
        let ft = md.file_type();
        let (documents, kind) = if ft.is_dir() {
            (read_nocloud_dir(p)?, "NoCloud directory")
        } else if ft.is_block_device() || nocloud_seed::probe_path(p)?.is_some() {
            let (docs, how) = nocloud_seed::read_seed(p, self.live)?;
            return Ok(Some(Metadata {
                source: format!("NoCloud seed {} ({how})", p.display()),
                documents: docs,
            }));
        } else if ft.is_file() {
            let bytes = read_capped(p).with_context(|| format!("reading {}", p.display()))?;
            (
                Documents::Local(decode(&bytes).with_context(|| p.display().to_string())?),
                "local file",
            )
        } else {
            bail!(
                "{} is neither a directory, a file nor a block device",
                p.display()
            );
        };
        Ok(Some(Metadata {
            source: format!("{kind} {}", p.display()),
            documents,
        }))
    }
}
