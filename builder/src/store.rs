//! The input store: a content-addressed cache (`sha256/<hex>`) of every
//! downloaded input, a stat cache that remembers which local files were
//! already verified, and a cache of finished builds keyed by everything
//! that determines their bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The store root and its operations.
#[derive(Debug, Clone)]
pub struct InputStore {
    root: PathBuf,
    /// Refuse any network access.
    pub offline: bool,
}

impl InputStore {
    /// `$NODEBAKE_STORE`, else `$XDG_CACHE_HOME/nodebake/store`, else
    /// `$HOME/.cache/nodebake/store`.
    pub fn default_root() -> PathBuf {
        if let Some(p) = std::env::var_os("NODEBAKE_STORE") {
            return PathBuf::from(p);
        }
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from("/var/cache"));
        cache.join("nodebake").join("store")
    }

    /// Opens (creating) a store.
    pub fn open(root: &Path, offline: bool) -> Result<InputStore> {
        for d in ["sha256", "tmp", "builds"] {
            std::fs::create_dir_all(root.join(d))
                .with_context(|| format!("creating store directory {}", root.join(d).display()))?;
        }
        Ok(InputStore {
            root: root.to_path_buf(),
            offline,
        })
    }

    /// Root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where content with this digest lives.
    pub fn object_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// Whether the store holds this digest.
    pub fn has(&self, sha256: &str) -> bool {
        self.object_path(sha256).is_file()
    }

    /// Makes sure the content of `url` with digest `expected` is in the
    /// store, downloading it if needed (bounded retries with backoff,
    /// resumed with HTTP `Range`; see [`crate::fetch::download_to_store`]).
    /// With no `expected` digest the download is kept under its actual
    /// digest, which is returned.
    pub fn fetch_url(&self, what: &str, url: &str, expected: Option<&str>) -> Result<String> {
        crate::fetch::download_url(
            self,
            &crate::fetch::HttpConfig::default(),
            &crate::fetch::FetchProgress::hidden(),
            what,
            url,
            expected,
        )
    }

    /// Opens a store object for reading.
    pub fn open_object(&self, sha256: &str) -> Result<File> {
        File::open(self.object_path(sha256))
            .with_context(|| format!("opening store object {sha256}"))
    }

    /// The digest recorded for a local file whose size, mtime, inode and
    /// device are unchanged since it was verified.
    pub fn cached_digest(&self, path: &Path) -> Option<String> {
        let key = stat_key(path).ok()?;
        self.load_stat_cache().remove(&key)
    }

    /// Records that `path` (as it is now) has digest `sha256`.
    pub fn record_digest(&self, path: &Path, sha256: &str) -> Result<()> {
        let key = stat_key(path)?;
        let mut m = self.load_stat_cache();
        m.insert(key, sha256.to_string());
        let text = serde_json::to_string(&m)?;
        crate::atomic::write_file(&self.root.join("statcache.json"), text.as_bytes(), 0o644)
    }

    fn load_stat_cache(&self) -> BTreeMap<String, String> {
        std::fs::read(self.root.join("statcache.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Directory of a cached build.
    pub fn build_dir(&self, key: &str) -> PathBuf {
        self.root.join("builds").join(key)
    }
}

fn stat_key(path: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(path)?;
    let m = std::fs::metadata(&abs)?;
    Ok(format!(
        "{}\0{}:{}:{}:{}.{}",
        abs.display(),
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec()
    ))
}
