//! The masters' control-plane endpoint: haproxy on every master forwards
//! the endpoint port to every apiserver, keepalived holds the VIP on one
//! master whose haproxy answers. Both files are checked with the real tools
//! (`haproxy -c`, `keepalived -t`) before they are put in place; then the
//! host services are enabled, restarted and verified, or (mode
//! `static-pods`) the kubelet's static pods are written instead. Workers,
//! and masters whose profile has no load balancer, skip both steps.

pub mod haproxy;
pub mod keepalived;
pub mod static_pods;

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use nodebake_contract::node::LoadBalancerMode;
use nodebake_contract::profile::Role;

use crate::runner::{Cmd, Outcome};
use crate::step::{pending_files, Ctx, FileSpec, Pending, Step};

/// Whether this node runs the load balancer.
pub fn applies(cx: &Ctx<'_>) -> bool {
    cx.node.role == Role::Master && cx.profile.load_balancer
}

fn host_mode(cx: &Ctx<'_>) -> bool {
    cx.node.load_balancer.mode == LoadBalancerMode::Host
}

/// Runtime items still pending for `unit` (live runner only): enabled and
/// active.
fn unit_pending(cx: &Ctx<'_>, unit: &str) -> Vec<Pending> {
    let mut p = Vec::new();
    if !cx.live() || !host_mode(cx) {
        return p;
    }
    for (verb, want) in [("is-enabled", "enabled"), ("is-active", "active")] {
        let ok = matches!(
            cx.run(Cmd::new("systemctl", [verb, unit])),
            Ok(Outcome::Ran(out)) if out.trim() == want
        );
        if !ok {
            p.push(Pending::Runtime(format!("{unit} not {want}")));
        }
    }
    p
}

/// Writes `f` to a staging file next to its path, runs `check` on it (the
/// staging path is appended to its arguments), then installs it. The
/// staging file is removed either way; a refused file leaves the old one in
/// place. The VRRP password never reaches the error message.
fn install_checked(cx: &mut Ctx<'_>, f: &FileSpec, check: Option<(&str, &[&str])>) -> Result<()> {
    if let Some((program, args)) = check {
        let staged = format!("{}.nodebake-check", f.path);
        cx.root.write(&staged, f.content.as_bytes(), f.mode)?;
        let host_path = cx.root.path(&staged).to_string_lossy().into_owned();
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        a.push(host_path);
        let res = cx.run(Cmd::new(program, a));
        let _ = std::fs::remove_file(cx.root.path(&staged));
        if let Err(e) = res {
            let mut msg = format!("{e:#}");
            if let Some(p) = &cx.node.secrets.vrrp_password {
                msg = msg.replace(p.expose(), "<redacted>");
            }
            anyhow::bail!("{} was refused by {program}, left unchanged: {msg}", f.path);
        }
    }
    cx.write(&f.path, &f.content, f.mode)?;
    Ok(())
}

/// Whether the real tool is there to check a file: always on a live host
/// service node (the packages are baked); in static-pod mode only when the
/// host has it.
fn checker(cx: &Ctx<'_>, program: &'static str) -> bool {
    host_mode(cx)
        || ["/usr/sbin", "/usr/bin", "/sbin"]
            .iter()
            .any(|d| cx.root.path(&format!("{d}/{program}")).exists())
}

/// haproxy: configuration, checked with `haproxy -c`, enabled and started.
pub struct Haproxy;

fn haproxy_files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    let mut f = Vec::new();
    if cx.node.load_balancer.verify_apiserver_ca {
        if let Some(ca) = &cx.node.secrets.ca {
            f.push(FileSpec::new(haproxy::CA_FILE, ca.ca_crt.clone()));
        }
    }
    // The baked haproxy's version picks the configuration's dialect
    // (EL7's 1.5 has no `option redispatch <interval>`).
    let version = if cx.live() && host_mode(cx) {
        match cx.run(crate::runner::Cmd::new("haproxy", ["-v"])) {
            Ok(crate::runner::Outcome::Ran(out)) => haproxy::parse_version(&out),
            _ => None,
        }
    } else {
        None
    };
    f.push(FileSpec::new(
        haproxy::CONFIG,
        haproxy::render_config_for(cx.node, haproxy::CA_FILE, version),
    ));
    if !host_mode(cx) {
        f.push(FileSpec::new(
            static_pods::HAPROXY_POD,
            static_pods::render_haproxy_pod(cx.node),
        ));
    }
    f
}

