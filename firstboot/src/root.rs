//! The root every file change goes through: `/` on a real node, a temporary
//! directory in tests (`--root DIR`). Writes are atomic (temporary file in
//! the same directory, fsync, rename, fsync of the directory) and happen
//! only when the content or mode differs, so a second run changes nothing.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A root directory that absolute image paths are joined onto.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

impl Root {
    /// A root at `dir` (`/` for the running system).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this root is the running system's `/`.
    pub fn is_host(&self) -> bool {
        self.dir == Path::new("/")
    }

    /// `abs` (an absolute path inside the image) on this root.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.dir.join(abs.trim_start_matches('/'))
    }

    /// Whether `abs` exists (symlinks are not followed).
    pub fn exists(&self, abs: &str) -> bool {
        fs::symlink_metadata(self.path(abs)).is_ok()
    }

    /// Reads `abs` as text; `None` when it does not exist.
    pub fn read_opt(&self, abs: &str) -> Result<Option<String>> {
        let p = self.path(abs);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Whether `abs` already holds exactly `content` with `mode`.
    pub fn file_matches(&self, abs: &str, content: &[u8], mode: u32) -> Result<bool> {
        let p = self.path(abs);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_file() && m.mode() & 0o7777 == mode => {
                let old = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                Ok(old == content)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("inspecting {}", p.display())),
        }
    }

    /// Writes `content` to `abs` with `mode` unless it is already there.
    /// Returns whether anything changed. Parent directories are created
    /// (0755). Files holding secrets must be written with mode 0600.
    pub fn write(&self, abs: &str, content: &[u8], mode: u32) -> Result<bool> {
        if self.file_matches(abs, content, mode)? {
            return Ok(false);
        }
        let p = self.path(abs);
        let parent = p.parent().context("path has no parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let name = p.file_name().context("path has no file name")?;
        let tmp = parent.join(format!(".{}.nodebake-tmp", name.to_string_lossy()));
        let write = || -> std::io::Result<()> {
            let _ = fs::remove_file(&tmp);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(&tmp)?;
            f.write_all(content)?;
            f.set_permissions(fs::Permissions::from_mode(mode))?;
            f.sync_all()?;
            fs::rename(&tmp, &p)?;
            fs::File::open(parent)?.sync_all()
        };
        write().with_context(|| format!("writing {}", p.display()))?;
        Ok(true)
    }

    /// Makes `abs` a symlink to `target` unless it already is one.
    /// Returns whether anything changed.
    pub fn symlink(&self, abs: &str, target: &str) -> Result<bool> {
        let p = self.path(abs);
        if let Ok(t) = fs::read_link(&p) {
            if t == Path::new(target) {
                return Ok(false);
            }
        }
        let parent = p.parent().context("path has no parent")?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let tmp = parent.join(format!(
            ".{}.nodebake-tmp",
            p.file_name().unwrap_or_default().to_string_lossy()
        ));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(target, &tmp)
            .and_then(|_| fs::rename(&tmp, &p))
            .with_context(|| format!("linking {} -> {target}", p.display()))?;
        Ok(true)
    }
}

/// `OpenOptions` with mode 0600 at creation, so content never sits in a
/// file readable by others, even before the final mode is applied.
trait CreateMode {
    fn mode_0600(&mut self) -> &mut Self;
}

impl CreateMode for fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_keeps_mode() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path());
        assert!(r.write("/etc/a/b.conf", b"x\n", 0o644).unwrap());
        assert!(!r.write("/etc/a/b.conf", b"x\n", 0o644).unwrap());
        assert!(r.write("/etc/a/b.conf", b"x\n", 0o600).unwrap());
        let m = fs::metadata(t.path().join("etc/a/b.conf")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(r.read_opt("/etc/a/b.conf").unwrap().unwrap(), "x\n");
        assert_eq!(r.read_opt("/etc/none").unwrap(), None);
        let leftovers: Vec<_> = fs::read_dir(t.path().join("etc/a")).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }

    #[test]
    fn symlinks_once() {
        let t = tempfile::tempdir().unwrap();
        let r = Root::new(t.path());
        assert!(r
            .symlink("/etc/systemd/system/x.swap", "/dev/null")
            .unwrap());
        assert!(!r
            .symlink("/etc/systemd/system/x.swap", "/dev/null")
            .unwrap());
        assert!(r.exists("/etc/systemd/system/x.swap"));
    }
}
