//! Output writers: the rootfs tar archive and the newc initramfs, both
//! streamed from the tree in path order with fixed timestamps and owners
//! from the inputs, compressed and hashed in the same pass.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::blobs::BlobStore;
use crate::compress::Encoder;
use crate::hashio::HashingWriter;
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
                b.append_data(&mut h, format!("{p}/"), io::empty())?;
            }
            Kind::File(id) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(id.size);
                let f = blobs
                    .open(id)
                    .with_context(|| format!("reading content of /{p}"))?;
                b.append_data(&mut h, p, io::BufReader::with_capacity(256 * 1024, f))?;
            }
            Kind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, p, t)?;
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
                b.append_data(&mut h, p, io::empty())?;
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, p, io::empty())?;
            }
        }
    }
    let enc = b.into_inner()?;
    let w = enc.finish()?;
    close(w, path)
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
    let mut ino = 1u32;
    for (p, e) in tree.iter() {
        let name = if p.is_empty() { "." } else { p.as_str() };
        ino += 1;
        let type_bits = match &e.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDev(..) => 0o020000,
            Kind::BlockDev(..) => 0o060000,
            Kind::Fifo => 0o010000,
        };
        let mut b = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(type_bits | e.mode)
            .uid(e.uid)
            .gid(e.gid)
            .mtime(mtime as u32)
            .nlink(if matches!(e.kind, Kind::Dir) { 2 } else { 1 });
        if let Kind::CharDev(ma, mi) | Kind::BlockDev(ma, mi) = e.kind {
            b = b.rdev_major(ma).rdev_minor(mi);
        }
        match &e.kind {
            Kind::File(id) => {
                let size = u32::try_from(id.size)
                    .with_context(|| format!("/{p} is larger than newc's 4 GiB limit"))?;
                let mut cw = b.write(&mut w, size);
                let mut f = blobs
                    .open(id)
                    .with_context(|| format!("reading content of /{p}"))?;
                io::copy(&mut f, &mut cw)?;
                cw.finish()?;
            }
            Kind::Symlink(t) => {
                let mut cw = b.write(&mut w, t.len() as u32);
                cw.write_all(t.as_bytes())?;
                cw.finish()?;
            }
            _ => {
                b.write(&mut w, 0).finish()?;
            }
        }
    }
    cpio::newc::trailer(&mut w)?;
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
