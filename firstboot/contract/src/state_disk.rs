//! The state disk of a PXE node: a local disk that keeps kubeadm's state
//! across reboots of a machine whose root lives in RAM.
//!
//! A PXE-booted node runs from its initramfs: everything it writes is lost
//! on reboot. For a master that means its etcd member, its certificates and
//! its kubelet identity — after a power loss of every master, nothing of
//! the cluster would be left. With a state disk (`state_disk = "/dev/vdb"`
//! in the inventory, `nodebake.state=/dev/vdb` on the kernel command line
//! that `nodebake serve` writes), `nodebake-state.service` runs before the
//! first-boot agent and the kubelet and:
//!
//! 1. waits for the device (bounded);
//! 2. formats it (ext4, label [`LABEL`]) when it is blank — and only then:
//!    a disk holding any other file system or partition table is refused,
//!    never overwritten;
//! 3. mounts it on [`MOUNT_POINT`] and bind-mounts one directory of it
//!    over each of [`PERSISTED`], seeding a directory from the image's
//!    content the first time.
//!
//! The agent's own journal (`/var/lib/nodebake`) is not kept: every boot of
//! a RAM root must prepare the host again (modules, sysctls, images). The
//! kubeadm steps then find kubeadm's files and resume — no second `init`,
//! no second join: the node comes back as the same etcd member.

/// The kernel command line parameter naming the state disk.
pub const CMDLINE_PARAM: &str = "nodebake.state";
/// The file system label nodebake formats the state disk with.
pub const LABEL: &str = "nodebake-state";
/// Where the state disk is mounted.
pub const MOUNT_POINT: &str = "/var/lib/nodebake-state";
/// What `nodebake-state.service` records once every directory is mounted
/// (JSON: device, whether it was formatted, the directories).
pub const MARKER: &str = "/run/nodebake/state-disk.json";
/// The directories kept on the state disk (kubeadm's, the kubelet's and
/// etcd's state), each bind-mounted from `MOUNT_POINT/<name without
/// slashes>`.
pub const PERSISTED: &[&str] = &["/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet"];

/// Checks a `state_disk` value: an absolute path under `/dev/` (a device
/// or one of udev's stable links such as `/dev/disk/by-id/...`), without
/// `..`, spaces, quotes or other characters that would break the kernel
/// command line it travels on.
pub fn check_device(d: &str) -> Result<(), String> {
    let ok_chars = d
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.:+@=,".contains(&b));
    if !d.starts_with("/dev/") || d.len() <= 5 {
        return Err(format!(
            "{} is not a device path (want /dev/..., e.g. /dev/vdb or /dev/disk/by-id/...)",
            crate::grammar::shown(d)
        ));
    }
    if !ok_chars || d.split('/').any(|c| c == "..") || d.ends_with('/') {
        return Err(format!(
            "{} holds characters a kernel command line cannot carry (letters, digits and /-_.:+@=, only; no `..`)",
            crate::grammar::shown(d)
        ));
    }
    Ok(())
}

/// The directory on the state disk that keeps `dir`
/// (`/var/lib/etcd` → `var-lib-etcd`).
pub fn subdir(dir: &str) -> String {
    dir.trim_start_matches('/').replace('/', "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_paths_are_checked() {
        for ok in [
            "/dev/vdb",
            "/dev/disk/by-id/virtio-state0",
            "/dev/disk/by-path/pci-0000:00:05.0",
        ] {
            assert_eq!(check_device(ok), Ok(()), "{ok}");
        }
        for bad in [
            "vdb",
            "/dev/",
            "/dev/vdb with space",
            "/dev/../etc/passwd",
            "/dev/\"x\"",
            "/mnt/x",
            "/dev/vdb/",
        ] {
            assert!(check_device(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdirs_are_flat_names() {
        assert_eq!(subdir("/var/lib/etcd"), "var-lib-etcd");
        assert_eq!(subdir("/etc/kubernetes"), "etc-kubernetes");
    }
}
