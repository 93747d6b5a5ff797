//! Compression formats: detection by magic bytes, streaming decoders and
//! deterministic encoders.

use std::io::{self, BufRead, BufReader, Read, Write};

/// A compression format nodebake reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// xz / LZMA2.
    Xz,
    /// Zstandard.
    Zstd,
    /// bzip2 (recognised so it can be named in errors; not decoded).
    Bzip2,
    /// Legacy `.lzma` (recognised, not decoded).
    Lzma,
}

impl Compression {
    /// Detects a format from the first bytes of a stream.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.len() >= 3 && head[0] == 0x5d && head[1] == 0 && head[2] == 0 {
            Compression::Lzma
        } else {
            Compression::None
        }
    }

    /// The name used in RPM's `PAYLOADCOMPRESSOR` tag and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
        }
    }
}

/// Wraps `r` in the decoder for the format its first bytes announce.
/// Plain streams pass through. bzip2 and legacy lzma are refused with an
/// error naming the format.
pub fn auto_decoder<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(256 * 1024, r);
    let head = br.fill_buf()?.to_vec();
    let c = Compression::sniff(&head);
    Ok((c, decoder(c, br)?))
}

/// Wraps `r` in the decoder for `c`.
pub fn decoder<'a, R: BufRead + 'a>(c: Compression, r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::Bzip2 | Compression::Lzma => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unsupported compression `{}`", c.name()),
            ))
        }
    })
}

/// A deterministic compressing writer (no timestamps or host names in
/// headers), finished explicitly so errors at the end are not lost.
pub enum Encoder<W: Write> {
    /// Pass-through.
    None(W),
    /// gzip, fixed header (mtime 0).
    Gzip(flate2::write::GzEncoder<W>),
    /// zstd with a content checksum.
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Encoder<W> {
    /// Starts a gzip stream at `level` (0–9).
    pub fn gzip(w: W, level: u32) -> Self {
        let gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(3)
            .write(w, flate2::Compression::new(level));
        Encoder::Gzip(gz)
    }

    /// Starts a zstd stream at `level`.
    pub fn zstd(w: W, level: i32) -> io::Result<Self> {
        let mut z = zstd::stream::write::Encoder::new(w, level)?;
        z.include_checksum(true)?;
        Ok(Encoder::Zstd(z))
    }

    /// Flushes the trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(g) => g.finish(),
            Encoder::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(g) => g.write(buf),
            Encoder::Zstd(z) => z.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(g) => g.flush(),
            Encoder::Zstd(z) => z.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(enc: Encoder<Vec<u8>>, expect: Compression) {
        let mut enc = enc;
        enc.write_all(b"hello nodebake").unwrap();
        let bytes = enc.finish().unwrap();
        let (c, mut r) = auto_decoder(&bytes[..]).unwrap();
        assert_eq!(c, expect);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello nodebake");
    }

    #[test]
    fn gzip_and_zstd_roundtrip_and_sniff() {
        roundtrip(Encoder::gzip(Vec::new(), 6), Compression::Gzip);
        roundtrip(Encoder::zstd(Vec::new(), 3).unwrap(), Compression::Zstd);
    }

    #[test]
    fn gzip_is_deterministic() {
        let a = {
            let mut e = Encoder::gzip(Vec::new(), 6);
            e.write_all(&[7u8; 5000]).unwrap();
            e.finish().unwrap()
        };
        let b = {
            let mut e = Encoder::gzip(Vec::new(), 6);
            e.write_all(&[7u8; 5000]).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(a, b);
        assert_eq!(&a[4..8], &[0, 0, 0, 0], "gzip mtime must be zero");
    }

    #[test]
    fn bzip2_is_refused_by_name() {
        let err = auto_decoder(&b"BZh91AY&SY"[..]).err().unwrap();
        assert!(err.to_string().contains("bzip2"));
    }
}
