//! NoCloud seed device: a filesystem labelled `cidata` (ISO 9660 as made by
//! `cloud-localds` / `genisoimage -V cidata`, or FAT as made by
//! `mkfs.vfat -n cidata`). Found by label, mounted read-only in a temporary
//! directory and unmounted on drop. When the kernel cannot mount it (no
//! `iso9660`/`vfat` support, an image file rather than a device, or
//! `--root` mode, which never mounts), `meta-data` and `user-data` are read
//! straight from the filesystem by the small readers in [`iso9660`] and
//! [`fat`].

pub mod fat;
pub mod iso9660;

use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{decode::decode, path::read_nocloud_dir, Documents, Metadata, MetadataProvider};
use crate::root::Root;

/// The NoCloud volume label (compared without case).
pub const LABEL: &str = "cidata";

/// Filesystem kinds a seed can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedFs {
    /// ISO 9660 (with Joliet or Rock Ridge names).
    Iso9660,
    /// FAT12/16/32 with long names.
    Fat,
}

impl SeedFs {
    fn kernel_name(self) -> &'static str {
        match self {
            SeedFs::Iso9660 => "iso9660",
            SeedFs::Fat => "vfat",
        }
    }
}

/// The filesystem kind and label of `f`, if it is ISO 9660 or FAT.
pub fn probe(f: &mut File) -> Result<Option<(SeedFs, String)>> {
    if let Some(l) = iso9660::label(f)? {
        return Ok(Some((SeedFs::Iso9660, l)));
    }
    if let Some(l) = fat::label(f)? {
        return Ok(Some((SeedFs::Fat, l)));
    }
    Ok(None)
}

/// [`probe`] on a path; `None` also when it cannot be opened.
pub fn probe_path(p: &Path) -> Result<Option<(SeedFs, String)>> {
    match File::open(p) {
        Ok(mut f) if f.metadata().map(|m| !m.is_dir()).unwrap_or(false) => probe(&mut f),
        _ => Ok(None),
    }
}

/// A read-only mount in a temporary directory, unmounted on drop.
struct Mounted {
    dir: tempfile::TempDir,
}

impl Mounted {
    fn try_new(dev: &Path, fs: SeedFs) -> Result<Self> {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::Builder::new()
            .prefix("nodebake-seed.")
            .tempdir()
            .context("creating mount point")?;
        mount(
            Some(dev),
            dir.path(),
            Some(fs.kernel_name()),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "mounting {} ({}) read-only",
                dev.display(),
                fs.kernel_name()
            )
        })?;
        Ok(Self { dir })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH) {
            eprintln!(
                "nodebake-firstboot: unmounting {}: {e}",
                self.dir.path().display()
            );
        }
    }
}

/// Reads the two documents from a seed without mounting it.
fn read_unmounted(f: &mut File, fs: SeedFs) -> Result<Documents> {
    let mut read = |name: &str| -> Result<String> {
        let bytes = match fs {
            SeedFs::Iso9660 => iso9660::read_file(f, name)?,
            SeedFs::Fat => fat::read_file(f, name)?,
        }
        .with_context(|| format!("the seed has no `{name}`"))?;
        decode(&bytes).with_context(|| format!("decoding {name}"))
    };
    let meta_data = read("meta-data")?;
    let user_data = read("user-data")?;
    let network_config = match fs {
        SeedFs::Iso9660 => iso9660::read_file(f, "network-config")?,
        SeedFs::Fat => fat::read_file(f, "network-config")?,
    }
    .map(|b| decode(&b).context("decoding network-config"))
    .transpose()?;
    Ok(Documents::NoCloud {
        meta_data,
        user_data,
        network_config,
    })
}

/// Reads a seed image or device: mounted when `live` and it is a block
/// device the kernel can mount, else read directly. Returns the documents
/// and how they were read.
pub fn read_seed(path: &Path, live: bool) -> Result<(Documents, String)> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let (fs, label) = probe(&mut f)?
        .with_context(|| format!("{} is neither ISO 9660 nor FAT", path.display()))?;
    let is_block = f.metadata()?.file_type().is_block_device();
    if live && is_block {
        match Mounted::try_new(path, fs) {
            Ok(m) => {
                let docs = read_nocloud_dir(m.dir.path())?;
                return Ok((
                    docs,
                    format!("{}, label {label}, mounted", fs.kernel_name()),
                ));
            }
            Err(e) => eprintln!("nodebake-firstboot: {e:#}; reading the filesystem directly"),
        }
    }
    let docs = read_unmounted(&mut f, fs)?;
    Ok((
        docs,
        format!("{}, label {label}, read directly", fs.kernel_name()),
    ))
}

/// The seed device found by label.
pub struct SeedDevice {
    root: Root,
    live: bool,
}

impl SeedDevice {
    /// A provider searching under `root`; `live` also scans the running
    /// system's block devices and allows mounting.
    pub fn new(root: Root, live: bool) -> Self {
        Self { root, live }
    }

    /// Candidate devices: udev's by-label links first, then (live only)
    /// every block device in `/sys/class/block`.
    fn candidates(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for l in [LABEL, "CIDATA"] {
            let p = self.root.path(&format!("/dev/disk/by-label/{l}"));
            if p.exists() {
                out.push(p);
            }
        }
        if self.live {
            if let Ok(rd) = std::fs::read_dir(self.root.path("/sys/class/block")) {
                let mut names: Vec<_> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
                    .collect();
                names.sort();
                out.extend(
                    names
                        .into_iter()
                        .map(|n| self.root.path(&format!("/dev/{n}"))),
                );
            }
        }
        out
    }

    /// The first candidate whose label is `cidata`.
    pub fn find(&self) -> Result<Option<PathBuf>> {
        for c in self.candidates() {
            if let Some((_, label)) = probe_path(&c)? {
                if label.eq_ignore_ascii_case(LABEL) {
                    return Ok(Some(c));
                }
            }
        }
        Ok(None)
    }
}

impl MetadataProvider for SeedDevice {
    fn name(&self) -> String {
        format!("NoCloud seed device (label {LABEL})")
    }

    fn fetch(&self) -> Result<Option<Metadata>> {
        let Some(dev) = self.find()? else {
            return Ok(None);
        };
        let (documents, how) = read_seed(&dev, self.live)?;
        Ok(Some(Metadata {
            source: format!("NoCloud seed {} ({how})", dev.display()),
            documents,
        }))
    }
}
