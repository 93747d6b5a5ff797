//! CRI endpoints: `unix:///path/to.sock` URLs, or bare socket paths (which
//! crictl also accepts, as unix sockets). Other transports are refused.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// containerd's CRI socket, the endpoint used when nothing else is set.
pub const DEFAULT_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// A CRI endpoint: a unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    url: String,
    socket: PathBuf,
}

impl Endpoint {
    /// Parses `unix:///path` or `/path`.
    pub fn parse(text: &str) -> Result<Self> {
        let path = if let Some(path) = text.strip_prefix("unix://") {
            path
        } else if let Some((scheme, _)) = text.split_once("://") {
            bail!("endpoint {text:?}: protocol {scheme:?} not supported (only unix sockets)");
        } else {
            text
        };
        if path.is_empty() {
            bail!("endpoint {text:?} is empty: set --runtime-endpoint (e.g. {DEFAULT_ENDPOINT})");
        }
        if !path.starts_with('/') {
            bail!("endpoint {text:?}: the socket path must be absolute");
        }
        Ok(Self {
            url: format!("unix://{path}"),
            socket: PathBuf::from(path),
        })
    }

    /// The unix socket to connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_bare_paths() {
        let url = Endpoint::parse("unix:///run/containerd/containerd.sock").unwrap();
        assert_eq!(url.socket(), Path::new("/run/containerd/containerd.sock"));
        assert_eq!(url.to_string(), "unix:///run/containerd/containerd.sock");
        let bare = Endpoint::parse("/run/containerd/containerd.sock").unwrap();
        assert_eq!(bare, url);
    }

    #[test]
    fn refuses_other_transports_and_empty_paths() {
        assert!(Endpoint::parse("tcp://127.0.0.1:1234").is_err());
        assert!(Endpoint::parse("unix://").is_err());
        assert!(Endpoint::parse("").is_err());
        assert!(Endpoint::parse("relative.sock").is_err());
    }
}
