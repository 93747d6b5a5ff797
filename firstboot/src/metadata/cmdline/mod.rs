//! Kernel command line: `nodebake.metadata=<path|http-url>` and cloud-init's
//! `ds=nocloud;s=<path>` / `ds=nocloud-net;s=<http-url>` (PXE). When the
//! command line names a source, that source must deliver: its failure is an
//! error, not a fall-through.

use anyhow::Result;

use super::{source_for, DiscoveryOptions, Metadata, MetadataProvider};

/// Reads `/proc/cmdline` under the root.
pub struct KernelCmdline {
    opts: DiscoveryOptions,
}

impl KernelCmdline {
    /// A provider reading the root's `/proc/cmdline`.
    pub fn new(opts: DiscoveryOptions) -> Self {
        Self { opts }
    }
}

/// Splits a command line into words, honouring double quotes.
fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The metadata location a command line names, if any (the last mention
/// wins, as with kernel parameters).
pub fn parse(cmdline: &str) -> Option<String> {
    let mut found = None;
    for w in words(cmdline) {
        if let Some(v) = w.strip_prefix("nodebake.metadata=") {
            found = Some(v.to_string());
        } else if let Some(ds) = w.strip_prefix("ds=") {
            let mut parts = ds.split(';');
            let kind = parts.next().unwrap_or_default();
            if kind == "nocloud" || kind == "nocloud-net" {
                for kv in parts {
                    if let Some(v) = kv
                        .strip_prefix("s=")
                        .or_else(|| kv.strip_prefix("seedfrom="))
                    {
                        found = Some(v.to_string());
                    }
                }
            }
        }
    }
    found.filter(|s| !s.is_empty())
}

impl MetadataProvider for KernelCmdline {
    fn name(&self) -> String {
        "kernel command line".into()
    }

    fn fetch(&self) -> Result<Option<Metadata>> {
        let Some(text) = self.opts.root.read_opt("/proc/cmdline")? else {
            return Ok(None);
        };
        let Some(spec) = parse(&text) else {
            return Ok(None);
        };
        let spec = if spec.starts_with("http://") || spec.starts_with("https://") {
            spec
        } else {
            let p = spec.strip_prefix("file://").unwrap_or(&spec);
            self.opts.root.path(p).to_string_lossy().into_owned()
        };
        let m = source_for(&spec, &self.opts).fetch()?;
        match m {
            Some(mut m) => {
                m.source = format!("kernel command line → {}", m.source);
                Ok(Some(m))
            }
            None => {
                anyhow::bail!("the kernel command line names `{spec}` but it holds no metadata")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_form() {
        assert_eq!(
            parse("ro quiet nodebake.metadata=http://10.0.0.1/m/ x=1").as_deref(),
            Some("http://10.0.0.1/m/")
        );
        assert_eq!(
            parse("BOOT_IMAGE=/vmlinuz ds=nocloud;s=/var/seed/ console=ttyS0").as_deref(),
            Some("/var/seed/")
        );
        assert_eq!(
            parse("\"ds=nocloud-net;s=http://127.0.0.1:8080/n1/\" ip=dhcp").as_deref(),
            Some("http://127.0.0.1:8080/n1/")
        );
        assert_eq!(
            parse("ds=nocloud-net;seedfrom=http://h/x/").as_deref(),
            Some("http://h/x/")
        );
    }

    #[test]
    fn ignores_other_datasources_and_empty_values() {
        assert_eq!(parse("ds=ec2;s=http://x/ ro"), None);
        assert_eq!(parse("nodebake.metadata= ro"), None);
        assert_eq!(parse(""), None);
    }
}
