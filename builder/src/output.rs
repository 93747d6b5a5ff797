//! Output writers: the rootfs tar archive and the newc initramfs, both
//! streamed from the tree in path order with fixed timestamps and owners
//! from the inputs, compressed and hashed in the same pass.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::blobs::BlobStore;
use crate::compress::Encoder;
use crate::hashio::HashingWriter;
use crate::names;
use crate::tree::{Kind, Tree};

/// A written output file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct OutputFile {
    /// File name in the output directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256.
    pub sha256: String,
}

type Sink = HashingWriter<BufWriter<File>>;

fn create(path: &Path) -> Result<Sink> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(HashingWriter::new(BufWriter::with_capacity(1 << 20, f)))
}

fn close(w: Sink, path: &Path) -> Result<OutputFile> {
    let (bw, sha256, size) = w.finish();
    let f = bw.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(OutputFile {
        name: path.file_name().unwrap().to_string_lossy().into_owned(),
        size,
        sha256,
    })
}

/// Writes the tree as a tar archive (GNU format for long names), gzip or
/// zstd compressed.
pub fn write_rootfs(
    tree: &Tree,
    blobs: &BlobStore,
    mtime: u64,
    path: &Path,
    enc: impl FnOnce(Sink) -> io::Result<Encoder<Sink>>,
) -> Result<OutputFile> {
    let w = enc(create(path)?)?;
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Complete);
    for (p, e) in tree.iter() {
        if p.is_empty() {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mode(e.mode);
        match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                let mut dir = names::to_bytes(p).into_owned();
                dir.push(b'/');
                b.append_data(&mut h, Path::new(OsStr::from_bytes(&dir)), io::empty())?;
            }
            Kind::File(id) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(id.size);
                let f = blobs
                    .open(id)
                    .with_context(|| format!("reading content of /{p}"))?;
                b.append_data(
                    &mut h,
                    names::to_path(p),
                    io::BufReader::with_capacity(256 * 1024, f),
                )?;
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, names::to_path(p), names::to_path(t))?;
            }
            Kind::CharDev(ma, mi) | Kind::BlockDev(ma, mi) => {
                h.set_entry_type(if matches!(e.kind, Kind::CharDev(..)) {
                    tar::EntryType::Char
                } else {
                    tar::EntryType::Block
                });
                h.set_device_major(*ma)?;
                h.set_device_minor(*mi)?;
                h.set_size(0);
                b.append_data(&mut h, names::to_path(p), io::empty())?;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, names::to_path(p), io::empty())?;
            }
        }
    }
    let enc = b.into_inner()?;
    let w = enc.finish()?;
    close(w, path)
}

/// One newc ("new ASCII", `070701`) header. Written by hand: the `cpio`
/// crate takes names as `&str`, and image names are bytes
/// ([`crate::names`]).
#[derive(Default)]
struct Newc {
    ino: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

impl Newc {
    /// The header, `name` with its NUL, and padding to 4 bytes; the data
    /// (`size` bytes) and its padding follow.
    fn write(&self, w: &mut impl Write, name: &[u8]) -> io::Result<()> {
        let namesize = name.len() + 1;
        let fields = [
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.size,
            0, // dev major
            0, // dev minor
            self.rdev_major,
            self.rdev_minor,
            namesize as u32,
            0, // check
        ];
        let mut h = Vec::with_capacity(110 + namesize + 3);
        h.extend_from_slice(b"070701");
        for f in fields {
            h.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        h.extend_from_slice(name);
        h.push(0);
        h.resize(h.len() + (4 - h.len() % 4) % 4, 0);
        w.write_all(&h)
    }
}

fn pad4(w: &mut impl Write, n: u64) -> io::Result<()> {
    w.write_all(&[0u8; 3][..((4 - n % 4) % 4) as usize])
}

/// Writes the tree as a gzip-compressed newc cpio archive the kernel
/// unpacks as its root filesystem.
pub fn write_initramfs(
    tree: &Tree,
    blobs: &BlobStore,
    mtime: u64,
    path: &Path,
    level: u32,
) -> Result<OutputFile> {
    let mut w = Encoder::gzip(create(path)?, level);
    // Inode numbers from 2, as the cpio crate's writer numbered them.
    for (ino, (p, e)) in (2u32..).zip(tree.iter()) {
        let name = if p.is_empty() {
            Cow::Borrowed(&b"."[..])
        } else {
            names::to_bytes(p)
        };
        let type_bits = match &e.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev(..) => 0o020000,
            Kind::BlockDev(..) => 0o060000,
            Kind::Fifo => 0o010000,
        };
        let (rdev_major, rdev_minor) = match e.kind {
            Kind::CharDev(ma, mi) | Kind::BlockDev(ma, mi) => (ma, mi),
            _ => (0, 0),
        };
        let mut h = Newc {
            ino,
            mode: type_bits | e.mode,
            uid: e.uid,
            gid: e.gid,
            nlink: if matches!(e.kind, Kind::Dir) { 2 } else { 1 },
            mtime: mtime as u32,
            size: 0,
            rdev_major,
            rdev_minor,
        };
        match &e.kind {
            Kind::File(id) => {
                h.size = u32::try_from(id.size).with_context(|| {
                    format!("/{} is larger than newc's 4 GiB limit", names::display(p))
                })?;
                h.write(&mut w, &name)?;
                let mut f = blobs
                    .open(id)
                    .with_context(|| format!("reading content of /{}", names::display(p)))?;
                let n = io::copy(&mut Read::by_ref(&mut f).take(id.size), &mut w)?;
                if n != id.size {
                    bail!("content of /{} changed while writing", names::display(p));
                }
                pad4(&mut w, id.size)?;
            }
            Kind::Symlink(t) => {
                let t = names::to_bytes(t);
                h.size = t.len() as u32;
                h.write(&mut w, &name)?;
                w.write_all(&t)?;
                pad4(&mut w, t.len() as u64)?;
            }
            _ => h.write(&mut w, &name)?,
        }
    }
    Newc {
        nlink: 1,
        ..Newc::default()
    }
    .write(&mut w, b"TRAILER!!!")?;
    let inner = w.finish()?;
    close(inner, path)
}

/// Copies one blob to an output file (the kernel image).
pub fn write_blob(blobs: &BlobStore, id: &crate::blobs::BlobId, path: &Path) -> Result<OutputFile> {
    let mut w = create(path)?;
    io::copy(&mut blobs.open(id)?, &mut w)?;
    close(w, path)
}

/// Writes bytes to an output file.
pub fn write_bytes(bytes: &[u8], path: &Path) -> Result<OutputFile> {
    let mut w = create(path)?;
    w.write_all(bytes)?;
    close(w, path)
}
