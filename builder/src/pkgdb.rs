//! Installed-package databases of a root filesystem, read for the image SBOM:
//!
//! * the EL9+ rpm database, `var/lib/rpm/rpmdb.sqlite` ([`read_rpmdb_sqlite`]);
//! * the EL7/EL8 Berkeley DB rpm database, `var/lib/rpm/Packages`
//!   ([`read_rpmdb_bdb`]), parsed by hand (hash access method, overflow
//!   pages, either byte order);
//! * the Debian `var/lib/dpkg/status` file ([`parse_dpkg_status`]).
//!
//! All readers open files read-only and never modify them. Results are
//! sorted ([`Package`]'s `Ord`). `gpg-pubkey` entries (imported signing
//! keys that rpm stores as pseudo-packages) are **kept**, as `rpm -qa` lists
//! them; they have no architecture, reported as `(none)` like `rpm` does,
//! so an SBOM writer can recognise and drop them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::rpm::parse_header_blob;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Epoch, when the package declares one.
    pub epoch: Option<u32>,
    /// Upstream version.
    pub version: String,
    /// RPM release or Debian revision (`""` for native Debian packages).
    pub release: String,
    /// Architecture (`(none)` for rpm `gpg-pubkey` entries).
    pub arch: String,
    /// Where it was found: `"rpmdb"`, `"dpkg"` or `"artifact:<name>"`.
    pub source: String,
}

/// Architecture reported for rpm headers without one (as `rpm -q` does).
pub const NO_ARCH: &str = "(none)";

fn package_from_blob(blob: &[u8]) -> Result<Package> {
    let h = parse_header_blob(blob)?;
    let need = |v: Option<&str>, what: &str| {
        v.map(str::to_string)
            .ok_or_else(|| anyhow!("rpmdb header without {what}"))
    };
    Ok(Package {
        name: need(h.name(), "NAME")?,
        epoch: h.epoch(),
        version: need(h.version(), "VERSION")?,
        release: need(h.release(), "RELEASE")?,
        arch: h.arch().unwrap_or(NO_ARCH).to_string(),
        source: "rpmdb".to_string(),
    })
}

/// Percent-encodes the characters that are special in an SQLite URI path.
fn uri_path(path: &Path) -> Result<String> {
    let s = path
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", path.display()))?;
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        match b {
            b'%' | b'?' | b'#' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    Ok(out)
}

/// Reads the EL9+ sqlite rpm database (`rpmdb.sqlite`): every blob of table
/// `Packages(hnum, blob)`, parsed as an rpm header. The file is opened
/// read-only and `immutable=1`, so it works on read-only files and
/// directories and never creates `-wal`/`-shm` files beside it.
pub fn read_rpmdb_sqlite(path: &Path) -> Result<Vec<Package>> {
    let mut out = read_sqlite_blobs(path, package_from_blob)?;
    out.sort();
    Ok(out)
}

/// Every header blob of an rpmdb.sqlite, mapped by `f`, in header order.
fn read_sqlite_blobs<T>(path: &Path, f: impl Fn(&[u8]) -> Result<T>) -> Result<Vec<T>> {
    use rusqlite::{Connection, OpenFlags};
    if !path.is_file() {
        bail!("rpm database {} does not exist", path.display());
    }
    let uri = format!("file:{}?immutable=1", uri_path(path)?);
    let conn = Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening rpm database {}", path.display()))?;
    let mut stmt = conn
        .prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")
        .with_context(|| format!("{}: not an rpm sqlite database", path.display()))?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (hnum, blob) = row.with_context(|| format!("reading {}", path.display()))?;
        out.push(f(&blob).with_context(|| format!("{}: package header #{hnum}", path.display()))?);
    }
    Ok(out)
}

/// The dependencies of every package of an rpm database: `rpmdb.sqlite`
/// (EL9+) or the Berkeley DB `Packages` file (EL7/EL8), by file name.
pub fn read_rpmdb_deps(path: &Path) -> Result<Vec<crate::lint::deps::PackageDeps>> {
    let deps = |blob: &[u8]| -> Result<_> {
        Ok(crate::lint::deps::from_rpm_header(
            &parse_header_blob(blob)?,
            "rpmdb",
        ))
    };
    if path.file_name().is_some_and(|n| n == "Packages") {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        parse_bdb_blobs(&data, deps)
            .with_context(|| format!("Berkeley DB rpm database {}", path.display()))
    } else {
        read_sqlite_blobs(path, deps)
    }
}

