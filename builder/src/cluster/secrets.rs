//! The cluster secrets bundle under `DIR/secrets/` (0700, every file
//! 0600): three CAs (cluster, front-proxy, etcd; ECDSA P-256, 10 years),
//! the service-account key pair, a bootstrap token, the kubeadm
//! certificate key and the VRRP password. Generated once, loaded on every
//! later run, regenerated only on request (`--rotate`). Values are never
//! logged.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use nodebake_contract::node::{CaMaterial, Secret};
use sha2::{Digest, Sha256};

use crate::atomic;

/// Every file of the bundle, in the order they are written.
pub const FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd-ca.crt",
    "etcd-ca.key",
    "sa.key",
    "sa.pub",
    "bootstrap-token",
    "certificate-key",
    "vrrp-password",
    "ca-cert-hash",
];

/// Validity of the generated CAs.
const CA_DAYS: i64 = 3650;

/// The secrets bundle.
#[derive(Clone)]
pub struct ClusterSecrets {
    /// CA material handed to masters.
    pub ca: CaMaterial,
    /// Bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
    pub bootstrap_token: Secret,
    /// kubeadm certificate key (64 hex).
    pub certificate_key: Secret,
    /// VRRP password (8 characters).
    pub vrrp_password: Secret,
    /// Discovery hash `sha256:<hex>` of the cluster CA's public key.
    pub ca_cert_hash: String,
}

/// What [`load_or_generate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsOrigin {
    /// Read from an existing bundle.
    Loaded,
    /// Generated (no bundle before).
    Generated,
    /// Regenerated on request.
    Rotated,
}

/// Loads the bundle from `dir`, or generates it when `dir` holds none;
/// `rotate` regenerates it even when it exists. A partial bundle is an
/// error naming the missing files. Writes nothing: generated secrets are
/// [`save`]d by the caller once everything that uses them validated.
pub fn load_or_generate(dir: &Path, rotate: bool) -> Result<(ClusterSecrets, SecretsOrigin)> {
    refuse_symlink(dir)?;
    let present: Vec<&str> = FILES
        .iter()
        .copied()
        .filter(|f| dir.join(f).exists())
        .collect();
    if !rotate && present.len() == FILES.len() {
        return Ok((load(dir)?, SecretsOrigin::Loaded));
    }
    if !rotate && !present.is_empty() {
        let missing: Vec<&str> = FILES
            .iter()
            .copied()
            .filter(|f| !present.contains(f))
            .collect();
        bail!(
            "the secrets bundle in {} is incomplete (missing {}); restore it, or regenerate every secret with --rotate",
            dir.display(),
            missing.join(", ")
        );
    }
    let s = generate()?;
    let origin = if rotate && !present.is_empty() {
        SecretsOrigin::Rotated
    } else {
        SecretsOrigin::Generated
    };
    Ok((s, origin))
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let p = dir.join(name);
    let meta = std::fs::metadata(&p)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

fn load(dir: &Path) -> Result<ClusterSecrets> {
    let line = |name: &str| -> Result<String> { Ok(read(dir, name)?.trim().to_string()) };
    let ca = CaMaterial {
        ca_crt: read(dir, "ca.crt")?,
        ca_key: Secret::new(read(dir, "ca.key")?),
        front_proxy_ca_crt: read(dir, "front-proxy-ca.crt")?,
        front_proxy_ca_key: Secret::new(read(dir, "front-proxy-ca.key")?),
        etcd_ca_crt: read(dir, "etcd-ca.crt")?,
        etcd_ca_key: Secret::new(read(dir, "etcd-ca.key")?),
        sa_key: Secret::new(read(dir, "sa.key")?),
        sa_pub: read(dir, "sa.pub")?,
    };
    let hash = discovery_hash(&ca.ca_crt).context("secrets/ca.crt")?;
    let stored = line("ca-cert-hash")?;
    ensure!(
        stored == hash,
        "secrets/ca-cert-hash does not match secrets/ca.crt (computed {hash}); was ca.crt replaced? Restore the bundle or use --rotate"
    );
    let s = ClusterSecrets {
        ca,
        bootstrap_token: Secret::new(line("bootstrap-token")?),
        certificate_key: Secret::new(line("certificate-key")?),
        vrrp_password: Secret::new(line("vrrp-password")?),
        ca_cert_hash: hash,
    };
    ensure!(
        is_bootstrap_token(s.bootstrap_token.expose()),
        "secrets/bootstrap-token is not `[a-z0-9]{{6}}.[a-z0-9]{{16}}` (value not shown)"
    );
    ensure!(
        s.certificate_key.expose().len() == 64
            && s.certificate_key
                .expose()
                .chars()
                .all(|c| c.is_ascii_hexdigit()),
        "secrets/certificate-key is not 64 hex digits (value not shown)"
    );
    if let Err(why) = nodebake_contract::grammar::vrrp_password(s.vrrp_password.expose()) {
        bail!("secrets/vrrp-password {why} (value not shown)");
    }
    Ok(s)
}

/// `dir` must not be a symbolic link: the bundle's mode is set and its
/// keys are written there, never through a link to somewhere else.
fn refuse_symlink(dir: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link: the secrets bundle must be a real directory (0700) \
             (remove the link, or move the bundle there)",
            dir.display()
        ),
        Ok(m) if !m.is_dir() => bail!("{} is not a directory", dir.display()),
        _ => Ok(()),
    }
}

