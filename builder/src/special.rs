//! The special-files policy: device nodes, FIFOs and set-id files are
//! where a compromised or careless artifact does most harm (a 4777
//! character device 1,1 under /opt is /dev/mem for anyone). After every
//! input is in the tree, each one is checked against where the image may
//! hold it: devices and FIFOs under `/dev`, set-id regular files in the
//! system program directories (where a distribution's `su`, `mount`,
//! `passwd` live), plus whatever globs the spec's `special_files` names.
//! World-writable set-id files and set-id devices are refused wherever
//! they are. Every set-id file is listed in the manifest
//! (`setid_files`).

use anyhow::{bail, Context, Result};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::tree::{Kind, Tree};

/// Where device nodes and FIFOs may be without the spec saying so.
pub const DEFAULT_NODE_PATHS: &[&str] = &["/dev/**"];
/// Where set-id regular files may be without the spec saying so.
pub const DEFAULT_SETID_PATHS: &[&str] = &[
    "/usr/bin/*",
    "/usr/sbin/*",
    "/usr/libexec/**",
    "/usr/lib/**",
    "/usr/lib64/**",
    "/bin/*",
    "/sbin/*",
];

/// Set-user-ID and set-group-ID bits.
const SETID: u32 = 0o6000;

fn globs(patterns: &[&str], what: &str) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .with_context(|| format!("{what}: bad glob `{p}`"))?,
        );
    }
    Ok(b.build()?)
}

/// Checks `tree` against the policy with the spec's `special_files`
/// globs; returns every set-id regular file (`/path`), sorted. The error
/// names each refused path, its kind and mode, and the input it came from.
pub fn check(tree: &Tree, allowed: &[String]) -> Result<Vec<String>> {
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let spec = globs(&allowed, "spec field `special_files`")?;
    let nodes = globs(DEFAULT_NODE_PATHS, "builder")?;
    let setid_dirs = globs(DEFAULT_SETID_PATHS, "builder")?;
    let mut refused = Vec::new();
    let mut setid = Vec::new();
    for (p, e) in tree.iter() {
        let path = format!("/{p}");
        let input = tree.origin_name(e.origin);
        let why = match &e.kind {
            Kind::CharDev(..) | Kind::BlockDev(..) | Kind::Fifo => {
                if e.mode & SETID != 0 {
                    Some("a set-id device or FIFO (never allowed)")
                } else if nodes.is_match(&path) || spec.is_match(&path) {
                    None
                } else {
                    Some("outside /dev and not in `special_files`")
                }
            }
            Kind::File(_) if e.mode & SETID != 0 => {
                setid.push(crate::names::display(&path).into_owned());
                if e.mode & 0o002 != 0 {
                    Some("a world-writable set-id file (never allowed)")
                } else if setid_dirs.is_match(&path) || spec.is_match(&path) {
                    None
                } else {
                    Some("outside the system program directories and not in `special_files`")
                }
            }
            _ => None,
        };
        if let Some(why) = why {
            let kind = match &e.kind {
                Kind::CharDev(a, b) => format!("character device {a},{b}"),
                Kind::BlockDev(a, b) => format!("block device {a},{b}"),
                Kind::Fifo => "FIFO".to_string(),
                _ => "set-id file".to_string(),
            };
            refused.push(format!(
                "{} ({kind}, mode {:04o}, from input `{input}`): {why}",
                if crate::names::is_raw(&path) {
                    crate::names::escape(&path)
                } else {
                    path.escape_default().to_string()
                },
                e.mode
            ));
        }
    }
    if !refused.is_empty() {
        let n = refused.len();
        refused.truncate(20);
        bail!(
            "{n} special file(s) refused (allow one by path in the spec's `special_files`, or \
             drop it with the input's `exclude`):\n  {}",
            refused.join("\n  ")
        );
    }
    Ok(setid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blobs::BlobStore;
    use crate::unpack::Sink;

    fn tree_with(f: impl FnOnce(&mut Sink)) -> (Tree, tempfile::TempDir) {
        let d = tempfile::tempdir().unwrap();
        let blobs = BlobStore::new(d.path()).unwrap();
        let mut t = Tree::new();
        {
            let mut s = Sink::new(&mut t, &blobs, crate::arch::Arch::X86_64, "evil", None);
            f(&mut s);
        }
        (t, d)
    }

    #[test]
    fn distribution_special_files_pass_and_set_id_ones_are_listed() {
        let (t, _d) = tree_with(|s| {
            s.special("/dev/null", Kind::CharDev(1, 3), 0o666, 0, 0)
                .unwrap();
            s.special("/dev/initctl", Kind::Fifo, 0o600, 0, 0).unwrap();
            s.file("/usr/bin/su", &mut &b"x"[..], 0o4755, 0, 0).unwrap();
            s.file("/usr/sbin/unix_chkpwd", &mut &b"y"[..], 0o2755, 0, 42)
                .unwrap();
            s.file("/usr/bin/ls", &mut &b"z"[..], 0o755, 0, 0).unwrap();
        });
        assert_eq!(
            check(&t, &[]).unwrap(),
            vec![
                "/usr/bin/su".to_string(),
                "/usr/sbin/unix_chkpwd".to_string()
            ]
        );
    }

    #[test]
    fn a_device_under_opt_is_refused_naming_it_unless_allowed() {
        let (t, _d) = tree_with(|s| {
            s.special("/opt/x/mem", Kind::CharDev(1, 1), 0o777, 0, 0)
                .unwrap();
        });
        let e = format!("{:#}", check(&t, &[]).unwrap_err());
        assert!(
            e.contains("/opt/x/mem (character device 1,1, mode 0777, from input `evil`)"),
            "{e}"
        );
        assert!(e.contains("special_files"), "{e}");
        check(&t, &["/opt/x/*".to_string()]).unwrap();
    }

    #[test]
    fn never_allowed_whatever_the_spec_says() {
        for (path, kind, mode) in [
            ("/dev/mem", Kind::CharDev(1, 1), 0o4777),
            ("/opt/fifo", Kind::Fifo, 0o2666),
        ] {
            let (t, _d) = tree_with(|s| s.special(path, kind, mode, 0, 0).unwrap());
            let e = format!("{:#}", check(&t, &["/**".to_string()]).unwrap_err());
            assert!(e.contains("never allowed"), "{e}");
        }
        let (t, _d) = tree_with(|s| {
            s.file("/usr/bin/open", &mut &b"x"[..], 0o4777, 0, 0)
                .unwrap();
        });
        let e = format!("{:#}", check(&t, &["/**".to_string()]).unwrap_err());
        assert!(e.contains("world-writable set-id"), "{e}");
        let (t, _d) = tree_with(|s| {
            s.file("/opt/tool/bin/helper", &mut &b"x"[..], 0o4755, 0, 0)
                .unwrap();
        });
        let e = format!("{:#}", check(&t, &[]).unwrap_err());
        assert!(
            e.contains("/opt/tool/bin/helper (set-id file, mode 4755"),
            "{e}"
        );
        assert_eq!(
            check(&t, &["/opt/tool/bin/helper".to_string()]).unwrap(),
            vec!["/opt/tool/bin/helper".to_string()]
        );
    }
}
