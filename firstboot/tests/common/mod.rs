//! Helpers shared by the agent's integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;

use sha2::{Digest, Sha256};

/// The seed fixture directory for `host`.
pub fn fixture(host: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/metadata/seed-ha")
        .join(host)
}

/// A finished command's stdout and stderr, for failure messages.
pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Whether every tool in `tools` is available (names on `$PATH` or
/// absolute paths). Under `CI=true` a missing tool fails the test;
/// elsewhere the test is skipped with a printed reason.
pub fn require(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!("{test}: missing tool(s): {}", missing.join(", "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{msg} (CI=true: install them, see .ci/run)");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// Whether the test runs as root (needed for namespaces and containerd).
pub fn require_root(test: &str) -> bool {
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root");
    }
    eprintln!("SKIPPED {test}: needs root");
    false
}

fn have(tool: &str) -> bool {
    if tool.starts_with('/') {
        return Path::new(tool).exists();
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Kills and reaps a child by PID when dropped, also on test failure.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    /// Wraps a started child.
    pub fn new(c: Child) -> Self {
        Self(Some(c))
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Path → sha256 (files), `-> target` (symlinks) and mode for every entry
/// under `root`, except those under `except` (relative).
pub fn tree(root: &Path, except: &str) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with(except) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            let v = if m.file_type().is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("dir {:o}", m.mode() & 0o7777)
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!(
                    "{:o} {}",
                    m.mode() & 0o7777,
                    hex::encode(Sha256::digest(&bytes))
                )
            };
            out.insert(rel, v);
        }
    }
    out
}
