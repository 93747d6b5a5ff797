//! `nodebake bundle create` / `import`: one file carrying a spec, a lock
//! pinning every input, the role profiles it names and every input's
//! bytes, with a checksum manifest, so an air-gapped machine can build the
//! same image with `nodebake build --offline`.
//!
//! The bundle is an uncompressed tar (the inputs are compressed already)
//! with fixed headers (mode 0644, owner 0:0, mtime 0), members in this
//! order:
//!
//! ```text
//! SHA256SUMS                     sha256 of every other member, sorted by path
//! bundle.json                    format version, spec file name, inputs
//! spec/<spec>.toml               the spec, byte for byte
//! spec/<spec>.toml.lock          a lock pinning every input
//! spec/profiles/<name>.toml      the role profiles the spec names
//! store/sha256/<hex>             every input, named by its digest
//! ```
//!
//! Import reads `SHA256SUMS` first, stages every member under the store's
//! `tmp/` while hashing it, and only when every member is present, listed
//! and verified moves the inputs into the store and writes the spec files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::hashio::{sha256_file, sha256_hex, HashingReader};
use crate::spec::{LoadedSpec, LockFile, LockedInput, Source};
use crate::store::InputStore;

/// Bundle format version.
pub const BUNDLE_VERSION: u32 = 1;

/// `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleInfo {
    /// [`BUNDLE_VERSION`].
    pub bundle_version: u32,
    /// File name of the spec under `spec/`.
    pub spec: String,
    /// Every input, in build order.
    pub inputs: Vec<LockedInput>,
}

/// What `bundle create` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    /// The bundle file.
    pub file: PathBuf,
    /// Hex sha256 of the bundle.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Inputs carried.
    pub inputs: usize,
}

/// What `bundle import` did.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    /// Objects added to the store.
    pub added: usize,
    /// Objects the store already had.
    pub present: usize,
    /// Where the spec was written, if asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<PathBuf>,
}

enum Content {
    Bytes(Vec<u8>),
    /// A file whose content must hash to this digest.
    File(PathBuf, String),
}

