//! After init or join: the admin kubeconfig for root, the baked CNI
//! manifest, the wait for Ready and the bootstrap token keep-alive.

use anyhow::{bail, Result};
use nodebake_contract::layout::MANIFESTS_DIR;

use super::{arg_path, kubeadm, kubeconfig, ran, ADMIN_CONF, TOKEN_CONFIG};
use crate::kubeadm::config::render_token_config;
use crate::kubeadm::config::DEFAULT_TOKEN_TTL;
use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// root's kubeconfig.
pub const ROOT_KUBECONFIG: &str = "/root/.kube/config";
/// The CNI manifest with this cluster's pod CIDR.
pub const CNI_MANIFEST: &str = "/etc/nodebake/cni.yaml";

/// Copies `admin.conf` to root's kubeconfig (0600).
pub struct AdminKubeconfig;

fn admin_copy(cx: &Ctx<'_>) -> Result<Option<FileSpec>> {
    Ok(cx.root.read_opt(ADMIN_CONF)?.map(|content| FileSpec {
        path: ROOT_KUBECONFIG.into(),
        content,
        mode: 0o600,
    }))
}

impl Step for AdminKubeconfig {
    fn id(&self) -> &'static str {
        "admin-kubeconfig"
    }

    fn describe(&self) -> &'static str {
        "admin kubeconfig for root (/root/.kube/config, 0600)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        match admin_copy(cx)? {
            Some(f) => pending_files(cx.root, &[f]),
            None => Ok(vec![Pending::Runtime(format!(
                "copy {ADMIN_CONF} to {ROOT_KUBECONFIG} (kubeadm has not written it yet)"
            ))]),
        }
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        match admin_copy(cx)? {
            Some(f) => {
                write_files(cx, &[f])?;
            }
            None if cx.live() => bail!("{ADMIN_CONF} is missing after kubeadm"),
            None => {}
        }
        Ok(())
    }
}

/// Applies the baked CNI manifest (flannel: with the configured pod CIDR).
pub struct Cni;

/// The baked manifest for the node's CNI: path and rendered content.
fn cni_manifest(cx: &Ctx<'_>) -> Result<Option<(String, String)>> {
    let cni = &cx.node.cni;
    for name in [
        format!("kube-{cni}.yml"),
        format!("kube-{cni}.yaml"),
        format!("{cni}.yml"),
        format!("{cni}.yaml"),
    ] {
        let path = format!("{MANIFESTS_DIR}/{name}");
        if let Some(text) = cx.root.read_opt(&path)? {
            let text = if cni == "flannel" {
                text.replace("10.244.0.0/16", &cx.node.pod_cidr.to_string())
            } else {
                text
            };
            return Ok(Some((path, text)));
        }
    }
    Ok(None)
}

fn kubectl<I: IntoIterator<Item = String>>(cx: &Ctx<'_>, args: I) -> Cmd {
    let mut all = vec!["--kubeconfig".to_string(), kubeconfig(cx)];
    all.extend(args);
    Cmd::new("kubectl", all)
}

impl Step for Cni {
    fn id(&self) -> &'static str {
        "cni"
    }

    fn describe(&self) -> &'static str {
        "apply the baked CNI manifest with the cluster's pod CIDR (kubectl apply)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let Some((src, text)) = cni_manifest(cx)? else {
            return Ok(vec![Pending::Runtime(format!(
                "apply the {} manifest (none baked under {MANIFESTS_DIR})",
                cx.node.cni
            ))]);
        };
        let mut p = pending_files(cx.root, &[FileSpec::new(CNI_MANIFEST, text)])?;
        let applied = cx.live()
            && p.is_empty()
            && cx
                .run(kubectl(
                    cx,
                    ["get".to_string(), "-f".into(), arg_path(cx, CNI_MANIFEST)],
                ))
                .is_ok();
        if !applied {
            p.push(Pending::Runtime(format!(
                "kubectl apply -f {CNI_MANIFEST} (from {src})"
            )));
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let Some((_, text)) = cni_manifest(cx)? else {
            if cx.live() {
                bail!(
                    "no {} manifest baked under {MANIFESTS_DIR} (kube-{}.yml)",
                    cx.node.cni,
                    cx.node.cni
                );
            }
            return Ok(());
        };
        write_files(cx, &[FileSpec::new(CNI_MANIFEST, text)])?;
        let cmd = kubectl(
            cx,
            ["apply".to_string(), "-f".into(), arg_path(cx, CNI_MANIFEST)],
        );
        cx.run(cmd)?;
        Ok(())
    }
}

