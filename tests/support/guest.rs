//! QEMU guests for boot tests: a guard that kills the guest by PID when
//! dropped, serial-log reading and marker parsing, and the demo cache the
//! boot tests build from.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Child;

/// The demo cache, as scripts/demo.sh finds it.
pub fn demo_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("NODEBAKE_DEMO_CACHE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    cache.join("nodebake").join("demo")
}

/// A TOML basic string (one line; newlines escaped).
pub fn toml_str(s: &str) -> String {
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!("\"{escaped}\"")
}

/// A token unique to this run, so a marker can only come from this boot.
pub fn token() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Drops ANSI escape sequences (systemd colours its status lines).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// A serial log as text, without ANSI escapes (empty if unreadable).
pub fn read_log(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    strip_ansi(&String::from_utf8_lossy(&bytes))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `key=value` fields of the complete marker line, if it was printed.
pub fn marker_fields(log: &str, marker: &str) -> Option<BTreeMap<String, String>> {
    let start = log.find(marker)?;
    let rest = &log[start + marker.len()..];
    // Only a complete line: the guest may still be writing it.
    let line = &rest[..rest.find('\n')?];
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// The QEMU process; killed (by its PID) and reaped when dropped, so a
/// failing assertion never leaves a guest running.
pub struct Guest {
    /// The QEMU process.
    pub child: Child,
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
