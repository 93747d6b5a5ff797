//! `nodebake verify DIR`: re-checks every output against `SHA256SUMS` and
//! the archive contents against `manifest.json`.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::compress;
use crate::hashio::{sha256_file, HashingReader};
use crate::manifest::{FileInfo, Manifest};
use crate::names;

/// Verifies an output directory. Returns the list of problems, each
/// naming the file concerned; empty means the directory is intact.
pub fn verify(dir: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let sums_path = dir.join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path)
        .with_context(|| format!("reading {}", sums_path.display()))?;
    let mut listed = BTreeMap::new();
    for (i, line) in sums.lines().enumerate() {
        let (digest, name) = line.split_once("  ").ok_or_else(|| {
            anyhow!(
                "{}: line {} is not `<sha256>  <name>`",
                sums_path.display(),
                i + 1
            )
        })?;
        if name.contains('/') {
            bail!(
                "{}: line {}: `{name}` is not a plain file name",
                sums_path.display(),
                i + 1
            );
        }
        listed.insert(name.to_string(), digest.to_string());
    }
    for (name, digest) in &listed {
        let p = dir.join(name);
        match sha256_file(&p) {
            Err(e) => problems.push(format!("{name}: cannot read: {e}")),
            Ok((actual, _)) if &actual != digest => problems.push(format!(
                "{name}: sha256 mismatch: SHA256SUMS says {digest}, file has {actual}"
            )),
            Ok(_) => {}
        }
    }
    for e in std::fs::read_dir(dir)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n != "SHA256SUMS" && !listed.contains_key(&n) {
            problems.push(format!("{n}: not listed in SHA256SUMS"));
        }
    }
    if !listed.contains_key("manifest.json") {
        problems.push("manifest.json: not listed in SHA256SUMS".into());
        return Ok(problems);
    }
    let manifest: Manifest = serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)
        .context("manifest.json: cannot parse")?;
    for o in &manifest.outputs {
        if listed.get(&o.name) != Some(&o.sha256) {
            problems.push(format!("{}: manifest.json and SHA256SUMS disagree", o.name));
        }
    }
    let expected: BTreeMap<&str, &FileInfo> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    for o in &manifest.outputs {
        let p = dir.join(&o.name);
        let res = if o.name.starts_with("rootfs.tar") {
            compare(&o.name, &expected, read_tar(&p), true)
        } else if o.name == "initramfs.cpio.gz" {
            compare(&o.name, &expected, read_cpio(&p), false)
        } else if o.name == "vmlinuz" {
            match &manifest.kernel {
                Some(k) if k.sha256 == o.sha256 => Ok(Vec::new()),
                _ => Ok(vec![format!(
                    "vmlinuz: digest differs from the manifest's kernel"
                )]),
            }
        } else {
            Ok(Vec::new())
        };
        match res {
            Ok(mut v) => problems.append(&mut v),
            Err(e) => problems.push(format!("{}: {e:#}", o.name)),
        }
    }
    Ok(problems)
}

fn compare(
    archive: &str,
    expected: &BTreeMap<&str, &FileInfo>,
    actual: Result<Vec<FileInfo>>,
    root_implicit: bool,
) -> Result<Vec<String>> {
    let actual = actual?;
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for a in &actual {
        seen.insert(a.path.clone());
        match expected.get(a.path.as_str()) {
            None => problems.push(format!("{archive}: `{}` is not in manifest.json", a.path)),
            Some(e) => {
                let same = e.kind == a.kind
                    && e.mode == a.mode
                    && e.uid == a.uid
                    && e.gid == a.gid
                    && e.size == a.size
                    && e.sha256 == a.sha256
                    && e.target == a.target
                    && e.escaped == a.escaped;
                if !same {
                    problems.push(format!(
                        "{archive}: `{}` differs from manifest.json",
                        a.path
                    ));
                }
            }
        }
    }
    for p in expected.keys() {
        if !(seen.contains(*p) || (root_implicit && *p == "/")) {
            problems.push(format!("{archive}: `{p}` from manifest.json is missing"));
        }
    }
    Ok(problems)
}

fn info(path: String, kind: &str, mode: u32, uid: u32, gid: u32) -> FileInfo {
    FileInfo {
        path,
        kind: kind.into(),
        mode: format!("{:04o}", mode & 0o7777),
        uid,
        gid,
        size: None,
        sha256: None,
        target: None,
        origin: String::new(),
        escaped: false,
    }
}

