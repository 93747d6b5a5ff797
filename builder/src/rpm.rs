//! RPM package reader (format v3/v4), written by hand.
//!
//! An RPM file is:
//!
//! 1. a 96-byte *lead* (magic `ED AB EE DB`), obsolete except for its magic;
//! 2. the *signature header*, a header structure padded to 8 bytes;
//! 3. the main *header* (name, version, file list, ...);
//! 4. the *payload*: a compressed cpio (`newc`) archive of the files.
//!
//! A header structure is `8E AD E8 01`, four reserved bytes, the index entry
//! count and data store size (big-endian `u32`s), the 16-byte index entries
//! (tag, type, offset, count) and the data store. The rpm database stores the
//! same structure without the 8-byte magic prefix ("header blob"); see
//! [`parse_header_blob`]. Every count, size and offset is bounds-checked, so
//! corrupt or hostile input yields an [`RpmError`], never a panic or an
//! unbounded allocation.
//!
//! Reading a package:
//!
//! ```no_run
//! # fn main() -> Result<(), nodebake::rpm::RpmError> {
//! use nodebake::rpm::{for_each_cpio_entry, open_rpm, Hardlink, HardlinkTracker};
//! let f = std::fs::File::open("foo.rpm").unwrap();
//! let (header, payload) = open_rpm(std::io::BufReader::new(f))?;
//! println!("{}", header.nevra());
//! // Ownership lives in the header: cpio uid/gid are always 0 in RPMs.
//! let files = header.files()?;
//! let mut links = HardlinkTracker::default();
//! for_each_cpio_entry(payload, |entry, data| {
//!     match links.observe(entry) {
//!         Hardlink::Deferred => {} // a later entry of the set carries the data
//!         Hardlink::Target { links } => { /* write `data`, then link `links` to it */ }
//!         Hardlink::LinkTo(target) => { /* hard link entry.name to target */ }
//!         Hardlink::None => { /* regular entry: read `data` (symlink: its target) */ }
//!     }
//!     Ok::<(), nodebake::rpm::RpmError>(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! The payload reader returned by [`open_rpm`] is the decompressed cpio
//! stream; any `newc` reader (e.g. `cpio::NewcReader`) can iterate it, but
//! [`for_each_cpio_entry`] also reads it to the end, which makes the payload
//! digest from the header (if any) get verified.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, BufReader, Read};

use sha2::{Digest, Sha256, Sha512};

use crate::compress::{decoder, Compression};

/// Header tag numbers of the main header (`RPMTAG_*`).
pub mod tag {
    /// Region tag: header image (legacy).
    pub const HEADERIMAGE: u32 = 61;
    /// Region tag: signature header region.
    pub const HEADERSIGNATURES: u32 = 62;
    /// Region tag: immutable header region.
    pub const HEADERIMMUTABLE: u32 = 63;
    /// Locales of the I18N strings.
    pub const HEADERI18NTABLE: u32 = 100;
    /// Package name.
    pub const NAME: u32 = 1000;
    /// Package version.
    pub const VERSION: u32 = 1001;
    /// Package release.
    pub const RELEASE: u32 = 1002;
    /// Package epoch (INT32, optional).
    pub const EPOCH: u32 = 1003;
    /// One-line summary.
    pub const SUMMARY: u32 = 1004;
    /// Long description.
    pub const DESCRIPTION: u32 = 1005;
    /// Build time (seconds since the epoch).
    pub const BUILDTIME: u32 = 1006;
    /// Installed size (INT32).
    pub const SIZE: u32 = 1009;
    /// License.
    pub const LICENSE: u32 = 1014;
    /// Package group.
    pub const GROUP: u32 = 1016;
    /// Upstream URL.
    pub const URL: u32 = 1020;
    /// Operating system (`linux`).
    pub const OS: u32 = 1021;
    /// Architecture (`x86_64`, `noarch`, ...).
    pub const ARCH: u32 = 1022;
    /// Legacy (v3) absolute file names.
    pub const OLDFILENAMES: u32 = 1027;
    /// File sizes (INT32).
    pub const FILESIZES: u32 = 1028;
    /// File modes (INT16).
    pub const FILEMODES: u32 = 1030;
    /// Device numbers of device files (INT16).
    pub const FILERDEVS: u32 = 1033;
    /// File modification times (INT32).
    pub const FILEMTIMES: u32 = 1034;
    /// File digests, hex (formerly FILEMD5S).
    pub const FILEDIGESTS: u32 = 1035;
    /// Symlink targets ("" for non-symlinks).
    pub const FILELINKTOS: u32 = 1036;
    /// File flags (`RPMFILE_*`, see [`super::fileflag`]).
    pub const FILEFLAGS: u32 = 1037;
    /// Owner user names.
    pub const FILEUSERNAME: u32 = 1039;
    /// Owner group names.
    pub const FILEGROUPNAME: u32 = 1040;
    /// Source RPM name.
    pub const SOURCERPM: u32 = 1044;
    /// Provided capabilities.
    pub const PROVIDENAME: u32 = 1047;
    /// Required capabilities.
    pub const REQUIRENAME: u32 = 1049;
    /// Install time (set in the rpmdb only).
    pub const INSTALLTIME: u32 = 1008;
    /// Hard-link inode numbers (INT32).
    pub const FILEINODES: u32 = 1096;
    /// Directory index of each file into [`DIRNAMES`].
    pub const DIRINDEXES: u32 = 1116;
    /// File base names.
    pub const BASENAMES: u32 = 1117;
    /// Directory names (with trailing `/`).
    pub const DIRNAMES: u32 = 1118;
    /// Payload format (`cpio`; `drpm` for delta RPMs).
    pub const PAYLOADFORMAT: u32 = 1124;
    /// Payload compressor (`gzip`, `xz`, `zstd`, `bzip2`, `lzma`).
    pub const PAYLOADCOMPRESSOR: u32 = 1125;
    /// Payload compression flags (level).
    pub const PAYLOADFLAGS: u32 = 1126;
    /// 64-bit file sizes (INT64), replaces [`FILESIZES`] for large files.
    pub const LONGFILESIZES: u32 = 5008;
    /// 64-bit installed size.
    pub const LONGSIZE: u32 = 5009;
    /// Digest algorithm of [`FILEDIGESTS`] (PGP hash algorithm number).
    pub const FILEDIGESTALGO: u32 = 5011;
    /// Digest of the compressed payload (hex string array).
    pub const PAYLOADDIGEST: u32 = 5092;
    /// Algorithm of [`PAYLOADDIGEST`] (8 = SHA-256, 10 = SHA-512).
    pub const PAYLOADDIGESTALGO: u32 = 5093;
}

/// Signature header tag numbers (`RPMSIGTAG_*`).
pub mod sigtag {
    /// Header + payload size (INT32).
    pub const SIZE: u32 = 1000;
    /// MD5 of header + payload (BIN).
    pub const MD5: u32 = 1004;
    /// Uncompressed payload size (INT32).
    pub const PAYLOADSIZE: u32 = 1007;
    /// SHA-1 of the main header (hex string).
    pub const SHA1: u32 = 269;
    /// 64-bit header + payload size.
    pub const LONGSIZE: u32 = 270;
    /// SHA-256 of the main header (hex string), verified by [`super::open_rpm`].
    pub const SHA256: u32 = 273;
}

/// File flag bits of [`tag::FILEFLAGS`] (`RPMFILE_*`).
pub mod fileflag {
    /// `%config`.
    pub const CONFIG: u32 = 1 << 0;
    /// `%doc`.
    pub const DOC: u32 = 1 << 1;
    /// `%config(missingok)`.
    pub const MISSINGOK: u32 = 1 << 3;
    /// `%config(noreplace)`.
    pub const NOREPLACE: u32 = 1 << 4;
    /// `%ghost`: listed in the header, absent from the payload.
    pub const GHOST: u32 = 1 << 6;
    /// `%license`.
    pub const LICENSE: u32 = 1 << 7;
    /// `%readme`.
    pub const README: u32 = 1 << 8;
    /// `%artifact`.
    pub const ARTIFACT: u32 = 1 << 12;
}

