//! Effective settings: endpoints, timeout and debug, resolved as crictl
//! resolves them. A flag wins over its environment variable, which wins
//! over the config file (`--config`, `CRI_CONFIG_FILE`, else
//! `/etc/crictl.yaml`, else `crictl.yaml` beside the binary), which wins
//! over the defaults. A config file named explicitly must load; the
//! default one is ignored when missing or invalid, as crictl does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_yaml::Value;

use crate::cli::GlobalFlags;
use crate::endpoint::{Endpoint, DEFAULT_ENDPOINT};

/// The config file read when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/crictl.yaml";

/// The timeout of connecting and of each call when none is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The least time a pull is given: images are large.
pub const MIN_PULL_TIMEOUT: Duration = Duration::from_secs(600);

/// The settings a command runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The runtime service endpoint.
    pub runtime_endpoint: Endpoint,
    /// The image service endpoint.
    pub image_endpoint: Endpoint,
    /// Bound on connecting and on each call.
    pub timeout: Duration,
    /// Whether to print requests and responses to stderr.
    pub debug: bool,
}

/// The keys of a crictl config file that this crictl uses.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ConfigFile {
    /// `runtime-endpoint:`
    pub runtime_endpoint: Option<String>,
    /// `image-endpoint:`
    pub image_endpoint: Option<String>,
    /// `timeout:` in seconds.
    pub timeout_seconds: Option<u64>,
    /// `debug:`
    pub debug: Option<bool>,
}

/// Reads an environment variable of this process (non-empty values only).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Settings {
    /// Resolves the settings from the flags, the environment (`env`) and
    /// the config file.
    pub fn resolve(flags: &GlobalFlags, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let config = load_config(flags, &env)?;
        Self::from_sources(flags, &env, &config)
    }

    /// Resolves the settings from already loaded sources.
    pub fn from_sources(
        flags: &GlobalFlags,
        env: impl Fn(&str) -> Option<String>,
        config: &ConfigFile,
    ) -> Result<Self> {
        let runtime = flags
            .runtime_endpoint
            .clone()
            .or_else(|| env("CONTAINER_RUNTIME_ENDPOINT"))
            .or_else(|| non_empty(&config.runtime_endpoint))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let image = flags
            .image_endpoint
            .clone()
            .or_else(|| env("IMAGE_SERVICE_ENDPOINT"))
            .or_else(|| non_empty(&config.image_endpoint))
            .unwrap_or_else(|| runtime.clone());
        let timeout = flags
            .timeout
            .filter(|t| !t.is_zero())
            .or_else(|| {
                config
                    .timeout_seconds
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs)
            })
            .unwrap_or(DEFAULT_TIMEOUT);
        Ok(Self {
            runtime_endpoint: Endpoint::parse(&runtime).context("invalid runtime endpoint")?,
            image_endpoint: Endpoint::parse(&image).context("invalid image endpoint")?,
            timeout,
            debug: flags.debug.or(config.debug).unwrap_or(false),
        })
    }
}

/// A copy of `value` unless it is empty.
fn non_empty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

/// Loads the config file named by `--config` or `CRI_CONFIG_FILE` (which
/// must load), else the default one if it loads.
fn load_config(flags: &GlobalFlags, env: &impl Fn(&str) -> Option<String>) -> Result<ConfigFile> {
    let named = flags
        .config
        .clone()
        .or_else(|| env("CRI_CONFIG_FILE").map(PathBuf::from));
    if let Some(path) = named {
        return read_config(&path);
    }
    Ok(default_config_paths()
        .iter()
        .find(|p| p.exists())
        .and_then(|p| read_config(p).ok())
        .unwrap_or_default())
}

/// `/etc/crictl.yaml`, then `crictl.yaml` in the directory of this binary.
fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(DEFAULT_CONFIG_PATH)];
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        paths.push(dir.join("crictl.yaml"));
    }
    paths
}

/// Reads and parses a crictl config file.
pub fn read_config(path: &Path) -> Result<ConfigFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read crictl config {}", path.display()))?;
    parse_config(&text).with_context(|| format!("invalid crictl config {}", path.display()))
}

