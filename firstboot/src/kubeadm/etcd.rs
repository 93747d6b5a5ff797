//! Rebuild support: remove the stale etcd member of a rebuilt master (by
//! peer URL — etcd accepts duplicate names) through a healthy member,
//! with a client certificate minted from the etcd CA. Everything runs
//! through the runner (`openssl`, `etcdctl`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::endpoint::Backoff;
use crate::runner::{Cmd, Outcome, Runner};

/// How to reach etcd: client endpoints and TLS files (real paths).
#[derive(Debug, Clone)]
pub struct EtcdAccess {
    /// `https://ip:2379` of the members to ask, in order.
    pub endpoints: Vec<String>,
    /// etcd CA certificate.
    pub cacert: String,
    /// Client certificate.
    pub cert: String,
    /// Client key.
    pub key: String,
}

impl EtcdAccess {
    /// `etcdctl` against one endpoint.
    pub fn etcdctl<I: IntoIterator<Item = String>>(&self, endpoint: &str, args: I) -> Cmd {
        let mut all = vec![
            format!("--endpoints={endpoint}"),
            format!("--cacert={}", self.cacert),
            format!("--cert={}", self.cert),
            format!("--key={}", self.key),
            "--command-timeout=5s".into(),
            "--dial-timeout=3s".into(),
        ];
        all.extend(args);
        Cmd::new("etcdctl", all)
    }
}

/// Mints a client certificate (`clientAuth`, 1 day) for `cn` (and `org`,
/// e.g. `system:masters` for the apiserver) from CA `ca_crt`/`ca_key`
/// into `dir/<name>.{crt,key}`; the key is 0600. Returns (crt, key)
/// paths. Runs `openssl` through the runner.
pub fn mint_client_cert(
    runner: &dyn Runner,
    dir: &Path,
    name: &str,
    ca_crt: &str,
    ca_key: &str,
    cn: &str,
    org: Option<&str>,
) -> Result<(String, String)> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let p = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
    let (crt, key, csr, extfile) = (p("crt"), p("key"), p("csr"), p("ext"));
    std::fs::write(
        &extfile,
        "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n",
    )?;
    let subj = match org {
        Some(o) => format!("/O={o}/CN={cn}"),
        None => format!("/CN={cn}"),
    };
    runner.run(&Cmd::new(
        "openssl",
        [
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subj,
        ],
    ))?;
    if Path::new(&key).exists() {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    }
    runner.run(&Cmd::new(
        "openssl",
        [
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-out",
            &crt,
            "-extfile",
            &extfile,
        ],
    ))?;
    Ok((crt, key))
}

#[derive(Debug, Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

/// One etcd member as `etcdctl member list -w json` shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    /// Member id.
    #[serde(rename = "ID")]
    pub id: u64,
    /// Name (empty for a member added but never started).
    #[serde(default)]
    pub name: String,
    /// Peer URLs.
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    /// Client URLs (empty for a member that never started).
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// The member list from the first endpoint that answers; `None` when the
/// runner skips commands.
pub fn member_list(runner: &dyn Runner, a: &EtcdAccess) -> Result<Option<(String, Vec<Member>)>> {
    let mut errors = Vec::new();
    for ep in &a.endpoints {
        let cmd = a.etcdctl(
            ep,
            [
                "member".to_string(),
                "list".into(),
                "-w".into(),
                "json".into(),
            ],
        );
        match runner.run(&cmd) {
            Ok(Outcome::Skipped) => return Ok(None),
            Ok(Outcome::Ran(out)) => {
                let l: MemberList = serde_json::from_str(&out)
                    .with_context(|| format!("parsing `etcdctl member list` from {ep}"))?;
                return Ok(Some((ep.clone(), l.members)));
            }
            Err(e) => errors.push(format!("{ep}: {e:#}")),
        }
    }
    bail!("no etcd member answered: {}", errors.join("; "))
}

/// Removes every member whose peer URL is `peer_url`, asking the first
/// healthy member; retries (bounded) while etcd answers `unhealthy
/// cluster` (membership changes are refused for a few seconds after
/// peers connect) or no member answers. Returns the removed ids.
pub fn remove_stale_etcd_member(
    runner: &dyn Runner,
    a: &EtcdAccess,
    peer_url: &str,
    b: &Backoff,
) -> Result<Vec<u64>> {
    let tries = b.tries.max(1);
    let mut removed = Vec::new();
    let mut last = String::new();
    for n in 1..=tries {
        let attempt =
            (|| -> Result<bool> {
                let Some((ep, members)) = member_list(runner, a)? else {
                    return Ok(true);
                };
                let stale: Vec<&Member> = members
                    .iter()
                    .filter(|m| m.peer_urls.iter().any(|u| same_url(u, peer_url)))
                    .collect();
                for m in stale {
                    eprintln!(
                    "nodebake-firstboot: removing stale etcd member {:x} ({}, {peer_url}) via {ep}",
                    m.id,
                    if m.name.is_empty() { "unstarted" } else { &m.name }
                );
                    runner.run(&a.etcdctl(
                        &ep,
                        ["member".to_string(), "remove".into(), format!("{:x}", m.id)],
                    ))?;
                    removed.push(m.id);
                }
                Ok(true)
            })();
        match attempt {
            Ok(_) => return Ok(removed),
            Err(e) => {
                last = format!("{e:#}");
                let retry =
                    last.contains("unhealthy cluster") || last.contains("no etcd member answered");
                eprintln!(
                    "nodebake-firstboot: removing stale etcd member: try {n}/{tries}: {last}"
                );
                if !retry {
                    break;
                }
            }
        }
        if n < tries {
            std::thread::sleep(b.pause(n));
        }
    }
    bail!("could not remove the stale etcd member {peer_url}: {last}")
}

