//! Stage-1 init: the `/init` of the small initramfs a nodebake disk image
//! boots with.
//!
//! A disk image keeps its root on ext4 behind a virtio disk. The Debian
//! cloud kernel has ext4 built in but `virtio_pci`, `virtio_blk` and friends
//! as modules, so the kernel alone cannot reach its root. Rather than ship a
//! shell, udev and an initramfs generator, the builder copies this very
//! binary into the initramfs as `/init` (`main.rs` dispatches on that name),
//! next to the modules and their list ([`MODULE_LIST`]). Stage 1 then:
//!
//! 1. mounts devtmpfs, proc and sysfs;
//! 2. reads the root and its options from `/proc/cmdline` ([`BootParams`]);
//! 3. loads the listed modules in order with `finit_module(2)`;
//! 4. polls `/sys/class/block` until a device matches `root=`, reading ext
//!    superblocks itself ([`parse_ext_superblock`]), for at most
//!    `rootdelay=` seconds;
//! 5. mounts that device on [`SYSROOT`] and switches root the way
//!    util-linux `switch_root` does, then execs the real init.
//!
//! On failure it prints what it saw (command line, root spec, block devices
//! with their labels, modules that failed) on the console, waits a little
//! and exits: the kernel then panics visibly instead of the boot hanging.

use std::convert::Infallible;
use std::ffi::CString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, major, minor, SFlag};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
use nix::unistd::{chdir, chroot, close, execv, getpid};

/// The module list the builder writes into the initramfs: one absolute
/// path of a `.ko` (or `.ko.xz`, `.ko.zst`, `.ko.gz`) per line, in
/// dependency order; blank lines and `#` comments are skipped.
pub const MODULE_LIST: &str = "/etc/nodebake/stage1-modules";

/// Where the root filesystem is mounted before it becomes `/`.
pub const SYSROOT: &str = "/sysroot";

const DEFAULT_INIT: &str = "/sbin/init";
const DEFAULT_FSTYPE: &str = "ext4";
const DEFAULT_ROOT_DELAY: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the fatal report stays up before the kernel panics.
const FATAL_PAUSE: Duration = Duration::from_secs(10);
/// `finit_module(2)`: the kernel decompresses the module itself.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;
/// `statfs(2)` magic of ramfs (the initramfs unless `/` is tmpfs); not in nix.
const RAMFS_MAGIC: u32 = 0x8584_58f6;
/// Bytes to read from a device to see its ext superblock.
const SUPERBLOCK_END: usize = 2048;

/// Runs stage 1 as PID 1 and never returns: it execs the real init or,
/// on failure, reports and exits (and the kernel panics).
pub fn main() -> ! {
    let mut seen = Seen::default();
    let err = match run(&mut seen) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    report_fatal(&err, &seen);
    std::thread::sleep(FATAL_PAUSE);
    std::process::exit(1)
}

/// What the fatal report shows besides the error.
#[derive(Default)]
struct Seen {
    cmdline: Option<String>,
    root: Option<String>,
    failed_modules: Vec<String>,
}

fn run(seen: &mut Seen) -> Result<Infallible> {
    ensure!(
        getpid().as_raw() == 1,
        "stage 1 runs only as PID 1 from an initramfs (this binary was started as `init`)"
    );
    mount_kernel_filesystems()?;
    let cmdline = fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    seen.cmdline = Some(cmdline.trim().to_owned());
    let params = BootParams::parse(&cmdline)?;
    seen.root = Some(params.root.to_string());

    load_modules(&mut seen.failed_modules)?;
    let device = wait_for_root(&params.root, params.root_delay)?;
    mount_root(&device, &params)?;
    check_init(Path::new(SYSROOT), &params.init)?;
    // Arguments the kernel gave us (cmdline words it did not know, such as
    // `single`) belong to the real init.
    let args: Vec<CString> = std::env::args_os()
        .skip(1)
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("init arguments")?;
    log(&format!(
        "switching root to {SYSROOT} and running {}",
        params.init
    ));
    switch_root(&params.init, &args)
}