/// Waits (bounded) until this node's Ready condition is `True`.
pub struct NodeReady;

fn ready_query(cx: &Ctx<'_>) -> Cmd {
    kubectl(
        cx,
        [
            "get".to_string(),
            "node".into(),
            cx.node.hostname.clone(),
            "-o".into(),
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}".into(),
        ],
    )
}

impl Step for NodeReady {
    fn id(&self) -> &'static str {
        "node-ready"
    }

    fn describe(&self) -> &'static str {
        "wait (bounded) until this node is Ready"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if cx.live() {
            if let Ok(Some(s)) = cx.run(ready_query(cx)).map(ran) {
                if s.trim() == "True" {
                    return Ok(Vec::new());
                }
            }
        }
        Ok(vec![Pending::Runtime(format!(
            "node {} Ready",
            cx.node.hostname
        ))])
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let b = cx.join.ready.clone();
        let tries = b.tries.max(1);
        let mut last = String::new();
        for n in 1..=tries {
            match cx.run(ready_query(cx)).map(ran) {
                Ok(None) => return Ok(()),
                Ok(Some(s)) if s.trim() == "True" => {
                    eprintln!("nodebake-firstboot: node {} is Ready", cx.node.hostname);
                    return Ok(());
                }
                Ok(Some(s)) => last = format!("Ready={}", s.trim()),
                Err(e) => last = format!("{e:#}"),
            }
            eprintln!(
                "nodebake-firstboot: waiting for node {} to be Ready: try {n}/{tries}: {last}",
                cx.node.hostname
            );
            if n < tries {
                std::thread::sleep(b.pause(n));
            }
        }
        bail!(
            "node {} not Ready after {tries} tries; last: {last}",
            cx.node.hostname
        )
    }
}

/// Keeps the pre-generated bootstrap token present on masters: re-creates
/// it (`kubeadm token create --config`, the token stays off the command
/// line) when `kubeadm token list` no longer shows it.
pub struct BootstrapToken;

fn token_file(cx: &Ctx<'_>) -> Result<FileSpec> {
    let ttl = cx
        .profile
        .bootstrap_token_ttl
        .clone()
        .unwrap_or_else(|| DEFAULT_TOKEN_TTL.into());
    Ok(FileSpec {
        path: TOKEN_CONFIG.into(),
        content: render_token_config(cx.node, &ttl)?,
        mode: 0o600,
    })
}

/// What `kubeadm token list` shows for the token with `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// Listed with a TTL left.
    Valid,
    /// Listed with TTL `<invalid>`: expired, its Secret not yet removed by
    /// the controller-manager's token cleaner (`kubeadm token create`
    /// refuses an id whose Secret exists).
    Expired,
    /// Not listed.
    Absent,
}

/// The state of the token with `id` in `kubeadm token list` output.
pub fn token_state(list: &str, id: &str) -> TokenState {
    let mut state = TokenState::Absent;
    for l in list.lines() {
        let first = l.split_whitespace().next().unwrap_or("");
        if first.contains('.') && first.split('.').next() == Some(id) {
            if l.contains("<invalid>") {
                state = TokenState::Expired;
            } else {
                return TokenState::Valid;
            }
        }
    }
    state
}

