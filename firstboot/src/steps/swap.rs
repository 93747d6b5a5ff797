//! Swap off now (`swapoff -a`) and for good: swap entries in `/etc/fstab`
//! are commented out and their systemd swap units masked.

use anyhow::Result;

use crate::runner::Cmd;
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// Prefix of an fstab line this agent commented out.
pub const DISABLED_PREFIX: &str = "#nodebake-swapoff# ";

/// Turns swap off.
pub struct Swap;

/// Whether an fstab line is an active swap entry.
fn is_swap_entry(line: &str) -> bool {
    let t = line.trim_start();
    !t.starts_with('#') && t.split_whitespace().nth(2) == Some("swap")
}

/// `fstab` with every active swap entry commented out.
pub fn disable_swap_entries(fstab: &str) -> String {
    let mut out = String::new();
    for l in fstab.lines() {
        if is_swap_entry(l) {
            out += DISABLED_PREFIX;
        }
        out += l;
        out.push('\n');
    }
    out
}

/// Devices of swap entries, active or commented out by this agent.
pub fn swap_devices(fstab: &str) -> Vec<String> {
    fstab
        .lines()
        .map(|l| l.strip_prefix(DISABLED_PREFIX).unwrap_or(l))
        .filter(|l| is_swap_entry(l))
        .filter_map(|l| l.split_whitespace().next().map(resolve_spec))
        .collect()
}

/// `UUID=x` / `LABEL=x` / `PARTUUID=x` → the `/dev/disk/by-*` path systemd
/// names the unit after.
fn resolve_spec(spec: &str) -> String {
    for (key, dir) in [
        ("UUID=", "by-uuid"),
        ("LABEL=", "by-label"),
        ("PARTUUID=", "by-partuuid"),
        ("PARTLABEL=", "by-partlabel"),
    ] {
        if let Some(v) = spec.strip_prefix(key) {
            return format!("/dev/disk/{dir}/{v}");
        }
    }
    spec.to_string()
}

/// systemd's path escaping (`systemd-escape --path`).
pub fn escape_path(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, b) in trimmed.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out += "\\x2e",
            b if b.is_ascii_alphanumeric() || b == b':' || b == b'_' || b == b'.' => {
                out.push(b as char)
            }
            b => out += &format!("\\x{b:02x}"),
        }
    }
    out
}

/// Swap unit name for a device or file path.
pub fn swap_unit(path: &str) -> String {
    format!("{}.swap", escape_path(path))
}

fn active_swaps(cx: &Ctx<'_>) -> Result<Vec<String>> {
    if !cx.live() {
        return Ok(Vec::new());
    }
    Ok(cx
        .root
        .read_opt("/proc/swaps")?
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

fn files(cx: &Ctx<'_>) -> Result<(Vec<FileSpec>, Vec<String>)> {
    let mut files = Vec::new();
    let mut devices = Vec::new();
    if let Some(fstab) = cx.root.read_opt("/etc/fstab")? {
        devices = swap_devices(&fstab);
        files.push(FileSpec::new("/etc/fstab", disable_swap_entries(&fstab)));
    }
    devices.extend(active_swaps(cx)?);
    devices.sort();
    devices.dedup();
    let masks = devices
        .iter()
        .map(|d| format!("/etc/systemd/system/{}", swap_unit(d)))
        .collect();
    Ok((files, masks))
}

impl Step for Swap {
    fn id(&self) -> &'static str {
        "swap"
    }

    fn describe(&self) -> &'static str {
        "swap off now and for good (fstab entries commented, swap units masked)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let (files, masks) = files(cx)?;
        let mut p = pending_files(cx.root, &files)?;
        for m in masks {
            if std::fs::read_link(cx.root.path(&m)).ok().as_deref()
                != Some(std::path::Path::new("/dev/null"))
            {
                p.push(Pending::File(format!("mask {m}")));
            }
        }
        for s in active_swaps(cx)? {
            p.push(Pending::Runtime(format!("swap active on {s}")));
        }
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let (files, masks) = files(cx)?;
        write_files(cx, &files)?;
        let mut masked = false;
        for m in masks {
            masked |= cx.symlink(&m, "/dev/null")?;
        }
        cx.run(Cmd::new("swapoff", ["-a"]))?;
        if masked {
            cx.run(Cmd::new("systemctl", ["daemon-reload"]))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FSTAB: &str = "/dev/mapper/cl-root / xfs defaults 0 0\nUUID=ab-12 none swap defaults 0 0\n# /dev/sdb1 none swap sw 0 0\n/swapfile none swap sw 0 0\n";

    #[test]
    fn comments_swap_entries_once() {
        let once = disable_swap_entries(FSTAB);
        assert_eq!(disable_swap_entries(&once), once);
        assert!(once.contains("#nodebake-swapoff# UUID=ab-12 none swap"));
        assert!(once.contains("#nodebake-swapoff# /swapfile"));
        assert!(once.starts_with("/dev/mapper/cl-root / xfs"));
        assert!(once.contains("\n# /dev/sdb1 none swap sw 0 0\n"));
        assert_eq!(swap_devices(FSTAB), swap_devices(&once));
    }

    #[test]
    fn unit_names_match_systemd_escape() {
        assert_eq!(swap_unit("/dev/sda2"), "dev-sda2.swap");
        assert_eq!(
            swap_unit("/dev/mapper/cl-swap"),
            "dev-mapper-cl\\x2dswap.swap"
        );
        assert_eq!(
            swap_unit(&resolve_spec("UUID=ab-12")),
            "dev-disk-by\\x2duuid-ab\\x2d12.swap"
        );
        assert_eq!(swap_unit("/swapfile"), "swapfile.swap");
    }
}