// ---------------------------------------------------------------------------
// Console

/// Writes `nodebake-stage1: {msg}` to the console (stderr when there is
/// none) and, for the booted system's journal, to `/dev/kmsg` at debug
/// level so the console does not show it twice.
fn log(msg: &str) {
    static CONSOLE: OnceLock<Option<File>> = OnceLock::new();
    static KMSG: OnceLock<Option<File>> = OnceLock::new();
    let open = |path: &str| {
        OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_NOCTTY.bits())
            .open(path)
            .ok()
    };
    let line = format!("nodebake-stage1: {msg}\n");
    match CONSOLE.get_or_init(|| open("/dev/console")).as_ref() {
        Some(mut console) => {
            let _ = console.write_all(line.as_bytes());
        }
        None => eprint!("{line}"),
    }
    if let Some(mut kmsg) = KMSG.get_or_init(|| open("/dev/kmsg")).as_ref() {
        let _ = kmsg.write_all(format!("<7>{line}").as_bytes());
    }
}

/// The multi-line report shown before giving up.
fn report_fatal(err: &anyhow::Error, seen: &Seen) {
    log(&format!("FATAL: {err:#}"));
    let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| "(not read)".into());
    log(&format!(
        "  kernel command line: {}",
        or_unknown(&seen.cmdline)
    ));
    log(&format!("  root: {}", or_unknown(&seen.root)));
    let devices = scan_block_devices();
    if devices.is_empty() {
        log("  block devices: none");
    }
    for d in &devices {
        log(&format!("  block device: {d}"));
    }
    if seen.failed_modules.is_empty() {
        log("  modules that failed to load: none");
    }
    for m in &seen.failed_modules {
        log(&format!("  module failed: {m}"));
    }
    log(&format!(
        "  exiting in {} s; the kernel will panic",
        FATAL_PAUSE.as_secs()
    ));
}

// ---------------------------------------------------------------------------
// Kernel command line

/// The root filesystem as the kernel command line describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// `root=`.
    pub root: RootSpec,
    /// `rootfstype=` (default `ext4`).
    pub fstype: String,
    /// `rootflags=`: mount data such as `errors=remount-ro`.
    pub flags: Option<String>,
    /// `ro` / `rw`, the last one wins (default read-only).
    pub read_only: bool,
    /// `init=` (default `/sbin/init`), resolved inside the root.
    pub init: String,
    /// `rootdelay=` seconds: how long to wait for the root device
    /// (default 30).
    pub root_delay: Duration,
}

/// Which device `root=` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `LABEL=x` or `/dev/disk/by-label/x`: the ext volume name.
    Label(String),
    /// `UUID=x` or `/dev/disk/by-uuid/x`: the ext filesystem UUID.
    Uuid([u8; 16]),
    /// `/dev/NAME`: that device node.
    Device(PathBuf),
}

impl BootParams {
    /// Parses `/proc/cmdline`; a missing or unsupported `root=` is an error.
    pub fn parse(cmdline: &str) -> Result<Self> {
        let mut root = None;
        let mut fstype = DEFAULT_FSTYPE.to_owned();
        let mut flags = None;
        let mut read_only = true;
        let mut init = DEFAULT_INIT.to_owned();
        let mut root_delay = DEFAULT_ROOT_DELAY;
        for word in split_cmdline(cmdline) {
            match word.split_once('=') {
                Some(("root", v)) => root = Some(v.to_owned()),
                Some(("rootfstype", v)) if !v.is_empty() => fstype = v.to_owned(),
                Some(("rootflags", v)) => flags = Some(v.to_owned()).filter(|v| !v.is_empty()),
                Some(("init", v)) if !v.is_empty() => init = v.to_owned(),
                Some(("rootdelay", v)) => {
                    let secs = v
                        .parse()
                        .with_context(|| format!("rootdelay={v}: not a number of seconds"))?;
                    root_delay = Duration::from_secs(secs);
                }
                None if word == "ro" => read_only = true,
                None if word == "rw" => read_only = false,
                // Everything after `--` is for init, not for the kernel.
                None if word == "--" => break,
                _ => {}
            }
        }
        let root = root.context(
            "the kernel command line has no root= \
             (expected root=LABEL=..., root=UUID=... or root=/dev/NAME)",
        )?;
        Ok(BootParams {
            root: RootSpec::parse(&root)?,
            fstype,
            flags,
            read_only,
            init,
            root_delay,
        })
    }
}