/// Splits a Debian version `[epoch:]upstream[-revision]`.
fn split_deb_version(v: &str) -> Result<(Option<u32>, String, String)> {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => (
            Some(
                e.parse::<u32>()
                    .with_context(|| format!("bad epoch in Debian version `{v}`"))?,
            ),
            rest,
        ),
        None => (None, v),
    };
    let (upstream, revision) = match rest.rsplit_once('-') {
        Some((u, r)) => (u, r),
        None => (rest, ""),
    };
    if upstream.is_empty() {
        bail!("empty upstream version in Debian version `{v}`");
    }
    Ok((epoch, upstream.to_string(), revision.to_string()))
}

/// Parses a dpkg status file (`/var/lib/dpkg/status`) and returns the
/// installed packages: those whose `Status` is `install ok installed`, or
/// `hold ok installed` (held packages are installed too). The version is
/// split into epoch, upstream version and Debian revision (`release`, `""`
/// when absent).
pub fn parse_dpkg_status(text: &str) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    for (n, para) in text.split("\n\n").enumerate() {
        let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
        for line in para.lines() {
            if line.starts_with([' ', '\t']) || line.trim().is_empty() {
                continue; // continuation of a multi-line field
            }
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("dpkg status stanza {}: malformed line `{line}`", n + 1))?;
            fields.insert(k, v.trim());
        }
        if fields.is_empty() {
            continue;
        }
        let status: Vec<&str> = fields
            .get("Status")
            .copied()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let installed = matches!(status.as_slice(), ["install" | "hold", "ok", "installed"]);
        if !installed {
            continue;
        }
        let get = |k: &str| {
            fields
                .get(k)
                .copied()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "dpkg status stanza {}: installed package without {k}",
                        n + 1
                    )
                })
        };
        let name = get("Package")?;
        let (epoch, version, release) =
            split_deb_version(get("Version")?).with_context(|| format!("package {name}"))?;
        out.push(Package {
            name: name.to_string(),
            epoch,
            version,
            release,
            arch: get("Architecture")?.to_string(),
            source: "dpkg".to_string(),
        });
    }
    out.sort();
    Ok(out)
}

/// Reads and parses a dpkg status file; see [`parse_dpkg_status`].
pub fn read_dpkg_status(path: &Path) -> Result<Vec<Package>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_dpkg_status(&text).with_context(|| format!("parsing {}", path.display()))
}

// Berkeley DB hash database layout (db_page.h).
const HASH_MAGIC: u32 = 0x0006_1561;
const PAGE_HEADER: usize = 26;
const P_HASH_UNSORTED: u8 = 2;
const P_OVERFLOW: u8 = 7;
const P_HASHMETA: u8 = 8;
const P_HASH: u8 = 13;
const H_KEYDATA: u8 = 1;
const H_OFFPAGE: u8 = 3;
const DBMETA_CHKSUM: u8 = 0x01;

/// A Berkeley DB file in memory, with its byte order.
struct Bdb<'a> {
    data: &'a [u8],
    page_size: usize,
    last_pgno: u32,
    little: bool,
}

