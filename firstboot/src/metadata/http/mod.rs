//! HTTP, nocloud-net layout: `<url>/meta-data` and `<url>/user-data`,
//! through one small retry client (bounded tries, exponential backoff, a
//! clear error after the last try).

use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use super::{decode::decode, DiscoveryOptions, Documents, Metadata, MetadataProvider};

/// File, under the root, that may hold the metadata base URL.
pub const URL_FILE: &str = "/etc/nodebake/metadata-url";
/// SMBIOS serial, where cloud-init also looks for `ds=nocloud-net;s=<url>`.
pub const DMI_SERIAL: &str = "/sys/class/dmi/id/product_serial";

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total (at least 1).
    pub tries: u32,
    /// Wait after the first failure; doubled after each further failure.
    pub first_backoff: Duration,
    /// Upper bound of one wait.
    pub max_backoff: Duration,
    /// Connect and read timeout of one attempt.
    pub timeout: Duration,
}

/// GETs `url` with retries. 404 is not retried: it means "not here".
pub fn get(url: &str, policy: &RetryPolicy) -> Result<Option<Vec<u8>>> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(policy.timeout)
        .timeout_read(policy.timeout)
        .build();
    let mut wait = policy.first_backoff;
    let mut last = anyhow!("no attempt made");
    for attempt in 1..=policy.tries.max(1) {
        match agent.get(url).call() {
            Ok(resp) => {
                let mut body = Vec::new();
                resp.into_reader()
                    .take(super::decode::MAX_DOCUMENT + 1)
                    .read_to_end(&mut body)
                    .with_context(|| format!("reading {url}"))?;
                if body.len() as u64 > super::decode::MAX_DOCUMENT {
                    bail!("{url}: document too large");
                }
                return Ok(Some(body));
            }
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(e) => {
                eprintln!(
                    "nodebake-firstboot: GET {url}: attempt {attempt}/{}: {e}",
                    policy.tries
                );
                last = anyhow!("{e}");
            }
        }
        if attempt < policy.tries {
            std::thread::sleep(wait);
            wait = (wait * 2).min(policy.max_backoff);
        }
    }
    Err(last.context(format!("GET {url}: gave up after {} tries", policy.tries)))
}

/// A nocloud-net base URL.
pub struct HttpSource {
    base: String,
    policy: RetryPolicy,
}

impl HttpSource {
    /// A provider for `base` (`/meta-data` and `/user-data` are appended).
    pub fn new(base: &str, policy: RetryPolicy) -> Self {
        Self {
            base: base.to_string(),
            policy,
        }
    }

    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base.trim_end_matches('/'))
    }
}

impl MetadataProvider for HttpSource {
    fn name(&self) -> String {
        format!("HTTP {}", self.base)
    }

    fn fetch(&self) -> Result<Option<Metadata>> {
        let mut docs = Vec::new();
        for name in ["meta-data", "user-data"] {
            let url = self.url(name);
            let body = get(&url, &self.policy)?.ok_or_else(|| anyhow!("{url}: 404 Not Found"))?;
            docs.push(decode(&body).with_context(|| format!("decoding {url}"))?);
        }
        let user_data = docs.pop().unwrap_or_default();
        let meta_data = docs.pop().unwrap_or_default();
        // Optional, as for cloud-init: a 404 means none.
        let nc_url = self.url("network-config");
        let network_config = get(&nc_url, &self.policy)?
            .map(|b| decode(&b).with_context(|| format!("decoding {nc_url}")))
            .transpose()?;
        Ok(Some(Metadata {
            source: format!("HTTP {}", self.base),
            documents: Documents::NoCloud {
                meta_data,
                user_data,
                network_config,
            },
        }))
    }
}

/// HTTP at a URL the machine itself carries: [`URL_FILE`] or the SMBIOS
/// serial. Yields nothing when neither names a URL.
pub struct ConfiguredHttp {
    opts: DiscoveryOptions,
}

impl ConfiguredHttp {
    /// A provider reading the URL under the root.
    pub fn new(opts: DiscoveryOptions) -> Self {
        Self { opts }
    }

    fn base_url(&self) -> Result<Option<String>> {
        if let Some(u) = self.opts.root.read_opt(URL_FILE)? {
            let u = u.trim();
            if !u.is_empty() {
                return Ok(Some(u.to_string()));
            }
        }
        let serial = self.opts.root.read_opt(DMI_SERIAL).ok().flatten();
        Ok(serial
            .and_then(|s| super::cmdline::parse(&s))
            .filter(|u| u.starts_with("http://") || u.starts_with("https://")))
    }
}

impl MetadataProvider for ConfiguredHttp {
    fn name(&self) -> String {
        format!("HTTP (URL from {URL_FILE} or SMBIOS serial)")
    }

    fn fetch(&self) -> Result<Option<Metadata>> {
        match self.base_url()? {
            Some(u) => HttpSource::new(&u, self.opts.retry.clone()).fetch(),
            None => Ok(None),
        }
    }
}