/// Largest index entry count accepted (rpm's `HEADER_TAGS_MAX`).
pub const MAX_INDEX_ENTRIES: u32 = 0xffff;
/// Largest data store accepted, 256 MiB (rpm's `HEADER_DATA_MAX`).
pub const MAX_DATA_SIZE: u32 = 0x0fff_ffff;

const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
const LEAD_SIZE: usize = 96;
/// `RPMSIGTYPE_HEADERSIG`: the lead announces a header-style signature.
const SIGTYPE_HEADERSIG: u16 = 5;
const CPIO_TRAILER: &str = "TRAILER!!!";
const CPIO_HEADER_LEN: usize = 110;
const CPIO_MAX_NAME: u32 = 64 * 1024;

/// The part of an RPM file an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// The 96-byte lead.
    Lead,
    /// The signature header.
    Signature,
    /// The main header (or an rpmdb header blob).
    Header,
    /// The compressed cpio payload.
    Payload,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Structure::Lead => "lead",
            Structure::Signature => "signature header",
            Structure::Header => "header",
            Structure::Payload => "payload",
        })
    }
}

/// Everything that can go wrong reading an RPM package or header.
#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    /// The file does not start with the RPM lead magic.
    #[error("not an RPM package: bad lead magic {found:02x?} (expected ed ab ee db)")]
    BadLeadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// The lead is from a package format this reader does not handle.
    #[error("unsupported RPM lead: format version {major}, signature type {signature_type} (need v3/v4 with header signatures, type 5)")]
    UnsupportedLead {
        /// Lead major version.
        major: u8,
        /// Lead signature type.
        signature_type: u16,
    },
    /// The input ended inside a structure.
    #[error("truncated RPM: unexpected end of data in the {0}")]
    Truncated(Structure),
    /// A header structure did not start with `8E AD E8 01`.
    #[error("bad header magic in the {structure}: {found:02x?} (expected 8e ad e8 01)")]
    BadHeaderMagic {
        /// Which header.
        structure: Structure,
        /// The four bytes found.
        found: [u8; 4],
    },
    /// Index count or data size beyond the accepted limits.
    #[error("{structure} too large: {index_count} index entries, {data_size} data bytes (limits {MAX_INDEX_ENTRIES} and {MAX_DATA_SIZE})")]
    HeaderTooLarge {
        /// Which header.
        structure: Structure,
        /// Declared index entry count.
        index_count: u32,
        /// Declared data store size.
        data_size: u32,
    },
    /// A header blob's length disagrees with its declared sizes.
    #[error("{structure} blob is {actual} bytes but its index declares {expected}")]
    BlobSize {
        /// Which header.
        structure: Structure,
        /// Length implied by the index count and data size.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// An index entry points outside the data store or is otherwise invalid.
    #[error("{structure}: index entry {index} (tag {tag}, type {ty}) out of bounds: {reason}")]
    IndexOutOfBounds {
        /// Which header.
        structure: Structure,
        /// Position of the entry in the index.
        index: usize,
        /// Its tag.
        tag: u32,
        /// Its type number.
        ty: u32,
        /// What is wrong.
        reason: String,
    },
    /// A digest recorded in the package does not match the data.
    #[error("{what} digest mismatch: recorded {expected}, computed {actual}")]
    DigestMismatch {
        /// What was digested.
        what: &'static str,
        /// Recorded digest (hex).
        expected: String,
        /// Computed digest (hex).
        actual: String,
    },
    /// The payload is compressed with a format nodebake cannot decode.
    #[error("unsupported RPM payload compressor `{0}`")]
    UnsupportedCompressor(String),
    /// The payload is not a cpio archive (e.g. a delta RPM).
    #[error("unsupported RPM payload format `{0}` (only `cpio` is supported; delta RPMs must be rebuilt with applydeltarpm first)")]
    UnsupportedPayloadFormat(String),
    /// The cpio payload is malformed.
    #[error("malformed cpio payload: {0}")]
    Cpio(String),
    /// The header file list is inconsistent.
    #[error("inconsistent file list in header: {0}")]
    BadFileList(String),
    /// Any other I/O error, with the structure being read.
    #[error("I/O error reading the RPM {structure}: {source}")]
    Io {
        /// Structure being read.
        structure: Structure,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

impl RpmError {
    fn io(structure: Structure, e: io::Error) -> RpmError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            RpmError::Truncated(structure)
        } else {
            RpmError::Io {
                structure,
                source: e,
            }
        }
    }
}

/// The value of one header entry, decoded by its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `RPM_NULL_TYPE` (no data).
    Null,
    /// `RPM_CHAR_TYPE`.
    Char(Vec<u8>),
    /// `RPM_INT8_TYPE`.
    Int8(Vec<u8>),
    /// `RPM_INT16_TYPE`.
    Int16(Vec<u16>),
    /// `RPM_INT32_TYPE`.
    Int32(Vec<u32>),
    /// `RPM_INT64_TYPE`.
    Int64(Vec<u64>),
    /// `RPM_STRING_TYPE` (non-UTF-8 bytes are replaced lossily).
    String(String),
    /// `RPM_BIN_TYPE`.
    Bin(Vec<u8>),
    /// `RPM_STRING_ARRAY_TYPE`.
    StringArray(Vec<String>),
    /// `RPM_I18NSTRING_TYPE`: one string per locale of [`tag::HEADERI18NTABLE`].
    I18nString(Vec<String>),
}

/// A parsed header structure: its entries by tag. When a tag occurs more
/// than once (invalid, but seen in damaged rpmdbs), the first one wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpmHeader {
    entries: BTreeMap<u32, Value>,
}

impl RpmHeader {
    /// The raw value of `tag`.
    pub fn get(&self, tag: u32) -> Option<&Value> {
        self.entries.get(&tag)
    }

    /// Whether `tag` is present.
    pub fn contains(&self, tag: u32) -> bool {
        self.entries.contains_key(&tag)
    }

