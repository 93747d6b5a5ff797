//! Content-addressed blob store for file contents during a build. Every
//! regular file of the image is streamed once from its input into a blob
//! named by its sha256, so the in-memory tree holds only metadata and the
//! output writers stream contents back from disk.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// How many leading bytes of every blob are returned to the caller (enough
/// for an ELF header and its program headers).
pub const HEAD_LEN: usize = 4096;

/// Identity of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobId {
    /// sha256 of the content.
    pub sha: [u8; 32],
    /// Size in bytes.
    pub size: u64,
}

impl BlobId {
    /// Hex digest.
    pub fn hex(&self) -> String {
        hex::encode(self.sha)
    }
}

/// A directory of blobs named by digest.
pub struct BlobStore {
    dir: PathBuf,
    seq: AtomicU64,
}

impl BlobStore {
    /// Opens (creating) a store in `dir`.
    pub fn new(dir: &Path) -> io::Result<BlobStore> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        Ok(BlobStore {
            dir: dir.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    /// Path of a blob.
    pub fn path(&self, id: &BlobId) -> PathBuf {
        let h = id.hex();
        self.dir.join(&h[..2]).join(&h[2..])
    }

    /// Opens a blob for reading.
    pub fn open(&self, id: &BlobId) -> io::Result<File> {
        File::open(self.path(id))
    }

    /// Reads a blob fully (for small files such as os-release).
    pub fn read(&self, id: &BlobId) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(id))
    }

    /// Streams `r` into the store, hashing while writing. Returns the id
    /// and the first [`HEAD_LEN`] bytes.
    pub fn put(&self, r: &mut dyn Read) -> io::Result<(BlobId, Vec<u8>)> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join("tmp").join(n.to_string());
        let mut w = BufWriter::with_capacity(256 * 1024, File::create(&tmp)?);
        let mut hasher = Sha256::new();
        let mut head = Vec::new();
        let mut size = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            if head.len() < HEAD_LEN {
                let take = (HEAD_LEN - head.len()).min(k);
                head.extend_from_slice(&buf[..take]);
            }
            hasher.update(&buf[..k]);
            w.write_all(&buf[..k])?;
            size += k as u64;
        }
        w.flush()?;
        drop(w);
        let id = BlobId {
            sha: hasher.finalize().into(),
            size,
        };
        let dest = self.path(&id);
        if dest.exists() {
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::create_dir_all(dest.parent().expect("blob has a parent"))?;
            std::fs::rename(&tmp, &dest)?;
        }
        Ok((id, head))
    }

    /// Stores a byte slice.
    pub fn put_bytes(&self, bytes: &[u8]) -> io::Result<BlobId> {
        Ok(self.put(&mut &bytes[..])?.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_dedups_and_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let s = BlobStore::new(d.path()).unwrap();
        let a = s.put_bytes(b"hello").unwrap();
        let b = s.put_bytes(b"hello").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.size, 5);
        assert_eq!(s.read(&a).unwrap(), b"hello");
        assert_eq!(
            a.hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }
}