/// Writes the bundle into `dir` (created 0700; each file 0600,
/// atomically). `cluster init` calls it only after every node validated.
pub fn save(dir: &Path, s: &ClusterSecrets) -> Result<()> {
    refuse_symlink(dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    let ca = &s.ca;
    let line = |v: &str| format!("{v}\n");
    let files: [(&str, String); 12] = [
        ("ca.crt", ca.ca_crt.clone()),
        ("ca.key", ca.ca_key.expose().to_string()),
        ("front-proxy-ca.crt", ca.front_proxy_ca_crt.clone()),
        (
            "front-proxy-ca.key",
            ca.front_proxy_ca_key.expose().to_string(),
        ),
        ("etcd-ca.crt", ca.etcd_ca_crt.clone()),
        ("etcd-ca.key", ca.etcd_ca_key.expose().to_string()),
        ("sa.key", ca.sa_key.expose().to_string()),
        ("sa.pub", ca.sa_pub.clone()),
        ("bootstrap-token", line(s.bootstrap_token.expose())),
        ("certificate-key", line(s.certificate_key.expose())),
        ("vrrp-password", line(s.vrrp_password.expose())),
        ("ca-cert-hash", line(&s.ca_cert_hash)),
    ];
    for (name, text) in files {
        atomic::write_file(&dir.join(name), text.as_bytes(), 0o600)?;
    }
    Ok(())
}

/// Whether `t` is a kubeadm bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`.
pub fn is_bootstrap_token(t: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(t.split_once('.'), Some((a, b)) if ok(a, 6) && ok(b, 16))
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf)
}

/// `n` characters drawn uniformly from `alphabet` (rejection sampling).
fn random_string(alphabet: &[u8], n: usize) -> Result<String> {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(n);
    // Each byte is accepted with probability > 1/2; 64 rounds of 2n bytes
    // fail with negligible probability.
    for _ in 0..64 {
        for b in random_bytes(2 * n)? {
            if usize::from(b) < limit {
                out.push(char::from(alphabet[usize::from(b) % alphabet.len()]));
                if out.len() == n {
                    return Ok(out);
                }
            }
        }
    }
    bail!("random source returned too few usable bytes")
}