impl Step for Haproxy {
    fn id(&self) -> &'static str {
        "haproxy"
    }

    fn describe(&self) -> &'static str {
        "masters: haproxy forwarding the endpoint port to every apiserver (checked with haproxy -c), enabled and running"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if !applies(cx) {
            return Ok(Vec::new());
        }
        let mut p = pending_files(cx.root, &haproxy_files(cx))?;
        p.extend(unit_pending(cx, "haproxy.service"));
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let check = checker(cx, "haproxy").then_some(("haproxy", &["-c", "-q", "-f"][..]));
        for f in haproxy_files(cx) {
            if f.path == haproxy::CONFIG {
                install_checked(cx, &f, check)?;
            } else {
                cx.write(&f.path, &f.content, f.mode)?;
            }
        }
        if host_mode(cx) {
            cx.run(Cmd::new("systemctl", ["enable", "haproxy.service"]))?;
            // A running haproxy reloads (connections in flight finish; a
            // reconcile after a membership change drops none).
            cx.run(Cmd::new(
                "systemctl",
                ["reload-or-restart", "haproxy.service"],
            ))?;
        }
        Ok(())
    }
}

/// keepalived: track script, configuration (0600, checked with
/// `keepalived -t`), VIP clean-up drop-in, enabled and started.
pub struct Keepalived;

fn keepalived_files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    let mut f = vec![
        FileSpec {
            path: keepalived::CHECK_SCRIPT.into(),
            content: keepalived::render_check_script(cx.node.endpoint.port),
            mode: 0o755,
        },
        FileSpec {
            path: keepalived::CONFIG.into(),
            content: keepalived::render_config(cx.node, keepalived::CHECK_SCRIPT),
            mode: 0o600,
        },
    ];
    if host_mode(cx) {
        f.push(FileSpec::new(
            keepalived::DROPIN,
            keepalived::render_dropin(cx.node),
        ));
    } else {
        f.push(FileSpec::new(
            static_pods::KEEPALIVED_POD,
            static_pods::render_keepalived_pod(cx.node),
        ));
    }
    f
}

fn script_dir_pending(cx: &Ctx<'_>) -> Option<Pending> {
    let meta = std::fs::metadata(cx.root.path(keepalived::SCRIPT_DIR)).ok()?;
    (meta.permissions().mode() & 0o7777 != 0o755).then(|| {
        Pending::File(format!(
            "make {} mode 0755 (keepalived refuses scripts in writable directories)",
            keepalived::SCRIPT_DIR
        ))
    })
}

impl Step for Keepalived {
    fn id(&self) -> &'static str {
        "keepalived"
    }

    fn describe(&self) -> &'static str {
        "masters: keepalived holding the VIP while the local haproxy answers (checked with keepalived -t), enabled and running"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        if !applies(cx) {
            return Ok(Vec::new());
        }
        let mut p = pending_files(cx.root, &keepalived_files(cx))?;
        p.extend(script_dir_pending(cx));
        p.extend(unit_pending(cx, "keepalived.service"));
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let check = checker(cx, "keepalived").then_some(("keepalived", &["-t", "-f"][..]));
        let mut dropin_changed = false;
        for f in keepalived_files(cx) {
            if f.path == keepalived::CONFIG {
                install_checked(cx, &f, check)?;
                continue;
            }
            let changed = cx.write(&f.path, &f.content, f.mode)?;
            dropin_changed |= changed && f.path == keepalived::DROPIN;
            if f.path == keepalived::CHECK_SCRIPT {
                let dir = cx.root.path(keepalived::SCRIPT_DIR);
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("chmod 0755 {}", dir.display()))?;
            }
        }
        if host_mode(cx) {
            if dropin_changed {
                cx.run(Cmd::new("systemctl", ["daemon-reload"]))?;
            }
            cx.run(Cmd::new("systemctl", ["enable", "keepalived.service"]))?;
            // A new drop-in needs a restart; otherwise a running keepalived
            // reloads (SIGHUP): new peers without giving up the VIP.
            let verb = if dropin_changed {
                "restart"
            } else {
                "reload-or-restart"
            };
            cx.run(Cmd::new("systemctl", [verb, "keepalived.service"]))?;
        }
        Ok(())
    }
}