fn token_id(cx: &Ctx<'_>) -> String {
    cx.node
        .secrets
        .bootstrap_token
        .expose()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn token_list(cx: &Ctx<'_>) -> Result<Option<TokenState>> {
    let id = token_id(cx);
    let list = cx.run(kubeadm([
        "token".to_string(),
        "list".into(),
        "--kubeconfig".into(),
        arg_path(cx, ADMIN_CONF),
    ]))?;
    Ok(ran(list).map(|out| token_state(&out, &id)))
}

fn token_present(cx: &Ctx<'_>) -> Result<Option<bool>> {
    Ok(token_list(cx)?.map(|s| s == TokenState::Valid))
}

impl Step for BootstrapToken {
    fn id(&self) -> &'static str {
        "bootstrap-token"
    }

    fn describe(&self) -> &'static str {
        "keep the pre-generated bootstrap token present (re-create it when deleted or expired)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &[token_file(cx)?])?;
        // A check only reports: a cluster that cannot be asked yet (no
        // kubeadm, no admin.conf) means the token is still to be made.
        if !cx.live() || !matches!(token_present(cx), Ok(Some(true))) {
            p.push(Pending::Runtime(
                "bootstrap token present in the cluster".into(),
            ));
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let f = [token_file(cx)?];
        write_files(cx, &f)?;
        // Right after a control-plane join the API can be away for a while
        // (etcd promoting the new member, an apiserver restarting behind
        // the VIP): retried, bounded, before first boot is failed for it.
        let b = cx.join.api.clone();
        let tries = b.tries.max(1);
        for n in 1..=tries {
            match ensure_token(cx) {
                Ok(()) => return Ok(()),
                Err(e) if n < tries => {
                    eprintln!(
                        "nodebake-firstboot: bootstrap token: try {n}/{tries} failed (the API may be \
                         settling): {e:#}"
                    );
                    std::thread::sleep(b.pause(n));
                }
                Err(e) => return Err(e.context(format!("bootstrap token: {tries} tries"))),
            }
        }
        unreachable!("the last try returns")
    }
}

fn ensure_token(cx: &mut Ctx<'_>) -> Result<()> {
    match token_list(cx)? {
        Some(TokenState::Valid) => return Ok(()),
        Some(TokenState::Expired) => {
            // Expired but still stored: `token create` would refuse the id.
            eprintln!(
                "nodebake-firstboot: the pre-generated bootstrap token expired; deleting it to \
                 create it again"
            );
            cx.run(kubeadm([
                "token".to_string(),
                "delete".into(),
                token_id(cx),
                "--kubeconfig".into(),
                arg_path(cx, ADMIN_CONF),
            ]))?;
        }
        _ => {}
    }
    eprintln!("nodebake-firstboot: re-creating the pre-generated bootstrap token");
    cx.run(kubeadm([
        "token".to_string(),
        "create".into(),
        "--config".into(),
        arg_path(cx, TOKEN_CONFIG),
        "--kubeconfig".into(),
        arg_path(cx, ADMIN_CONF),
    ]))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_list_parsing() {
        let out = "TOKEN                     TTL         EXPIRES                USAGES                   DESCRIPTION   EXTRA GROUPS\n\
                   abcdef.0123456789abcdef   23h         2026-01-02T00:00:00Z   authentication,signing   x             system:bootstrappers:kubeadm:default-node-token\n\
                   zzzzzz.0123456789abcdef   <invalid>   2020-01-02T00:00:00Z   authentication,signing   x             g\n";
        assert_eq!(token_state(out, "abcdef"), TokenState::Valid);
        assert_eq!(token_state(out, "zzzzzz"), TokenState::Expired);
        assert_eq!(token_state(out, "qqqqqq"), TokenState::Absent);
        assert_eq!(token_state("TOKEN TTL\n", "TOKEN"), TokenState::Absent);
    }
}
