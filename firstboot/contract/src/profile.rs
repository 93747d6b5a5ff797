//! Role profiles: what a role (master, worker, ...) needs on a node.
//! Written by operators as `profiles/<name>.toml`, validated by the builder,
//! baked under [`crate::layout::PROFILES_DIR`] and read by the agent.

use serde::{Deserialize, Serialize};

/// Node roles the agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Control-plane node: etcd, apiserver, VIP and load balancer.
    Master,
    /// Worker node.
    Worker,
}

/// A role profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleProfile {
    /// Profile name; equals the file stem.
    pub name: String,
    /// Role this profile configures.
    pub role: Role,
    /// One line for humans.
    #[serde(default)]
    pub description: String,
    /// Kernel modules loaded now and at boot, in addition to the base set.
    #[serde(default)]
    pub kernel_modules: Vec<String>,
    /// TCP/UDP ports opened when firewalld is kept (`6443/tcp`).
    #[serde(default)]
    pub firewall_ports: Vec<String>,
    /// systemd units this role enables at first boot.
    #[serde(default)]
    pub enable_units: Vec<String>,
    /// Whether this role runs the VIP and load balancer.
    #[serde(default)]
    pub load_balancer: bool,
    /// TTL (Go duration: `24h`, `0s` = never expires) the initialiser
    /// creates the pre-generated bootstrap token with; default `24h0m0s`.
    /// A longer TTL lets a worker rebuilt later join with its original
    /// metadata, at the price of a join credential that stays valid that
    /// long (anyone holding the worker metadata can add nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_token_ttl: Option<String>,
    /// Whether masters re-create the pre-generated bootstrap token when it
    /// was deleted or expired (default true): rebuilt workers keep joining
    /// with their original metadata. `false` lets the token lapse; rebuilt
    /// workers then need new metadata with a fresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_bootstrap_token: Option<bool>,
}

/// Errors found in a profile.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The TOML did not parse or had unknown fields.
    #[error("{0}")]
    Parse(#[from] toml::de::Error),
    /// A field holds a value the agent cannot use.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl RoleProfile {
    /// Parses and validates a profile; `stem` is the file name without
    /// `.toml`, which must equal `name`.
    pub fn parse(text: &str, stem: &str) -> Result<Self, ProfileError> {
        let p: RoleProfile = toml::from_str(text)?;
        if p.name != stem {
            return Err(ProfileError::Invalid {
                field: "name",
                reason: format!("`{}` differs from the file name `{stem}`", p.name),
            });
        }
        for port in &p.firewall_ports {
            let ok = port
                .split_once('/')
                .map(|(n, proto)| {
                    let n_ok = n
                        .split('-')
                        .all(|x| x.parse::<u16>().map(|v| v > 0).unwrap_or(false));
                    n_ok && (proto == "tcp" || proto == "udp")
                })
                .unwrap_or(false);
            if !ok {
                return Err(ProfileError::Invalid {
                    field: "firewall_ports",
                    reason: format!("`{port}` is not PORT[-PORT]/tcp|udp"),
                });
            }
        }
        for m in &p.kernel_modules {
            if m.is_empty()
                || !m
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ProfileError::Invalid {
                    field: "kernel_modules",
                    reason: format!("`{m}` is not a module name"),
                });
            }
        }
        if let Some(ttl) = &p.bootstrap_token_ttl {
            if !is_go_duration(ttl) {
                return Err(ProfileError::Invalid {
                    field: "bootstrap_token_ttl",
                    reason: format!("`{ttl}` is not a duration like 24h, 1h30m or 0s"),
                });
            }
        }
        Ok(p)
    }
}

/// Whether `s` is a Go duration of hours, minutes and seconds (`24h`,
/// `1h30m`, `0s`), as kubeadm's token `ttl` takes it.
pub fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Some(unit) = rest[digits..].chars().next() else {
            return false;
        };
        if digits == 0 || !matches!(unit, 'h' | 'm' | 's') {
            return false;
        }
        rest = &rest[digits + 1..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_master_profile() {
        let p = RoleProfile::parse(
            "name = \"master\"\nrole = \"master\"\nfirewall_ports = [\"6443/tcp\", \"2379-2380/tcp\"]\nload_balancer = true\n",
            "master",
        )
        .unwrap();
        assert_eq!(p.role, Role::Master);
        assert!(p.load_balancer);
    }

    #[test]
    fn token_settings_are_optional_and_checked() {
        let p = RoleProfile::parse(
            "name = \"m\"\nrole = \"master\"\nbootstrap_token_ttl = \"8760h\"\nkeep_bootstrap_token = false\n",
            "m",
        )
        .unwrap();
        assert_eq!(p.bootstrap_token_ttl.as_deref(), Some("8760h"));
        assert_eq!(p.keep_bootstrap_token, Some(false));
        let e = RoleProfile::parse(
            "name = \"m\"\nrole = \"master\"\nbootstrap_token_ttl = \"1d\"\n",
            "m",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bootstrap_token_ttl"), "{e}");
        for ok in ["24h", "0s", "1h30m", "24h0m0s"] {
            assert!(is_go_duration(ok), "{ok}");
        }
        for bad in ["", "24", "h", "1d", "-1h", "24h "] {
            assert!(!is_go_duration(bad), "{bad:?}");
        }
    }

    #[test]
    fn rejects_bad_port_and_name_mismatch() {
        let e = RoleProfile::parse(
            "name = \"w\"\nrole = \"worker\"\nfirewall_ports = [\"x/tcp\"]\n",
            "w",
        )
        .unwrap_err();
        assert!(e.to_string().contains("firewall_ports"), "{e}");
        let e = RoleProfile::parse("name = \"a\"\nrole = \"worker\"\n", "b").unwrap_err();
        assert!(e.to_string().contains("name"), "{e}");
        let e = RoleProfile::parse("name = \"a\"\nrole = \"king\"\n", "a").unwrap_err();
        assert!(e.to_string().contains("king"), "{e}");
    }
}
