//! File names are bytes; image paths inside nodebake are `String`s (the
//! tree, globs, the manifest). A name that is not UTF-8 keeps every byte:
//! each byte that is not part of valid UTF-8 (always 0x80..=0xFF) is held as
//! one character of a reserved range, `U+10FF00 + byte` (the last 128 code
//! points of Supplementary Private Use Area-B), and turned back into that
//! byte wherever a name leaves nodebake (tar, cpio, the disk image, a
//! staging directory). A name that already holds a reserved character is
//! refused, so the mapping is one to one.
//!
//! In `manifest.json` and in messages such a name is shown escaped
//! ([`display`]): `\xNN` per raw byte, `\\` per backslash.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{bail, Result};

const BASE: u32 = 0x10FF00;
const FIRST: u32 = BASE + 0x80;

fn reserved(c: char) -> Option<u8> {
    let v = c as u32;
    (v >= FIRST).then(|| (v - BASE) as u8)
}

/// `bytes` as an image path, losing nothing. `what` names the culprit in
/// the one refusal: a UTF-8 name that holds a reserved character.
pub fn from_bytes(bytes: &[u8], what: &str) -> Result<String> {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if valid.chars().any(|c| reserved(c).is_some()) {
            bail!(
                "{what} `{}` holds a character of U+10FF80..U+10FFFF, which nodebake \
                 reserves for bytes that are not UTF-8 (rename it, or drop it with `exclude`)",
                valid
                    .chars()
                    .map(|c| match reserved(c) {
                        Some(_) => c.escape_unicode().to_string(),
                        None => c.to_string(),
                    })
                    .collect::<String>()
            );
        }
        out.push_str(valid);
        for &b in chunk.invalid() {
            out.push(char::from_u32(BASE + u32::from(b)).expect("in range"));
        }
    }
    Ok(out)
}

/// Whether `name` came from bytes that are not UTF-8.
pub fn is_raw(name: &str) -> bool {
    name.chars().any(|c| reserved(c).is_some())
}

/// The bytes `name` stands for.
pub fn to_bytes(name: &str) -> Cow<'_, [u8]> {
    if !is_raw(name) {
        return Cow::Borrowed(name.as_bytes());
    }
    let mut out = Vec::with_capacity(name.len());
    let mut buf = [0u8; 4];
    for c in name.chars() {
        match reserved(c) {
            Some(b) => out.push(b),
            None => out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes()),
        }
    }
    Cow::Owned(out)
}

/// `name` as a file system path (for staging directories).
pub fn to_path(name: &str) -> Cow<'_, Path> {
    match to_bytes(name) {
        Cow::Borrowed(b) => Cow::Borrowed(Path::new(OsStr::from_bytes(b))),
        Cow::Owned(v) => Cow::Owned(Path::new(OsStr::from_bytes(&v)).to_path_buf()),
    }
}

/// `name` for people: unchanged when it is UTF-8, otherwise [`escape`]d.
pub fn display(name: &str) -> Cow<'_, str> {
    if !is_raw(name) {
        return Cow::Borrowed(name);
    }
    Cow::Owned(escape(name))
}

/// Each raw byte as `\xNN` and each backslash as `\\`, so the form reads
/// back unambiguously (the manifest's `escaped` entries).
pub fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match reserved(c) {
            Some(b) => out.push_str(&format!("\\x{b:02x}")),
            None if c == '\\' => out.push_str("\\\\"),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_pass_through_unchanged() {
        for s in ["", "usr/bin/kubeadm", "opt/café/naïve", "a\\b", "日本"] {
            let n = from_bytes(s.as_bytes(), "name").unwrap();
            assert_eq!(n, s);
            assert!(!is_raw(&n));
            assert!(matches!(to_bytes(&n), Cow::Borrowed(_)));
            assert_eq!(display(&n), s);
        }
    }

    #[test]
    fn raw_bytes_round_trip_exactly() {
        let cases: &[&[u8]] = &[
            b"opt/caf\xe9",
            b"\xff\xfe\x80",
            b"half \xc3 then ascii",
            b"truncated \xe6\x97",
            b"ok \xc3\xa9 bad \xc3\x28",
            b"back\\slash \xa0",
        ];
        for &b in cases {
            let n = from_bytes(b, "name").unwrap();
            assert!(is_raw(&n), "{b:?}");
            assert_eq!(&*to_bytes(&n), b);
            assert_eq!(to_path(&n).as_os_str().as_bytes(), b);
            // Decoding is canonical: the same bytes give the same name.
            assert_eq!(from_bytes(&to_bytes(&n), "name").unwrap(), n);
        }
        assert_eq!(
            display(&from_bytes(b"opt/caf\xe9", "n").unwrap()),
            "opt/caf\\xe9"
        );
        assert_eq!(
            display(&from_bytes(b"a\\b\xff", "n").unwrap()),
            "a\\\\b\\xff"
        );
        // Every byte value that can be invalid maps and comes back.
        for b in 0x80..=0xffu8 {
            let n = from_bytes(&[b'x', b], "n").unwrap();
            assert_eq!(&*to_bytes(&n), &[b'x', b]);
        }
    }

    #[test]
    fn a_name_holding_a_reserved_character_is_refused_by_name() {
        let s = "etc/\u{10FFE9}";
        let e = from_bytes(s.as_bytes(), "member name")
            .unwrap_err()
            .to_string();
        assert!(e.contains("member name"), "{e}");
        assert!(e.contains("U+10FF80..U+10FFFF"), "{e}");
        // The character just below the range is an ordinary name.
        assert!(from_bytes("\u{10FF7F}".as_bytes(), "n").is_ok());
    }
}
