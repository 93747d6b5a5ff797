//! The image as an in-memory tree: path → metadata, contents in the
//! [`crate::blobs::BlobStore`]. Every path is resolved through the tree's
//! own symlinks (so `/bin/x` on a usrmerged EL base lands in `/usr/bin/x`),
//! nothing may escape the image root, and two inputs may not write the same
//! path with different content unless the spec says which wins.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{anyhow, bail, Result};

use crate::blobs::BlobId;

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File(BlobId),
    /// Symbolic link with its target.
    Symlink(String),
    /// Character device (major, minor).
    CharDev(u32, u32),
    /// Block device (major, minor).
    BlockDev(u32, u32),
    /// Named pipe.
    Fifo,
}

impl Kind {
    /// Short name used in the manifest.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "dir",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDev(..) => "char",
            Kind::BlockDev(..) => "block",
            Kind::Fifo => "fifo",
        }
    }
}

/// One path of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Type and content.
    pub kind: Kind,
    /// Permission bits (07777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Index of the input that wrote it (see [`Tree::origin_name`]).
    pub origin: u16,
}

/// The image tree.
#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    origins: Vec<String>,
}

/// Longest symlink chain followed before giving up (as Linux's ELOOP).
const MAX_SYMLINK_HOPS: usize = 40;

