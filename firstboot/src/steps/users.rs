//! `users`: the metadata's login accounts. Each is created when missing
//! (`useradd`: home directory, `/bin/bash`, no password: keys only); its
//! SSH keys go to a root-owned file sshd reads through a drop-in
//! (`AuthorizedKeysFile ... /etc/ssh/nodebake-authorized-keys/%u`), so
//! no file in a home directory has to be owned right; `sudo` users get a
//! passwordless sudoers rule (a fixed line; the name is checked). A
//! user removed from the metadata loses its keys and sudo rule (its
//! account and home stay). sshd host keys are made when an image brought
//! sshd without them (package scripts never ran).

use anyhow::Result;

use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// Keys by account name (root-owned, 0644).
pub const KEYS_DIR: &str = "/etc/ssh/nodebake-authorized-keys";
/// The sshd drop-in naming [`KEYS_DIR`].
pub const SSHD_DROPIN: &str = "/etc/ssh/sshd_config.d/50-nodebake.conf";
/// sudoers rules are `SUDOERS_DIR/nodebake-<name>`.
pub const SUDOERS_DIR: &str = "/etc/sudoers.d";

/// Creates the metadata's accounts with their keys and sudo rules.
pub struct Users;

fn files(cx: &Ctx<'_>) -> Vec<FileSpec> {
    let users = &cx.node.users;
    if users.is_empty() {
        return Vec::new();
    }
    let mut f = vec![FileSpec::new(
        SSHD_DROPIN,
        format!(
            "# written by nodebake-firstboot: keys of the metadata's users\n\
             AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 {KEYS_DIR}/%u\n"
        ),
    )];
    for u in users {
        let mut keys = u.ssh_authorized_keys.join("\n");
        keys.push('\n');
        f.push(FileSpec::new(&format!("{KEYS_DIR}/{}", u.name), keys));
        if u.sudo {
            f.push(FileSpec {
                path: format!("{SUDOERS_DIR}/nodebake-{}", u.name),
                content: format!(
                    "# written by nodebake-firstboot\n{} ALL=(ALL) NOPASSWD: ALL\n",
                    u.name
                ),
                mode: 0o440,
            });
        }
    }
    f
}

/// Files of users no longer in the metadata (keys, sudo rules, and the
/// drop-in when no user is left).
fn stale(cx: &Ctx<'_>) -> Result<Vec<String>> {
    let names: Vec<&str> = cx.node.users.iter().map(|u| u.name.as_str()).collect();
    let sudo: Vec<String> = cx
        .node
        .users
        .iter()
        .filter(|u| u.sudo)
        .map(|u| format!("nodebake-{}", u.name))
        .collect();
    let mut out: Vec<String> = cx
        .root
        .list_dir(KEYS_DIR)?
        .into_iter()
        .filter(|n| !names.contains(&n.as_str()))
        .map(|n| format!("{KEYS_DIR}/{n}"))
        .collect();
    out.extend(
        cx.root
            .list_dir(SUDOERS_DIR)?
            .into_iter()
            .filter(|n| n.starts_with("nodebake-") && !sudo.contains(n))
            .map(|n| format!("{SUDOERS_DIR}/{n}")),
    );
    if names.is_empty() && cx.root.exists(SSHD_DROPIN) {
        out.push(SSHD_DROPIN.into());
    }
    Ok(out)
}

/// Accounts of the metadata that `/etc/passwd` does not have (root aside).
fn missing_accounts(cx: &Ctx<'_>) -> Result<Vec<String>> {
    let passwd = cx.root.read_opt("/etc/passwd")?.unwrap_or_default();
    Ok(cx
        .node
        .users
        .iter()
        .filter(|u| u.name != "root")
        .filter(|u| {
            !passwd
                .lines()
                .any(|l| l.split(':').next() == Some(u.name.as_str()))
        })
        .map(|u| u.name.clone())
        .collect())
}

/// sshd's unit on this image, when it has sshd.
fn sshd_unit(cx: &Ctx<'_>) -> Option<&'static str> {
    ["ssh.service", "sshd.service"].into_iter().find(|u| {
        ["/usr/lib/systemd/system", "/lib/systemd/system"]
            .iter()
            .any(|d| cx.root.exists(&format!("{d}/{u}")))
    })
}

impl Step for Users {
    fn id(&self) -> &'static str {
        "users"
    }

    fn describe(&self) -> &'static str {
        "login accounts of the metadata: created, SSH keys for sshd, sudo rules; removed users lose keys and sudo"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &files(cx))?;
        for s in stale(cx)? {
            p.push(Pending::File(format!("remove {s} (not in the metadata)")));
        }
        for u in missing_accounts(cx)? {
            p.push(Pending::Runtime(format!("create account {u}")));
        }
        Ok(p)
    }

    fn verify(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        // Accounts exist once useradd ran on the host; under --root it is
        // skipped, so only files are verified there.
        let mut p = pending_files(cx.root, &files(cx))?;
        for s in stale(cx)? {
            p.push(Pending::File(format!("remove {s}")));
        }
        if cx.live() {
            for u in missing_accounts(cx)? {
                p.push(Pending::Runtime(format!("create account {u}")));
            }
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        for u in missing_accounts(cx)? {
            cx.run(Cmd::new(
                "useradd",
                [
                    "--create-home",
                    "--shell",
                    "/bin/bash",
                    "--comment",
                    "nodebake user",
                    u.as_str(),
                ],
            ))?;
        }
        for s in stale(cx)? {
            cx.remove(&s)?;
        }
        let f = files(cx);
        let changed = write_files(cx, &f)?;
        if let Some(unit) = sshd_unit(cx) {
            if !cx.root.exists("/etc/ssh/ssh_host_ed25519_key") {
                cx.run(Cmd::new("ssh-keygen", ["-A"]))?;
            }
            if changed {
                cx.run(Cmd::new("systemctl", ["try-reload-or-restart", unit]))?;
            }
        }
        Ok(())
    }
}
