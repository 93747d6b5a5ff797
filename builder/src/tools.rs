//! Host tools the builder drives for the parts no crate writes well
//! (ext4, FAT, the syslinux boot sector, qcow2, kernel module indexes):
//! one place that runs them and turns a missing tool or a failure into an
//! error naming the tool, the package that ships it and its own message.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Result};

/// A host tool: the program and the Debian / EL packages that ship it.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// Program name, looked up in `PATH` (plus /sbin and /usr/sbin).
    pub program: &'static str,
    /// Package names, for the error message.
    pub packages: &'static str,
}

pub const MKE2FS: Tool = Tool {
    program: "mke2fs",
    packages: "e2fsprogs",
};
pub const DEBUGFS: Tool = Tool {
    program: "debugfs",
    packages: "e2fsprogs",
};
pub const MKFS_FAT: Tool = Tool {
    program: "mkfs.fat",
    packages: "dosfstools",
};
pub const MCOPY: Tool = Tool {
    program: "mcopy",
    packages: "mtools",
};
pub const SYSLINUX: Tool = Tool {
    program: "syslinux",
    packages: "syslinux + syslinux-common (Debian) / syslinux (EL)",
};
pub const QEMU_IMG: Tool = Tool {
    program: "qemu-img",
    packages: "qemu-utils (Debian) / qemu-img (EL)",
};
/// syslinux's MBR boot code (the disk output's first sector).
pub const SYSLINUX_MBR: &[&str] = &[
    "/usr/lib/syslinux/mbr/mbr.bin",
    "/usr/share/syslinux/mbr.bin",
    "/usr/lib/syslinux/bios/mbr.bin",
];
/// The packages that ship [`SYSLINUX_MBR`].
pub const SYSLINUX_MBR_PACKAGES: &str = "syslinux-common (Debian) / syslinux (EL)";
pub const DEPMOD: Tool = Tool {
    program: "depmod",
    packages: "kmod",
};

impl Tool {
    /// Full path of the program, or an error naming its package.
    pub fn path(&self) -> Result<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
            .collect::<Vec<_>>();
        dirs.iter()
            .map(|d| d.join(self.program))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "`{}` is not installed (package {})",
                    self.program,
                    self.packages
                )
            })
    }

    /// A command for the tool with a fixed, minimal locale.
    pub fn command(&self) -> Result<Command> {
        let mut c = Command::new(self.path()?);
        c.env("LC_ALL", "C");
        Ok(c)
    }
}

/// Fails, listing every one of `tools` (and `data` files: candidates and
/// package) that is missing with the package that ships it, so one
/// install fixes them all; before any slow work.
pub fn require_all(tools: &[Tool], data: &[(&[&str], &str)]) -> Result<()> {
    let mut missing: Vec<String> = Vec::new();
    for t in tools {
        if t.path().is_err()
            && !missing
                .iter()
                .any(|m| m.starts_with(&format!("`{}`", t.program)))
        {
            missing.push(format!("`{}` (package {})", t.program, t.packages));
        }
    }
    for (candidates, packages) in data {
        if data_file(candidates, packages).is_err() {
            missing.push(format!("{} (package {packages})", candidates[0]));
        }
    }
    if !missing.is_empty() {
        bail!(
            "host tools missing for the requested outputs: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs `cmd` (made by [`Tool::command`]) and fails with its stderr when
/// it exits non-zero. `what` says what the call was for.
pub fn run(tool: Tool, cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| anyhow!("{what}: running `{}`: {e}", tool.program))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let msg = err.trim();
        let msg = if msg.is_empty() {
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        } else {
            msg.to_string()
        };
        bail!("{what}: `{}` failed ({}): {msg}", tool.program, out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first of `candidates` that exists (data files of a host package),
/// or an error naming the package.
pub fn data_file(candidates: &[&str], packages: &str) -> Result<PathBuf> {
    candidates
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            anyhow!(
                "none of {} exists (package {packages})",
                candidates.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_tool_is_listed_at_once() {
        let a = Tool {
            program: "nodebake-no-such-a",
            packages: "pkg-a",
        };
        let b = Tool {
            program: "nodebake-no-such-b",
            packages: "pkg-b",
        };
        let e = require_all(&[a, b, a], &[(&["/nonexistent/mbr.bin"], "pkg-c")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`nodebake-no-such-a` (package pkg-a)"), "{e}");
        assert!(e.contains("`nodebake-no-such-b` (package pkg-b)"), "{e}");
        assert!(e.contains("/nonexistent/mbr.bin (package pkg-c)"), "{e}");
        assert_eq!(e.matches("pkg-a").count(), 1, "{e}");
        require_all(&[], &[]).unwrap();
    }

    #[test]
    fn missing_tool_names_its_package() {
        let t = Tool {
            program: "nodebake-no-such-tool",
            packages: "nodebake-pkg",
        };
        let e = t.path().unwrap_err().to_string();
        assert!(
            e.contains("nodebake-no-such-tool") && e.contains("nodebake-pkg"),
            "{e}"
        );
    }

    #[test]
    fn failure_carries_stderr() {
        let t = Tool {
            program: "sh",
            packages: "dash",
        };
        let e = run(
            t,
            t.command().unwrap().args(["-c", "echo boom >&2; exit 3"]),
            "testing",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("testing") && e.contains("boom"), "{e}");
    }
}