/// Parses the text of a crictl config file: a YAML map of
/// `runtime-endpoint`, `image-endpoint`, `timeout` (seconds), `debug`,
/// `pull-image-on-create` and `disable-pull-on-run` (the last two are
/// accepted and ignored: this crictl creates no containers).
pub fn parse_config(text: &str) -> Result<ConfigFile> {
    let mut config = ConfigFile::default();
    let document: Value = serde_yaml::from_str(text).context("not YAML")?;
    let map = match document {
        Value::Null => return Ok(config),
        Value::Mapping(map) => map,
        _ => bail!("expected a map of config options"),
    };
    for (key, value) in &map {
        let name = key
            .as_str()
            .context("config option names must be strings")?;
        let text = scalar_text(value).with_context(|| format!("config option '{name}'"))?;
        match name {
            "runtime-endpoint" => config.runtime_endpoint = Some(text),
            "image-endpoint" => config.image_endpoint = Some(text),
            "timeout" => config.timeout_seconds = Some(parse_timeout_seconds(&text)?),
            "debug" => config.debug = Some(parse_option_bool(name, &text)?),
            "pull-image-on-create" | "disable-pull-on-run" => {
                parse_option_bool(name, &text)?;
            }
            _ => bail!("Config option '{name}' is not valid"),
        }
    }
    Ok(config)
}

/// The text of a scalar YAML value.
fn scalar_text(value: &Value) -> Result<String> {
    Ok(match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => bail!("expected a scalar value"),
    })
}

/// `timeout:` as whole seconds; negative values mean the default (0).
fn parse_timeout_seconds(text: &str) -> Result<u64> {
    let seconds: i64 = text
        .parse()
        .with_context(|| format!("parsing config option 'timeout': {text:?} is not an integer"))?;
    Ok(seconds.max(0) as u64)
}

/// A boolean config option, spelt as Go's `strconv.ParseBool` accepts.
fn parse_option_bool(name: &str, text: &str) -> Result<bool> {
    crate::cli::parse_go_bool(text)
        .map_err(|e| anyhow::anyhow!("parsing config option '{name}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_to_the_containerd_socket() {
        let s = Settings::from_sources(&GlobalFlags::default(), no_env, &ConfigFile::default())
            .unwrap();
        assert_eq!(s.runtime_endpoint.to_string(), DEFAULT_ENDPOINT);
        assert_eq!(s.image_endpoint.to_string(), DEFAULT_ENDPOINT);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert!(!s.debug);
    }

    #[test]
    fn flag_beats_env_beats_config_file() {
        let config = parse_config(
            "runtime-endpoint: unix:///file.sock\nimage-endpoint: unix:///file-img.sock\ntimeout: 4\ndebug: true\n",
        )
        .unwrap();
        let env = |name: &str| {
            (name == "CONTAINER_RUNTIME_ENDPOINT").then(|| "unix:///env.sock".to_string())
        };
        let s = Settings::from_sources(&GlobalFlags::default(), env, &config).unwrap();
        assert_eq!(s.runtime_endpoint.to_string(), "unix:///env.sock");
        assert_eq!(s.image_endpoint.to_string(), "unix:///file-img.sock");
        assert_eq!(s.timeout, Duration::from_secs(4));
        assert!(s.debug);

        let flags = GlobalFlags {
            runtime_endpoint: Some("/flag.sock".into()),
            timeout: Some(Duration::from_secs(7)),
            debug: Some(false),
            ..GlobalFlags::default()
        };
        let s = Settings::from_sources(&flags, env, &config).unwrap();
        assert_eq!(s.runtime_endpoint.to_string(), "unix:///flag.sock");
        assert_eq!(s.timeout, Duration::from_secs(7));
        assert!(!s.debug);
    }

    #[test]
    fn image_endpoint_follows_the_runtime_endpoint() {
        let flags = GlobalFlags {
            runtime_endpoint: Some("unix:///a.sock".into()),
            ..GlobalFlags::default()
        };
        let s = Settings::from_sources(&flags, no_env, &ConfigFile::default()).unwrap();
        assert_eq!(s.image_endpoint.to_string(), "unix:///a.sock");
    }

    #[test]
    fn rejects_unknown_config_options() {
        assert!(parse_config("runtime-endpoint: x\nbogus: 1\n").is_err());
        assert!(parse_config("timeout: soon\n").is_err());
        assert_eq!(parse_config("").unwrap(), ConfigFile::default());
    }
}