/// Splits an absolute or relative image path into components, refusing `..`.
pub fn components(path: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("path `{path}` contains `..`"),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

impl Tree {
    /// An empty tree with a root directory.
    pub fn new() -> Tree {
        let mut t = Tree::default();
        t.origins.push("builder".to_string());
        t.entries.insert(
            String::new(),
            Entry {
                kind: Kind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                origin: 0,
            },
        );
        t
    }

    /// Registers an input name; entries it writes carry the returned index.
    pub fn add_origin(&mut self, name: &str) -> u16 {
        self.origins.push(name.to_string());
        (self.origins.len() - 1) as u16
    }

    /// Name of an origin index.
    pub fn origin_name(&self, origin: u16) -> &str {
        &self.origins[origin as usize]
    }

    /// All entries in path order ("" is the root; others have no leading
    /// slash). Parents sort before their children.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Number of entries, root included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether only the root exists.
    pub fn is_empty(&self) -> bool {
        self.entries.len() <= 1
    }

    /// The entry at an exact (already resolved) path.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    /// Resolves `path` through the tree's symlinks. The last component is
    /// followed only when `follow_last`. `..` at the root stays at the root,
    /// as it does inside a chroot.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<String> {
        let mut queue: VecDeque<String> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect();
        let mut stack: Vec<String> = Vec::new();
        let mut hops = 0;
        while let Some(c) = queue.pop_front() {
            if c == "." || c.is_empty() {
                continue;
            }
            if c == ".." {
                stack.pop();
                continue;
            }
            stack.push(c);
            if queue.is_empty() && !follow_last {
                break;
            }
            let here = stack.join("/");
            if let Some(Entry {
                kind: Kind::Symlink(target),
                ..
            }) = self.entries.get(&here)
            {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    bail!("too many levels of symbolic links resolving `/{path}`");
                }
                stack.pop();
                if target.starts_with('/') {
                    stack.clear();
                }
                for t in target.split('/').rev() {
                    if !t.is_empty() {
                        queue.push_front(t.to_string());
                    }
                }
            }
        }
        Ok(stack.join("/"))
    }

    /// Follows symlinks to the entry `path` finally names.
    pub fn lookup(&self, path: &str) -> Option<(String, &Entry)> {
        let p = self.resolve(path, true).ok()?;
        self.entries.get(&p).map(|e| (p, e))
    }

    /// Inserts an entry at `path` (absolute in the image), creating missing
    /// parent directories (0755 root). `may_overwrite(path)` says whether a
    /// different existing entry may be replaced. Returns the resolved path.
    pub fn insert(
        &mut self,
        path: &str,
        entry: Entry,
        may_overwrite: &dyn Fn(&str) -> bool,
    ) -> Result<String> {
        let comps = components(path)?;
        if comps.is_empty() {
            // The root itself: only its metadata can change.
            if entry.kind != Kind::Dir {
                bail!("`/` must be a directory");
            }
            return Ok(String::new());
        }
        // A directory entry aimed at a symlink to a directory (`/lib/` in a
        // package on a usrmerged base) merges into the link's target, as
        // dpkg and `tar --keep-directory-symlink` do; the link stays.
        let follow = entry.kind == Kind::Dir
            && matches!(
                self.lookup(&comps.join("/")),
                Some((
                    _,
                    Entry {
                        kind: Kind::Dir,
                        ..
                    }
                ))
            );
        let resolved = self.resolve(&comps.join("/"), follow)?;
        if resolved.is_empty() {
            bail!("`{path}` resolves to the image root");
        }
        self.ensure_parents(&resolved, entry.origin, path)?;
        if let Kind::Symlink(target) = &entry.kind {
            check_symlink_stays_inside(&resolved, target)
                .map_err(|e| anyhow!("symlink `{path}` -> `{target}`: {e}"))?;
        }
        match self.entries.get(&resolved) {
            None => {
                self.entries.insert(resolved.clone(), entry);
            }
            Some(old) if old.kind == Kind::Dir && entry.kind == Kind::Dir => {
                // Directories merge; the first writer's metadata stays
                // unless the newcomer is allowed to overwrite.
                if may_overwrite(&format!("/{resolved}")) {
                    let origin = old.origin;
                    self.entries
                        .insert(resolved.clone(), Entry { origin, ..entry });
                }
            }
            Some(old) if same_content(old, &entry) => {}
            Some(old) => {
                if old.kind == Kind::Dir && self.has_children(&resolved) {
                    bail!(
                        "`/{resolved}`: {} would replace a non-empty directory from `{}` with a {}",
                        self.origin_name(entry.origin),
                        self.origin_name(old.origin),
                        entry.kind.name()
                    );
                }
                if !may_overwrite(&format!("/{resolved}")) {
                    bail!(
                        "`/{resolved}`: `{}` writes {} but `{}` already wrote {}; list the path in `overwrite` of `{}` if it should win",
                        self.origin_name(entry.origin),
                        describe(&entry),
                        self.origin_name(old.origin),
                        describe(old),
                        self.origin_name(entry.origin),
                    );
                }
                self.entries.insert(resolved.clone(), entry);
            }
        }
        Ok(resolved)
    }

    fn has_children(&self, dir: &str) -> bool {
        let prefix = format!("{dir}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .map(|(k, _)| k.starts_with(&prefix))
            .unwrap_or(false)
    }

    fn ensure_parents(&mut self, resolved: &str, origin: u16, asked: &str) -> Result<()> {
        let mut prefix = String::new();
        let comps: Vec<&str> = resolved.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            match self.entries.get(&prefix) {
                None => {
                    self.entries.insert(
                        prefix.clone(),
                        Entry {
                            kind: Kind::Dir,
                            mode: 0o755,
                            uid: 0,
                            gid: 0,
                            origin,
                        },
                    );
                }
                Some(Entry {
                    kind: Kind::Dir, ..
                }) => {}
                Some(e) => bail!(
                    "`{asked}`: parent `/{prefix}` is a {} from `{}`, not a directory",
                    e.kind.name(),
                    self.origin_name(e.origin)
                ),
            }
        }
        Ok(())
    }

    /// Paths (with leading slash) of entries matching a glob, after
    /// resolving the glob's directory part through symlinks.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>> {
        let (dir, _) = pattern.rsplit_once('/').unwrap_or(("", pattern));
        let real_dir = self.resolve(dir, true)?;
        let file_pat = &pattern[dir.len()..];
        let full = format!("/{}{}", real_dir, file_pat).replace("//", "/");
        let m = globset::GlobBuilder::new(&full)
            .literal_separator(true)
            .build()?
            .compile_matcher();
        Ok(self
            .entries
            .keys()
            .map(|k| format!("/{k}"))
            .filter(|k| m.is_match(k))
            .collect())
    }
}

fn same_content(a: &Entry, b: &Entry) -> bool {
    a.kind == b.kind && a.mode == b.mode && a.uid == b.uid && a.gid == b.gid
}