    /// All tags present, ascending.
    pub fn tags(&self) -> impl Iterator<Item = u32> + '_ {
        self.entries.keys().copied()
    }

    /// A STRING tag (or the first, untranslated, I18NSTRING value).
    pub fn string(&self, tag: u32) -> Option<&str> {
        match self.entries.get(&tag)? {
            Value::String(s) => Some(s),
            Value::I18nString(v) => v.first().map(String::as_str),
            _ => None,
        }
    }

    /// A STRING_ARRAY or I18NSTRING tag (a STRING tag as a one-element slice).
    pub fn string_array(&self, tag: u32) -> Option<&[String]> {
        match self.entries.get(&tag)? {
            Value::StringArray(v) | Value::I18nString(v) => Some(v),
            Value::String(s) => Some(std::slice::from_ref(s)),
            _ => None,
        }
    }

    /// The first value of an INT32 tag.
    pub fn int32(&self, tag: u32) -> Option<u32> {
        self.int32_array(tag)?.first().copied()
    }

    /// All values of an INT32 tag.
    pub fn int32_array(&self, tag: u32) -> Option<&[u32]> {
        match self.entries.get(&tag)? {
            Value::Int32(v) => Some(v),
            _ => None,
        }
    }

    /// All values of an INT16 tag.
    pub fn int16_array(&self, tag: u32) -> Option<&[u16]> {
        match self.entries.get(&tag)? {
            Value::Int16(v) => Some(v),
            _ => None,
        }
    }

    /// All values of an INT64 tag.
    pub fn int64_array(&self, tag: u32) -> Option<&[u64]> {
        match self.entries.get(&tag)? {
            Value::Int64(v) => Some(v),
            _ => None,
        }
    }

    /// The bytes of a BIN (or CHAR / INT8) tag.
    pub fn bin(&self, tag: u32) -> Option<&[u8]> {
        match self.entries.get(&tag)? {
            Value::Bin(v) | Value::Char(v) | Value::Int8(v) => Some(v),
            _ => None,
        }
    }

    /// Package name.
    pub fn name(&self) -> Option<&str> {
        self.string(tag::NAME)
    }

    /// Package version.
    pub fn version(&self) -> Option<&str> {
        self.string(tag::VERSION)
    }

    /// Package release.
    pub fn release(&self) -> Option<&str> {
        self.string(tag::RELEASE)
    }

    /// Package architecture. Absent for `gpg-pubkey` pseudo-packages.
    pub fn arch(&self) -> Option<&str> {
        self.string(tag::ARCH)
    }

    /// Package epoch, if set.
    pub fn epoch(&self) -> Option<u32> {
        self.int32(tag::EPOCH)
    }

    /// The `PAYLOADCOMPRESSOR` tag as written (absent means gzip).
    pub fn payload_compressor(&self) -> Option<&str> {
        self.string(tag::PAYLOADCOMPRESSOR)
    }

    /// The `PAYLOADFORMAT` tag as written (absent means cpio).
    pub fn payload_format(&self) -> Option<&str> {
        self.string(tag::PAYLOADFORMAT)
    }

    /// `name-[epoch:]version-release.arch`, with `(none)` for missing parts
    /// (the way `rpm -q` prints them).
    pub fn nevra(&self) -> String {
        let none = "(none)";
        let epoch = self.epoch().map(|e| format!("{e}:")).unwrap_or_default();
        format!(
            "{}-{}{}-{}.{}",
            self.name().unwrap_or(none),
            epoch,
            self.version().unwrap_or(none),
            self.release().unwrap_or(none),
            self.arch().unwrap_or(none)
        )
    }

    /// The file list recorded in the header, in header order. This is where
    /// owners (user/group *names*), `%ghost`/`%config` flags and digests
    /// live; the cpio payload carries uid/gid 0 and omits ghost files.
    pub fn files(&self) -> Result<Vec<FileInfo>, RpmError> {
        let paths: Vec<String> = if let Some(base) = self.string_array(tag::BASENAMES) {
            let dirs = self
                .string_array(tag::DIRNAMES)
                .ok_or_else(|| RpmError::BadFileList("BASENAMES without DIRNAMES".into()))?;
            let idx = self
                .int32_array(tag::DIRINDEXES)
                .ok_or_else(|| RpmError::BadFileList("BASENAMES without DIRINDEXES".into()))?;
            if idx.len() != base.len() {
                return Err(RpmError::BadFileList(format!(
                    "{} base names but {} dir indexes",
                    base.len(),
                    idx.len()
                )));
            }
            base.iter()
                .zip(idx)
                .map(|(b, &i)| {
                    let d = dirs.get(i as usize).ok_or_else(|| {
                        RpmError::BadFileList(format!(
                            "dir index {i} out of {} dir names",
                            dirs.len()
                        ))
                    })?;
                    Ok(format!("{d}{b}"))
                })
                .collect::<Result<_, RpmError>>()?
        } else if let Some(old) = self.string_array(tag::OLDFILENAMES) {
            old.to_vec()
        } else {
            return Ok(Vec::new());
        };
        let n = paths.len();
        let sizes: Vec<u64> = match self.int64_array(tag::LONGFILESIZES) {
            Some(v) => v.to_vec(),
            None => self
                .int32_array(tag::FILESIZES)
                .unwrap_or(&[])
                .iter()
                .map(|&s| u64::from(s))
                .collect(),
        };
        let modes = self.int16_array(tag::FILEMODES).unwrap_or(&[]);
        check_len("file sizes", sizes.len(), n)?;
        check_len("file modes", modes.len(), n)?;
        let strs = |t: u32, what: &str| -> Result<Vec<String>, RpmError> {
            match self.string_array(t) {
                Some(v) => {
                    check_len(what, v.len(), n)?;
                    Ok(v.to_vec())
                }
                None => Ok(vec![String::new(); n]),
            }
        };
        let i32s = |t: u32, what: &str| -> Result<Vec<u32>, RpmError> {
            match self.int32_array(t) {
                Some(v) => {
                    check_len(what, v.len(), n)?;
                    Ok(v.to_vec())
                }
                None => Ok(vec![0; n]),
            }
        };
        let rdevs: Vec<u16> = match self.int16_array(tag::FILERDEVS) {
            Some(v) => {
                check_len("file rdevs", v.len(), n)?;
                v.to_vec()
            }
            None => vec![0; n],
        };
        let digests = strs(tag::FILEDIGESTS, "file digests")?;
        let links = strs(tag::FILELINKTOS, "symlink targets")?;
        let users = strs(tag::FILEUSERNAME, "file user names")?;
        let groups = strs(tag::FILEGROUPNAME, "file group names")?;
        let mtimes = i32s(tag::FILEMTIMES, "file mtimes")?;
        let flags = i32s(tag::FILEFLAGS, "file flags")?;
        let inodes = i32s(tag::FILEINODES, "file inodes")?;
        Ok((0..n)
            .map(|i| FileInfo {
                path: paths[i].clone(),
                size: sizes[i],
                mode: modes[i],
                rdev: rdevs[i],
                mtime: mtimes[i],
                digest: digests[i].clone(),
                link_to: links[i].clone(),
                flags: flags[i],
                user: users[i].clone(),
                group: groups[i].clone(),
                inode: inodes[i],
            })
            .collect())
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), RpmError> {
    if got == want {
        Ok(())
    } else {
        Err(RpmError::BadFileList(format!(
            "{got} {what} for {want} files"
        )))
    }
}

/// One file as listed in the package header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Absolute path (`/usr/bin/foo`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Mode including the file type bits.
    pub mode: u16,
    /// Device number for device files.
    pub rdev: u16,
    /// Modification time.
    pub mtime: u32,
    /// Content digest (hex; empty for non-regular files).
    pub digest: String,
    /// Symlink target (empty for non-symlinks).
    pub link_to: String,
    /// `RPMFILE_*` flags, see [`fileflag`].
    pub flags: u32,
    /// Owner user name.
    pub user: String,
    /// Owner group name.
    pub group: String,
    /// Hard-link set identifier (files sharing it are hard links).
    pub inode: u32,
}

impl FileInfo {
    /// `%ghost`: not in the payload.
    pub fn is_ghost(&self) -> bool {
        self.flags & fileflag::GHOST != 0
    }

    /// `%config`.
    pub fn is_config(&self) -> bool {
        self.flags & fileflag::CONFIG != 0
    }
}

fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn be64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

/// Parses a header blob as stored in the rpm database: index count, data
/// size, index entries and data store, without the `8E AD E8 01` + reserved
/// prefix. The blob length must match the declared sizes exactly.
pub fn parse_header_blob(blob: &[u8]) -> Result<RpmHeader, RpmError> {
    parse_blob(blob, Structure::Header)
}

fn parse_blob(blob: &[u8], st: Structure) -> Result<RpmHeader, RpmError> {
    if blob.len() < 8 {
        return Err(RpmError::Truncated(st));
    }
    let il = be32(blob, 0);
    let dl = be32(blob, 4);
    if il > MAX_INDEX_ENTRIES || dl > MAX_DATA_SIZE || il == 0 {
        return Err(RpmError::HeaderTooLarge {
            structure: st,
            index_count: il,
            data_size: dl,
        });
    }
    let expected = 8 + u64::from(il) * 16 + u64::from(dl);
    if blob.len() as u64 != expected {
        if (blob.len() as u64) < expected {
            return Err(RpmError::Truncated(st));
        }
        return Err(RpmError::BlobSize {
            structure: st,
            expected,
            actual: blob.len() as u64,
        });
    }
    let index = &blob[8..8 + il as usize * 16];
    let store = &blob[8 + il as usize * 16..];
    let mut entries = BTreeMap::new();
    for i in 0..il as usize {
        let e = &index[i * 16..i * 16 + 16];
        let (tag, ty, off, count) = (be32(e, 0), be32(e, 4), be32(e, 8), be32(e, 12));
        let oob = |reason: String| RpmError::IndexOutOfBounds {
            structure: st,
            index: i,
            tag,
            ty,
            reason,
        };
        let value = decode_value(store, ty, off, count).map_err(oob)?;
        entries.entry(tag).or_insert(value);
    }
    Ok(RpmHeader { entries })
}