/// Members whose peer URLs are none of `wanted` (masters no longer in the
/// metadata).
pub fn foreign_members<'m>(members: &'m [Member], wanted: &[String]) -> Vec<&'m Member> {
    members
        .iter()
        .filter(|m| {
            !m.peer_urls
                .iter()
                .any(|u| wanted.iter().any(|w| same_url(u, w)))
        })
        .collect()
}

/// Removes, through the first member that answers, every etcd member
/// whose peer URL is none of `wanted` (the masters of the metadata).
/// Refused, before anything changes, when those are half the members or
/// more (metadata that lost its masters must not empty the cluster:
/// remove masters one at a time) or when none of `wanted` is a member.
/// Returns the removed peer URLs.
pub fn remove_foreign_members(
    runner: &dyn Runner,
    a: &EtcdAccess,
    wanted: &[String],
    b: &Backoff,
) -> Result<Vec<String>> {
    let Some((_, members)) = member_list(runner, a)? else {
        return Ok(Vec::new());
    };
    let foreign = foreign_members(&members, wanted);
    if foreign.is_empty() {
        return Ok(Vec::new());
    }
    let urls: Vec<String> = foreign
        .iter()
        .filter_map(|m| m.peer_urls.first().cloned())
        .collect();
    if foreign.len() == members.len() {
        bail!(
            "no etcd member is a master of the metadata (members: {}): refusing to remove any",
            urls.join(", ")
        );
    }
    if 2 * foreign.len() >= members.len() {
        bail!(
            "{} of {} etcd members ({}) are not masters of the metadata: removing half or more \
             at once is refused; remove masters one at a time",
            foreign.len(),
            members.len(),
            urls.join(", ")
        );
    }
    for u in &urls {
        remove_stale_etcd_member(runner, a, u, b)?;
    }
    Ok(urls)
}

/// Why a control-plane join must wait; `None` when it may go ahead.
fn join_blocker(
    runner: &dyn Runner,
    a: &EtcdAccess,
    members: &[Member],
    earlier: &[String],
    mine: &str,
) -> Option<String> {
    let has = |url: &str| {
        members
            .iter()
            .any(|m| !m.name.is_empty() && m.peer_urls.iter().any(|u| same_url(u, url)))
    };
    if let Some(missing) = earlier.iter().find(|u| !has(u)) {
        return Some(format!(
            "the master before this one ({missing}) is not an etcd member yet"
        ));
    }
    let others: Vec<&Member> = members
        .iter()
        .filter(|m| !m.peer_urls.iter().any(|u| same_url(u, mine)))
        .collect();
    if let Some(m) = others.iter().find(|m| m.name.is_empty()) {
        return Some(format!(
            "another control-plane join is in flight (member {:x}, {} not started)",
            m.id,
            m.peer_urls.join(",")
        ));
    }
    let urls: Vec<String> = others.iter().flat_map(|m| m.client_urls.clone()).collect();
    if urls.is_empty() {
        return Some("no etcd member has a client URL".into());
    }
    let cmd = a.etcdctl(&urls.join(","), ["endpoint".to_string(), "health".into()]);
    match runner.run(&cmd) {
        Ok(_) => None,
        Err(e) => Some(format!("not every etcd member is healthy: {e:#}")),
    }
}

/// Serialises control-plane joins: waits (bounded, with backoff and a log
/// line per try) until every master before this one (`earlier` peer URLs,
/// the initialiser first) is a started member, no other member is
/// half-joined, and every member but this node's own stale one is
/// healthy.
pub fn wait_for_join_turn(
    runner: &dyn Runner,
    a: &EtcdAccess,
    earlier: &[String],
    mine: &str,
    b: &Backoff,
) -> Result<()> {
    let tries = b.tries.max(1);
    let mut last = String::new();
    for n in 1..=tries {
        let why = match member_list(runner, a) {
            Ok(None) => return Ok(()),
            Ok(Some((_, members))) => join_blocker(runner, a, &members, earlier, mine),
            Err(e) => Some(format!("{e:#}")),
        };
        match why {
            None => return Ok(()),
            Some(w) => {
                eprintln!(
                    "nodebake-firstboot: control-plane join waits its turn: try {n}/{tries}: {w}"
                );
                last = w;
            }
        }
        if n < tries {
            std::thread::sleep(b.pause(n));
        }
    }
    bail!("control-plane join not started after {tries} tries: {last}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_member_list_with_big_ids() {
        let json = r#"{"header":{"cluster_id":1},"members":[{"ID":17237436991929493444,"name":"m1","peerURLs":["https://10.0.0.1:2380"],"clientURLs":["https://10.0.0.1:2379"]},{"ID":5,"peerURLs":["https://10.0.0.2:2380/"]}]}"#;
        let l: MemberList = serde_json::from_str(json).unwrap();
        assert_eq!(l.members[0].id, 17237436991929493444);
        assert_eq!(l.members[1].name, "");
        assert!(same_url(
            &l.members[1].peer_urls[0],
            "https://10.0.0.2:2380"
        ));
    }
}