fn hash_content(r: &mut dyn Read) -> Result<(u64, String)> {
    let (d, n) = HashingReader::new(r).finish()?;
    Ok((n, d))
}

fn read_tar(p: &Path) -> Result<Vec<FileInfo>> {
    let f = std::fs::File::open(p)?;
    let (_, dec) = compress::auto_decoder(BufReader::with_capacity(1 << 20, f))?;
    let mut ar = tar::Archive::new(dec);
    let mut out = Vec::new();
    for ent in ar.entries()? {
        let mut ent = ent.context("corrupt archive")?;
        let bytes = ent.path_bytes().into_owned();
        let name = names::from_bytes(
            bytes.strip_suffix(b"/").unwrap_or(&bytes),
            "archive member name",
        )?;
        let h = ent.header().clone();
        let (mode, uid, gid) = (h.mode()?, h.uid()? as u32, h.gid()? as u32);
        let path = format!("/{name}");
        use tar::EntryType as T;
        let mut fi = match h.entry_type() {
            T::Directory => info(path, "dir", mode, uid, gid),
            T::Regular => {
                let mut fi = info(path, "file", mode, uid, gid);
                let (n, d) = hash_content(&mut ent)?;
                fi.size = Some(n);
                fi.sha256 = Some(d);
                fi
            }
            T::Symlink => {
                let mut fi = info(path, "symlink", mode, uid, gid);
                fi.target = match ent.link_name_bytes() {
                    Some(b) => Some(names::from_bytes(&b, "symlink target")?),
                    None => None,
                };
                fi
            }
            T::Char | T::Block => {
                let k = if h.entry_type() == T::Char {
                    "char"
                } else {
                    "block"
                };
                let mut fi = info(path, k, mode, uid, gid);
                fi.target = Some(format!(
                    "{}:{}",
                    h.device_major()?.unwrap_or(0),
                    h.device_minor()?.unwrap_or(0)
                ));
                fi
            }
            T::Fifo => info(path, "fifo", mode, uid, gid),
            t => bail!(
                "unexpected entry type {t:?} for `{}`",
                names::display(&name)
            ),
        };
        fi.origin.clear();
        fi.escape_names();
        out.push(fi);
    }
    Ok(out)
}

fn read_cpio(p: &Path) -> Result<Vec<FileInfo>> {
    let f = std::fs::File::open(p)?;
    let (_, r) = compress::auto_decoder(BufReader::with_capacity(1 << 20, f))?;
    let mut out = Vec::new();
    // nodebake's own newc reader: names keep their bytes (crate::names).
    crate::rpm::for_each_cpio_entry(r, |e, rd| -> Result<()> {
        if out.len() >= 50_000_000 {
            bail!("more than 50 000 000 entries");
        }
        let name = if e.name == "." { "" } else { e.name.as_str() };
        let path = format!("/{name}");
        let (mode, uid, gid) = (e.mode, e.uid, e.gid);
        let (ma, mi) = (e.rdev_major, e.rdev_minor);
        let mut fi = match mode & 0o170000 {
            0o040000 => info(path, "dir", mode, uid, gid),
            0o100000 => {
                let mut fi = info(path, "file", mode, uid, gid);
                let (n, d) = hash_content(rd)?;
                fi.size = Some(n);
                fi.sha256 = Some(d);
                fi
            }
            0o120000 => {
                let mut fi = info(path, "symlink", mode, uid, gid);
                let mut t = Vec::new();
                rd.take(64 << 10).read_to_end(&mut t)?;
                fi.target = Some(names::from_bytes(&t, "symlink target")?);
                fi
            }
            0o020000 | 0o060000 => {
                let k = if mode & 0o170000 == 0o020000 {
                    "char"
                } else {
                    "block"
                };
                let mut fi = info(path, k, mode, uid, gid);
                fi.target = Some(format!("{ma}:{mi}"));
                fi
            }
            0o010000 => info(path, "fifo", mode, uid, gid),
            t => bail!("unexpected file type {t:o} for `{}`", names::display(name)),
        };
        fi.escape_names();
        out.push(fi);
        Ok(())
    })
    .context("corrupt cpio archive")?;
    Ok(out)
}