fn decode_value(store: &[u8], ty: u32, off: u32, count: u32) -> Result<Value, String> {
    let dl = store.len();
    let off = off as usize;
    let count_us = count as usize;
    if ty > 9 {
        return Err(format!("unknown type {ty}"));
    }
    if ty == 0 {
        return Ok(Value::Null);
    }
    if count == 0 {
        return Err("zero count".into());
    }
    if off >= dl {
        return Err(format!("offset {off} outside the {dl}-byte data store"));
    }
    let width = match ty {
        3 => 2,
        4 => 4,
        5 => 8,
        1 | 2 | 7 => 1,
        _ => 0,
    };
    if width > 0 {
        if off & (width - 1) != 0 {
            return Err(format!("offset {off} misaligned for {width}-byte values"));
        }
        let len = (count as u64) * width as u64;
        if off as u64 + len > dl as u64 {
            return Err(format!(
                "{count} values of {width} bytes at offset {off} overrun the {dl}-byte data store"
            ));
        }
        let d = &store[off..off + len as usize];
        return Ok(match ty {
            1 => Value::Char(d.to_vec()),
            2 => Value::Int8(d.to_vec()),
            3 => Value::Int16((0..count_us).map(|k| be16(d, k * 2)).collect()),
            4 => Value::Int32((0..count_us).map(|k| be32(d, k * 4)).collect()),
            5 => Value::Int64((0..count_us).map(|k| be64(d, k * 8)).collect()),
            _ => Value::Bin(d.to_vec()),
        });
    }
    // String types: `count` NUL-terminated strings.
    if ty == 6 && count != 1 {
        return Err(format!("STRING with count {count}"));
    }
    if count_us > dl - off {
        return Err(format!("{count} strings cannot fit after offset {off}"));
    }
    let mut strings = Vec::with_capacity(count_us.min(4096));
    let mut pos = off;
    for k in 0..count_us {
        let rest = &store[pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("string {k} at offset {pos} is not NUL-terminated"))?;
        // File names keep their bytes (see crate::names), so the header's
        // paths match the payload's.
        let raw = &rest[..nul];
        strings.push(
            crate::names::from_bytes(raw, "header string")
                .unwrap_or_else(|_| String::from_utf8_lossy(raw).into_owned()),
        );
        pos += nul + 1;
        if k + 1 < count_us && pos >= dl {
            return Err(format!("string {} starts past the data store", k + 1));
        }
    }
    Ok(match ty {
        6 => Value::String(strings.pop().unwrap_or_default()),
        8 => Value::StringArray(strings),
        _ => Value::I18nString(strings),
    })
}

/// Reads one full header structure (with the 8-byte magic prefix) and
/// returns its raw bytes, magic included.
fn read_header_raw<R: Read + ?Sized>(r: &mut R, st: Structure) -> Result<Vec<u8>, RpmError> {
    let mut pre = [0u8; 16];
    r.read_exact(&mut pre).map_err(|e| RpmError::io(st, e))?;
    if pre[..4] != HEADER_MAGIC {
        return Err(RpmError::BadHeaderMagic {
            structure: st,
            found: [pre[0], pre[1], pre[2], pre[3]],
        });
    }
    let il = be32(&pre, 8);
    let dl = be32(&pre, 12);
    if il > MAX_INDEX_ENTRIES || dl > MAX_DATA_SIZE || il == 0 {
        return Err(RpmError::HeaderTooLarge {
            structure: st,
            index_count: il,
            data_size: dl,
        });
    }
    let rest = u64::from(il) * 16 + u64::from(dl);
    let mut buf = pre.to_vec();
    // Grow as data arrives rather than trusting the declared size.
    r.take(rest)
        .read_to_end(&mut buf)
        .map_err(|e| RpmError::io(st, e))?;
    if (buf.len() as u64) < 16 + rest {
        return Err(RpmError::Truncated(st));
    }
    Ok(buf)
}

/// Reads one header structure (`8E AD E8 01`, 4 reserved bytes, index count,
/// data size, index, data store) from `r`.
pub fn parse_header<R: Read>(r: &mut R) -> Result<RpmHeader, RpmError> {
    let raw = read_header_raw(r, Structure::Header)?;
    parse_blob(&raw[8..], Structure::Header)
}

/// Opens an RPM package: checks the lead, reads the signature header and
/// the main header (verifying the header SHA-256 from the signature when
/// present), and returns the header with a reader over the *decompressed*
/// payload, i.e. the cpio `newc` stream.
///
/// The decoder follows the payload's magic bytes; the `PAYLOADCOMPRESSOR`
/// tag (absent = gzip) only names the compressor in errors. bzip2 and lzma
/// payloads are refused by name. The payload format must be `cpio`.
/// When the header records a payload digest (SHA-256 or SHA-512), reading
/// the returned stream to its end verifies it and fails with an
/// `InvalidData` I/O error on mismatch.
pub fn open_rpm<'a, R: Read + 'a>(mut r: R) -> Result<(RpmHeader, Box<dyn Read + 'a>), RpmError> {
    let mut lead = [0u8; LEAD_SIZE];
    let mut got = 0;
    while got < LEAD_SIZE {
        match r.read(&mut lead[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RpmError::io(Structure::Lead, e)),
        }
    }
    if got >= 4 && lead[..4] != LEAD_MAGIC {
        return Err(RpmError::BadLeadMagic {
            found: [lead[0], lead[1], lead[2], lead[3]],
        });
    }
    if got < LEAD_SIZE {
        return Err(RpmError::Truncated(Structure::Lead));
    }
    let major = lead[4];
    let sig_type = u16::from_be_bytes([lead[78], lead[79]]);
    if !(3..=4).contains(&major) || sig_type != SIGTYPE_HEADERSIG {
        return Err(RpmError::UnsupportedLead {
            major,
            signature_type: sig_type,
        });
    }

    let sig_raw = read_header_raw(&mut r, Structure::Signature)?;
    let sig = parse_blob(&sig_raw[8..], Structure::Signature)?;
    let pad = (8 - sig_raw.len() % 8) % 8;
    let mut padding = [0u8; 8];
    r.read_exact(&mut padding[..pad])
        .map_err(|e| RpmError::io(Structure::Signature, e))?;

    let hdr_raw = read_header_raw(&mut r, Structure::Header)?;
    if let Some(expected) = sig.string(sigtag::SHA256) {
        let actual = hex::encode(Sha256::digest(&hdr_raw));
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(RpmError::DigestMismatch {
                what: "header SHA-256",
                expected: expected.to_string(),
                actual,
            });
        }
    }
    let header = parse_blob(&hdr_raw[8..], Structure::Header)?;

    let format = header.payload_format().unwrap_or("cpio");
    if format != "cpio" {
        return Err(RpmError::UnsupportedPayloadFormat(format.to_string()));
    }

    let digest = match (
        header
            .string_array(tag::PAYLOADDIGEST)
            .and_then(|v| v.first()),
        header.int32(tag::PAYLOADDIGESTALGO).unwrap_or(8),
    ) {
        (Some(d), 8) => Some((DigestState::Sha256(Sha256::new()), d.to_ascii_lowercase())),
        (Some(d), 10) => Some((DigestState::Sha512(Sha512::new()), d.to_ascii_lowercase())),
        _ => None,
    };
    let raw: Box<dyn Read + 'a> = match digest {
        Some((state, expected)) => Box::new(DigestReader {
            inner: r,
            state: Some(state),
            expected,
        }),
        None => Box::new(r),
    };

    let named = header.payload_compressor().unwrap_or("gzip").to_string();
    // Sniff the magic, then put the sniffed bytes back in front.
    let mut raw = raw;
    let mut head = Vec::with_capacity(8);
    (&mut raw)
        .take(8)
        .read_to_end(&mut head)
        .map_err(|e| RpmError::io(Structure::Payload, e))?;
    if head.is_empty() {
        return Err(RpmError::Truncated(Structure::Payload));
    }
    let br = BufReader::with_capacity(256 * 1024, io::Cursor::new(head.clone()).chain(raw));
    let comp = match Compression::sniff(&head) {
        Compression::None if head.starts_with(b"07070") => Compression::None,
        Compression::None => {
            return Err(match named.as_str() {
                "gzip" | "xz" | "zstd" | "none" | "identity" => RpmError::Cpio(format!(
                    "payload declared as `{named}` has neither {named} nor cpio magic (corrupt package?)"
                )),
                other => RpmError::UnsupportedCompressor(other.to_string()),
            })
        }
        c @ (Compression::Bzip2 | Compression::Lzma) => {
            return Err(RpmError::UnsupportedCompressor(c.name().to_string()))
        }
        c => c,
    };
    let dec = decoder(comp, br).map_err(|e| RpmError::io(Structure::Payload, e))?;
    Ok((header, dec))
}

