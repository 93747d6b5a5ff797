//! Document encodings cloud-init accepts: gzip and base64 (in any nesting,
//! e.g. base64 of gzip), decoded to UTF-8 text.

use std::io::Read;

use anyhow::{bail, Context, Result};
use base64::Engine;

/// Largest decoded document accepted.
pub const MAX_DOCUMENT: u64 = 16 << 20;

/// Reads the document at `p`, refusing one larger than [`MAX_DOCUMENT`]
/// bytes (as stored, before any decoding) without reading it all: a
/// metadata file is kilobytes, and a huge one must not cost the node its
/// memory.
pub fn read_capped(p: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(p)?
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > MAX_DOCUMENT {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {} MiB: not node metadata",
                p.display(),
                MAX_DOCUMENT >> 20
            ),
        ));
    }
    Ok(out)
}

/// Decodes `bytes`: gunzips gzip data, decodes text that is entirely
/// base64, repeats (at most four layers), then requires UTF-8.
pub fn decode(bytes: &[u8]) -> Result<String> {
    let mut cur = bytes.to_vec();
    for _ in 0..4 {
        if cur.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&cur[..])
                .take(MAX_DOCUMENT + 1)
                .read_to_end(&mut out)
                .context("gunzipping document")?;
            if out.len() as u64 > MAX_DOCUMENT {
                bail!("document larger than {MAX_DOCUMENT} bytes after gunzip");
            }
            cur = out;
            continue;
        }
        if let Some(raw) = as_base64(&cur) {
            cur = raw;
            continue;
        }
        break;
    }
    String::from_utf8(cur).context("document is not UTF-8 text")
}

/// The decoded bytes when `data` is nothing but base64 (YAML always has
/// `:` or spaces between words, which base64 never has).
fn as_base64(data: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = data
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.len() < 4
        || !compact
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return None;
    }
    // A run of text without spaces can be valid base64 by chance; a line
    // break inside the data that isn't at a 4-byte boundary, or a decode
    // error, means it is not.
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn b64(data: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(data)
            .into_bytes()
    }

    #[test]
    fn plain_gzip_base64_and_nested() {
        let doc = b"instance-id: a\nlocal-hostname: b\n";
        assert_eq!(decode(doc).unwrap().as_bytes(), doc);
        assert_eq!(decode(&gz(doc)).unwrap().as_bytes(), doc);
        assert_eq!(decode(&b64(doc)).unwrap().as_bytes(), doc);
        assert_eq!(decode(&b64(&gz(doc))).unwrap().as_bytes(), doc);
    }

    #[test]
    fn bad_inputs_fail() {
        assert!(decode(&[0x1f, 0x8b, 1, 2, 3]).is_err());
        assert!(decode(&[0xff, 0xfe, 0x00]).is_err());
    }

    /// A 200 MB user-data (sparse here) is refused after reading at most
    /// MAX_DOCUMENT + 1 bytes, through every file source, naming the file.
    #[test]
    fn oversized_documents_are_refused_unread() {
        use crate::metadata::MetadataProvider;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("meta-data"),
            "instance-id: a\nlocal-hostname: h\n",
        )
        .unwrap();
        let big = d.path().join("user-data");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(200 << 20)
            .unwrap();
        let e = crate::metadata::path::read_nocloud_dir(d.path()).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("user-data") && e.contains("larger than 16 MiB"),
            "{e}"
        );
        let src = crate::metadata::path::PathSource::new(big.clone(), false);
        let Err(e) = src.fetch() else {
            panic!("a 200 MB file was accepted as metadata")
        };
        let e = format!("{e:#}");
        assert!(e.contains("larger than 16 MiB"), "{e}");
        // Exactly the cap is fine (as far as size goes).
        let edge = d.path().join("edge");
        std::fs::write(&edge, vec![b'a'; MAX_DOCUMENT as usize]).unwrap();
        assert_eq!(read_capped(&edge).unwrap().len() as u64, MAX_DOCUMENT);
    }
}