/// Splits a kernel command line into words the way the kernel does:
/// whitespace separates words except inside double quotes, and the quotes
/// themselves are dropped (`rootflags="a b"` is `rootflags=a b`).
fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

impl RootSpec {
    /// Parses the value of `root=`.
    pub fn parse(spec: &str) -> Result<Self> {
        if let Some(label) = strip_either(spec, "LABEL=", "/dev/disk/by-label/") {
            ensure!(!label.is_empty(), "root={spec}: empty label");
            ensure!(
                label.len() <= 16,
                "root={spec}: an ext4 label holds at most 16 bytes"
            );
            Ok(Self::Label(label.into()))
        } else if let Some(uuid) = strip_either(spec, "UUID=", "/dev/disk/by-uuid/") {
            Ok(Self::Uuid(
                parse_uuid(uuid).with_context(|| format!("root={spec}"))?,
            ))
        } else if spec.starts_with("PARTUUID=") {
            bail!(
                "root={spec}: PARTUUID= is not supported by nodebake stage 1; use LABEL= or UUID="
            )
        } else if spec.starts_with("/dev/") && spec.len() > "/dev/".len() {
            Ok(Self::Device(spec.into()))
        } else {
            bail!("root={spec}: expected LABEL=..., UUID=... or /dev/NAME")
        }
    }
}

fn strip_either<'a>(s: &'a str, a: &str, b: &str) -> Option<&'a str> {
    s.strip_prefix(a).or_else(|| s.strip_prefix(b))
}

impl fmt::Display for RootSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootSpec::Label(l) => write!(f, "LABEL={l}"),
            RootSpec::Uuid(u) => write!(f, "UUID={}", format_uuid(u)),
            RootSpec::Device(p) => write!(f, "{}", p.display()),
        }
    }
}

/// 32 hex digits, any case, dashes anywhere.
fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let bytes = hex::decode(s.replace('-', "")).context("UUID is not hexadecimal")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("UUID must have 32 hex digits"))
}

/// The usual 8-4-4-4-12 lowercase form.
fn format_uuid(u: &[u8; 16]) -> String {
    let h = hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

// ---------------------------------------------------------------------------
// Mounts and modules

/// devtmpfs on `/dev`, proc on `/proc`, sysfs on `/sys`.
fn mount_kernel_filesystems() -> Result<()> {
    let quiet = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for (fstype, target, flags) in [
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID),
        ("proc", "/proc", quiet),
        ("sysfs", "/sys", quiet),
    ] {
        match mount(Some(fstype), target, Some(fstype), flags, None::<&str>) {
            // The kernel may have mounted devtmpfs already.
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => return Err(e).with_context(|| format!("mounting {fstype} on {target}")),
        }
    }
    log("mounted /dev, /proc and /sys");
    Ok(())
}