enum DigestState {
    Sha256(Sha256),
    Sha512(Sha512),
}

/// Hashes what passes through and checks the digest when `inner` hits EOF.
struct DigestReader<R> {
    inner: R,
    state: Option<DigestState>,
    expected: String,
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            match &mut self.state {
                Some(DigestState::Sha256(h)) => h.update(&buf[..n]),
                Some(DigestState::Sha512(h)) => h.update(&buf[..n]),
                None => {}
            }
        } else if !buf.is_empty() {
            let actual = match self.state.take() {
                Some(DigestState::Sha256(h)) => hex::encode(h.finalize()),
                Some(DigestState::Sha512(h)) => hex::encode(h.finalize()),
                None => return Ok(0),
            };
            if actual != self.expected {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    RpmError::DigestMismatch {
                        what: "payload",
                        expected: self.expected.clone(),
                        actual,
                    },
                ));
            }
        }
        Ok(n)
    }
}

/// Metadata of one cpio (`newc`) entry of an RPM payload.
///
/// RPM writes uid/gid 0 here: take ownership from [`RpmHeader::files`]
/// (user and group *names*). For symlinks the entry data is the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpioEntry {
    /// Path relative to the root, with the leading `./` (or `/`) removed.
    pub name: String,
    /// Inode number; entries sharing `(dev_major, dev_minor, ino)` with
    /// `nlink > 1` are one hard-link set (see [`HardlinkTracker`]).
    pub ino: u32,
    /// Mode including the file type bits (`S_IFMT`).
    pub mode: u32,
    /// Owner uid (0 in RPM payloads).
    pub uid: u32,
    /// Owner gid (0 in RPM payloads).
    pub gid: u32,
    /// Number of links of this inode within the archive.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Size of the data that follows (0 for all but the last entry of a
    /// hard-link set).
    pub file_size: u64,
    /// Device major of the file's filesystem.
    pub dev_major: u32,
    /// Device minor of the file's filesystem.
    pub dev_minor: u32,
    /// Device major for device nodes.
    pub rdev_major: u32,
    /// Device minor for device nodes.
    pub rdev_minor: u32,
}

const S_IFMT: u32 = 0o170000;

impl CpioEntry {
    /// The `S_IFMT` file type bits.
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }
    /// Regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == 0o100000
    }
    /// Directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == 0o040000
    }
    /// Symbolic link (data = target).
    pub fn is_symlink(&self) -> bool {
        self.file_type() == 0o120000
    }
    /// Permission bits including setuid/setgid/sticky.
    pub fn permissions(&self) -> u32 {
        self.mode & 0o7777
    }
}

fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<usize, RpmError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(payload_err(e)),
        }
    }
    Ok(got)
}

fn payload_err(e: io::Error) -> RpmError {
    // Surface a payload digest mismatch as itself.
    if let Some(RpmError::DigestMismatch {
        what,
        expected,
        actual,
    }) = e.get_ref().and_then(|i| i.downcast_ref::<RpmError>())
    {
        return RpmError::DigestMismatch {
            what,
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    RpmError::io(Structure::Payload, e)
}

fn skip_exact<R: Read + ?Sized>(r: &mut R, n: u64) -> Result<(), RpmError> {
    let copied = io::copy(&mut r.take(n), &mut io::sink()).map_err(payload_err)?;
    if copied < n {
        return Err(RpmError::Truncated(Structure::Payload));
    }
    Ok(())
}

fn hex_field(h: &[u8], i: usize) -> Result<u32, RpmError> {
    let f = &h[6 + i * 8..6 + i * 8 + 8];
    let s = std::str::from_utf8(f)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| {
            RpmError::Cpio(format!(
                "non-hex header field {:?}",
                String::from_utf8_lossy(f)
            ))
        })?;
    u32::from_str_radix(s, 16).map_err(|e| RpmError::Cpio(e.to_string()))
}

/// Iterates the cpio `newc` stream `payload` (as returned by [`open_rpm`]),
/// calling `f` with each entry and a reader limited to its data. Data the
/// callback leaves unread is skipped. Stops at the `TRAILER!!!` entry (which
/// is not passed to `f`), then drains the stream so compressor checksums
/// and the payload digest get verified. A stream ending before the trailer
/// is [`RpmError::Truncated`]`(Payload)`. RPM's "stripped" cpio variant
/// (`07070X`, used for files of 4 GiB or more) is refused.
pub fn for_each_cpio_entry<R, F, E>(mut payload: R, mut f: F) -> Result<(), E>
where
    R: Read,
    F: FnMut(&CpioEntry, &mut dyn Read) -> Result<(), E>,
    E: From<RpmError>,
{
    loop {
        let mut h = [0u8; CPIO_HEADER_LEN];
        let got = read_full(&mut payload, &mut h)?;
        if got < CPIO_HEADER_LEN {
            return Err(RpmError::Truncated(Structure::Payload).into());
        }
        match &h[..6] {
            b"070701" | b"070702" => {}
            b"07070X" => {
                return Err(RpmError::Cpio(
                    "RPM stripped cpio (07070X, files of 4 GiB or more) is not supported".into(),
                )
                .into())
            }
            m => {
                return Err(RpmError::Cpio(format!(
                    "bad entry magic {:?} (expected newc 070701)",
                    String::from_utf8_lossy(m)
                ))
                .into())
            }
        }
        let fld = |i| hex_field(&h, i);
        let namesize = fld(11)?;
        if namesize == 0 || namesize > CPIO_MAX_NAME {
            return Err(RpmError::Cpio(format!("bad name size {namesize}")).into());
        }
        let mut name = vec![0u8; namesize as usize];
        if read_full(&mut payload, &mut name)? < name.len() {
            return Err(RpmError::Truncated(Structure::Payload).into());
        }
        if name.pop() != Some(0) {
            return Err(RpmError::Cpio("entry name not NUL-terminated".into()).into());
        }
        while name.last() == Some(&0) {
            name.pop();
        }
        let name = crate::names::from_bytes(&name, "entry name")
            .map_err(|e| RpmError::Cpio(format!("{e:#}")))?;
        skip_exact(
            &mut payload,
            pad4(CPIO_HEADER_LEN as u64 + u64::from(namesize)),
        )?;
        let file_size = u64::from(fld(6)?);
        if name == CPIO_TRAILER {
            io::copy(&mut payload, &mut io::sink()).map_err(payload_err)?;
            return Ok(());
        }
        let mut rel = name.as_str();
        while let Some(s) = rel.strip_prefix("./").or_else(|| rel.strip_prefix('/')) {
            rel = s;
        }
        let entry = CpioEntry {
            name: rel.to_string(),
            ino: fld(0)?,
            mode: fld(1)?,
            uid: fld(2)?,
            gid: fld(3)?,
            nlink: fld(4)?,
            mtime: fld(5)?,
            file_size,
            dev_major: fld(7)?,
            dev_minor: fld(8)?,
            rdev_major: fld(9)?,
            rdev_minor: fld(10)?,
        };
        let mut data = (&mut payload).take(file_size);
        f(&entry, &mut data)?;
        let left = data.limit();
        skip_exact(&mut payload, left)?;
        skip_exact(&mut payload, pad4(file_size))?;
    }
}

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

/// What to do with an entry with respect to hard links; see
/// [`HardlinkTracker::observe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hardlink {
    /// Not part of a hard-link set: handle normally.
    None,
    /// A member of a hard-link set whose data comes with a later entry:
    /// create nothing yet (the name is returned with the data carrier).
    Deferred,
    /// The member carrying the data: write it, then create each of `links`
    /// as a hard link to it.
    Target {
        /// Earlier (deferred) names of the set.
        links: Vec<String>,
    },
    /// A member after the data carrier: hard link this name to the target.
    LinkTo(String),
}

