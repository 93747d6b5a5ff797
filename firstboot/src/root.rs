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

    /// `abs` (an absolute path inside the image) on this root, resolved
    /// inside it (see [`Root::resolve`]; its last component is not
    /// followed). Never outside the root: a path that cannot be resolved
    /// (too many links) maps under `ROOT/.nodebake-unresolvable/`, and
    /// the reading and writing methods refuse it with an error.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.resolve(abs, false).unwrap_or_else(|_| {
            self.dir
                .join(".nodebake-unresolvable")
                .join(abs.trim_start_matches('/'))
        })
    }

    /// `abs` resolved inside this root as `openat2(RESOLVE_IN_ROOT)` would:
    /// every symbolic link on the way is followed with the root as `/`
    /// (an absolute target starts again at the root) and `..` never climbs
    /// above it, so no link leads out of a `--root` directory. The last
    /// component is followed only with `follow_last` (a write replaces a
    /// link there; it never writes through it). On the host (`/`) the
    /// kernel's own resolution is the same, and the path is returned as
    /// it is. More than 40 links (the kernel's limit) is an error naming
    /// the path.
    pub fn resolve(&self, abs: &str, follow_last: bool) -> Result<PathBuf> {
        use std::collections::VecDeque;
        use std::ffi::OsString;
        use std::path::Component;
        if self.is_host() {
            return Ok(self.dir.join(abs.trim_start_matches('/')));
        }
        fn parts(p: &Path) -> Vec<OsString> {
            p.components()
                .filter_map(|c| match c {
                    Component::Normal(s) => Some(s.to_os_string()),
                    Component::ParentDir => Some("..".into()),
                    _ => None,
                })
                .collect()
        }
        let mut todo: VecDeque<OsString> = parts(Path::new(abs)).into();
        let mut done: Vec<OsString> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                done.pop();
                continue;
            }
            let here: PathBuf = self
                .dir
                .iter()
                .chain(done.iter().map(|s| s.as_os_str()))
                .collect();
            let candidate = here.join(&c);
            if todo.is_empty() && !follow_last {
                done.push(c);
                break;
            }
            match fs::read_link(&candidate) {
                Ok(target) => {
                    links += 1;
                    if links > 40 {
                        anyhow::bail!(
                            "resolving {abs} under {}: more than 40 symbolic links (a loop?) at {}",
                            self.dir.display(),
                            candidate.display()
                        );
                    }
                    if target.is_absolute() {
                        done.clear();
                    }
                    for p in parts(&target).into_iter().rev() {
                        todo.push_front(p);
                    }
                }
                Err(_) => done.push(c),
            }
        }
        Ok(self
            .dir
            .iter()
            .chain(done.iter().map(|s| s.as_os_str()))
            .collect())
    }

    /// Whether `abs` exists (symlinks are not followed).
    pub fn exists(&self, abs: &str) -> bool {
        self.resolve(abs, false)
            .is_ok_and(|p| fs::symlink_metadata(p).is_ok())
    }

    /// Reads `abs` as text; `None` when it does not exist.
    pub fn read_opt(&self, abs: &str) -> Result<Option<String>> {
        let p = self.resolve(abs, true)?;
        match fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Whether `abs` already holds exactly `content` with `mode`.
    pub fn file_matches(&self, abs: &str, content: &[u8], mode: u32) -> Result<bool> {
        let p = self.resolve(abs, false)?;
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
        let p = self.resolve(abs, false)?;
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

    /// Names in directory `abs` (empty when it does not exist), sorted.
    /// A name that is not UTF-8 is listed lossily (such an entry is never
    /// one the agent wrote, so it is always foreign).
    pub fn list_dir(&self, abs: &str) -> Result<Vec<String>> {
        let p = self.resolve(abs, true)?;
        let rd = match fs::read_dir(&p) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", p.display())),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.with_context(|| format!("listing {}", p.display()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Removes the file or symlink `abs` (never a directory); returns
    /// whether it existed.
    pub fn remove(&self, abs: &str) -> Result<bool> {
        let p = self.resolve(abs, false)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing {}", p.display())),
        }
    }

    /// Makes `abs` a symlink to `target` unless it already is one.
    /// Returns whether anything changed.
    pub fn symlink(&self, abs: &str, target: &str) -> Result<bool> {
        let p = self.resolve(abs, false)?;
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

    /// No symbolic link under a `--root` leads out of it: absolute targets
    /// start again at the root, `..` stops there, a link in the last
    /// place is replaced (never written through), loops are an error.
    #[test]
    fn links_never_lead_out_of_the_root() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        let r = Root::new(&root);
        // etc/keepalived -> /abs/path/of/outside (absolute, out of the root)
        std::os::unix::fs::symlink(outside.path(), root.join("etc/keepalived")).unwrap();
        assert!(r
            .write("/etc/keepalived/keepalived.conf", b"secret\n", 0o600)
            .unwrap());
        let inside = root
            .join(outside.path().strip_prefix("/").unwrap())
            .join("keepalived.conf");
        assert_eq!(fs::read(&inside).unwrap(), b"secret\n");
        assert_eq!(
            r.read_opt("/etc/keepalived/keepalived.conf")
                .unwrap()
                .unwrap(),
            "secret\n"
        );
        // A relative link climbing far above the root stops at the root.
        let up = format!("../../../../../../../..{}", outside.path().display());
        std::os::unix::fs::symlink(&up, root.join("etc/up")).unwrap();
        assert!(r.write("/etc/up/x.conf", b"x", 0o644).unwrap());
        assert!(root
            .join(outside.path().strip_prefix("/").unwrap())
            .join("x.conf")
            .exists());
        // A link in the last place is replaced by the file, not followed.
        let victim = outside.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, root.join("etc/hosts")).unwrap();
        assert!(r
            .write("/etc/hosts", b"127.0.0.1 localhost\n", 0o644)
            .unwrap());
        assert!(fs::symlink_metadata(root.join("etc/hosts"))
            .unwrap()
            .is_file());
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        // Reading through a last-place link stays inside too.
        std::os::unix::fs::symlink(&victim, root.join("etc/peek")).unwrap();
        assert_eq!(r.read_opt("/etc/peek").unwrap(), None);
        // Nothing was written outside.
        let out: Vec<_> = fs::read_dir(outside.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(out, vec![std::ffi::OsString::from("victim")]);
        // A loop is an error naming the path.
        std::os::unix::fs::symlink("/loop-b", root.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("/loop-a", root.join("loop-b")).unwrap();
        let e = r.write("/loop-a/x", b"x", 0o644).unwrap_err().to_string();
        assert!(e.contains("/loop-a/x") && e.contains("more than 40"), "{e}");
        assert!(r.path("/loop-a/x").starts_with(&root));
    }
}
