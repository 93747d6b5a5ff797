//! `nodebake cluster kubeconfig DIR`: a kubeconfig for a person or a
//! program, signed by the cluster CA of `DIR/secrets/` — a fresh ECDSA
//! P-256 client key, a certificate with the user as CN and the group as O
//! (`system:masters` by default: cluster admin, as kubeadm's admin.conf;
//! one group: bind roles to it with RBAC),
//! the control-plane endpoint of the cluster's metadata as server, every
//! part embedded. Holds a private key: written 0600, never logged.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use base64::Engine;
use nodebake_contract::node::parse_user_data;

use super::NodeIndex;

/// What to put into the kubeconfig.
#[derive(Debug, Clone)]
pub struct KubeconfigRequest {
    /// Client certificate CN: the Kubernetes user name.
    pub user: String,
    /// Client certificate O: the user's group.
    pub group: String,
    /// Validity in days.
    pub days: u32,
    /// API server URL; default: `https://<VIP>:<port>` of the endpoint.
    pub server: Option<String>,
}

impl Default for KubeconfigRequest {
    fn default() -> Self {
        Self {
            user: "kubernetes-admin".into(),
            group: "system:masters".into(),
            days: 365,
            server: None,
        }
    }
}

/// The control-plane endpoint of the cluster in `dir` (from the first
/// node's user-data): `(dns name, VIP, port)`.
pub fn endpoint(dir: &Path) -> Result<(String, String, u16)> {
    let index = NodeIndex::load(dir)?;
    let first = index
        .nodes
        .first()
        .with_context(|| format!("{}: no nodes", dir.join("nodes.json").display()))?;
    let p = dir.join("nodes").join(&first.name).join("user-data");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let s = parse_user_data(&text).with_context(|| format!("{}", p.display()))?;
    let e = s.control_plane_endpoint;
    Ok((e.dns_name, e.vip, e.port))
}

/// A name fit for a certificate subject and a kubeconfig: printable, no
/// control characters, 1..=128 characters.
fn check_name(what: &str, v: &str) -> Result<()> {
    ensure!(
        !v.is_empty() && v.chars().count() <= 128 && !v.chars().any(char::is_control),
        "{what} {v:?}: 1 to 128 printable characters"
    );
    Ok(())
}

/// The kubeconfig (YAML) for `req`, signed by the cluster CA in `dir`.
pub fn render(dir: &Path, req: &KubeconfigRequest) -> Result<String> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
    };
    check_name("--user", &req.user)?;
    check_name("--group", &req.group)?;
    ensure!(
        (1..=3650).contains(&req.days),
        "--days {}: 1 to 3650",
        req.days
    );
    let (dns, vip, port) = endpoint(dir)?;
    let server = match &req.server {
        Some(s) => {
            ensure!(
                s.starts_with("https://") && !s.contains(char::is_whitespace),
                "--server {s:?}: an https:// URL"
            );
            s.clone()
        }
        None => format!("https://{vip}:{port}"),
    };
    let secrets = dir.join("secrets");
    let read = |name: &str| {
        let p = secrets.join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let ca_crt = read("ca.crt")?;
    let ca_key = KeyPair::from_pem(&read("ca.key")?)
        .with_context(|| format!("{}: not a private key", secrets.join("ca.key").display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_crt, &ca_key)
        .with_context(|| format!("{}: not a CA certificate", secrets.join("ca.crt").display()))?;

    let key = KeyPair::generate().context("generating the client key")?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, &req.user);
    params
        .distinguished_name
        .push(DnType::OrganizationName, req.group.as_str());
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    // Backdated a little for clock skew between here and the masters.
    params.not_before = time::OffsetDateTime::from_unix_timestamp(now - 300)?;
    params.not_after =
        time::OffsetDateTime::from_unix_timestamp(now + i64::from(req.days) * 86_400)?;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&{
        let mut s = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut s))
            .context("reading /dev/urandom")?;
        s[0] &= 0x7f;
        s[0] |= 0x01;
        s
    }));
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the client certificate")?;

    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let q = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let cluster = "nodebake";
    let context = format!("{}@{cluster}", req.user);
    Ok(format!(
        "# written by nodebake cluster kubeconfig (holds a private key: keep 0600)\n\
         # control-plane endpoint {dns}:{port} (VIP {vip})\n\
         apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {cl}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         users:\n\
         - name: {u}\n  user:\n    client-certificate-data: {crt}\n    client-key-data: {key}\n\
         contexts:\n\
         - name: {ctx}\n  context:\n    cluster: {cl}\n    user: {u}\n\
         current-context: {ctx}\n",
        cl = q(cluster),
        server = q(&server),
        ca = b64(&ca_crt),
        u = q(&req.user),
        crt = b64(&cert.pem()),
        key = b64(&key.serialize_pem()),
        ctx = q(&context),
    ))
}