#[derive(Debug, Default)]
struct LinkSet {
    pending: Vec<String>,
    seen: u32,
    target: Option<String>,
}

/// Resolves RPM's hard-link convention in cpio: all names of a set share
/// `ino` and `nlink`, the earlier ones have size 0 and only the last one
/// carries the data. A set is complete at the entry with data or when
/// `nlink` members have been seen (sets of empty files).
#[derive(Debug, Default)]
pub struct HardlinkTracker {
    sets: HashMap<(u32, u32, u32), LinkSet>,
}

impl HardlinkTracker {
    /// Classifies `e` (call once per entry, in archive order).
    pub fn observe(&mut self, e: &CpioEntry) -> Hardlink {
        if !e.is_file() || e.nlink <= 1 {
            return Hardlink::None;
        }
        let set = self
            .sets
            .entry((e.dev_major, e.dev_minor, e.ino))
            .or_default();
        set.seen += 1;
        if let Some(t) = &set.target {
            return Hardlink::LinkTo(t.clone());
        }
        if e.file_size > 0 || set.seen >= e.nlink {
            set.target = Some(e.name.clone());
            return Hardlink::Target {
                links: std::mem::take(&mut set.pending),
            };
        }
        set.pending.push(e.name.clone());
        Hardlink::Deferred
    }