impl<'a> Bdb<'a> {
    fn u16_at(&self, b: &[u8], off: usize) -> u16 {
        let a = [b[off], b[off + 1]];
        if self.little {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }

    fn u32_at(&self, b: &[u8], off: usize) -> u32 {
        let a = [b[off], b[off + 1], b[off + 2], b[off + 3]];
        if self.little {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }

    fn page(&self, pgno: u32) -> Result<&'a [u8]> {
        if pgno > self.last_pgno {
            bail!("page {pgno} beyond the last page {}", self.last_pgno);
        }
        let start = pgno as usize * self.page_size;
        self.data
            .get(start..start + self.page_size)
            .ok_or_else(|| anyhow!("page {pgno} lies beyond the end of the file (truncated?)"))
    }

    /// Item `i` of a hash page: its bytes, from the type byte to the next
    /// item (items are stored from the end of the page downwards).
    fn item(&self, page: &'a [u8], entries: usize, i: usize) -> Result<&'a [u8]> {
        let inp = |k: usize| self.u16_at(page, PAGE_HEADER + 2 * k) as usize;
        let start = inp(i);
        let end = if i == 0 { self.page_size } else { inp(i - 1) };
        let min = PAGE_HEADER + 2 * entries;
        if start < min || start >= end || end > self.page_size {
            bail!("hash item {i} has bad bounds {start}..{end}");
        }
        Ok(&page[start..end])
    }

    /// The bytes of an off-page item: the overflow chain from `pgno`.
    fn overflow(&self, mut pgno: u32, total: usize) -> Result<Vec<u8>> {
        if total > self.data.len() {
            bail!("overflow item of {total} bytes is larger than the file");
        }
        let mut out = Vec::with_capacity(total);
        let mut hops = 0u32;
        while out.len() < total {
            if pgno == 0 || hops > self.last_pgno {
                bail!("overflow chain ends after {} of {total} bytes", out.len());
            }
            let p = self.page(pgno)?;
            if p[25] != P_OVERFLOW {
                bail!("page {pgno} in an overflow chain has type {}", p[25]);
            }
            let len = self.u16_at(p, 22) as usize; // hf_offset = bytes on page
            if PAGE_HEADER + len > self.page_size {
                bail!("overflow page {pgno} claims {len} bytes");
            }
            let take = len.min(total - out.len());
            out.extend_from_slice(&p[PAGE_HEADER..PAGE_HEADER + take]);
            pgno = self.u32_at(p, 16);
            hops += 1;
        }
        Ok(out)
    }

    /// The full bytes of a hash item (inline or off-page); `None` for
    /// duplicate sets, which rpm's Packages database never uses.
    fn item_bytes(&self, item: &[u8]) -> Result<Option<Vec<u8>>> {
        match item[0] {
            H_KEYDATA => Ok(Some(item[1..].to_vec())),
            H_OFFPAGE => {
                if item.len() < 12 {
                    bail!("short off-page item");
                }
                let pgno = self.u32_at(item, 4);
                let tlen = self.u32_at(item, 8) as usize;
                Ok(Some(self.overflow(pgno, tlen)?))
            }
            _ => Ok(None),
        }
    }
}

/// Parses the bytes of a Berkeley DB hash database holding the rpm
/// `Packages` table (key: header number in the creator's byte order,
/// value: header blob).
fn parse_bdb_packages(data: &[u8]) -> Result<Vec<Package>> {
    let mut out = parse_bdb_blobs(data, package_from_blob)?;
    out.sort();
    Ok(out)
}

/// Every header blob of a Berkeley DB rpm `Packages` database, mapped by
/// `f`, in header-number order.
fn parse_bdb_blobs<T>(data: &[u8], f: impl Fn(&[u8]) -> Result<T>) -> Result<Vec<T>> {
    if data.len() < 512 {
        bail!(
            "file too small ({} bytes) for a Berkeley DB database",
            data.len()
        );
    }
    let magic_le = u32::from_le_bytes([data[12], data[13], data[14], data[15]]);
    let magic_be = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
    let little = if magic_le == HASH_MAGIC {
        true
    } else if magic_be == HASH_MAGIC {
        false
    } else {
        bail!("not a Berkeley DB hash database (magic {magic_le:#x})");
    };
    let probe = Bdb {
        data,
        page_size: 0,
        last_pgno: 0,
        little,
    };
    let page_size = probe.u32_at(data, 20) as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        bail!("bad Berkeley DB page size {page_size}");
    }
    if data[24] != 0 {
        bail!("encrypted Berkeley DB databases are not supported");
    }
    if data[25] != P_HASHMETA {
        bail!("metadata page has type {}, expected hash meta", data[25]);
    }
    if data[26] & DBMETA_CHKSUM != 0 {
        bail!("Berkeley DB databases with page checksums are not supported");
    }
    let last_pgno = probe.u32_at(data, 32);
    let db = Bdb {
        data,
        page_size,
        last_pgno,
        little,
    };
    if (last_pgno as usize + 1) * page_size > data.len() {
        bail!(
            "truncated: last page {last_pgno} of {page_size} bytes lies beyond the {}-byte file",
            data.len()
        );
    }
    let mut by_hnum: BTreeMap<u32, T> = BTreeMap::new();
    for pgno in 1..=last_pgno {
        let p = db.page(pgno)?;
        if p[25] != P_HASH && p[25] != P_HASH_UNSORTED {
            continue;
        }
        let entries = db.u16_at(p, 20) as usize;
        if PAGE_HEADER + 2 * entries > page_size || entries & 1 != 0 {
            bail!("hash page {pgno} has a bad entry count {entries}");
        }
        for pair in 0..entries / 2 {
            let ctx = || format!("hash page {pgno}, pair {pair}");
            let key = db.item(p, entries, 2 * pair).with_context(ctx)?;
            let val = db.item(p, entries, 2 * pair + 1).with_context(ctx)?;
            let Some(key) = db.item_bytes(key).with_context(ctx)? else {
                continue;
            };
            if key.len() != 4 {
                bail!(
                    "{}: key of {} bytes, expected a 4-byte header number",
                    ctx(),
                    key.len()
                );
            }
            let hnum = db.u32_at(&key, 0);
            if hnum == 0 {
                continue; // rpm's bookkeeping record (next header number)
            }
            let Some(blob) = db.item_bytes(val).with_context(ctx)? else {
                bail!(
                    "{}: duplicate-set value, not an rpm Packages database",
                    ctx()
                );
            };
            let pkg = f(&blob).with_context(|| format!("package header #{hnum} ({})", ctx()))?;
            by_hnum.insert(hnum, pkg);
        }
    }
    Ok(by_hnum.into_values().collect())
}

/// Reads the EL7/EL8 Berkeley DB rpm database (`/var/lib/rpm/Packages`, hash
/// access method): scans the hash pages, follows overflow pages holding the
/// header blobs, accepts both byte orders. Encrypted or checksummed
/// databases (which rpm never creates) are refused.
pub fn read_rpmdb_bdb(path: &Path) -> Result<Vec<Package>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_bdb_packages(&data)
        .with_context(|| format!("Berkeley DB rpm database {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_filters_and_splits_versions() {
        let text = "\
Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Version: 2.36-9+deb12u4
Description: GNU C Library
 continuation line: with a colon
 .

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: base-files
Status: install ok installed
Architecture: amd64
Version: 12.4+deb12u5

Package: held
Status: hold ok installed
Architecture: all
Version: 3:1.2.3-4-5

Package: half
Status: install reinstreq half-installed
Architecture: amd64
Version: 1

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9+deb12u4
";
        let p = parse_dpkg_status(text).unwrap();
        let got: Vec<(String, Option<u32>, String, String, String)> = p
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.epoch,
                    p.version.clone(),
                    p.release.clone(),
                    p.arch.clone(),
                )
            })
            .collect();
        let want = [
            ("base-files", None, "12.4+deb12u5", "", "amd64"),
            ("held", Some(3), "1.2.3-4", "5", "all"),
            ("libc6", None, "2.36", "9+deb12u4", "amd64"),
            ("libc6", None, "2.36", "9+deb12u4", "i386"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, e, v, r, a)| {
                (
                    n.to_string(),
                    *e,
                    v.to_string(),
                    r.to_string(),
                    a.to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);
        assert!(p.iter().all(|p| p.source == "dpkg"));
    }

    #[test]
    fn dpkg_status_errors() {
        assert!(
            parse_dpkg_status("Package: x\nStatus: install ok installed\nArchitecture: all\n")
                .is_err()
        );
        assert!(parse_dpkg_status(
            "Package: x\nStatus: install ok installed\nVersion: x:1\nArchitecture: all\n"
        )
        .is_err());
        assert!(parse_dpkg_status("garbage line\n").is_err());
        assert!(parse_dpkg_status("").unwrap().is_empty());
    }

    #[test]
    fn missing_sqlite_db_is_an_error() {
        let err = read_rpmdb_sqlite(Path::new("/nonexistent/rpmdb.sqlite")).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("rpmdb.sqlite");
        std::fs::write(&junk, b"not sqlite at all, just some bytes").unwrap();
        assert!(read_rpmdb_sqlite(&junk).is_err());
    }

    #[test]
    fn bdb_garbage_is_rejected() {
        assert!(parse_bdb_packages(&[0u8; 100]).is_err());
        let err = parse_bdb_packages(&[0u8; 4096]).unwrap_err();
        assert!(err.to_string().contains("not a Berkeley DB hash"));
    }
}
