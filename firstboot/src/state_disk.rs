//! `nodebake-firstboot state-disk`: the state disk of a PXE node (see
//! [`nodebake_contract::state_disk`]): format when blank, mount, and
//! bind-mount kubeadm's, etcd's and the kubelet's directories from it.
//!
//! Run by `nodebake-state.service` before the agent and the kubelet, and by
//! the agent's first step when the metadata names a state disk the unit
//! did not mount. Idempotent: a second run finds everything in place.
//! A disk that holds anything but nodebake's state (another file system, a
//! partition table) is refused and left untouched.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};
use nodebake_contract::state_disk::{self as contract, LABEL, MARKER, MOUNT_POINT, PERSISTED};
use serde::{Deserialize, Serialize};

use crate::root::Root;
use crate::stage1::parse_ext_superblock;

/// What `setup` found and did; also the marker's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The device, as configured.
    pub device: String,
    /// Whether this run formatted it (first use).
    pub formatted: bool,
    /// The directories now served from it.
    pub directories: Vec<String>,
}

/// `nodebake.state=DEV` from a kernel command line.
pub fn device_from_cmdline(cmdline: &str) -> Option<String> {
    let key = format!("{}=", contract::CMDLINE_PARAM);
    cmdline
        .split_whitespace()
        .rev()
        .find_map(|w| w.strip_prefix(&key))
        .map(str::to_string)
}

/// The marker `setup` left, if any.
pub fn marker(root: &Root) -> Result<Option<Report>> {
    match root.read_opt(MARKER)? {
        None => Ok(None),
        Some(t) => Ok(Some(
            serde_json::from_str(&t).with_context(|| format!("parsing {MARKER}"))?,
        )),
    }
}

/// Makes `device` the node's state disk under `root` (`/` on a node).
/// `wait` bounds the wait for the device to appear.
pub fn setup(root: &Root, device: &str, wait: Duration) -> Result<Report> {
    contract::check_device(device).map_err(|e| anyhow::anyhow!("state disk: {e}"))?;
    let dev = wait_for_device(device, wait)?;
    let mp = root.path(MOUNT_POINT);
    std::fs::create_dir_all(&mp).with_context(|| format!("creating {}", mp.display()))?;
    let mut formatted = false;
    if !is_mounted_from(&mp, &dev)? {
        match probe(&dev)? {
            Probe::Ours => fsck(&dev, device)?,
            Probe::Blank => {
                eprintln!("nodebake-firstboot: state disk {device} is blank: formatting it (ext4, label {LABEL})");
                run(
                    Command::new("mkfs.ext4")
                        .args(["-q", "-F", "-L", LABEL])
                        .arg(&dev),
                    "mkfs.ext4 (e2fsprogs)",
                )?;
                formatted = true;
            }
            Probe::Foreign(what) => bail!(
                "state disk {device} ({}) holds {what}, not nodebake state (label {LABEL}): \
                 refusing to format it; if its data may go, wipe it first (`wipefs -a {device}`), \
                 or name another disk in the inventory's `state_disk`",
                dev.display()
            ),
        }
        mount(
            Some(&dev),
            &mp,
            Some("ext4"),
            MsFlags::MS_NOATIME,
            None::<&str>,
        )
        .with_context(|| format!("mounting {} on {}", dev.display(), mp.display()))?;
    }
    let mut directories = Vec::new();
    for dir in PERSISTED {
        bind(root, &mp, dir)?;
        directories.push(dir.to_string());
    }
    let report = Report {
        device: device.to_string(),
        formatted,
        directories,
    };
    root.write(
        MARKER,
        format!("{}\n", serde_json::to_string(&report)?).as_bytes(),
        0o644,
    )?;
    Ok(report)
}