    /// Names of sets that never got their data carrier (a malformed
    /// archive): one sorted list per set, sets sorted.
    pub fn finish(self) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = self
            .sets
            .into_values()
            .filter(|s| s.target.is_none() && !s.pending.is_empty())
            .map(|mut s| {
                s.pending.sort();
                s.pending
            })
            .collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A test value to encode into a header blob.
    enum T<'a> {
        S(&'a str),
        Sa(&'a [&'a str]),
        I32(&'a [u32]),
        I16(&'a [u16]),
        Bin(&'a [u8]),
    }

    /// Encodes entries into a header blob (without the magic prefix).
    fn blob(entries: &[(u32, T)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut store: Vec<u8> = Vec::new();
        for (tag, v) in entries {
            let (ty, align, count, bytes): (u32, usize, usize, Vec<u8>) = match v {
                T::S(s) => (6, 1, 1, [s.as_bytes(), &[0]].concat()),
                T::Sa(a) => (
                    8,
                    1,
                    a.len(),
                    a.iter()
                        .flat_map(|s| [s.as_bytes(), &[0]].concat())
                        .collect(),
                ),
                T::I32(a) => (
                    4,
                    4,
                    a.len(),
                    a.iter().flat_map(|x| x.to_be_bytes()).collect(),
                ),
                T::I16(a) => (
                    3,
                    2,
                    a.len(),
                    a.iter().flat_map(|x| x.to_be_bytes()).collect(),
                ),
                T::Bin(b) => (7, 1, b.len(), b.to_vec()),
            };
            while store.len() & (align - 1) != 0 {
                store.push(0);
            }
            index.extend_from_slice(&tag.to_be_bytes());
            index.extend_from_slice(&ty.to_be_bytes());
            index.extend_from_slice(&(store.len() as u32).to_be_bytes());
            index.extend_from_slice(&(count as u32).to_be_bytes());
            store.extend_from_slice(&bytes);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&((entries.len()) as u32).to_be_bytes());
        out.extend_from_slice(&(store.len() as u32).to_be_bytes());
        out.extend_from_slice(&index);
        out.extend_from_slice(&store);
        out
    }

    fn with_magic(b: &[u8]) -> Vec<u8> {
        [&HEADER_MAGIC[..], &[0, 0, 0, 0], b].concat()
    }

    fn basic() -> Vec<u8> {
        blob(&[
            (tag::NAME, T::S("bash")),
            (tag::VERSION, T::S("5.1.8")),
            (tag::RELEASE, T::S("6.el9")),
            (tag::EPOCH, T::I32(&[2])),
            (tag::ARCH, T::S("aarch64")),
            (tag::FILEMODES, T::I16(&[0o100644, 0o40755])),
            (tag::BASENAMES, T::Sa(&["bash", "doc"])),
            (tag::DIRNAMES, T::Sa(&["/usr/bin/", "/usr/share/"])),
            (tag::DIRINDEXES, T::I32(&[0, 1])),
            (tag::FILESIZES, T::I32(&[1000, 0])),
            (tag::FILEUSERNAME, T::Sa(&["root", "root"])),
            (tag::FILEGROUPNAME, T::Sa(&["root", "wheel"])),
            (tag::FILEFLAGS, T::I32(&[0, fileflag::GHOST])),
            (tag::HEADERIMMUTABLE, T::Bin(&[0u8; 16])),
        ])
    }

    #[test]
    fn parses_blob_and_accessors() {
        let h = parse_header_blob(&basic()).unwrap();
        assert_eq!(h.name(), Some("bash"));
        assert_eq!(h.version(), Some("5.1.8"));
        assert_eq!(h.release(), Some("6.el9"));
        assert_eq!(h.arch(), Some("aarch64"));
        assert_eq!(h.epoch(), Some(2));
        assert_eq!(h.nevra(), "bash-2:5.1.8-6.el9.aarch64");
        assert_eq!(h.string_array(tag::DIRNAMES).unwrap().len(), 2);
        assert_eq!(h.int32(tag::DIRINDEXES), Some(0));
        assert_eq!(h.string(tag::EPOCH), None, "type mismatch gives None");
        assert_eq!(h.bin(tag::HEADERIMMUTABLE).unwrap().len(), 16);
        assert_eq!(h.payload_compressor(), None);
        let files = h.files().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].path, "/usr/bin/bash");
        assert_eq!(files[0].size, 1000);
        assert_eq!(files[1].path, "/usr/share/doc");
        assert_eq!(files[1].group, "wheel");
        assert!(files[1].is_ghost() && !files[0].is_ghost());
        // The same through the framed form.
        let framed = with_magic(&basic());
        assert_eq!(parse_header(&mut &framed[..]).unwrap(), h);
    }

    #[test]
    fn every_truncation_of_a_blob_is_an_error() {
        let b = basic();
        for n in 0..b.len() {
            assert!(parse_header_blob(&b[..n]).is_err(), "prefix {n} parsed");
            let framed = with_magic(&b[..n]);
            assert!(matches!(
                parse_header(&mut &framed[..]),
                Err(RpmError::Truncated(Structure::Header))
            ));
        }
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            parse_header_blob(&long),
            Err(RpmError::BlobSize { .. })
        ));
    }

    /// Rewrites field `field` (0 tag, 1 type, 2 offset, 3 count) of index
    /// entry `i`.
    fn patch(b: &[u8], i: usize, field: usize, v: u32) -> Vec<u8> {
        let mut b = b.to_vec();
        let at = 8 + i * 16 + field * 4;
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
        b
    }

    #[test]
    fn corrupt_index_entries_are_rejected() {
        let b = basic();
        let dl = be32(&b, 4);
        let oob = |b: Vec<u8>| match parse_header_blob(&b) {
            Err(RpmError::IndexOutOfBounds { reason, .. }) => reason,
            other => panic!("expected IndexOutOfBounds, got {other:?}"),
        };
        // Offset past the store.
        assert!(oob(patch(&b, 0, 2, dl)).contains("outside"));
        assert!(oob(patch(&b, 0, 2, u32::MAX)).contains("outside"));
        // Unknown type.
        assert!(oob(patch(&b, 0, 1, 42)).contains("unknown type"));
        // INT32 array overrunning the store.
        assert!(oob(patch(&b, 3, 3, 0x4000_0000)).contains("overrun"));
        // Misaligned INT32.
        let off = be32(&b, 8 + 3 * 16 + 8);
        assert!(oob(patch(&b, 3, 2, off + 1)).contains("misaligned"));
        // STRING with count 2, string array with too many strings.
        assert!(oob(patch(&b, 0, 3, 2)).contains("count"));
        assert!(!oob(patch(&b, 6, 3, u32::MAX)).is_empty());
        // Zero count.
        assert!(oob(patch(&b, 6, 3, 0)).contains("zero"));
        // Unterminated string: point NAME at the last byte of the store,
        // then make that byte non-NUL.
        let mut nb = patch(&b, 0, 2, dl - 1);
        let last = nb.len() - 1;
        nb[last] = b'x';
        // The last entry is BIN, so its data may be anything.
        assert!(oob(nb).contains("NUL"));
        // Absurd sizes are refused before allocating.
        let mut huge = b.clone();
        huge[0..4].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        assert!(matches!(
            parse_header_blob(&huge),
            Err(RpmError::HeaderTooLarge { .. })
        ));
        let mut bad = with_magic(&b);
        bad[0] = 0x8f;
        assert!(matches!(
            parse_header(&mut &bad[..]),
            Err(RpmError::BadHeaderMagic {
                found: [0x8f, 0xad, 0xe8, 0x01],
                ..
            })
        ));
    }

    #[test]
    fn random_corruption_never_panics() {
        let b = basic();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut c = b.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % c.len();
                c[at] = (seed >> 32) as u8;
            }
            if let Ok(h) = parse_header_blob(&c) {
                let _ = h.files();
                let _ = h.nevra();
            }
        }
    }

    fn cpio_entry(w: &mut Vec<u8>, name: &str, ino: u32, mode: u32, nlink: u32, data: &[u8]) {
        let mut wr = cpio::NewcBuilder::new(name)
            .ino(ino)
            .mode(mode)
            .nlink(nlink)
            .mtime(1_700_000_000)
            .write(std::mem::take(w), data.len() as u32);
        wr.write_all(data).unwrap();
        *w = wr.finish().unwrap();
    }

    /// A cpio payload in RPM style: directory, file, symlink, and a
    /// hard-link pair where only the last member carries the data.
    fn sample_cpio() -> Vec<u8> {
        let mut w = Vec::new();
        cpio_entry(&mut w, "./opt/d", 1, 0o040755, 1, b"");
        cpio_entry(&mut w, "./opt/d/f", 2, 0o100600, 1, b"hello\n");
        cpio_entry(&mut w, "./opt/d/l", 3, 0o120777, 1, b"f");
        cpio_entry(&mut w, "./opt/d/h1", 4, 0o100644, 3, b"");
        cpio_entry(&mut w, "./opt/d/h2", 4, 0o100644, 3, b"");
        cpio_entry(&mut w, "./opt/d/h3", 4, 0o100644, 3, b"shared");
        cpio_entry(&mut w, "./opt/d/e1", 5, 0o100644, 2, b"");
        cpio_entry(&mut w, "./opt/d/e2", 5, 0o100644, 2, b"");
        cpio::newc::trailer(w).unwrap()
    }

    type Seen = Vec<(String, u32, u32, Vec<u8>, Hardlink)>;

    fn collect(payload: impl Read) -> Result<Seen, RpmError> {
        let mut out = Vec::new();
        let mut t = HardlinkTracker::default();
        for_each_cpio_entry(payload, |e, r| {
            let mut d = Vec::new();
            r.read_to_end(&mut d)
                .map_err(|e| RpmError::io(Structure::Payload, e))?;
            out.push((e.name.clone(), e.mode, e.nlink, d, t.observe(e)));
            Ok::<(), RpmError>(())
        })?;
        assert!(t.finish().is_empty());
        Ok(out)
    }

    #[test]
    fn cpio_entries_and_hardlink_sets() {
        let seen = collect(&sample_cpio()[..]).unwrap();
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "opt/d", "opt/d/f", "opt/d/l", "opt/d/h1", "opt/d/h2", "opt/d/h3", "opt/d/e1",
                "opt/d/e2"
            ]
        );
        assert_eq!(seen[1].1, 0o100600);
        assert_eq!(seen[1].3, b"hello\n");
        assert_eq!(seen[2].3, b"f", "symlink target is the data");
        assert_eq!(seen[0].4, Hardlink::None);
        assert_eq!(seen[3].4, Hardlink::Deferred);
        assert_eq!(seen[4].4, Hardlink::Deferred);
        assert_eq!(
            seen[5].4,
            Hardlink::Target {
                links: vec!["opt/d/h1".into(), "opt/d/h2".into()]
            }
        );
        assert_eq!(seen[5].3, b"shared");
        assert_eq!(seen[5].2, 3);
        // A set of empty files completes when nlink members were seen.
        assert_eq!(seen[6].4, Hardlink::Deferred);
        assert_eq!(
            seen[7].4,
            Hardlink::Target {
                links: vec!["opt/d/e1".into()]
            }
        );
    }

    #[test]
    fn hardlink_tracker_reports_incomplete_sets_and_late_links() {
        let e = |name: &str, size: u64| CpioEntry {
            name: name.into(),
            ino: 9,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            nlink: 3,
            mtime: 0,
            file_size: size,
            dev_major: 0,
            dev_minor: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        let mut t = HardlinkTracker::default();
        assert_eq!(t.observe(&e("b", 0)), Hardlink::Deferred);
        assert_eq!(t.observe(&e("a", 0)), Hardlink::Deferred);
        assert_eq!(t.finish(), vec![vec!["a".to_string(), "b".to_string()]]);
        // Data on the first member (other archivers): later ones link to it.
        let mut t = HardlinkTracker::default();
        assert_eq!(t.observe(&e("a", 4)), Hardlink::Target { links: vec![] });
        assert_eq!(t.observe(&e("b", 0)), Hardlink::LinkTo("a".into()));
        assert!(t.finish().is_empty());
    }

    #[test]
    fn truncated_cpio_is_an_error_at_every_cut() {
        let c = sample_cpio();
        // The trailer entry starts 124 bytes before the end (110 + 11 + pad).
        for n in 0..c.len() - 1 {
            let r = collect(&c[..n]);
            assert!(
                matches!(r, Err(RpmError::Truncated(Structure::Payload))),
                "cut at {n}: {r:?}"
            );
        }
        let mut bad = c.clone();
        bad[5] = b'X';
        assert!(matches!(collect(&bad[..]), Err(RpmError::Cpio(m)) if m.contains("07070X")));
        bad[5] = b'9';
        assert!(matches!(collect(&bad[..]), Err(RpmError::Cpio(m)) if m.contains("magic")));
    }

    /// Builds a complete RPM in memory.
    fn make_rpm(main: &[(u32, T)], payload: &[u8], with_sha: bool) -> Vec<u8> {
        let hdr = with_magic(&blob(main));
        let sha = hex::encode(Sha256::digest(&hdr));
        let sig_entries: Vec<(u32, T)> = if with_sha {
            vec![(sigtag::SHA256, T::S(&sha)), (sigtag::SIZE, T::I32(&[7]))]
        } else {
            vec![(sigtag::SIZE, T::I32(&[7]))]
        };
        let sig = with_magic(&blob(&sig_entries));
        let mut lead = vec![0u8; 96];
        lead[..4].copy_from_slice(&LEAD_MAGIC);
        lead[4] = 3;
        lead[78..80].copy_from_slice(&5u16.to_be_bytes());
        let mut out = lead;
        out.extend_from_slice(&sig);
        while out.len() & 7 != 0 {
            out.push(0);
        }
        out.extend_from_slice(&hdr);
        out.extend_from_slice(payload);
        out
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn read_rpm(bytes: &[u8]) -> Result<(RpmHeader, Seen), RpmError> {
        let (h, p) = open_rpm(bytes)?;
        Ok((h, collect(p)?))
    }

    #[test]
    fn synthetic_rpm_with_digests_and_all_cuts() {
        let payload = gz(&sample_cpio());
        let digest = hex::encode(Sha256::digest(&payload));
        let main = [
            (tag::NAME, T::S("t")),
            (tag::VERSION, T::S("1")),
            (tag::RELEASE, T::S("1")),
            (tag::PAYLOADFORMAT, T::S("cpio")),
            (tag::PAYLOADCOMPRESSOR, T::S("xz")), // the magic says gzip: trusted
            (tag::PAYLOADDIGEST, T::Sa(&[&digest])),
            (tag::PAYLOADDIGESTALGO, T::I32(&[8])),
        ];
        let rpm = make_rpm(&main, &payload, true);
        let (h, seen) = read_rpm(&rpm).unwrap();
        assert_eq!(h.nevra(), "t-1-1.(none)");
        assert_eq!(seen.len(), 8);
        // Every cut fails, at the structure that was cut.
        let hdr_start = {
            let sig_len = 16 + 2 * 16 + be32(&rpm, 96 + 12) as usize;
            96 + sig_len.div_ceil(8) * 8
        };
        let payload_start = rpm.len() - payload.len();
        for n in 0..rpm.len() {
            let err = read_rpm(&rpm[..n])
                .err()
                .unwrap_or_else(|| panic!("cut {n} read"));
            let want = if n < 96 {
                Some(Structure::Lead)
            } else if n < hdr_start {
                Some(Structure::Signature)
            } else if n < payload_start {
                Some(Structure::Header)
            } else {
                None
            };
            match (want, &err) {
                (Some(s), RpmError::Truncated(got)) => assert_eq!(*got, s, "cut {n}"),
                (None, RpmError::Truncated(Structure::Payload))
                | (
                    None,
                    RpmError::Io {
                        structure: Structure::Payload,
                        ..
                    },
                )
                | (None, RpmError::DigestMismatch { .. }) => {}
                _ => panic!("cut {n}: unexpected {err:?}"),
            }
        }
        // A flipped payload byte: the gzip CRC or the payload digest fails.
        let mut bad = rpm.clone();
        let last = bad.len() - 10;
        bad[last] ^= 0x55;
        assert!(read_rpm(&bad).is_err());
        // Same payload, wrong recorded digest: caught when drained.
        let main_bad = [
            (tag::NAME, T::S("t")),
            (tag::PAYLOADDIGEST, T::Sa(&["00"])),
            (tag::PAYLOADDIGESTALGO, T::I32(&[8])),
        ];
        let err = read_rpm(&make_rpm(&main_bad, &payload, true)).unwrap_err();
        assert!(
            matches!(
                err,
                RpmError::DigestMismatch {
                    what: "payload",
                    ..
                }
            ),
            "{err:?}"
        );
        // A header byte changed after signing: header digest fails.
        let mut tampered = rpm.clone();
        let name_at = payload_start - 1 - digest.len() - 1 - 4 - 3 - 2; // somewhere in the store
        tampered[name_at] ^= 1;
        assert!(matches!(
            read_rpm(&tampered),
            Err(RpmError::DigestMismatch {
                what: "header SHA-256",
                ..
            })
        ));
    }

    #[test]
    fn lead_and_format_errors_are_specific() {
        let payload = gz(&sample_cpio());
        let ok = make_rpm(&[(tag::NAME, T::S("t"))], &payload, false);
        assert!(
            read_rpm(&ok).is_ok(),
            "absent compressor/format = gzip/cpio"
        );

        let mut bad = ok.clone();
        bad[0] = 0;
        let e = read_rpm(&bad).unwrap_err();
        assert!(matches!(
            e,
            RpmError::BadLeadMagic {
                found: [0, 0xab, 0xee, 0xdb]
            }
        ));
        assert!(e.to_string().contains("lead magic"));
        let e = read_rpm(b"PK\x03\x04").unwrap_err();
        assert!(matches!(e, RpmError::BadLeadMagic { .. }));

        let mut v2 = ok.clone();
        v2[78..80].copy_from_slice(&1u16.to_be_bytes());
        assert!(matches!(
            read_rpm(&v2),
            Err(RpmError::UnsupportedLead { .. })
        ));

        let mut badsig = ok.clone();
        badsig[96] = 0;
        assert!(matches!(
            read_rpm(&badsig),
            Err(RpmError::BadHeaderMagic {
                structure: Structure::Signature,
                ..
            })
        ));

        let drpm = make_rpm(&[(tag::PAYLOADFORMAT, T::S("drpm"))], &payload, false);
        let e = read_rpm(&drpm).unwrap_err();
        assert!(matches!(&e, RpmError::UnsupportedPayloadFormat(f) if f == "drpm"));
        assert!(e.to_string().contains("drpm"));

        let bz = make_rpm(
            &[(tag::PAYLOADCOMPRESSOR, T::S("bzip2"))],
            b"BZh91AY&SY\x00\x00",
            false,
        );
        let e = read_rpm(&bz).unwrap_err();
        assert!(matches!(&e, RpmError::UnsupportedCompressor(c) if c == "bzip2"));
        assert!(e.to_string().contains("bzip2"));

        let lzma = make_rpm(
            &[(tag::PAYLOADCOMPRESSOR, T::S("lzma"))],
            &[0x5d, 0, 0, 0x80, 0, 1, 2, 3],
            false,
        );
        assert!(matches!(read_rpm(&lzma), Err(RpmError::UnsupportedCompressor(c)) if c == "lzma"));

        let lzip = make_rpm(
            &[(tag::PAYLOADCOMPRESSOR, T::S("lzip"))],
            b"LZIP\x01\x0c",
            false,
        );
        let e = read_rpm(&lzip).unwrap_err();
        assert!(matches!(&e, RpmError::UnsupportedCompressor(c) if c == "lzip"));
        assert!(e.to_string().contains("lzip"));

        let garbage = make_rpm(&[(tag::NAME, T::S("t"))], b"garbage!", false);
        assert!(matches!(read_rpm(&garbage), Err(RpmError::Cpio(m)) if m.contains("gzip")));

        // Uncompressed cpio payloads are accepted by their magic.
        let plain = make_rpm(&[(tag::NAME, T::S("t"))], &sample_cpio(), false);
        assert_eq!(read_rpm(&plain).unwrap().1.len(), 8);

        let empty = make_rpm(&[(tag::NAME, T::S("t"))], b"", false);
        assert!(matches!(
            read_rpm(&empty),
            Err(RpmError::Truncated(Structure::Payload))
        ));
    }
}