/// Writes the bundle of `spec` (every input pinned and present: in the
/// store or, for local files, at their path) to `out`, atomically.
pub fn create(
    spec: &Path,
    lock: Option<&Path>,
    store_root: &Path,
    profiles_dir: Option<&Path>,
    out: &Path,
) -> Result<BundleReport> {
    let loaded = LoadedSpec::load(spec, lock)?;
    let store = InputStore::open(store_root, true)?;
    let spec_name = loaded
        .path
        .file_name()
        .ok_or_else(|| anyhow!("{}: no file name", loaded.path.display()))?
        .to_string_lossy()
        .into_owned();
    let lock_text = std::fs::read_to_string(crate::fetch::lock_path(spec, lock)).ok();
    let locked: BTreeMap<String, LockedInput> = match lock_text {
        Some(_) => crate::spec::read_lock(&crate::fetch::lock_path(spec, lock))?,
        None => BTreeMap::new(),
    };

    let mut members: BTreeMap<String, Content> = BTreeMap::new();
    let mut inputs = Vec::new();
    let mut missing = Vec::new();
    for inp in &loaded.inputs {
        let (sha, file) = match (&inp.source, &inp.sha256) {
            (Source::Path(p), _) if p.is_dir() => bail!(
                "`{}`: {} is a directory; a bundle carries files only (use a tarball)",
                inp.name,
                p.display()
            ),
            (Source::Path(p), expected) => {
                let (hex, _) = sha256_file(p)
                    .with_context(|| format!("`{}`: reading {}", inp.name, p.display()))?;
                if let Some(e) = expected {
                    if !e.eq_ignore_ascii_case(&hex) {
                        bail!(
                            "`{}`: {} has sha256 {hex}, expected {e}",
                            inp.name,
                            p.display()
                        );
                    }
                }
                (hex, p.clone())
            }
            (_, Some(sha)) if store.has(sha) => (sha.clone(), store.object_path(sha)),
            (_, sha) => {
                missing.push(format!(
                    "`{}` ({}, sha256 {})",
                    inp.name,
                    inp.source_text,
                    sha.as_deref().unwrap_or("unpinned")
                ));
                continue;
            }
        };
        let digest = match &inp.source {
            Source::Registry { digest, .. } => digest.clone(),
            _ => locked.get(&inp.name).and_then(|l| l.digest.clone()),
        };
        inputs.push(LockedInput {
            name: inp.name.clone(),
            source: inp.source_text.clone(),
            sha256: sha.clone(),
            digest,
        });
        members.insert(format!("store/sha256/{sha}"), Content::File(file, sha));
    }
    if !missing.is_empty() {
        bail!(
            "not in the store {}: {} (run `nodebake fetch` first)",
            store.root().display(),
            missing.join(", ")
        );
    }

    let lock_file = LockFile {
        lock_version: 1,
        inputs: inputs.clone(),
    };
    let spec_bytes = std::fs::read(&loaded.path)?;
    members.insert(format!("spec/{spec_name}"), Content::Bytes(spec_bytes));
    members.insert(
        format!("spec/{spec_name}.lock"),
        Content::Bytes(
            format!(
                "# Every input of {spec_name}, pinned by `nodebake bundle create`.\n{}",
                toml::to_string(&lock_file)?
            )
            .into_bytes(),
        ),
    );
    let profiles_dir = profiles_dir.map(Path::to_path_buf).unwrap_or_else(|| {
        let beside = loaded.dir.join("profiles");
        if beside.is_dir() {
            beside
        } else {
            loaded.dir.join("..").join("profiles")
        }
    });
    for p in &loaded.spec.profiles {
        let path = profiles_dir.join(format!("{p}.toml"));
        let bytes = std::fs::read(&path)
            .with_context(|| format!("profile `{p}`: reading {}", path.display()))?;
        members.insert(format!("spec/profiles/{p}.toml"), Content::Bytes(bytes));
    }
    let info = BundleInfo {
        bundle_version: BUNDLE_VERSION,
        spec: spec_name,
        inputs,
    };
    members.insert(
        "bundle.json".into(),
        Content::Bytes(serde_json::to_vec_pretty(&info)?),
    );

    let mut sums = String::new();
    for (path, c) in &members {
        let hex = match c {
            Content::Bytes(b) => sha256_hex(b),
            Content::File(_, h) => h.clone(),
        };
        sums.push_str(&format!("{hex}  {path}\n"));
    }

    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = tempfile::Builder::new()
        .prefix(".nodebake-bundle-")
        .tempfile_in(dir)?;
    let w = crate::hashio::HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp.as_file()));
    let mut ar = tar::Builder::new(w);
    append(&mut ar, "SHA256SUMS", sums.len() as u64, sums.as_bytes())?;
    // bundle.json next, then the rest in path order.
    let order = std::iter::once("bundle.json".to_string())
        .chain(members.keys().filter(|k| *k != "bundle.json").cloned())
        .collect::<Vec<_>>();
    for path in order {
        match &members[&path] {
            Content::Bytes(b) => append(&mut ar, &path, b.len() as u64, b.as_slice())?,
            Content::File(f, hex) => {
                let file = File::open(f).with_context(|| format!("{}", f.display()))?;
                let len = file.metadata()?.len();
                let mut hr = HashingReader::new(BufReader::with_capacity(1 << 20, file));
                append(&mut ar, &path, len, &mut hr)?;
                let (got, _) = hr.finish()?;
                if &got != hex {
                    bail!(
                        "{} changed or is corrupt: content hashes to {got}, expected {hex}",
                        f.display()
                    );
                }
            }
        }
    }
    let w = ar.into_inner()?;
    let (mut bw, sha256, size) = w.finish();
    bw.flush()?;
    drop(bw);
    tmp.as_file().sync_all()?;
    tmp.persist(out)
        .with_context(|| format!("renaming into {}", out.display()))?;
    crate::atomic::sync_dir(dir)?;
    Ok(BundleReport {
        file: out.to_path_buf(),
        sha256,
        size,
        inputs: info.inputs.len(),
    })
}

fn append<W: Write, R: Read>(
    ar: &mut tar::Builder<W>,
    path: &str,
    size: u64,
    data: R,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    ar.append(&h, data)?;
    Ok(())
}