/// The module paths in a [`MODULE_LIST`] text, in order.
pub fn parse_module_list(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Loads every module of [`MODULE_LIST`]. A module that fails is recorded
/// in `failed` and skipped: the root device may not need it.
fn load_modules(failed: &mut Vec<String>) -> Result<()> {
    let text = match fs::read_to_string(MODULE_LIST) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            log(&format!("no {MODULE_LIST}: loading no modules"));
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("reading {MODULE_LIST}")),
    };
    let (mut loaded, mut present) = (0, 0);
    for path in parse_module_list(&text) {
        match load_module(Path::new(path)) {
            Ok(true) => loaded += 1,
            Ok(false) => present += 1,
            Err(e) => {
                log(&format!("module {path}: {e:#}"));
                failed.push(format!("{path}: {e:#}"));
            }
        }
    }
    log(&format!(
        "modules: {loaded} loaded, {present} already present, {} failed",
        failed.len()
    ));
    Ok(())
}

/// Loads one module; `false` when the kernel already has it (loaded or
/// built in).
fn load_module(path: &Path) -> Result<bool> {
    let file = File::open(path).context("cannot open")?;
    let compressed = [".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .any(|ext| path.as_os_str().as_bytes().ends_with(ext.as_bytes()));
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, c"", flags) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(e).context("finit_module"),
    }
}

fn mount_root(device: &Path, params: &BootParams) -> Result<()> {
    let (flags, mode) = match params.read_only {
        true => (MsFlags::MS_RDONLY, "ro"),
        false => (MsFlags::empty(), "rw"),
    };
    let data = params.flags.as_deref();
    mount(
        Some(device),
        SYSROOT,
        Some(params.fstype.as_str()),
        flags,
        data,
    )
    .with_context(|| {
        format!(
            "mounting {} on {SYSROOT} (type {}, {mode}, rootflags {:?})",
            device.display(),
            params.fstype,
            data.unwrap_or("")
        )
    })?;
    log(&format!(
        "mounted {} on {SYSROOT} ({}, {mode})",
        device.display(),
        params.fstype
    ));
    Ok(())
}

// ---------------------------------------------------------------------------
// Finding the root device