fn describe(e: &Entry) -> String {
    match &e.kind {
        Kind::File(b) => format!("a file (sha256 {}, mode {:04o})", &b.hex()[..16], e.mode),
        Kind::Symlink(t) => format!("a symlink to `{t}`"),
        k => format!("a {} (mode {:04o})", k.name(), e.mode),
    }
}

/// Refuses a relative symlink target that climbs above the image root
/// from where the link sits.
fn check_symlink_stays_inside(link_path: &str, target: &str) -> Result<()> {
    if target.is_empty() {
        bail!("empty target");
    }
    if target.starts_with('/') {
        return Ok(());
    }
    let mut depth: i64 = link_path.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    bail!("target escapes the image root");
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(n: u8) -> BlobId {
        BlobId {
            sha: [n; 32],
            size: n as u64,
        }
    }
    fn file(n: u8, origin: u16) -> Entry {
        Entry {
            kind: Kind::File(blob(n)),
            mode: 0o644,
            uid: 0,
            gid: 0,
            origin,
        }
    }
    fn link(t: &str) -> Entry {
        Entry {
            kind: Kind::Symlink(t.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            origin: 0,
        }
    }
    fn dir() -> Entry {
        Entry {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            origin: 0,
        }
    }
    const NO: &dyn Fn(&str) -> bool = &|_| false;

    #[test]
    fn usrmerge_symlinks_are_followed_and_kept() {
        let mut t = Tree::new();
        t.insert("/usr/bin", dir(), NO).unwrap();
        t.insert("/bin", link("usr/bin"), NO).unwrap();
        let p = t.insert("/bin/kubeadm", file(1, 0), NO).unwrap();
        assert_eq!(p, "usr/bin/kubeadm");
        assert!(matches!(t.get("bin").unwrap().kind, Kind::Symlink(_)));
        // A directory entry aimed at /bin (as in a tarball) keeps the link.
        t.insert("/bin/", dir(), NO).unwrap();
        assert!(matches!(t.get("bin").unwrap().kind, Kind::Symlink(_)));
        // Absolute targets resolve from the image root, never the host.
        t.insert("/sbin", link("/usr/sbin"), NO).unwrap();
        assert_eq!(t.insert("/sbin/x", file(2, 0), NO).unwrap(), "usr/sbin/x");
    }

    #[test]
    fn escaping_symlinks_and_dotdot_are_refused() {
        let mut t = Tree::new();
        let e = t
            .insert("/etc/evil", link("../../etc/shadow"), NO)
            .unwrap_err();
        assert!(e.to_string().contains("escapes"), "{e}");
        assert!(t
            .insert("/etc/ok", link("../usr/lib/os-release"), NO)
            .is_ok());
        assert!(t.insert("/a/../b", file(1, 0), NO).is_err());
    }

    #[test]
    fn conflicting_content_needs_overwrite() {
        let mut t = Tree::new();
        let a = t.add_origin("a");
        let b = t.add_origin("b");
        t.insert("/etc/x", file(1, a), NO).unwrap();
        t.insert("/etc/x", file(1, b), NO).unwrap(); // identical: fine
        let e = t.insert("/etc/x", file(2, b), NO).unwrap_err().to_string();
        assert!(
            e.contains("/etc/x") && e.contains("`a`") && e.contains("`b`"),
            "{e}"
        );
        t.insert("/etc/x", file(2, b), &|p| p == "/etc/x").unwrap();
        assert_eq!(t.get("etc/x").unwrap().kind, Kind::File(blob(2)));
    }

    #[test]
    fn symlink_loops_are_bounded() {
        let mut t = Tree::new();
        t.insert("/a", link("b"), NO).unwrap();
        t.insert("/b", link("a"), NO).unwrap();
        assert!(t
            .insert("/a/x", file(1, 0), NO)
            .unwrap_err()
            .to_string()
            .contains("levels"));
    }

    #[test]
    fn glob_resolves_directory_links() {
        let mut t = Tree::new();
        t.insert("/usr/lib/modules/6.1/vmlinuz", file(1, 0), NO)
            .unwrap();
        t.insert("/lib", link("usr/lib"), NO).unwrap();
        assert_eq!(
            t.glob("/lib/modules/*/vmlinuz").unwrap(),
            vec!["/usr/lib/modules/6.1/vmlinuz"]
        );
    }
}
