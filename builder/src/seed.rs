//! NoCloud seed images: a minimal ISO 9660 writer with Joliet names (what
//! `genisoimage -V cidata -J -r` makes for cloud-init, minus Rock Ridge),
//! byte-for-byte deterministic: fixed dates, files in name order. Only a
//! flat root directory of small files, which is all a seed holds.
//!
//! Layout (2048-byte sectors): 0–15 system area, 16 primary volume
//! descriptor, 17 Joliet supplementary descriptor, 18 terminator, 19–22
//! path tables (primary L/M, Joliet L/M), 23 primary root directory, 24
//! Joliet root directory, then the files.

use anyhow::{ensure, Result};

const SECTOR: usize = 2048;
const ROOT_PRIMARY: u32 = 23;
const ROOT_JOLIET: u32 = 24;
const FIRST_FILE: u32 = 25;
/// Recording date of every directory record: 2000-01-01 00:00:00 UTC.
const DATE7: [u8; 7] = [100, 1, 1, 0, 0, 0, 0];
/// Volume dates: 2000-01-01 00:00:00.00 UTC (`YYYYMMDDHHMMSScc` + offset).
const DATE17: &[u8; 17] = b"2000010100000000\0";

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

fn dir_record(name: &[u8], extent: u32, size: u32, is_dir: bool) -> Vec<u8> {
    let len = 33 + name.len() + usize::from(name.len().is_multiple_of(2));
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&DATE7);
    r[25] = if is_dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r[33..33 + name.len()].copy_from_slice(name);
    r
}

/// An ISO 9660 level-1 name for `name`: upper case, 8.3, `_` for anything
/// else, `;1` version.
fn primary_name(name: &str) -> Vec<u8> {
    let clean = |s: &str, n: usize| -> String {
        s.chars()
            .map(|c| match c.to_ascii_uppercase() {
                c @ ('A'..='Z' | '0'..='9') => c,
                _ => '_',
            })
            .take(n)
            .collect()
    };
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    format!("{}.{};1", clean(stem, 8), clean(ext, 3)).into_bytes()
}

fn joliet_name(name: &str) -> Vec<u8> {
    name.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// `text` in a fixed-width field: ASCII padded with spaces, or UCS-2 BE
/// padded with UCS-2 spaces for Joliet.
fn field(out: &mut [u8], text: &str, joliet: bool) {
    if joliet {
        for c in out.chunks_exact_mut(2) {
            c.copy_from_slice(&[0, b' ']);
        }
        for (c, u) in out.chunks_exact_mut(2).zip(text.encode_utf16()) {
            c.copy_from_slice(&u.to_be_bytes());
        }
    } else {
        out.fill(b' ');
        out[..text.len()].copy_from_slice(text.as_bytes());
    }
}

fn root_dir(
    root: u32,
    names: &[Vec<u8>],
    files: &[(u32, u32)],
    order: &[usize],
) -> Result<Vec<u8>> {
    let mut d = Vec::new();
    d.extend(dir_record(&[0], root, SECTOR as u32, true));
    d.extend(dir_record(&[1], root, SECTOR as u32, true));
    for &i in order {
        d.extend(dir_record(&names[i], files[i].0, files[i].1, false));
    }
    ensure!(
        d.len() <= SECTOR,
        "too many files for a one-sector seed directory"
    );
    d.resize(SECTOR, 0);
    Ok(d)
}

fn volume_descriptor(
    label: &str,
    joliet: bool,
    total: u32,
    path_tables: (u32, u32),
    root: u32,
) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = if joliet { 2 } else { 1 };
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    field(&mut d[8..40], "LINUX", joliet);
    field(&mut d[40..72], label, joliet);
    d[80..88].copy_from_slice(&both32(total));
    if joliet {
        d[88..91].copy_from_slice(b"%/E");
    }
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(SECTOR as u16));
    d[132..140].copy_from_slice(&both32(10));
    d[140..144].copy_from_slice(&path_tables.0.to_le_bytes());
    d[148..152].copy_from_slice(&path_tables.1.to_be_bytes());
    d[156..190].copy_from_slice(&dir_record(&[0], root, SECTOR as u32, true));
    for r in [
        190..318,
        318..446,
        446..574,
        574..702,
        702..739,
        739..776,
        776..813,
    ] {
        field(&mut d[r], "", joliet);
    }
    field(&mut d[574..702], "NODEBAKE", joliet);
    d[813..830].copy_from_slice(DATE17);
    d[830..847].copy_from_slice(DATE17);
    d[847..864].copy_from_slice(b"0000000000000000\0");
    d[864..881].copy_from_slice(DATE17);
    d[881] = 1;
    d
}

fn path_table(root: u32, big_endian: bool) -> Vec<u8> {
    let mut t = vec![0u8; SECTOR];
    t[0] = 1;
    let ext = if big_endian {
        root.to_be_bytes()
    } else {
        root.to_le_bytes()
    };
    t[2..6].copy_from_slice(&ext);
    let parent = if big_endian {
        1u16.to_be_bytes()
    } else {
        1u16.to_le_bytes()
    };
    t[6..8].copy_from_slice(&parent);
    t
}

