//! Unpackers: tar archives, RPM payloads (cpio newc), Debian packages
//! (ar + data.tar), single files and container image archives, all into
//! the [`Tree`] through one [`Sink`] that stores contents, checks the
//! architecture of every ELF file and applies the conflict rules.

use std::collections::HashMap;
use std::io::{self, Read};

use anyhow::{anyhow, bail, Context, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::arch::Arch;
use crate::blobs::{BlobId, BlobStore};
use crate::compress;
use crate::pkgdb::Package;
use crate::tree::{Entry, Kind, Tree};

/// Where an archive's entries go: destination directory, stripped leading
/// components and include/exclude filters (matched against the member path
/// before stripping, without a leading `./`).
#[derive(Default)]
pub struct Placement {
    /// Destination directory in the image (`/` or `/opt/cni/bin`).
    pub dest: String,
    /// Leading components removed from every entry.
    pub strip: u32,
    /// When set, only matching entries are taken.
    pub include: Option<GlobSet>,
    /// Matching entries are skipped.
    pub exclude: Option<GlobSet>,
}

/// Builds a glob set, or `None` for an empty list.
pub fn globset(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).with_context(|| format!("bad glob `{p}`"))?);
    }
    Ok(Some(b.build()?))
}

/// Checks an archive member name and returns its components (no leading
/// `./`, no `.`), refusing absolute paths and `..`.
pub fn member_components(raw: &str) -> Result<Vec<&str>> {
    if raw.starts_with('/') {
        bail!(
            "member `{}` has an absolute path",
            crate::names::display(raw)
        );
    }
    let mut out = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!(
                "member `{}` climbs out of the archive with `..`",
                crate::names::display(raw)
            ),
            c => out.push(c),
        }
    }
    Ok(out)
}

impl Placement {
    /// Everything to `dest`.
    pub fn at(dest: &str) -> Placement {
        Placement {
            dest: dest.to_string(),
            ..Placement::default()
        }
    }

    /// Image path for an archive member, or `None` when filtered out.
    /// `filter = false` maps without include/exclude (hard link targets).
    pub fn map(&self, raw: &str, filter: bool) -> Result<Option<String>> {
        let comps = member_components(raw)?;
        if comps.len() <= self.strip as usize {
            return Ok(None);
        }
        if filter {
            // Filters see the member path as `tar -t` lists it (before
            // stripping, without `./`).
            let full = comps.join("/");
            if let Some(inc) = &self.include {
                if !inc.is_match(&full) {
                    return Ok(None);
                }
            }
            if let Some(exc) = &self.exclude {
                if exc.is_match(&full) {
                    return Ok(None);
                }
            }
        }
        let rel = comps[self.strip as usize..].join("/");
        Ok(Some(format!("{}/{}", self.dest.trim_end_matches('/'), rel)))
    }
}

/// Receives entries for one input.
pub struct Sink<'a> {
    /// The image tree.
    pub tree: &'a mut Tree,
    /// Content store.
    pub blobs: &'a BlobStore,
    /// Origin index of the input.
    pub origin: u16,
    /// Target architecture.
    pub arch: Arch,
    /// Input name for errors.
    pub input: String,
    /// Paths this input may overwrite.
    pub overwrite: Option<GlobSet>,
    /// Regular files added.
    pub files: u64,
    /// Bytes of regular files added.
    pub bytes: u64,
}

impl<'a> Sink<'a> {
    /// A sink for the input `name`.
    pub fn new(
        tree: &'a mut Tree,
        blobs: &'a BlobStore,
        arch: Arch,
        name: &str,
        overwrite: Option<GlobSet>,
    ) -> Self {
        let origin = tree.add_origin(name);
        Sink {
            tree,
            blobs,
            origin,
            arch,
            input: name.to_string(),
            overwrite,
            files: 0,
            bytes: 0,
        }
    }

    fn insert(&mut self, path: &str, kind: Kind, mode: u32, uid: u32, gid: u32) -> Result<String> {
        let ow = self.overwrite.clone();
        let may = move |p: &str| ow.as_ref().map(|g| g.is_match(p)).unwrap_or(false);
        self.tree.insert(
            path,
            Entry {
                kind,
                mode: mode & 0o7777,
                uid,
                gid,
                origin: self.origin,
            },
            &may,
        )
    }

