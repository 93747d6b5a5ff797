//! The `disk` output: a bootable BIOS disk image for VM templates.
//!
//! Layout (MBR, 512-byte sectors):
//! ```text
//! 0        MBR: syslinux mbr.bin + disk signature + two partitions
//! 1 MiB    partition 1, FAT16, active: ldlinux.sys/.c32, syslinux.cfg,
//!          vmlinuz, initrd.img (stage 1: nodebake-firstboot as /init + the
//!          storage modules the kernel needs to see the root disk)
//! …        partition 2, ext4 labelled `root_label`: the image tree
//! ```
//! The boot loader starts the kernel with `root=LABEL=<root_label> rw`; the
//! stage-1 init loads virtio/SCSI/NVMe modules, finds the root by label,
//! mounts it and switches to systemd.
//!
//! Nothing here needs root. The tree is staged in a directory with the
//! build user's owner and plain permissions, `mke2fs -d` copies it into
//! the root partition, then one `debugfs` script sets every inode's real
//! mode, owner and times (and makes device nodes), so the filesystem is
//! the same whoever builds it. `mke2fs` runs with a configuration of our
//! own (not the host's /etc/mke2fs.conf) and with fixed UUID, hash seed
//! and time, which makes the bytes reproducible. The FAT side uses
//! `mkfs.fat --invariant`, `mcopy -m` and `syslinux --offset`, all at
//! offsets inside the one sparse image file; `qemu-img convert` makes the
//! qcow2.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::blobs::{BlobId, BlobStore};
use crate::hashio::sha256_file;
use crate::kmod;
use crate::output::{self, OutputFile};
use crate::spec::DiskSpec;
use crate::tools::{self, DEBUGFS, MCOPY, MKE2FS, MKFS_FAT, QEMU_IMG, SYSLINUX};
use crate::tree::{Kind, Tree};
use crate::unpack::Sink;

const MIB: u64 = 1 << 20;
/// First partition starts at 1 MiB, as every partitioning tool does.
const BOOT_START: u64 = MIB;

/// Our mke2fs configuration: a feature set every targeted kernel mounts
/// (EL7's 3.10 has no metadata_csum; 1.47's default orphan_file is newer
/// still), independent of the build host's /etc/mke2fs.conf.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,uninit_bg,64bit,dir_nlink,extra_isize
\t\tinode_size = 256
\t}
";

/// What the disk writer needs from the build.
pub struct DiskInput<'a> {
    /// The image tree.
    pub tree: &'a Tree,
    /// Contents.
    pub blobs: &'a BlobStore,
    /// Target architecture.
    pub arch: Arch,
    /// Timestamp of every file.
    pub mtime: u64,
    /// The kernel image.
    pub kernel: BlobId,
    /// Kernel release whose modules the tree holds, if any.
    pub release: Option<String>,
    /// The static nodebake-firstboot (the stage-1 init).
    pub firstboot: &'a [u8],
    /// Kernel command line from the spec (`console=ttyS0`).
    pub cmdline: String,
    /// `[outputs.disk]`.
    pub spec: &'a DiskSpec,
    /// Seed for the disk signature and filesystem UUID (the spec digest).
    pub seed: &'a str,
}

/// What the manifest records about the disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskInfo {
    /// Disk size in bytes.
    pub size: u64,
    /// Label of the ext4 root (`root=LABEL=`).
    pub root_label: String,
    /// UUID of the ext4 root.
    pub root_uuid: String,
    /// Full kernel command line the boot loader passes.
    pub cmdline: String,
    /// Modules the stage-1 init loads, in order.
    pub stage1_modules: Vec<String>,
}

/// Storage drivers a VM's root disk may sit behind (virtio-blk,
/// virtio-scsi, SATA, IDE, NVMe). Those the kernel lacks are skipped.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ahci",
    "ata_piix",
    "nvme",
];

