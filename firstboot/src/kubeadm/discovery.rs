//! kubeadm's discovery hash: `sha256:` + hex of the SHA-256 of the CA
//! certificate's DER `SubjectPublicKeyInfo`, found by walking the DER of
//! the certificate (no X.509 library needed for one field).

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The DER bytes of the first `CERTIFICATE` block in `pem`.
pub fn first_certificate_der(pem: &str) -> Result<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = pem.find(BEGIN).context("no PEM CERTIFICATE block")? + BEGIN.len();
    let len = pem[start..]
        .find(END)
        .context("PEM CERTIFICATE block is not terminated")?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("PEM CERTIFICATE block is not base64")
}

/// One DER TLV: tag, the whole encoding, and the contents.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
}

/// Reads the TLV at the start of `buf`; returns it and the rest.
fn read_tlv(buf: &[u8]) -> Result<(Tlv<'_>, &[u8])> {
    if buf.len() < 2 {
        bail!("truncated DER");
    }
    let tag = buf[0];
    if tag & 0x1f == 0x1f {
        bail!("multi-byte DER tags are not expected in a certificate header");
    }
    let (len, hdr) = match buf[1] {
        l if l < 0x80 => (usize::from(l), 2),
        0x80 => bail!("indefinite length is not DER"),
        l => {
            let n = usize::from(l & 0x7f);
            if n > 4 || buf.len() < 2 + n {
                bail!("bad DER length");
            }
            let len = buf[2..2 + n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, 2 + n)
        }
    };
    let end = hdr.checked_add(len).context("bad DER length")?;
    if buf.len() < end {
        bail!("truncated DER");
    }
    Ok((
        Tlv {
            tag,
            whole: &buf[..end],
            contents: &buf[hdr..end],
        },
        &buf[end..],
    ))
}

/// The DER `SubjectPublicKeyInfo` of a DER certificate.
pub fn subject_public_key_info(cert_der: &[u8]) -> Result<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    let (cert, _) = read_tlv(cert_der)?;
    if cert.tag != SEQUENCE {
        bail!("certificate is not a DER SEQUENCE");
    }
    let (tbs, _) = read_tlv(cert.contents)?;
    if tbs.tag != SEQUENCE {
        bail!("tbsCertificate is not a SEQUENCE");
    }
    let mut rest = tbs.contents;
    let (first, r) = read_tlv(rest)?;
    // [0] EXPLICIT version is optional (v1 certificates omit it).
    if first.tag == 0xa0 {
        rest = r;
    }
    // serialNumber, signature, issuer, validity, subject, then the SPKI.
    for _ in 0..5 {
        rest = read_tlv(rest)?.1;
    }
    let (spki, _) = read_tlv(rest)?;
    if spki.tag != SEQUENCE {
        bail!("subjectPublicKeyInfo is not a SEQUENCE");
    }
    Ok(spki.whole)
}

/// `sha256:<hex>` of the first certificate in `pem`, as kubeadm pins it.
pub fn ca_cert_hash_from_pem(pem: &str) -> Result<String> {
    let der = first_certificate_der(pem)?;
    let spki = subject_public_key_info(&der)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_garbage() {
        assert!(ca_cert_hash_from_pem("nothing here").is_err());
        let bad = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        assert!(ca_cert_hash_from_pem(bad).is_err());
        let truncated = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        assert!(ca_cert_hash_from_pem(truncated).is_err());
    }
}