/// The ext2/3/4 superblock fields stage 1 matches `root=` against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSuperblock {
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name`, without its NUL padding.
    pub label: String,
}

/// Reads the ext superblock from the first 2 KiB of a device: it starts at
/// byte 1024 with the magic 0xEF53 (le16) at +56, `s_uuid` at +104 and
/// `s_volume_name` at +120. `None` when `head` holds no ext filesystem.
pub fn parse_ext_superblock(head: &[u8]) -> Option<ExtSuperblock> {
    let sb = head.get(1024..1024 + 136)?;
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return None;
    }
    let name = &sb[120..136];
    let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(ExtSuperblock {
        uuid: sb[104..120].try_into().ok()?,
        label: String::from_utf8_lossy(&name[..len]).into_owned(),
    })
}

/// A block device as `/sys/class/block` lists it.
struct BlockDevice {
    name: String,
    /// `major:minor`.
    dev: String,
    node: PathBuf,
    contents: Result<Option<ExtSuperblock>, String>,
}

impl BlockDevice {
    fn matches(&self, spec: &RootSpec) -> bool {
        match (spec, &self.contents) {
            (RootSpec::Label(l), Ok(Some(sb))) => sb.label == *l,
            (RootSpec::Uuid(u), Ok(Some(sb))) => sb.uuid == *u,
            (RootSpec::Device(p), Ok(_)) => self.node == *p,
            _ => false,
        }
    }
}

impl fmt::Display for BlockDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.node.display(), self.dev)?;
        match &self.contents {
            Ok(Some(sb)) => write!(
                f,
                " ext label={:?} uuid={}",
                sb.label,
                format_uuid(&sb.uuid)
            ),
            Ok(None) => write!(f, " no ext filesystem"),
            Err(e) => write!(f, " {e}"),
        }
    }
}

/// Every block device (disks and partitions) with what its first bytes
/// hold, sorted by name.
fn scan_block_devices() -> Vec<BlockDevice> {
    let Ok(entries) = fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().map(probe_block_device).collect()
}

fn probe_block_device(name: String) -> BlockDevice {
    let dev = fs::read_to_string(format!("/sys/class/block/{name}/dev"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    // sysfs spells `/` in device names as `!` (cciss!c0d0).
    let node = Path::new("/dev").join(name.replace('!', "/"));
    let contents = read_head(&node, &dev).map(|head| parse_ext_superblock(&head));
    BlockDevice {
        name,
        dev,
        node,
        contents,
    }
}

/// The first bytes of `node`, once devtmpfs has created it for `dev`.
fn read_head(node: &Path, dev: &str) -> Result<Vec<u8>, String> {
    let meta = fs::symlink_metadata(node).map_err(|_| "no device node yet".to_owned())?;
    let rdev = format!("{}:{}", major(meta.rdev()), minor(meta.rdev()));
    if !meta.file_type().is_block_device() || rdev != dev {
        return Err(format!("{} is not block device {dev}", node.display()));
    }
    let mut head = vec![0; SUPERBLOCK_END];
    File::open(node)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| match e.kind() {
            ErrorKind::UnexpectedEof => "empty or smaller than 2 KiB".to_owned(),
            _ => format!("unreadable: {e}"),
        })?;
    Ok(head)
}

/// Polls the block devices until one matches `spec`, for at most `delay`.
fn wait_for_root(spec: &RootSpec, delay: Duration) -> Result<PathBuf> {
    log(&format!(
        "waiting up to {} s for root {spec}",
        delay.as_secs()
    ));
    let deadline = Instant::now() + delay;
    loop {
        let devices = scan_block_devices();
        let mut matching = devices.iter().filter(|d| d.matches(spec));
        if let Some(found) = matching.next() {
            log(&format!("root {spec} found: {found}"));
            for other in matching {
                log(&format!(
                    "warning: {} also matches {spec}; using {}",
                    other.name, found.name
                ));
            }
            return Ok(found.node.clone());
        }
        if Instant::now() >= deadline {
            bail!(
                "no block device matches root={spec} after {} s (rootdelay=)",
                delay.as_secs()
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

// ---------------------------------------------------------------------------
// Switching root

/// Fails unless `init` resolves, inside `root` (symlinks included), to an
/// executable file: checked before the initramfs is deleted, so the error
/// can still be reported.
fn check_init(root: &Path, init: &str) -> Result<()> {
    let dir = File::open(root).with_context(|| format!("opening {}", root.display()))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let fd = openat2(dir.as_raw_fd(), init, how)
        .with_context(|| format!("init {init} not found in the root filesystem"))?;
    let stat = fstat(fd);
    let _ = close(fd);
    let stat = stat.with_context(|| format!("stat of init {init}"))?;
    let is_file = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
    ensure!(
        is_file && stat.st_mode & 0o111 != 0,
        "init {init} in the root filesystem is not an executable file"
    );
    Ok(())
}

/// Makes [`SYSROOT`] the new `/` and execs `init` there, like util-linux
/// `switch_root`: move the kernel filesystems over, free the initramfs,
/// move the root mount onto `/` and chroot into it.
fn switch_root(init: &str, args: &[CString]) -> Result<Infallible> {
    let fs_type = statfs("/").context("statfs /")?.filesystem_type();
    ensure!(
        fs_type == TMPFS_MAGIC || fs_type == FsType(RAMFS_MAGIC.into()),
        "/ is not an initramfs (ramfs or tmpfs): refusing to delete its files"
    );
    let old_root = fs::metadata("/").context("stat /")?.dev();
    let new_root = fs::metadata(SYSROOT).context("stat /sysroot")?.dev();
    for dir in ["/dev", "/proc", "/sys", "/run"] {
        move_mount(dir, old_root, new_root);
    }
    // The initramfs lives in RAM until its files are gone.
    remove_contents(Path::new("/"), old_root);

    chdir(SYSROOT).context("chdir /sysroot")?;
    mount(
        Some(SYSROOT),
        "/",
        None::<&str>,
        MsFlags::MS_MOVE,
        None::<&str>,
    )
    .context("moving /sysroot onto /")?;
    chroot(".").context("chroot into the new root")?;
    chdir("/").context("chdir / in the new root")?;

    let init_c = CString::new(init).context("init path")?;
    let argv: Vec<&std::ffi::CStr> = std::iter::once(init_c.as_c_str())
        .chain(args.iter().map(CString::as_c_str))
        .collect();
    let err = execv(&init_c, &argv).unwrap_err();
    Err(err).with_context(|| format!("executing {init} in the new root"))
}

/// Moves the mount at `dir` to the same place under [`SYSROOT`]; when the
/// new root has no such directory, unmounts it instead. Nothing happens
/// when `dir` is not a mount point.
fn move_mount(dir: &str, old_root: u64, new_root: u64) {
    match fs::metadata(dir) {
        Ok(m) if m.dev() != old_root => {}
        _ => return,
    }
    let target = format!("{SYSROOT}{dir}");
    let target_ok = fs::metadata(&target).is_ok_and(|m| m.is_dir() && m.dev() == new_root);
    if target_ok {
        match mount(
            Some(dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        ) {
            Ok(()) => return,
            Err(e) => log(&format!("moving {dir} to {target}: {e}; unmounting it")),
        }
    } else {
        log(&format!("{target} is missing: unmounting {dir}"));
    }
    if let Err(e) = umount2(dir, MntFlags::MNT_DETACH) {
        log(&format!("unmounting {dir}: {e}"));
    }
}

/// Deletes everything below `dir` that lives on device `dev`: symlinks are
/// not followed and other mounts (such as [`SYSROOT`]) are not entered.
/// Best effort: what cannot be deleted stays.
fn remove_contents(dir: &Path, dev: u64) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_contents(&path, dev);
            let _ = fs::remove_dir(&path);
        } else {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    const UUID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UUID_BYTES: [u8; 16] = [
        0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1,
        0xf0,
    ];

    fn superblock(label: &[u8], uuid: [u8; 16]) -> Vec<u8> {
        let mut head = vec![0u8; SUPERBLOCK_END];
        head[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        head[1024 + 104..1024 + 120].copy_from_slice(&uuid);
        head[1024 + 120..1024 + 120 + label.len()].copy_from_slice(label);
        head
    }

    #[test]
    fn parses_a_typical_cmdline() {
        let p = BootParams::parse(
            "BOOT_IMAGE=/vmlinuz root=LABEL=nodebake-root rootfstype=ext4 rootflags=errors=remount-ro rw console=ttyS0 rootdelay=5 init=/lib/systemd/systemd\n",
        )
        .unwrap();
        assert_eq!(
            p,
            BootParams {
                root: RootSpec::Label("nodebake-root".into()),
                fstype: "ext4".into(),
                flags: Some("errors=remount-ro".into()),
                read_only: false,
                init: "/lib/systemd/systemd".into(),
                root_delay: Duration::from_secs(5),
            }
        );
    }

    #[test]
    fn defaults_and_last_ro_rw_wins() {
        let p = BootParams::parse("root=/dev/vda1 quiet").unwrap();
        assert_eq!(p.root, RootSpec::Device("/dev/vda1".into()));
        assert_eq!(
            (
                p.fstype.as_str(),
                p.flags,
                p.read_only,
                p.init.as_str(),
                p.root_delay
            ),
            ("ext4", None, true, "/sbin/init", Duration::from_secs(30))
        );
        assert!(!BootParams::parse("root=/dev/vda1 ro rw").unwrap().read_only);
        assert!(BootParams::parse("root=/dev/vda1 rw ro").unwrap().read_only);
        // Later values win for keys too.
        let p = BootParams::parse("root=/dev/vda1 root=LABEL=b").unwrap();
        assert_eq!(p.root, RootSpec::Label("b".into()));
    }

    #[test]
    fn handles_quotes_and_stops_at_double_dash() {
        assert_eq!(
            split_cmdline(" a \"b c\"  rootflags=\"x, y\" \"root=LABEL=q r\"\t"),
            ["a", "b c", "rootflags=x, y", "root=LABEL=q r"]
        );
        let p = BootParams::parse("root=\"LABEL=my root\" rootflags=\"data=journal\"").unwrap();
        assert_eq!(p.root, RootSpec::Label("my root".into()));
        assert_eq!(p.flags.as_deref(), Some("data=journal"));
        let p = BootParams::parse("root=/dev/vda1 -- init=/bin/sh rw").unwrap();
        assert_eq!((p.init.as_str(), p.read_only), ("/sbin/init", true));
    }

    #[test]
    fn parses_uuids_in_any_case() {
        let upper = UUID.to_uppercase();
        for spec in [
            format!("UUID={UUID}"),
            format!("UUID={upper}"),
            format!("/dev/disk/by-uuid/{UUID}"),
        ] {
            assert_eq!(RootSpec::parse(&spec).unwrap(), RootSpec::Uuid(UUID_BYTES));
        }
        assert_eq!(
            RootSpec::Uuid(UUID_BYTES).to_string(),
            format!("UUID={UUID}")
        );
        assert_eq!(
            RootSpec::parse("/dev/disk/by-label/nodebake-root").unwrap(),
            RootSpec::Label("nodebake-root".into())
        );
    }

    #[test]
    fn rejects_bad_root_specs() {
        let err = BootParams::parse("console=ttyS0 ro").unwrap_err();
        assert!(err.to_string().contains("no root="), "{err}");
        for (spec, says) in [
            ("UUID=1234", "32 hex digits"),
            (
                "UUID=zz1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
                "not hexadecimal",
            ),
            ("PARTUUID=abcd-01", "not supported"),
            ("LABEL=", "empty label"),
            ("LABEL=seventeen-bytes-x", "16 bytes"),
            ("vda1", "expected LABEL="),
            ("/dev/", "expected LABEL="),
        ] {
            let err = format!("{:#}", RootSpec::parse(spec).unwrap_err());
            assert!(err.contains(says), "{spec}: {err}");
        }
        let err = BootParams::parse("root=/dev/vda1 rootdelay=soon").unwrap_err();
        assert!(err.to_string().contains("rootdelay=soon"), "{err}");
    }

    #[test]
    fn reads_label_and_uuid_from_a_superblock() {
        let sb = parse_ext_superblock(&superblock(b"nodebake-root", UUID_BYTES)).unwrap();
        assert_eq!(
            sb,
            ExtSuperblock {
                uuid: UUID_BYTES,
                label: "nodebake-root".into()
            }
        );
        // A 16-byte label has no NUL terminator.
        let sb = parse_ext_superblock(&superblock(b"sixteen-byte-lbl", UUID_BYTES)).unwrap();
        assert_eq!(sb.label, "sixteen-byte-lbl");
    }

    #[test]
    fn ignores_what_is_not_an_ext_superblock() {
        let mut head = superblock(b"x", UUID_BYTES);
        head[1024 + 56] = 0;
        assert_eq!(parse_ext_superblock(&head), None);
        assert_eq!(
            parse_ext_superblock(&superblock(b"x", UUID_BYTES)[..1100]),
            None
        );
        assert_eq!(parse_ext_superblock(&[]), None);
    }

    #[test]
    fn reads_a_real_ext4_image() {
        let Some(mke2fs) = find_mke2fs() else {
            let msg = "reads_a_real_ext4_image: mke2fs not found";
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg} (CI=true: install e2fsprogs)");
            }
            eprintln!("SKIPPED {msg}");
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let image = t.path().join("root.img");
        File::create(&image).unwrap().set_len(8 << 20).unwrap();
        let status = Command::new(mke2fs)
            .args(["-q", "-t", "ext4", "-L", "testlabel", "-U", UUID, "-F"])
            .arg(&image)
            .arg("8M")
            .status()
            .unwrap();
        assert!(status.success(), "mke2fs: {status}");
        let mut head = vec![0; SUPERBLOCK_END];
        File::open(&image).unwrap().read_exact(&mut head).unwrap();
        let sb = parse_ext_superblock(&head).unwrap();
        assert_eq!(
            sb,
            ExtSuperblock {
                uuid: UUID_BYTES,
                label: "testlabel".into()
            }
        );
    }

    fn find_mke2fs() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/sbin".into(), "/usr/sbin".into()])
            .map(|d| d.join("mke2fs"))
            .find(|p| p.is_file())
    }

    #[test]
    fn matches_devices_against_root_specs() {
        let device = BlockDevice {
            name: "vda1".into(),
            dev: "254:1".into(),
            node: "/dev/vda1".into(),
            contents: Ok(parse_ext_superblock(&superblock(
                b"nodebake-root",
                UUID_BYTES,
            ))),
        };
        assert!(device.matches(&RootSpec::Label("nodebake-root".into())));
        assert!(!device.matches(&RootSpec::Label("other".into())));
        assert!(device.matches(&RootSpec::Uuid(UUID_BYTES)));
        assert!(device.matches(&RootSpec::Device("/dev/vda1".into())));
        assert!(!device.matches(&RootSpec::Device("/dev/vda".into())));
        assert_eq!(
            device.to_string(),
            format!("/dev/vda1 (254:1) ext label=\"nodebake-root\" uuid={UUID}")
        );
        let missing = BlockDevice {
            contents: Err("no device node yet".into()),
            ..device
        };
        assert!(!missing.matches(&RootSpec::Device("/dev/vda1".into())));
    }

    #[test]
    fn parses_the_module_list() {
        let text = "# virtio, deps first\n\n/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko\n  /lib/modules/x/virtio_blk.ko.xz  \n";
        assert_eq!(
            parse_module_list(text),
            [
                "/lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko",
                "/lib/modules/x/virtio_blk.ko.xz"
            ]
        );
    }

    #[test]
    fn finds_init_through_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("sbin")).unwrap();
        fs::create_dir_all(root.join("lib/systemd")).unwrap();
        let systemd = root.join("lib/systemd/systemd");
        fs::write(&systemd, "#!/bin/true\n").unwrap();
        fs::set_permissions(&systemd, fs::Permissions::from_mode(0o755)).unwrap();
        // Absolute, as on a real root: resolved against `root`, not `/`.
        symlink("/lib/systemd/systemd", root.join("sbin/init")).unwrap();
        check_init(root, "/sbin/init").unwrap();

        let err = check_init(root, "/bin/sh").unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
        fs::set_permissions(&systemd, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_init(root, "/sbin/init").unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
        let err = check_init(root, "/lib").unwrap_err();
        assert!(err.to_string().contains("not an executable"), "{err}");
    }

    #[test]
    fn removes_contents_without_following_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), "x").unwrap();
        let initramfs = t.path().join("initramfs");
        fs::create_dir_all(initramfs.join("lib/modules/k")).unwrap();
        fs::write(initramfs.join("init"), "x").unwrap();
        fs::write(initramfs.join("lib/modules/k/a.ko"), "x").unwrap();
        symlink(&outside, initramfs.join("link")).unwrap();

        let dev = fs::metadata(&initramfs).unwrap().dev();
        remove_contents(&initramfs, dev);
        assert_eq!(fs::read_dir(&initramfs).unwrap().count(), 0);
        assert!(outside.join("keep").exists());

        // Entries on another device (a mount) are left alone.
        fs::write(initramfs.join("init"), "x").unwrap();
        remove_contents(&initramfs, dev + 1);
        assert!(initramfs.join("init").exists());
    }
}