/// Writes `disk.raw` (and `disk.qcow2`) into `out`.
pub fn write(input: &DiskInput, work: &Path, out: &Path) -> Result<(Vec<OutputFile>, DiskInfo)> {
    // Every tool first, so a missing one fails before minutes of work.
    for t in [MKE2FS, DEBUGFS, MKFS_FAT, MCOPY, SYSLINUX] {
        t.path()?;
    }
    if input.spec.qcow2 {
        QEMU_IMG.path()?;
    }
    let mbr = tools::data_file(tools::SYSLINUX_MBR, tools::SYSLINUX_MBR_PACKAGES)?;
    let label = &input.spec.root_label;
    let uuid = uuid_from(input.seed, "root");
    let cmdline = format!("root=LABEL={label} rw {}", input.cmdline)
        .trim()
        .to_string();

    // Stage 1.
    let dir = work.join("disk");
    std::fs::create_dir_all(&dir)?;
    let (initrd, stage1_modules) = stage1(input, &dir)?;

    // Sizes.
    let boot_size = input.spec.boot_size()?;
    let used = used_bytes(input.tree);
    let auto =
        BOOT_START + boot_size + round_up(used + used / 5 + 64 * MIB, MIB) + input.spec.free()?;
    let size = match input.spec.size()? {
        Some(s) if s < auto - input.spec.free()? => bail!(
            "outputs.disk: field `size` ({} MiB) is too small: the image needs at least {} MiB",
            s / MIB,
            (auto - input.spec.free()?).div_ceil(MIB)
        ),
        Some(s) => round_up(s, MIB),
        None => round_up(auto, MIB),
    };
    let root_start = BOOT_START + boot_size;
    let root_size = size - root_start;

    let raw = dir.join("disk.raw");
    std::fs::File::create(&raw)?.set_len(size)?;

    // Root partition.
    let stage = dir.join("root");
    stage_tree(input.tree, input.blobs, &stage)?;
    let conf = dir.join("mke2fs.conf");
    std::fs::write(&conf, MKE2FS_CONF)?;
    tools::run(
        MKE2FS,
        MKE2FS
            .command()?
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", input.mtime.to_string())
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", &uuid])
            .arg("-E")
            .arg(format!(
                "hash_seed={},root_owner=0:0,offset={root_start}",
                uuid_from(input.seed, "hash")
            ))
            .arg("-d")
            .arg(&stage)
            .arg(&raw)
            .arg(format!("{}k", root_size / 1024)),
        "making the ext4 root filesystem",
    )?;
    std::fs::remove_dir_all(&stage).ok();
    let script = debugfs_script(input.tree, input.mtime)?;
    let script_path = dir.join("fixup.debugfs");
    // Names that are not UTF-8 go to debugfs as their bytes.
    std::fs::write(&script_path, crate::names::to_bytes(&script))?;
    let o = DEBUGFS
        .command()?
        .env("E2FSPROGS_FAKE_TIME", input.mtime.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(format!("{}?offset={root_start}", raw.display()))
        .output()
        .context("running debugfs")?;
    // debugfs exits 0 whatever its commands did: every line on stderr
    // other than its banner is a failed command.
    let errors: Vec<String> = String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .take(5)
        .map(str::to_string)
        .collect();
    if !o.status.success() || !errors.is_empty() {
        bail!(
            "setting owners and modes in the root filesystem failed: {}",
            errors.join("; ")
        );
    }

    // Boot partition.
    let boot = dir.join("boot");
    std::fs::create_dir(&boot)?;
    let files = [
        ("vmlinuz", std::fs::read(input.blobs.path(&input.kernel))?),
        ("initrd.img", std::fs::read(&initrd)?),
        ("syslinux.cfg", syslinux_cfg(&cmdline).into_bytes()),
    ];
    let date = std::time::UNIX_EPOCH + std::time::Duration::from_secs(input.mtime);
    for (name, data) in &files {
        let p = boot.join(name);
        std::fs::write(&p, data)?;
        std::fs::File::options()
            .write(true)
            .open(&p)?
            .set_modified(date)?;
    }
    let epoch = input.mtime.to_string();
    tools::run(
        MKFS_FAT,
        MKFS_FAT
            .command()?
            .args(["-F", "16", "-n", "NBBOOT", "--invariant"])
            .arg(format!("--offset={}", BOOT_START / 512))
            .arg("-h")
            .arg((BOOT_START / 512).to_string())
            .arg(&raw)
            .arg((boot_size / 1024).to_string()),
        "making the FAT boot filesystem",
    )?;
    let mut mcopy = MCOPY.command()?;
    mcopy
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", &epoch)
        .arg("-m")
        .arg("-i")
        .arg(format!("{}@@{BOOT_START}", raw.display()));
    for (name, _) in &files {
        mcopy.arg(boot.join(name));
    }
    tools::run(
        MCOPY,
        mcopy.arg("::/"),
        "copying the kernel to the boot partition",
    )?;
    tools::run(
        SYSLINUX,
        SYSLINUX
            .command()?
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", &epoch)
            .args(["--install", "--offset", &BOOT_START.to_string()])
            .arg(&raw),
        "installing syslinux in the boot partition",
    )?;

    // Master boot record last: the tools above only write inside their
    // partitions.
    let code = std::fs::read(&mbr)?;
    if code.len() > 440 {
        bail!(
            "{}: {} bytes, more than the 440 of boot code an MBR holds",
            mbr.display(),
            code.len()
        );
    }
    let sector = mbr_sector(
        &code,
        disk_signature(input.seed),
        &[
            (true, 0x0e, BOOT_START / 512, boot_size / 512),
            (false, 0x83, root_start / 512, root_size / 512),
        ],
    );
    let mut f = std::fs::File::options().write(true).open(&raw)?;
    f.write_all(&sector)?;
    f.sync_all()?;
    drop(f);

    let mut outputs = Vec::new();
    let final_raw = out.join("disk.raw");
    std::fs::rename(&raw, &final_raw)?;
    let (sha, len) = sha256_file(&final_raw)?;
    outputs.push(OutputFile {
        name: "disk.raw".into(),
        size: len,
        sha256: sha,
    });
    if input.spec.qcow2 {
        let q = out.join("disk.qcow2");
        tools::run(
            QEMU_IMG,
            QEMU_IMG
                .command()?
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&final_raw)
                .arg(&q),
            "converting the disk to qcow2",
        )?;
        let (sha, len) = sha256_file(&q)?;
        outputs.push(OutputFile {
            name: "disk.qcow2".into(),
            size: len,
            sha256: sha,
        });
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok((
        outputs,
        DiskInfo {
            size,
            root_label: label.clone(),
            root_uuid: uuid,
            cmdline,
            stage1_modules,
        },
    ))
}

/// Builds the stage-1 initramfs; returns its path and the modules it loads.
fn stage1(input: &DiskInput, dir: &Path) -> Result<(std::path::PathBuf, Vec<String>)> {
    let mut t = Tree::new();
    let mut modules = Vec::new();
    {
        let mut s = Sink::new(&mut t, input.blobs, input.arch, "stage1", None);
        for d in [
            "/dev",
            "/proc",
            "/sys",
            "/sysroot",
            "/run",
            "/etc",
            "/etc/nodebake",
        ] {
            s.dir(d, 0o755, 0, 0)?;
        }
        s.special("/dev/console", Kind::CharDev(5, 1), 0o600, 0, 0)?;
        s.file("/init", &mut &input.firstboot[..], 0o755, 0, 0)?;
        let mut list = String::from(
            "# Modules nodebake-firstboot's stage-1 init loads, dependencies first.\n",
        );
        if let Some(rel) = &input.release {
            let mdir = kmod::modules_dir(input.tree, rel).expect("release has a modules dir");
            let text = |f: &str| -> Result<String> {
                match input.tree.get(&format!("{mdir}/{f}")).map(|e| &e.kind) {
                    Some(Kind::File(id)) => {
                        Ok(String::from_utf8_lossy(&input.blobs.read(id)?).into_owned())
                    }
                    _ => Ok(String::new()),
                }
            };
            let dep = text("modules.dep")?;
            if dep.is_empty() {
                bail!("outputs.disk: /{mdir}/modules.dep is missing, so the stage-1 modules cannot be resolved");
            }
            let explicit = input.spec.modules.is_some();
            let wanted: Vec<String> = match &input.spec.modules {
                Some(m) => m.clone(),
                None => DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            };
            let c = kmod::closure(&dep, &text("modules.builtin")?, &wanted)?;
            if explicit && !c.missing.is_empty() {
                bail!(
                    "outputs.disk: field `modules`: kernel {rel} has no module {}",
                    c.missing.join(", ")
                );
            }
            for m in &c.load_order {
                let Some(Kind::File(id)) = input.tree.get(&format!("{mdir}/{m}")).map(|e| &e.kind)
                else {
                    bail!("outputs.disk: modules.dep names /{mdir}/{m}, which is not in the image");
                };
                let dest = format!("/lib/modules/{rel}/{m}");
                let mut f = input.blobs.open(id)?;
                s.file(&dest, &mut f, 0o644, 0, 0)?;
                writeln!(list, "{dest}").unwrap();
                modules.push(m.rsplit('/').next().unwrap_or(m).to_string());
            }
        }
        s.file(
            "/etc/nodebake/stage1-modules",
            &mut list.as_bytes(),
            0o644,
            0,
            0,
        )?;
    }
    let path = dir.join("initrd.img");
    output::write_initramfs(&t, input.blobs, input.mtime, &path, 9)?;
    Ok((path, modules))
}

/// Bytes the tree takes on ext4 (4 KiB blocks, a block per directory).
fn used_bytes(tree: &Tree) -> u64 {
    tree.iter()
        .map(|(_, e)| match &e.kind {
            Kind::File(id) => round_up(id.size, 4096) + 256,
            _ => 4096 + 256,
        })
        .sum()
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to) * to
}

