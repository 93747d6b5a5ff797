//! Just enough ISO 9660 to read a NoCloud seed: the volume label and files
//! in the root directory, by Joliet, Rock Ridge or plain names.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, Result};

const SECTOR: u64 = 2048;
/// Largest file or directory this reader loads.
const MAX_READ: u32 = 16 << 20;

fn read_at(f: &mut File, off: u64, len: usize) -> Result<Option<Vec<u8>>> {
    let size = f.metadata()?.len();
    if size != 0 && off + len as u64 > size {
        return Ok(None);
    }
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(off))?;
    match f.read_exact(&mut buf) {
        Ok(()) => Ok(Some(buf)),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Volume descriptors (type, 2048 bytes), up to the terminator.
fn descriptors(f: &mut File) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for i in 16..64 {
        let Some(d) = read_at(f, i * SECTOR, SECTOR as usize)? else {
            break;
        };
        if &d[1..6] != b"CD001" {
            break;
        }
        if d[0] == 255 {
            break;
        }
        out.push(d);
    }
    Ok(out)
}

/// The volume label, when `f` is ISO 9660.
pub fn label(f: &mut File) -> Result<Option<String>> {
    let ds = descriptors(f)?;
    Ok(ds
        .iter()
        .find(|d| d[0] == 1)
        .map(|d| String::from_utf8_lossy(&d[40..72]).trim().to_string()))
}

fn is_joliet(d: &[u8]) -> bool {
    d[0] == 2 && d[88] == b'%' && d[89] == b'/' && matches!(d[90], b'@' | b'C' | b'E')
}

/// Rock Ridge `NM` name in a record's system-use area.
fn rock_ridge_name(su: &[u8]) -> Option<String> {
    let mut i = 0;
    let mut name = String::new();
    while i + 4 <= su.len() {
        let len = su[i + 2] as usize;
        if len < 4 || i + len > su.len() {
            break;
        }
        if &su[i..i + 2] == b"NM" && len >= 5 {
            name.push_str(&String::from_utf8_lossy(&su[i + 5..i + len]));
        }
        i += len;
    }
    (!name.is_empty()).then_some(name)
}

/// Root-directory entries: (name, extent, size).
fn root_entries(f: &mut File, d: &[u8], joliet: bool) -> Result<Vec<(String, u32, u32)>> {
    let root = &d[156..190];
    let (extent, size) = (le32(&root[2..6]), le32(&root[10..14]));
    if size > MAX_READ {
        bail!("ISO 9660 root directory too large");
    }
    let Some(dir) = read_at(f, u64::from(extent) * SECTOR, size as usize)? else {
        bail!("ISO 9660 root directory lies past the end of the image");
    };
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < dir.len() {
        let len = dir[i] as usize;
        if len == 0 {
            i = (i / SECTOR as usize + 1) * SECTOR as usize;
            continue;
        }
        if len < 34 || i + len > dir.len() {
            break;
        }
        let r = &dir[i..i + len];
        let name_len = r[32] as usize;
        let raw = &r[33..(33 + name_len).min(len)];
        let is_dir = r[25] & 2 != 0;
        if !(is_dir || (name_len == 1 && raw[0] <= 1)) {
            let name = if joliet {
                let units: Vec<u16> = raw
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
                String::from_utf16_lossy(&units)
            } else {
                let su_start = 33 + name_len + (1 - name_len % 2);
                rock_ridge_name(r.get(su_start..).unwrap_or(&[]))
                    .unwrap_or_else(|| String::from_utf8_lossy(raw).into_owned())
            };
            let name = name
                .split(';')
                .next()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_string();
            out.push((name, le32(&r[2..6]), le32(&r[10..14])));
        }
        i += len;
    }
    Ok(out)
}

/// Reads `name` from the root directory (Joliet names first, then Rock
/// Ridge or plain names); `None` when it is not there.
pub fn read_file(f: &mut File, name: &str) -> Result<Option<Vec<u8>>> {
    let ds = descriptors(f)?;
    let mut order: Vec<(&Vec<u8>, bool)> = ds
        .iter()
        .filter(|d| is_joliet(d))
        .map(|d| (d, true))
        .collect();
    order.extend(ds.iter().filter(|d| d[0] == 1).map(|d| (d, false)));
    for (d, joliet) in order {
        for (n, extent, size) in root_entries(f, d, joliet)? {
            if n.eq_ignore_ascii_case(name) {
                if size > MAX_READ {
                    bail!("`{name}` on the seed is too large");
                }
                return match read_at(f, u64::from(extent) * SECTOR, size as usize)? {
                    Some(b) => Ok(Some(b)),
                    None => bail!("`{name}` lies past the end of the image"),
                };
            }
        }
    }
    Ok(None)
}
