//! SELinux permissive: `SELINUX=permissive` in `/etc/selinux/config` and
//! `setenforce 0` while `/sys/fs/selinux/enforce` says enforcing. Nothing
//! to do on systems without SELinux.

use anyhow::Result;

use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// SELinux configuration file.
pub const CONFIG: &str = "/etc/selinux/config";
/// Runtime enforcement switch.
pub const ENFORCE: &str = "/sys/fs/selinux/enforce";

/// Puts SELinux in permissive mode.
pub struct Selinux;

/// `config` with `SELINUX=permissive`; every other line kept.
pub fn set_permissive(config: &str) -> String {
    let mut found = false;
    let mut out = String::new();
    for l in config.lines() {
        if l.trim_start().starts_with("SELINUX=") {
            found = true;
            out += "SELINUX=permissive";
        } else {
            out += l;
        }
        out.push('\n');
    }
    if !found {
        out += "SELINUX=permissive\n";
    }
    out
}

fn files(cx: &Ctx<'_>) -> Result<Vec<FileSpec>> {
    Ok(match cx.root.read_opt(CONFIG)? {
        Some(c) => vec![FileSpec::new(CONFIG, set_permissive(&c))],
        None => Vec::new(),
    })
}

fn enforcing(cx: &Ctx<'_>) -> Result<bool> {
    Ok(cx.root.read_opt(ENFORCE)?.is_some_and(|s| s.trim() == "1"))
}

impl Step for Selinux {
    fn id(&self) -> &'static str {
        "selinux"
    }

    fn describe(&self) -> &'static str {
        "SELinux permissive in its config and at runtime (when SELinux is present)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let mut p = pending_files(cx.root, &files(cx)?)?;
        if enforcing(cx)? {
            p.push(Pending::Runtime("SELinux is enforcing".into()));
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let f = files(cx)?;
        write_files(cx, &f)?;
        if enforcing(cx)? {
            cx.run(Cmd::new("setenforce", ["0"]))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_mode_line() {
        let c = "# comment\nSELINUX=enforcing\nSELINUXTYPE=targeted\n";
        let out = set_permissive(c);
        assert_eq!(out, "# comment\nSELINUX=permissive\nSELINUXTYPE=targeted\n");
        assert_eq!(set_permissive(&out), out);
        assert_eq!(
            set_permissive("SELINUXTYPE=targeted\n"),
            "SELINUXTYPE=targeted\nSELINUX=permissive\n"
        );
    }
}
