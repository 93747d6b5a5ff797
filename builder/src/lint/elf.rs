//! The dynamic-linking facts of an ELF file, read lazily (headers, the
//! dynamic section and its string table only, never the whole file: the
//! image's Go binaries are 50-100 MiB each).

use std::io::{self, Read, Seek, SeekFrom};

/// What the dynamic loader needs to run one ELF object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dynamic {
    /// `ELFCLASS64`.
    pub class64: bool,
    /// `e_machine`.
    pub machine: u16,
    /// `PT_INTERP`: the program interpreter (executables).
    pub interp: Option<String>,
    /// `DT_NEEDED` entries, in order.
    pub needed: Vec<String>,
    /// `DT_RPATH`, split on `:`.
    pub rpath: Vec<String>,
    /// `DT_RUNPATH`, split on `:`.
    pub runpath: Vec<String>,
}

/// Class and machine of an ELF file, from its first 20 bytes.
pub fn ident(head: &[u8]) -> Option<(bool, u16)> {
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let class64 = match head[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let machine = match head[5] {
        1 => u16::from_le_bytes([head[18], head[19]]),
        2 => u16::from_be_bytes([head[18], head[19]]),
        _ => return None,
    };
    Some((class64, machine))
}

struct Reader<R> {
    r: R,
    le: bool,
    class64: bool,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes(&mut self, off: u64, len: usize) -> io::Result<Vec<u8>> {
        self.r.seek(SeekFrom::Start(off))?;
        let mut b = vec![0; len];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    fn uint(&self, b: &[u8], off: usize, size: usize) -> u64 {
        let s = &b[off..off + size];
        let mut v = 0u64;
        for i in 0..size {
            let byte = if self.le { s[size - 1 - i] } else { s[i] } as u64;
            v = (v << 8) | byte;
        }
        v
    }

    fn word(&self, b: &[u8], off64: usize, off32: usize) -> u64 {
        if self.class64 {
            self.uint(b, off64, 8)
        } else {
            self.uint(b, off32, 4)
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn cstr(table: &[u8], off: u64) -> io::Result<String> {
    let s = table
        .get(off as usize..)
        .ok_or_else(|| bad("string offset outside DT_STRTAB"))?;
    let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
    Ok(String::from_utf8_lossy(&s[..end]).into_owned())
}

/// Reads the dynamic-linking facts of the ELF file `r`; `Ok(None)` when it
/// is not ELF. A statically linked file has no interpreter and no needed
/// libraries.
pub fn read<R: Read + Seek>(mut r: R) -> io::Result<Option<Dynamic>> {
    let mut head = [0u8; 64];
    let n = read_up_to(&mut r, &mut head)?;
    let Some((class64, machine)) = ident(&head[..n]) else {
        return Ok(None);
    };
    if n < if class64 { 64 } else { 52 } {
        return Err(bad("truncated ELF header"));
    }
    let mut rd = Reader {
        r,
        le: head[5] == 1,
        class64,
    };
    let phoff = rd.word(&head, 32, 28);
    let (phentsize, phnum) = if class64 {
        (rd.uint(&head, 54, 2), rd.uint(&head, 56, 2))
    } else {
        (rd.uint(&head, 42, 2), rd.uint(&head, 44, 2))
    };
    let mut out = Dynamic {
        class64,
        machine,
        ..Dynamic::default()
    };
    if phnum == 0 {
        return Ok(Some(out));
    }
    let min_ent = if class64 { 56 } else { 32 };
    if phentsize < min_ent || phnum > 4096 {
        return Err(bad("bad program header table"));
    }
    let table = rd.bytes(phoff, (phentsize * phnum) as usize)?;
    // (vaddr, offset, filesz) of PT_LOAD; (offset, filesz) of PT_DYNAMIC.
    let mut loads = Vec::new();
    let mut dynamic = None;
    for i in 0..phnum as usize {
        let p = &table[i * phentsize as usize..];
        let p_type = rd.uint(p, 0, 4);
        let (offset, vaddr, filesz) = if class64 {
            (rd.uint(p, 8, 8), rd.uint(p, 16, 8), rd.uint(p, 32, 8))
        } else {
            (rd.uint(p, 4, 4), rd.uint(p, 8, 4), rd.uint(p, 16, 4))
        };
        match p_type {
            1 => loads.push((vaddr, offset, filesz)),
            2 => dynamic = Some((offset, filesz)),
            3 if filesz > 0 && filesz < 4096 => {
                let b = rd.bytes(offset, filesz as usize)?;
                out.interp = Some(cstr(&b, 0)?);
            }
            _ => {}
        }
    }
    let Some((doff, dsize)) = dynamic else {
        return Ok(Some(out));
    };
    if dsize > 1 << 20 {
        return Err(bad("dynamic section larger than 1 MiB"));
    }
    let dyn_bytes = rd.bytes(doff, dsize as usize)?;
    let ent = if class64 { 16 } else { 8 };
    let (mut strtab, mut strsz) = (None, 0u64);
    let mut needed = Vec::new();
    let (mut rpath, mut runpath) = (None, None);
    for e in dyn_bytes.chunks_exact(ent) {
        let tag = rd.word(e, 0, 0);
        let val = rd.word(e, 8, 4);
        match tag {
            0 => break,
            1 => needed.push(val),
            5 => strtab = Some(val),
            10 => strsz = val,
            15 => rpath = Some(val),
            29 => runpath = Some(val),
            _ => {}
        }
    }
    if needed.is_empty() && rpath.is_none() && runpath.is_none() {
        return Ok(Some(out));
    }
    let addr = strtab.ok_or_else(|| bad("dynamic section without DT_STRTAB"))?;
    let off = loads
        .iter()
        .find(|(v, _, sz)| addr >= *v && addr < v + sz)
        .map(|(v, o, _)| o + (addr - v))
        .ok_or_else(|| bad("DT_STRTAB outside every PT_LOAD segment"))?;
    if strsz == 0 || strsz > 16 << 20 {
        return Err(bad("bad DT_STRSZ"));
    }
    let strings = rd.bytes(off, strsz as usize)?;
    for n in needed {
        out.needed.push(cstr(&strings, n)?);
    }
    let split = |s: String| -> Vec<String> {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(o) = rpath {
        out.rpath = split(cstr(&strings, o)?);
    }
    if let Some(o) = runpath {
        out.runpath = split(cstr(&strings, o)?);
    }
    Ok(Some(out))
}

fn read_up_to<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_needs_libc_through_the_system_interpreter() {
        let f = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let d = read(f).unwrap().unwrap();
        assert!(d.class64);
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
        assert!(d.interp.as_deref().unwrap().starts_with('/'), "{d:?}");
    }

    #[test]
    fn not_elf_is_none_and_truncated_elf_is_an_error() {
        assert_eq!(
            read(io::Cursor::new(b"#!/bin/sh\n".to_vec())).unwrap(),
            None
        );
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(read(io::Cursor::new(exe[..40].to_vec())).is_err());
        assert!(read(io::Cursor::new(exe[..200].to_vec())).is_err());
    }
}