/// Writes the tree into `dir` with plain permissions the build user can
/// read (owners, modes and times are set by [`debugfs_script`] later).
/// Device nodes and fifos are left to debugfs.
fn stage_tree(tree: &Tree, blobs: &BlobStore, dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    for (p, e) in tree.iter() {
        if p.is_empty() {
            continue;
        }
        let dst = dir.join(crate::names::to_path(p));
        match &e.kind {
            Kind::Dir => std::fs::create_dir(&dst),
            Kind::File(id) => std::fs::copy(blobs.path(id), &dst).and_then(|_| {
                std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))
            }),
            Kind::Symlink(t) => std::os::unix::fs::symlink(crate::names::to_path(t), &dst),
            Kind::CharDev(..) | Kind::BlockDev(..) | Kind::Fifo => Ok(()),
        }
        .with_context(|| format!("staging /{} for the disk image", crate::names::display(p)))?;
    }
    Ok(())
}

/// The debugfs commands that give every inode the tree's mode, owner and
/// times, after creating device nodes and fifos.
fn debugfs_script(tree: &Tree, mtime: u64) -> Result<String> {
    let mut s = String::new();
    for (p, e) in tree.iter() {
        if p.contains('\n') {
            bail!("outputs.disk: path /{p:?} has a newline, which debugfs cannot take");
        }
        // debugfs (libss) quoting: inside "...", `""` is one quote and
        // everything else, backslashes included, is literal.
        let path = format!("\"/{}\"", p.replace('"', "\"\""));
        // debugfs's mknod takes a name in the current directory.
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
        let q = |x: &str| x.replace('"', "\"\"");
        let mut node = |spec: String| {
            writeln!(
                s,
                "cd \"/{}\"\nmknod \"{}\" {spec}\ncd /",
                q(parent),
                q(name)
            )
            .unwrap();
        };
        let type_bits = match &e.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev(ma, mi) => {
                node(format!("c {ma} {mi}"));
                0o020000
            }
            Kind::BlockDev(ma, mi) => {
                node(format!("b {ma} {mi}"));
                0o060000
            }
            Kind::Fifo => {
                node("p".into());
                0o010000
            }
        };
        writeln!(s, "sif {path} mode 0{:o}", type_bits | e.mode).unwrap();
        writeln!(s, "sif {path} uid {}", e.uid).unwrap();
        writeln!(s, "sif {path} gid {}", e.gid).unwrap();
        for field in ["atime", "mtime", "ctime"] {
            writeln!(s, "sif {path} {field} @{mtime}").unwrap();
        }
    }
    Ok(s)
}