fn wait_for_device(device: &str, wait: Duration) -> Result<PathBuf> {
    let start = Instant::now();
    loop {
        if let Ok(p) = std::fs::canonicalize(device) {
            let md = std::fs::metadata(&p)?;
            use std::os::unix::fs::FileTypeExt;
            if !md.file_type().is_block_device() {
                bail!(
                    "state disk {device} ({}) is not a block device",
                    p.display()
                );
            }
            return Ok(p);
        }
        if start.elapsed() >= wait {
            bail!(
                "state disk {device} did not appear within {} s (no such device: check the \
                 inventory's `state_disk` and that the disk is attached)",
                wait.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether `mp` is the root of a mount of block device `dev`.
fn is_mounted_from(mp: &Path, dev: &Path) -> Result<bool> {
    let rdev = std::fs::metadata(dev)?.rdev();
    let m = std::fs::metadata(mp)?;
    let parent = std::fs::metadata(mp.parent().unwrap_or(Path::new("/")))?;
    Ok(m.dev() == rdev && m.dev() != parent.dev())
}

enum Probe {
    Ours,
    Blank,
    Foreign(String),
}

fn probe(dev: &Path) -> Result<Probe> {
    use std::io::Read;
    let mut head = vec![0u8; 1 << 20];
    let mut f = std::fs::File::open(dev).with_context(|| format!("opening {}", dev.display()))?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    head.truncate(n);
    if let Some(sb) = parse_ext_superblock(&head) {
        return Ok(if sb.label == LABEL {
            Probe::Ours
        } else {
            Probe::Foreign(format!("an ext file system labelled `{}`", sb.label))
        });
    }
    // blkid knows every other signature (file systems, RAID, LVM,
    // partition tables), also those near the end of the disk.
    match Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(dev)
        .output()
    {
        Ok(o) if o.status.code() == Some(2) => {}
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let what: Vec<&str> = text
                .lines()
                .filter(|l| {
                    l.starts_with("TYPE=") || l.starts_with("PTTYPE=") || l.starts_with("LABEL=")
                })
                .collect();
            return Ok(Probe::Foreign(if what.is_empty() {
                "a signature blkid recognises".into()
            } else {
                what.join(" ")
            }));
        }
        Ok(o) => bail!(
            "blkid -p {} failed: {}",
            dev.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(_) => {}
    }
    if head.iter().any(|&b| b != 0) {
        return Ok(Probe::Foreign(
            "data in its first MiB (and blkid, from util-linux, is not there to name it)".into(),
        ));
    }
    Ok(Probe::Blank)
}

/// `e2fsck -p`: after a power loss the journal is replayed on mount, but
/// an unclean file system is better found here, naming the disk.
fn fsck(dev: &Path, device: &str) -> Result<()> {
    let o = match Command::new("e2fsck").arg("-p").arg(dev).output() {
        Ok(o) => o,
        Err(_) => return Ok(()), // mount replays the journal
    };
    match o.status.code() {
        Some(0..=3) => Ok(()),
        _ => bail!(
            "state disk {device}: e2fsck -p found errors it cannot fix ({}): {}; repair it by hand \
             (e2fsck {device}) before this node can use its state",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim()
        ),
    }
}

/// Bind-mounts `MOUNT_POINT/<subdir>` over `dir`, seeding it from the
/// image's `dir` the first time.
fn bind(root: &Root, mp: &Path, dir: &str) -> Result<()> {
    let live = root.path(dir);
    let keep = mp.join(contract::subdir(dir));
    if !keep.exists() {
        let staging = mp.join(format!(".{}.new", contract::subdir(dir)));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir(&staging)?;
        let mode = std::fs::metadata(&live)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(if dir == "/var/lib/etcd" { 0o700 } else { 0o755 });
        if live.is_dir() {
            run(
                Command::new("cp")
                    .arg("-a")
                    .arg(live.join("."))
                    .arg(&staging),
                "cp (coreutils)",
            )?;
        }
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staging, &keep)?;
    }
    std::fs::create_dir_all(&live).with_context(|| format!("creating {}", live.display()))?;
    let (l, k) = (std::fs::metadata(&live)?, std::fs::metadata(&keep)?);
    if l.dev() == k.dev() && l.ino() == k.ino() {
        return Ok(());
    }
    mount(
        Some(&keep),
        &live,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {} on {}", keep.display(), live.display()))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let o = cmd
        .output()
        .with_context(|| format!("running {what}: is it in the image?"))?;
    if !o.status.success() {
        bail!(
            "{what} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parameter_from_the_command_line() {
        assert_eq!(
            device_from_cmdline("console=ttyS0 nodebake.state=/dev/vdb quiet"),
            Some("/dev/vdb".into())
        );
        assert_eq!(device_from_cmdline("console=ttyS0 nodebake.statex=1"), None);
        assert_eq!(
            device_from_cmdline("nodebake.state=/dev/a nodebake.state=/dev/b"),
            Some("/dev/b".into())
        );
    }
}