/// Verifies every member of `bundle` and then adds its inputs to the store
/// at `store_root`; with `spec_dir`, writes the spec, its lock and its
/// profiles there. Nothing is added unless everything verifies.
pub fn import(bundle: &Path, store_root: &Path, spec_dir: Option<&Path>) -> Result<ImportReport> {
    let store = InputStore::open(store_root, true)?;
    let f = File::open(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
    let staging = tempfile::Builder::new()
        .prefix("bundle-import-")
        .tempdir_in(store.root().join("tmp"))?;
    let what = bundle.display().to_string();
    let mut sums: Option<BTreeMap<String, String>> = None;
    let mut staged: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (n, ent) in ar
        .entries()
        .with_context(|| format!("{what}: not a tar archive"))?
        .enumerate()
    {
        let mut ent = ent.with_context(|| format!("{what}: corrupt or truncated"))?;
        let path = String::from_utf8(ent.path_bytes().into_owned())
            .map_err(|_| anyhow!("{what}: member name is not UTF-8"))?;
        if ent.header().entry_type() != tar::EntryType::Regular {
            bail!("{what}: member `{path}` is not a regular file");
        }
        if n == 0 {
            if path != "SHA256SUMS" {
                bail!("{what}: first member is `{path}`, not SHA256SUMS (not a nodebake bundle)");
            }
            let mut text = String::new();
            ent.by_ref()
                .take(16 << 20)
                .read_to_string(&mut text)
                .with_context(|| format!("{what}: SHA256SUMS"))?;
            sums = Some(parse_sums(&text).with_context(|| format!("{what}: SHA256SUMS"))?);
            continue;
        }
        let sums = sums.as_ref().expect("set by the first member");
        let Some(expected) = sums.get(&path) else {
            bail!("{what}: member `{path}` is not listed in SHA256SUMS");
        };
        if staged.contains_key(&path) || small.contains_key(&path) {
            bail!("{what}: member `{path}` appears twice");
        }
        let mut hr = HashingReader::new(&mut ent);
        if let Some(hex) = path.strip_prefix("store/sha256/") {
            if hex != expected {
                bail!("{what}: `{path}` is listed with sha256 {expected}");
            }
            let dest = staging.path().join(format!("{n}"));
            let mut out = BufWriter::with_capacity(1 << 20, File::create(&dest)?);
            io::copy(&mut hr, &mut out).with_context(|| format!("{what}: reading `{path}`"))?;
            out.flush()?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            staged.insert(path.clone(), dest);
        } else if path.starts_with("spec/") || path == "bundle.json" {
            let mut b = Vec::new();
            hr.by_ref().take(64 << 20).read_to_end(&mut b)?;
            small.insert(path.clone(), b);
        } else {
            bail!("{what}: unexpected member `{path}`");
        }
        let (got, _) = hr.finish()?;
        if &got != expected {
            bail!("{what}: member `{path}` has sha256 {got}, SHA256SUMS says {expected}");
        }
    }
    let sums = sums.ok_or_else(|| anyhow!("{what}: empty archive"))?;
    let seen: BTreeSet<&String> = staged.keys().chain(small.keys()).collect();
    let missing: Vec<&String> = sums.keys().filter(|k| !seen.contains(k)).collect();
    if !missing.is_empty() {
        bail!(
            "{what}: members listed in SHA256SUMS are missing (truncated bundle?): {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let info: BundleInfo = serde_json::from_slice(
        small
            .get("bundle.json")
            .ok_or_else(|| anyhow!("{what}: no bundle.json"))?,
    )
    .with_context(|| format!("{what}: bundle.json"))?;
    if info.bundle_version != BUNDLE_VERSION {
        bail!(
            "{what}: bundle_version {} (this nodebake reads {BUNDLE_VERSION})",
            info.bundle_version
        );
    }
    if info.spec.contains('/') || !small.contains_key(&format!("spec/{}", info.spec)) {
        bail!(
            "{what}: bundle.json names spec `{}`, which it does not carry",
            info.spec
        );
    }
    for i in &info.inputs {
        if !staged.contains_key(&format!("store/sha256/{}", i.sha256)) {
            bail!(
                "{what}: input `{}` (sha256 {}) is not in the bundle",
                i.name,
                i.sha256
            );
        }
    }
    // Nothing enters the store that the spec does not use, even when
    // SHA256SUMS lists it.
    let inputs: BTreeSet<String> = info
        .inputs
        .iter()
        .map(|i| format!("store/sha256/{}", i.sha256))
        .collect();
    let extra: Vec<&str> = staged
        .keys()
        .filter(|k| !inputs.contains(*k))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        bail!(
            "{what}: member(s) not among the inputs bundle.json lists for spec `{}`: {}",
            info.spec,
            extra.join(", ")
        );
    }

    // Everything verified: move into place.
    let (mut added, mut present) = (0, 0);
    for (path, tmp) in &staged {
        let hex = &path["store/sha256/".len()..];
        if store.has(hex) {
            present += 1;
        } else {
            std::fs::rename(tmp, store.object_path(hex))?;
            added += 1;
        }
    }
    crate::atomic::sync_dir(&store.root().join("sha256"))?;
    let spec_out = match spec_dir {
        Some(d) => {
            for (path, bytes) in &small {
                let Some(rel) = path.strip_prefix("spec/") else {
                    continue;
                };
                if rel.split('/').any(|c| c == ".." || c.is_empty()) {
                    bail!("{what}: bad member name `{path}`");
                }
                let dest = d.join(rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                crate::atomic::write_file(&dest, bytes, 0o644)?;
            }
            Some(d.join(&info.spec))
        }
        None => None,
    };
    Ok(ImportReport {
        added,
        present,
        spec: spec_out,
    })
}

fn parse_sums(text: &str) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let (hex, path) = line
            .split_once("  ")
            .ok_or_else(|| anyhow!("bad line `{line}`"))?;
        crate::spec::check_hex_sha256(hex)?;
        if m.insert(path.to_string(), hex.to_ascii_lowercase())
            .is_some()
        {
            bail!("`{path}` listed twice");
        }
    }
    Ok(m)
}