fn syslinux_cfg(cmdline: &str) -> String {
    // Serial console first so a headless VM shows the boot loader too.
    format!(
        "SERIAL 0 115200\nDEFAULT nodebake\nPROMPT 0\nTIMEOUT 0\n\nLABEL nodebake\n  LINUX /vmlinuz\n  INITRD /initrd.img\n  APPEND {cmdline}\n"
    )
}

/// A UUID derived from the spec digest, so rebuilds keep it.
fn uuid_from(seed: &str, what: &str) -> String {
    let h = crate::hashio::sha256_hex(format!("{seed}:{what}").as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn disk_signature(seed: &str) -> u32 {
    let h = crate::hashio::sha256_hex(format!("{seed}:mbr").as_bytes());
    u32::from_str_radix(&h[..8], 16).unwrap()
}

/// CHS address of an LBA in the 255-head, 63-sector geometry, saturated
/// as every partitioning tool does past 8 GiB.
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (255 * 63);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / 63) % 255;
    let s = lba % 63 + 1;
    [h as u8, (s as u8) | (((c >> 2) & 0xc0) as u8), c as u8]
}

/// The first sector: boot code, signature, partition table
/// (active, type, first LBA, sector count).
fn mbr_sector(code: &[u8], signature: u32, parts: &[(bool, u8, u64, u64)]) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(code);
    s[440..444].copy_from_slice(&signature.to_le_bytes());
    for (i, (active, ty, start, count)) in parts.iter().enumerate() {
        let e = &mut s[446 + 16 * i..446 + 16 * (i + 1)];
        e[0] = if *active { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(*start));
        e[4] = *ty;
        e[5..8].copy_from_slice(&chs(start + count - 1));
        e[8..12].copy_from_slice(&(*start as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(*count as u32).to_le_bytes());
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_layout() {
        let s = mbr_sector(
            &[0xfa; 440],
            0x1234_5678,
            &[(true, 0x0e, 2048, 131072), (false, 0x83, 133120, 1000)],
        );
        assert_eq!(&s[510..], &[0x55, 0xaa]);
        assert_eq!(&s[440..444], &[0x78, 0x56, 0x34, 0x12]);
        assert_eq!(s[446], 0x80);
        assert_eq!(s[446 + 4], 0x0e);
        assert_eq!(u32::from_le_bytes(s[454..458].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(s[458..462].try_into().unwrap()), 131072);
        assert_eq!(s[462], 0);
        assert_eq!(s[462 + 4], 0x83);
        assert_eq!(u32::from_le_bytes(s[470..474].try_into().unwrap()), 133120);
        // LBA 2048 = C0 H32 S33 in 255/63 geometry (what fdisk writes).
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(u64::from(u32::MAX)), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn uuids_are_stable_and_well_formed() {
        let a = uuid_from("abc", "root");
        assert_eq!(a, uuid_from("abc", "root"));
        assert_ne!(a, uuid_from("abd", "root"));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
    }

    #[test]
    fn debugfs_script_sets_everything_and_quotes_names() {
        let mut t = Tree::new();
        let blobs_dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(blobs_dir.path()).unwrap();
        {
            let mut s = Sink::new(&mut t, &blobs, Arch::X86_64, "t", None);
            s.dir("/etc", 0o755, 0, 0).unwrap();
            s.file("/etc/shadow", &mut &b"x"[..], 0o640, 0, 42).unwrap();
            s.special("/dev/null", Kind::CharDev(1, 3), 0o666, 0, 0)
                .unwrap();
        }
        let sc = debugfs_script(&t, 1700000000).unwrap();
        assert!(sc.contains("sif \"/etc/shadow\" mode 0100640\n"), "{sc}");
        assert!(sc.contains("sif \"/etc/shadow\" gid 42\n"));
        assert!(
            sc.contains("cd \"/dev\"\nmknod \"null\" c 1 3\ncd /\nsif \"/dev/null\" mode 020666\n"),
            "{sc}"
        );
        assert!(sc.contains("sif \"/\" ctime @1700000000\n"));
        {
            let mut s = Sink::new(&mut t, &blobs, Arch::X86_64, "t", None);
            s.file("/etc/a\"b\\x2d", &mut &b"x"[..], 0o644, 0, 0)
                .unwrap();
        }
        assert!(debugfs_script(&t, 0)
            .unwrap()
            .contains("sif \"/etc/a\"\"b\\x2d\" uid 0\n"));
        {
            let mut s = Sink::new(&mut t, &blobs, Arch::X86_64, "t", None);
            s.file("/etc/new\nline", &mut &b"x"[..], 0o644, 0, 0)
                .unwrap();
        }
        assert!(debugfs_script(&t, 0)
            .unwrap_err()
            .to_string()
            .contains("newline"));
    }
}
