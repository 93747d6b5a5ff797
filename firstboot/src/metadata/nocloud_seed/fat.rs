//! Just enough FAT12/16/32 to read a NoCloud seed: the volume label and
//! files in the root directory, by long (VFAT) or short names.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{bail, Result};

/// Largest file this reader loads.
const MAX_READ: u32 = 16 << 20;

struct Bpb {
    bytes_per_sector: u64,
    sectors_per_cluster: u64,
    reserved: u64,
    fats: u64,
    root_entries: u64,
    fat_size: u64,
    first_data: u64,
    kind: u8,
    root_cluster: u32,
    label: String,
}

fn le16(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn read_at(f: &mut File, off: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(off))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

fn bpb(f: &mut File) -> Result<Option<Bpb>> {
    let mut b = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    if f.read_exact(&mut b).is_err() || b[510] != 0x55 || b[511] != 0xAA {
        return Ok(None);
    }
    let bps = le16(&b[11..13]);
    let spc = u64::from(b[13]);
    let reserved = le16(&b[14..16]);
    let fats = u64::from(b[16]);
    let root_entries = le16(&b[17..19]);
    let total = match le16(&b[19..21]) {
        0 => u64::from(le32(&b[32..36])),
        t => t,
    };
    let fat_size = match le16(&b[22..24]) {
        0 => u64::from(le32(&b[36..40])),
        s => s,
    };
    if !matches!(bps, 512 | 1024 | 2048 | 4096) || spc == 0 || fats == 0 || fat_size == 0 {
        return Ok(None);
    }
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + fats * fat_size + root_sectors;
    if total <= first_data {
        return Ok(None);
    }
    let clusters = (total - first_data) / spc;
    let kind = if clusters < 4085 {
        12
    } else if clusters < 65525 {
        16
    } else {
        32
    };
    let label_at = if kind == 32 { (66, 71) } else { (38, 43) };
    let label = if b[label_at.0] == 0x29 {
        String::from_utf8_lossy(&b[label_at.1..label_at.1 + 11])
            .trim()
            .to_string()
    } else {
        String::new()
    };
    Ok(Some(Bpb {
        bytes_per_sector: bps,
        sectors_per_cluster: spc,
        reserved,
        fats,
        root_entries,
        fat_size,
        first_data,
        kind,
        root_cluster: le32(&b[44..48]),
        label,
    }))
}

/// The volume label, when `f` is FAT.
pub fn label(f: &mut File) -> Result<Option<String>> {
    Ok(bpb(f)?.map(|b| b.label))
}

fn next_cluster(f: &mut File, b: &Bpb, c: u32) -> Result<Option<u32>> {
    let fat = b.reserved * b.bytes_per_sector;
    let c64 = u64::from(c);
    let (v, eoc) = match b.kind {
        12 => {
            let raw = le16(&read_at(f, fat + c64 + c64 / 2, 2)?) as u32;
            (if c & 1 == 0 { raw & 0xFFF } else { raw >> 4 }, 0xFF8)
        }
        16 => (le16(&read_at(f, fat + c64 * 2, 2)?) as u32, 0xFFF8),
        _ => (
            le32(&read_at(f, fat + c64 * 4, 4)?) & 0x0FFF_FFFF,
            0x0FFF_FFF8,
        ),
    };
    Ok((v >= 2 && v < eoc).then_some(v))
}

fn read_chain(f: &mut File, b: &Bpb, first: u32, limit: u64) -> Result<Vec<u8>> {
    let cluster_bytes = b.sectors_per_cluster * b.bytes_per_sector;
    let mut out = Vec::new();
    let mut c = Some(first).filter(|c| *c >= 2);
    let mut hops = 0;
    while let Some(cl) = c {
        hops += 1;
        if hops > 1 << 20 || out.len() as u64 > limit {
            bail!("FAT cluster chain too long or looping");
        }
        let sector = b.first_data + (u64::from(cl) - 2) * b.sectors_per_cluster;
        out.extend(read_at(
            f,
            sector * b.bytes_per_sector,
            cluster_bytes as usize,
        )?);
        c = next_cluster(f, b, cl)?;
    }
    Ok(out)
}

fn root_dir(f: &mut File, b: &Bpb) -> Result<Vec<u8>> {
    if b.kind == 32 {
        read_chain(f, b, b.root_cluster, u64::from(MAX_READ))
    } else {
        let start = (b.reserved + b.fats * b.fat_size) * b.bytes_per_sector;
        read_at(f, start, (b.root_entries * 32) as usize)
    }
}

/// Root-directory files: (long or short name, first cluster, size).
fn entries(dir: &[u8]) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    let mut lfn: Vec<u16> = Vec::new();
    for e in dir.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xE5 => {
                lfn.clear();
                continue;
            }
            _ => {}
        }
        let attr = e[11];
        if attr == 0x0F {
            let mut part: Vec<u16> = Vec::new();
            for r in [1..11, 14..26, 28..32] {
                part.extend(
                    e[r].chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]])),
                );
            }
            if e[0] & 0x40 != 0 {
                lfn.clear();
            }
            part.extend(lfn.iter());
            lfn = part;
            continue;
        }
        let long = std::mem::take(&mut lfn);
        if attr & 0x18 != 0 {
            continue;
        }
        let name = if long.is_empty() {
            let base = String::from_utf8_lossy(&e[0..8]).trim_end().to_string();
            let ext = String::from_utf8_lossy(&e[8..11]).trim_end().to_string();
            if ext.is_empty() {
                base
            } else {
                format!("{base}.{ext}")
            }
        } else {
            let end = long
                .iter()
                .position(|&u| u == 0 || u == 0xFFFF)
                .unwrap_or(long.len());
            String::from_utf16_lossy(&long[..end])
        };
        let cluster = (u32::from(u16::from_le_bytes([e[20], e[21]])) << 16)
            | u32::from(u16::from_le_bytes([e[26], e[27]]));
        out.push((name, cluster, le32(&e[28..32])));
    }
    out
}

/// Reads `name` from the root directory; `None` when it is not there.
pub fn read_file(f: &mut File, name: &str) -> Result<Option<Vec<u8>>> {
    let Some(b) = bpb(f)? else {
        bail!("not a FAT filesystem");
    };
    let dir = root_dir(f, &b)?;
    for (n, cluster, size) in entries(&dir) {
        if n.eq_ignore_ascii_case(name) {
            if size > MAX_READ {
                bail!("`{name}` on the seed is too large");
            }
            let mut data = read_chain(f, &b, cluster, u64::from(size))?;
            if (data.len() as u64) < u64::from(size) {
                bail!("`{name}` is shorter than its directory entry says");
            }
            data.truncate(size as usize);
            return Ok(Some(data));
        }
    }
    Ok(None)
}
