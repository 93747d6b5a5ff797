//! Metadata sources. One [`MetadataProvider`] trait, one folder per source,
//! tried in a fixed order by [`discover`]; the first that yields wins and
//! the agent logs which:
//!
//! 1. kernel command line ([`cmdline`]): `nodebake.metadata=<path|url>`,
//!    `ds=nocloud;s=<path>`, `ds=nocloud-net;s=<url>`;
//! 2. NoCloud seed device labelled `cidata` ([`nocloud_seed`]), ISO 9660
//!    or FAT;
//! 3. HTTP, nocloud-net layout ([`http`]), at the URL in
//!    `/etc/nodebake/metadata-url` or in the SMBIOS serial
//!    (`ds=nocloud-net;s=<url>`, as cloud-init reads it);
//! 4. the local file `/etc/nodebake/node.yaml` ([`local_file`]).
//!
//! `--metadata SRC` replaces the search with one explicit source
//! ([`explicit`]): an http(s) URL, a nocloud directory, a seed image or
//! device, or a local file.
//!
//! Documents may be gzip-compressed and/or base64-encoded ([`decode`]).

pub mod cmdline;
pub mod decode;
pub mod http;
pub mod local_file;
pub mod nocloud_seed;
pub mod path;

use std::time::Duration;

use anyhow::{Context, Result};
use nodebake_contract::node::NodeConfig;
use sha2::{Digest, Sha256};

use crate::root::Root;

/// The documents a source yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Documents {
    /// NoCloud `meta-data` and `user-data`, decoded.
    NoCloud {
        /// `meta-data` text.
        meta_data: String,
        /// `user-data` text.
        user_data: String,
        /// `network-config` text, when the source has one.
        network_config: Option<String>,
    },
    /// One local file with `instance-id`, `local-hostname` and `nodebake`.
    Local(String),
}

/// Metadata and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Human-readable source, e.g. `NoCloud seed /dev/sr0 (iso9660)`.
    pub source: String,
    /// The documents.
    pub documents: Documents,
}

impl Metadata {
    /// Parses and validates into a node config (all or nothing).
    pub fn node_config(&self) -> Result<NodeConfig> {
        let r = match &self.documents {
            Documents::NoCloud {
                meta_data,
                user_data,
                ..
            } => NodeConfig::from_nocloud(meta_data, user_data),
            Documents::Local(text) => NodeConfig::from_local_file(text),
        };
        r.with_context(|| format!("metadata from {}", self.source))
    }

    /// Parses and validates `network-config`, when there is one.
    pub fn network_config(&self) -> Result<Option<crate::steps::network::NetworkConfig>> {
        match &self.documents {
            Documents::NoCloud {
                network_config: Some(n),
                ..
            } => crate::steps::network::NetworkConfig::parse(n)
                .map(Some)
                .with_context(|| format!("metadata from {}", self.source)),
            _ => Ok(None),
        }
    }

    /// Digest of the documents: the journal starts over when it changes.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        match &self.documents {
            Documents::NoCloud {
                meta_data,
                user_data,
                network_config,
            } => {
                h.update(b"nocloud\0");
                h.update(meta_data.as_bytes());
                h.update(b"\0");
                h.update(user_data.as_bytes());
                if let Some(n) = network_config {
                    h.update(b"\0network-config\0");
                    h.update(n.as_bytes());
                }
            }
            Documents::Local(t) => {
                h.update(b"local\0");
                h.update(t.as_bytes());
            }
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

/// A place metadata can come from.
pub trait MetadataProvider {
    /// Name for logs.
    fn name(&self) -> String;
    /// The metadata, `Ok(None)` when this source has none (the next one is
    /// tried), an error when it has some but cannot deliver it.
    fn fetch(&self) -> Result<Option<Metadata>>;
}

/// How the agent looks for metadata.
#[derive(Debug, Clone)]
pub struct DiscoveryOptions {
    /// The root (paths such as `/proc/cmdline` are read under it).
    pub root: Root,
    /// Whether devices may be mounted (false with `--root`: the seed is
    /// then read without mounting).
    pub live: bool,
    /// HTTP retry policy.
    pub retry: http::RetryPolicy,
}

/// A source named by `spec`: an http(s) URL, or a path (directory in
/// NoCloud layout, seed image or block device, or local file).
pub fn source_for(spec: &str, opts: &DiscoveryOptions) -> Box<dyn MetadataProvider> {
    if spec.starts_with("http://") || spec.starts_with("https://") {
        Box::new(http::HttpSource::new(spec, opts.retry.clone()))
    } else {
        let p = spec.strip_prefix("file://").unwrap_or(spec);
        Box::new(path::PathSource::new(p.into(), opts.live))
    }
}

/// The one source given with `--metadata`.
pub fn explicit(spec: &str, opts: &DiscoveryOptions) -> Box<dyn MetadataProvider> {
    source_for(spec, opts)
}

/// Every source, in the documented order.
pub fn discover(opts: &DiscoveryOptions) -> Vec<Box<dyn MetadataProvider>> {
    vec![
        Box::new(cmdline::KernelCmdline::new(opts.clone())),
        Box::new(nocloud_seed::SeedDevice::new(opts.root.clone(), opts.live)),
        Box::new(http::ConfiguredHttp::new(opts.clone())),
        Box::new(local_file::LocalFile::new(opts.root.clone())),
    ]
}

/// Tries `providers` in order; the first that yields wins. Logs each try.
pub fn fetch_first(providers: &[Box<dyn MetadataProvider>]) -> Result<Metadata> {
    let mut tried = Vec::new();
    for p in providers {
        let name = p.name();
        match p
            .fetch()
            .with_context(|| format!("metadata source {name}"))?
        {
            Some(m) => {
                eprintln!("nodebake-firstboot: metadata from {}", m.source);
                return Ok(m);
            }
            None => {
                eprintln!("nodebake-firstboot: no metadata from {name}");
                tried.push(name);
            }
        }
    }
    anyhow::bail!("no metadata source yielded (tried: {})", tried.join(", "))
}

/// Default HTTP retry policy for first boot.
pub fn default_retry() -> http::RetryPolicy {
    http::RetryPolicy {
        tries: 6,
        first_backoff: Duration::from_secs(1),
        max_backoff: Duration::from_secs(10),
        timeout: Duration::from_secs(10),
    }
}