/// Writes an ISO 9660 image labelled `label` (at most 32 characters; 16
/// in the Joliet descriptor) holding `files` (name, content) in its root.
/// Same input, same bytes.
pub fn iso9660(label: &str, files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    ensure!(
        label.len() <= 16 && label.is_ascii(),
        "volume label `{label}` must be at most 16 ASCII characters"
    );
    let mut names_seen: Vec<&str> = files.iter().map(|f| f.0).collect();
    names_seen.sort_unstable();
    names_seen.dedup();
    ensure!(names_seen.len() == files.len(), "duplicate file names");
    let mut extents = Vec::new();
    let mut next = FIRST_FILE;
    for (_, data) in files {
        let size = u32::try_from(data.len())?;
        extents.push((next, size));
        next += size.div_ceil(SECTOR as u32).max(1);
    }
    let total = next;
    let primary: Vec<Vec<u8>> = files.iter().map(|f| primary_name(f.0)).collect();
    let joliet: Vec<Vec<u8>> = files.iter().map(|f| joliet_name(f.0)).collect();
    let sorted = |names: &[Vec<u8>]| -> Result<Vec<usize>> {
        let mut o: Vec<usize> = (0..names.len()).collect();
        o.sort_by(|&a, &b| names[a].cmp(&names[b]));
        ensure!(
            o.windows(2).all(|w| names[w[0]] != names[w[1]]),
            "two seed files map to one ISO 9660 name"
        );
        Ok(o)
    };
    let mut img = vec![0u8; 16 * SECTOR];
    img.extend(volume_descriptor(
        label,
        false,
        total,
        (19, 20),
        ROOT_PRIMARY,
    ));
    img.extend(volume_descriptor(label, true, total, (21, 22), ROOT_JOLIET));
    let mut term = vec![0u8; SECTOR];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    img.extend(term);
    img.extend(path_table(ROOT_PRIMARY, false));
    img.extend(path_table(ROOT_PRIMARY, true));
    img.extend(path_table(ROOT_JOLIET, false));
    img.extend(path_table(ROOT_JOLIET, true));
    img.extend(root_dir(
        ROOT_PRIMARY,
        &primary,
        &extents,
        &sorted(&primary)?,
    )?);
    img.extend(root_dir(ROOT_JOLIET, &joliet, &extents, &sorted(&joliet)?)?);
    for (_, data) in files {
        img.extend_from_slice(data);
        let pad = data.len().div_ceil(SECTOR).max(1) * SECTOR - data.len();
        img.extend(std::iter::repeat_n(0u8, pad));
    }
    debug_assert_eq!(img.len(), total as usize * SECTOR);
    Ok(img)
}

/// Writes a FAT seed image labelled `label` (upper-cased: FAT labels are)
/// holding `files`, with `mkfs.vfat --invariant` and `mcopy -m` from
/// files dated 2000-01-01, so the bytes are the same on every run. Needs
/// dosfstools and mtools; fails naming them when missing.
pub fn vfat(label: &str, files: &[(&str, &[u8])]) -> Result<Vec<u8>> {
    use crate::tools::{self, MCOPY, MKFS_FAT};
    use anyhow::Context;
    let tmp = tempfile::tempdir()?;
    let img = tmp.path().join("seed.img");
    let total: usize = files.iter().map(|f| f.1.len()).sum();
    let kib = (total / 1024 * 2 + 512).max(1024);
    tools::run(
        MKFS_FAT,
        MKFS_FAT
            .command()?
            .arg("-C")
            .arg(&img)
            .arg(kib.to_string())
            .args(["-n", &label.to_ascii_uppercase(), "--invariant"]),
        "making the vfat seed",
    )?;
    let epoch = std::time::UNIX_EPOCH + std::time::Duration::from_secs(946_684_800);
    for (name, data) in files {
        let src = tmp.path().join(format!("src-{name}"));
        std::fs::write(&src, data)?;
        std::fs::File::options()
            .write(true)
            .open(&src)?
            .set_modified(epoch)
            .context("dating a seed file")?;
        tools::run(
            MCOPY,
            MCOPY
                .command()?
                .arg("-m")
                .arg("-i")
                .arg(&img)
                .arg(&src)
                .arg(format!("::{name}")),
            &format!("copying {name} into the vfat seed"),
        )?;
    }
    Ok(std::fs::read(&img)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_laid_out() {
        let files: [(&str, &[u8]); 2] = [("user-data", b"#cloud-config\n"), ("meta-data", b"x")];
        let a = iso9660("cidata", &files).unwrap();
        assert_eq!(a, iso9660("cidata", &files).unwrap());
        assert_eq!(a.len(), 27 * SECTOR);
        assert_eq!(&a[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(&a[16 * SECTOR + 40..16 * SECTOR + 46], b"cidata");
        assert_eq!(&a[25 * SECTOR..25 * SECTOR + 14], b"#cloud-config\n");
        assert_eq!(primary_name("meta-data"), b"META_DAT.;1");
    }
}