    /// Stores a regular file's content and inserts it.
    pub fn file(
        &mut self,
        path: &str,
        r: &mut dyn Read,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<BlobId> {
        let (id, head) = self
            .blobs
            .put(r)
            .with_context(|| format!("reading `{path}`"))?;
        if let Some(a) = Arch::from_elf(&head) {
            if a != self.arch {
                bail!(
                    "`{path}` is an ELF file for {} but the image is {}",
                    a.name(),
                    self.arch.name()
                );
            }
        }
        self.insert(path, Kind::File(id), mode, uid, gid)?;
        self.files += 1;
        self.bytes += id.size;
        Ok(id)
    }

    /// Inserts a directory.
    pub fn dir(&mut self, path: &str, mode: u32, uid: u32, gid: u32) -> Result<()> {
        self.insert(path, Kind::Dir, mode, uid, gid).map(|_| ())
    }

    /// Inserts a symlink.
    pub fn symlink(&mut self, path: &str, target: &str, uid: u32, gid: u32) -> Result<()> {
        self.insert(path, Kind::Symlink(target.to_string()), 0o777, uid, gid)
            .map(|_| ())
    }

    /// Inserts a device node or fifo.
    pub fn special(&mut self, path: &str, kind: Kind, mode: u32, uid: u32, gid: u32) -> Result<()> {
        self.insert(path, kind, mode, uid, gid).map(|_| ())
    }

    /// Inserts a hard link to an entry this input already wrote.
    pub fn hardlink(
        &mut self,
        path: &str,
        target: &str,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        let resolved = self.tree.resolve(target, false)?;
        let e = self
            .tree
            .get(&resolved)
            .ok_or_else(|| {
                anyhow!("hard link `{path}` points at `{target}`, which is not in the archive")
            })?
            .clone();
        if e.origin != self.origin {
            bail!("hard link `{path}` points at `{target}`, outside this archive");
        }
        let Kind::File(id) = e.kind else {
            bail!("hard link `{path}` points at `{target}`, which is not a regular file");
        };
        let _ = mode;
        self.insert(path, Kind::File(id), e.mode, uid.max(e.uid), gid.max(e.gid))?;
        self.files += 1;
        Ok(())
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Unpacks a (possibly compressed) tar stream.
pub fn unpack_tar(sink: &mut Sink, r: &mut dyn Read, place: &Placement) -> Result<()> {
    let (_, dec) =
        compress::auto_decoder(r).with_context(|| "not a readable stream".to_string())?;
    let mut ar = tar::Archive::new(dec);
    let entries = ar.entries().with_context(|| "not a tar archive")?;
    for ent in entries {
        let mut ent = ent.with_context(|| "corrupt or truncated tar archive")?;
        let raw = crate::names::from_bytes(&ent.path_bytes(), "member name")?;
        let shown = crate::names::display(&raw).into_owned();
        let what = |e: anyhow::Error| e.context(format!("member `{shown}`"));
        let Some(path) = place.map(&raw, true).map_err(what)? else {
            continue;
        };
        let h = ent.header();
        let mode = h.mode().unwrap_or(0o644);
        let uid = h.uid().unwrap_or(0) as u32;
        let gid = h.gid().unwrap_or(0) as u32;
        let et = h.entry_type();
        let dev = || -> (u32, u32) {
            (
                h.device_major().ok().flatten().unwrap_or(0),
                h.device_minor().ok().flatten().unwrap_or(0),
            )
        };
        use tar::EntryType as T;
        match et {
            T::Regular | T::Continuous => {
                sink.file(&path, &mut ent, mode, uid, gid).map_err(what)?;
            }
            T::Directory => sink.dir(&path, mode, uid, gid).map_err(what)?,
            T::Symlink => {
                let target = match ent.link_name_bytes() {
                    Some(b) => crate::names::from_bytes(&b, "symlink target").map_err(what)?,
                    None => String::new(),
                };
                sink.symlink(&path, &target, uid, gid).map_err(what)?
            }
            T::Link => {
                let target_raw = match ent.link_name_bytes() {
                    Some(b) => crate::names::from_bytes(&b, "hard link target").map_err(what)?,
                    None => String::new(),
                };
                let target = place
                    .map(&target_raw, false)
                    .map_err(|e| e.context(format!("hard link `{shown}`")))?
                    .ok_or_else(|| {
                        anyhow!(
                            "hard link `{shown}` -> `{}` was stripped away",
                            crate::names::display(&target_raw)
                        )
                    })?;
                sink.hardlink(&path, &target, mode, uid, gid)?
            }
            T::Char => {
                let (a, b) = dev();
                sink.special(&path, Kind::CharDev(a, b), mode, uid, gid)
                    .map_err(what)?
            }
            T::Block => {
                let (a, b) = dev();
                sink.special(&path, Kind::BlockDev(a, b), mode, uid, gid)
                    .map_err(what)?
            }
            T::Fifo => sink
                .special(&path, Kind::Fifo, mode, uid, gid)
                .map_err(what)?,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => bail!("member `{shown}` has unsupported tar type {:?}", other),
        }
    }
    Ok(())
}

/// File type bits of a cpio/stat mode.
const S_IFMT: u32 = 0o170000;

/// Unpacks an RPM: lead, signature, header, then the cpio payload.
/// Returns the package record for the SBOM.
pub fn unpack_rpm(sink: &mut Sink, r: &mut dyn Read, place: &Placement) -> Result<Package> {
    let (hdr, payload) = crate::rpm::open_rpm(r).with_context(|| "not a valid RPM")?;
    let pkg = Package {
        name: hdr.name().unwrap_or_default().to_string(),
        epoch: hdr.epoch(),
        version: hdr.version().unwrap_or_default().to_string(),
        release: hdr.release().unwrap_or_default().to_string(),
        arch: hdr.arch().unwrap_or_default().to_string(),
        source: format!("artifact:{}", sink.input),
    };
    if !sink.arch.accepts_package_arch(&pkg.arch) {
        bail!(
            "RPM {}-{}-{} is for {} but the image is {}",
            pkg.name,
            pkg.version,
            pkg.release,
            pkg.arch,
            sink.arch.name()
        );
    }
    let owners = rpm_owners(sink, &hdr)?;
    unpack_cpio(sink, payload, place, &owners).with_context(|| "RPM payload")?;
    let deps = crate::lint::deps::from_rpm_header(&hdr, &format!("artifact:{}", sink.input));
    record_deps(sink, &deps)?;
    Ok(pkg)
}

/// Records an unpacked package's dependencies in the image
/// ([`crate::lint::deps::ARTIFACT_DEPS_DIR`]) for the lint's closure check:
/// no package database lists an artifact.
fn record_deps(sink: &mut Sink, deps: &crate::lint::deps::PackageDeps) -> Result<()> {
    let json = serde_json::to_vec_pretty(deps)?;
    let path = format!(
        "{}/{}.json",
        crate::lint::deps::ARTIFACT_DEPS_DIR,
        sink.input
    );
    sink.file(&path, &mut &json[..], 0o644, 0, 0)?;
    Ok(())
}

/// Owners of an RPM's files: the payload carries uid/gid 0 and the header
/// carries user and group names, resolved here against the image's own
/// `/etc/passwd` and `/etc/group` as rpm would. An unknown name falls back
/// to root, as rpm does, with a warning.
fn rpm_owners(sink: &Sink, hdr: &crate::rpm::RpmHeader) -> Result<HashMap<String, (u32, u32)>> {
    let files = hdr.files().context("RPM file list")?;
    let users = id_table(sink, "/etc/passwd");
    let groups = id_table(sink, "/etc/group");
    let mut out = HashMap::new();
    let mut unknown = std::collections::BTreeSet::new();
    for f in files {
        let mut lookup = |table: &HashMap<String, u32>, name: &str| -> u32 {
            if name == "root" || name.is_empty() {
                return 0;
            }
            table.get(name).copied().unwrap_or_else(|| {
                unknown.insert(name.to_string());
                0
            })
        };
        let uid = lookup(&users, &f.user);
        let gid = lookup(&groups, &f.group);
        out.insert(f.path.trim_start_matches('/').to_string(), (uid, gid));
    }
    if !unknown.is_empty() {
        eprintln!(
            "nodebake: warning: input `{}`: owner(s) {} not in the image's /etc/passwd or /etc/group; \
             those files are owned by root (package scripts that would create them are never run)",
            sink.input,
            unknown.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(out)
}

/// name → id from a passwd/group-format file in the image.
fn id_table(sink: &Sink, path: &str) -> HashMap<String, u32> {
    let Some((
        _,
        Entry {
            kind: Kind::File(id),
            ..
        },
    )) = sink.tree.lookup(path)
    else {
        return HashMap::new();
    };
    let text = sink.blobs.read(id).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| {
            let mut it = l.split(':');
            let name = it.next()?;
            let _pw = it.next()?;
            let id = it.next()?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

/// Unpacks a cpio newc stream. Hard links (entries sharing an inode, only
/// the last carrying data, as RPM writes them) become files sharing one
/// blob.
pub fn unpack_cpio(
    sink: &mut Sink,
    r: Box<dyn Read + '_>,
    place: &Placement,
    owners: &HashMap<String, (u32, u32)>,
) -> Result<()> {
    let mut pending: HashMap<u32, Vec<(String, u32, u32, u32)>> = HashMap::new();
    let mut seen = 0u64;
    // nodebake's own newc reader (crate::rpm): names keep their bytes
    // (crate::names), and it drains the stream after the trailer so the
    // payload digest (checked by the RPM reader at end of stream) covers
    // every byte.
    crate::rpm::for_each_cpio_entry(r, |e, rd| -> Result<()> {
        seen += 1;
        if seen > 10_000_000 {
            bail!("more than 10 000 000 entries");
        }
        let raw = e.name.as_str();
        let (uid, gid) = owners.get(raw).copied().unwrap_or((e.uid, e.gid));
        let (mode, ino, nlink, size) = (e.mode, e.ino, e.nlink, e.file_size);
        let (maj, min) = (e.rdev_major, e.rdev_minor);
        let what =
            |err: anyhow::Error| err.context(format!("member `{}`", crate::names::display(raw)));
        let Some(path) = place.map(raw, true).map_err(what)? else {
            return Ok(());
        };
        match mode & S_IFMT {
            0o100000 => {
                if nlink > 1 && size == 0 {
                    pending.entry(ino).or_default().push((path, mode, uid, gid));
                } else {
                    let id = sink.file(&path, rd, mode, uid, gid).map_err(what)?;
                    if let Some(links) = pending.remove(&ino) {
                        for (p, m, u, g) in links {
                            sink.insert(&p, Kind::File(id), m, u, g)?;
                            sink.files += 1;
                        }
                    }
                }
            }
            0o040000 => sink.dir(&path, mode, uid, gid).map_err(what)?,
            0o120000 => {
                let mut t = Vec::new();
                rd.take(64 << 10)
                    .read_to_end(&mut t)
                    .map_err(|e| what(e.into()))?;
                let t = crate::names::from_bytes(&t, "symlink target").map_err(what)?;
                sink.symlink(&path, &t, uid, gid).map_err(what)?
            }
            0o020000 => sink
                .special(&path, Kind::CharDev(maj, min), mode, uid, gid)
                .map_err(what)?,
            0o060000 => sink
                .special(&path, Kind::BlockDev(maj, min), mode, uid, gid)
                .map_err(what)?,
            0o010000 => sink
                .special(&path, Kind::Fifo, mode, uid, gid)
                .map_err(what)?,
            t => bail!(
                "member `{}` has unsupported file type {t:o}",
                crate::names::display(raw)
            ),
        }
        Ok(())
    })?;
    // Link groups whose data never came are empty files.
    for (_, links) in pending {
        for (p, m, u, g) in links {
            sink.file(&p, &mut io::empty(), m, u, g)?;
        }
    }
    Ok(())
}

/// Unpacks a Debian package: checks `debian-binary`, reads the control
/// file for the SBOM and extracts `data.tar.*`. Maintainer scripts are
/// never run.
pub fn unpack_deb(sink: &mut Sink, r: &mut dyn Read, place: &Placement) -> Result<Package> {
    let mut ar = ar::Archive::new(r);
    let mut pkg: Option<Package> = None;
    let mut deps = None;
    let mut saw_binary = false;
    let mut saw_data = false;
    while let Some(member) = ar.next_entry() {
        let mut member = member.with_context(|| "corrupt or truncated Debian package")?;
        let id = lossy(member.header().identifier())
            .trim_end_matches('/')
            .to_string();
        if id == "debian-binary" {
            let mut v = String::new();
            member.read_to_string(&mut v)?;
            if !v.starts_with("2.") {
                bail!("unsupported Debian package format `{}`", v.trim());
            }
            saw_binary = true;
        } else if id.starts_with("control.tar") {
            let control = read_deb_control(&mut member).with_context(|| id.clone())?;
            pkg = Some(parse_deb_control(&control, &sink.input)?);
            deps =
                crate::lint::deps::from_deb_control(&control, &format!("artifact:{}", sink.input));
        } else if id.starts_with("data.tar") {
            let p = pkg
                .as_ref()
                .ok_or_else(|| anyhow!("data.tar comes before control.tar"))?;
            if !sink.arch.accepts_package_arch(&p.arch) {
                bail!(
                    "Debian package {} {} is for {} but the image is {}",
                    p.name,
                    p.version,
                    p.arch,
                    sink.arch.name()
                );
            }
            unpack_tar(sink, &mut member, place).with_context(|| id.clone())?;
            saw_data = true;
        }
    }
    if !saw_binary || !saw_data {
        bail!("not a Debian package (missing debian-binary or data.tar)");
    }
    if let Some(d) = &deps {
        record_deps(sink, d)?;
    }
    pkg.ok_or_else(|| anyhow!("Debian package without control.tar"))
}

fn read_deb_control(r: &mut dyn Read) -> Result<String> {
    let (_, dec) = compress::auto_decoder(r)?;
    let mut ar = tar::Archive::new(dec);
    for ent in ar.entries()? {
        let ent = ent?;
        let p = lossy(&ent.path_bytes());
        if p.trim_start_matches("./") == "control" {
            let mut s = String::new();
            ent.take(1 << 20).read_to_string(&mut s)?;
            return Ok(s);
        }
    }
    bail!("no `control` file")
}

fn parse_deb_control(text: &str, input: &str) -> Result<Package> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
    };
    let name =
        field("Package").ok_or_else(|| anyhow!("input `{input}`: control file has no Package"))?;
    let full =
        field("Version").ok_or_else(|| anyhow!("input `{input}`: control file has no Version"))?;
    let arch = field("Architecture").unwrap_or_default();
    let (epoch, rest) = match full.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().ok(), r.to_string()),
        _ => (None, full.clone()),
    };
    let (version, release) = match rest.rsplit_once('-') {
        Some((v, r)) => (v.to_string(), r.to_string()),
        None => (rest, String::new()),
    };
    Ok(Package {
        name,
        epoch,
        version,
        release,
        arch,
        source: format!("artifact:{input}"),
    })
}

/// Format of a container image archive.
pub fn image_archive_format(blobs: &BlobStore, id: &BlobId) -> Result<&'static str> {
    let f = blobs.open(id)?;
    let (_, dec) = compress::auto_decoder(io::BufReader::new(f))?;
    let mut ar = tar::Archive::new(dec);
    let (mut manifest, mut index, mut layout) = (false, false, false);
    for ent in ar.entries().context("not a tar archive")? {
        let ent = ent.context("corrupt or truncated image archive")?;
        match lossy(&ent.path_bytes()).trim_start_matches("./") {
            "manifest.json" => manifest = true,
            "index.json" => index = true,
            "oci-layout" => layout = true,
            _ => {}
        }
    }
    if index && layout {
        Ok("oci-archive")
    } else if manifest {
        Ok("docker-archive")
    } else {
        bail!(
            "neither a docker-archive (manifest.json) nor an OCI archive (oci-layout + index.json)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_strips_filters_and_refuses_traversal() {
        let p = Placement {
            dest: "/opt/cni/bin".into(),
            strip: 1,
            include: globset(&["cni/bridge".into(), "cni/host-local".into()]).unwrap(),
            exclude: None,
        };
        assert_eq!(
            p.map("./cni/bridge", true).unwrap().as_deref(),
            Some("/opt/cni/bin/bridge")
        );
        assert_eq!(p.map("cni/flannel", true).unwrap(), None);
        assert_eq!(p.map("cni", true).unwrap(), None);
        assert!(p
            .map("../etc/passwd", true)
            .unwrap_err()
            .to_string()
            .contains(".."));
        assert!(p
            .map("/etc/passwd", true)
            .unwrap_err()
            .to_string()
            .contains("absolute"));
    }

    #[test]
    fn deb_control_versions_split() {
        let p = parse_deb_control(
            "Package: runc\nVersion: 1:1.1.5+ds1-1+deb12u1\nArchitecture: amd64\n",
            "x",
        )
        .unwrap();
        assert_eq!(
            (p.epoch, p.version.as_str(), p.release.as_str()),
            (Some(1), "1.1.5+ds1", "1+deb12u1")
        );
    }
}