fn generate_ca(common_name: &str) -> Result<(String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let key = KeyPair::generate().context("generating a CA key")?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    // kubeadm backdates its CAs by a few minutes for clock skew.
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 300)?;
    params.not_after = time::OffsetDateTime::from_unix_timestamp(now + CA_DAYS * 86_400)?;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&{
        let mut s = random_bytes(16)?;
        s[0] &= 0x7f;
        s[0] |= 0x01;
        s
    }));
    let cert = params
        .self_signed(&key)
        .with_context(|| format!("signing the {common_name} CA"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Generates a new bundle.
pub fn generate() -> Result<ClusterSecrets> {
    let (ca_crt, ca_key) = generate_ca("kubernetes")?;
    let (fp_crt, fp_key) = generate_ca("front-proxy-ca")?;
    let (etcd_crt, etcd_key) = generate_ca("etcd-ca")?;
    let sa = rcgen::KeyPair::generate().context("generating the service-account key")?;
    let lower = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let token = format!("{}.{}", random_string(lower, 6)?, random_string(lower, 16)?);
    let alnum = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let ca_cert_hash = discovery_hash(&ca_crt)?;
    Ok(ClusterSecrets {
        ca: CaMaterial {
            ca_crt,
            ca_key: Secret::new(ca_key),
            front_proxy_ca_crt: fp_crt,
            front_proxy_ca_key: Secret::new(fp_key),
            etcd_ca_crt: etcd_crt,
            etcd_ca_key: Secret::new(etcd_key),
            sa_key: Secret::new(sa.serialize_pem()),
            sa_pub: sa.public_key_pem(),
        },
        bootstrap_token: Secret::new(token),
        certificate_key: Secret::new(hex::encode(random_bytes(32)?)),
        vrrp_password: Secret::new(random_string(alnum, 8)?),
        ca_cert_hash,
    })
}

/// kubeadm's discovery hash of a CA certificate (PEM):
/// `sha256:<hex of SHA-256 over the DER SubjectPublicKeyInfo>`.
pub fn discovery_hash(ca_pem: &str) -> Result<String> {
    let pem = pem::parse(ca_pem).context("parsing the CA certificate PEM")?;
    ensure!(
        pem.tag() == "CERTIFICATE",
        "expected a CERTIFICATE PEM block, found {}",
        pem.tag()
    );
    let spki = subject_public_key_info(pem.contents())?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(spki))))
}

/// One DER TLV: (tag, header + content bytes, content bytes).
fn der_tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    ensure!(b.len() >= 2, "truncated DER");
    let tag = b[0];
    let (len, hdr) = match b[1] {
        l if l < 0x80 => (usize::from(l), 2),
        l => {
            let n = usize::from(l & 0x7f);
            ensure!((1..=4).contains(&n) && b.len() >= 2 + n, "bad DER length");
            let len = b[2..2 + n]
                .iter()
                .fold(0usize, |a, &x| (a << 8) | usize::from(x));
            (len, 2 + n)
        }
    };
    ensure!(b.len() >= hdr + len, "truncated DER");
    Ok((tag, &b[..hdr + len], &b[hdr..hdr + len]))
}

/// The DER `SubjectPublicKeyInfo` (with its header) of an X.509
/// certificate: Certificate → tbsCertificate → [version], serial,
/// signature, issuer, validity, subject, **subjectPublicKeyInfo**.
pub fn subject_public_key_info(cert_der: &[u8]) -> Result<&[u8]> {
    let (tag, _, cert) = der_tlv(cert_der)?;
    ensure!(tag == 0x30, "certificate is not a DER SEQUENCE");
    let (tag, _, mut tbs) = der_tlv(cert)?;
    ensure!(tag == 0x30, "tbsCertificate is not a SEQUENCE");
    if tbs.first() == Some(&0xa0) {
        let (_, whole, _) = der_tlv(tbs)?;
        tbs = &tbs[whole.len()..];
    }
    for _ in 0..5 {
        let (_, whole, _) = der_tlv(tbs)?;
        tbs = &tbs[whole.len()..];
    }
    let (tag, whole, _) = der_tlv(tbs)?;
    ensure!(tag == 0x30, "subjectPublicKeyInfo is not a SEQUENCE");
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        assert!(!is_bootstrap_token("ABCDEF.0123456789abcdef"));
        assert!(!is_bootstrap_token("abcdef0123456789abcdef"));
        let s = generate().unwrap();
        assert!(is_bootstrap_token(s.bootstrap_token.expose()));
        assert_eq!(s.certificate_key.expose().len(), 64);
        assert_eq!(s.vrrp_password.expose().len(), 8);
    }

    #[test]
    fn hash_is_over_the_key_of_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(
                rcgen::PublicKeyData::subject_public_key_info(&key)
            ))
        );
        assert_eq!(discovery_hash(&cert.pem()).unwrap(), want);
    }

    #[test]
    fn secrets_never_print() {
        let s = generate().unwrap();
        let dbg = format!("{:?} {:?}", s.bootstrap_token, s.ca.ca_key);
        assert!(!dbg.contains(s.bootstrap_token.expose()));
        assert!(!dbg.contains("PRIVATE"));
    }
}
