//! Container images from OCI registries (Docker Registry HTTP API v2), by
//! hand over HTTP: anonymous or bearer-token auth (`WWW-Authenticate:
//! Bearer realm=...,service=...,scope=...` → token endpoint), manifest
//! lists and OCI indexes resolved to one platform, config and layers
//! downloaded resumably into the store and verified by digest, and the
//! image written as a deterministic OCI image layout archive (what
//! `ctr -n k8s.io images import` reads, named by the
//! `io.containerd.image.name` annotation).

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::fetch::{Download, FetchProgress, HttpConfig, HttpError};
use crate::hashio::{sha256_hex, HashingWriter};
use crate::store::InputStore;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index accepted (bytes).
const MAX_MANIFEST: u64 = 4 << 20;

/// The OCI architecture name of a spec architecture.
pub fn oci_arch(spec_arch: &str) -> Result<&'static str> {
    Ok(match crate::arch::Arch::from_name(spec_arch)? {
        crate::arch::Arch::X86_64 => "amd64",
        crate::arch::Arch::Aarch64 => "arm64",
        other => bail!("architecture `{}` has no image platform here", other.name()),
    })
}

/// A parsed image reference `[host[:port]/]path[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as written.
    pub text: String,
    /// Registry host as written (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/busybox`, `google_containers/pause`).
    pub repository: String,
    /// Tag (`latest` when none is written).
    pub tag: String,
}

impl ImageRef {
    /// Parses a reference. Digests are given separately (`digest`), so a
    /// reference with `@` is refused.
    pub fn parse(text: &str) -> Result<ImageRef> {
        if text.contains('@') {
            bail!("`{text}`: give the digest in the `digest` field, not after `@`");
        }
        if text.is_empty() || text.contains(char::is_whitespace) || text.contains("://") {
            bail!("`{text}` is not an image reference");
        }
        let (first, rest) = match text.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" => {
                (f.to_string(), r.to_string())
            }
            _ => ("docker.io".to_string(), text.to_string()),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p.to_string(), t.to_string()),
            _ => (rest.clone(), "latest".to_string()),
        };
        let path = if first == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        };
        if !path.split('/').all(component_ok) {
            bail!("`{text}`: repository `{path}` must be lowercase [a-z0-9._-] components");
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !tag_ok {
            bail!("`{text}`: tag `{tag}` is not valid");
        }
        Ok(ImageRef {
            text: text.to_string(),
            registry: first,
            repository: path,
            tag,
        })
    }

    /// Base URL of the registry API (`https://host/v2`); plain HTTP for
    /// loopback hosts and those in `$NODEBAKE_INSECURE_REGISTRIES`
    /// (comma-separated).
    pub fn api_base(&self) -> String {
        let host = if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            self.registry.as_str()
        };
        let hostname = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
        let insecure_env = std::env::var("NODEBAKE_INSECURE_REGISTRIES").unwrap_or_default();
        let insecure = matches!(hostname, "localhost" | "127.0.0.1" | "[::1]")
            || hostname.starts_with("127.")
            || insecure_env
                .split(',')
                .any(|h| !h.is_empty() && h.trim() == self.registry);
        let scheme = if insecure { "http" } else { "https" };
        format!("{scheme}://{host}/v2")
    }
}

/// A registry client: one HTTP agent and the bearer tokens obtained so far
/// (by scope).
pub struct RegistryClient {
    http: HttpConfig,
    tokens: Mutex<HashMap<String, String>>,
}

/// What a pull produced.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// Digest the reference resolved to (index or manifest), `sha256:...`.
    pub digest: String,
    /// Digest of the platform's image manifest in the archive.
    pub manifest_digest: String,
    /// Hex sha256 of the archive (a store object).
    pub archive_sha256: String,
    /// Archive size in bytes.
    pub size: u64,
}

/// A `WWW-Authenticate: Bearer ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerChallenge {
    /// Token endpoint.
    pub realm: String,
    /// `service` parameter, if any.
    pub service: Option<String>,
    /// `scope` parameter, if any.
    pub scope: Option<String>,
}

/// Parses a `WWW-Authenticate` header value; `None` unless it is Bearer.
pub fn parse_bearer_challenge(h: &str) -> Option<BearerChallenge> {
    let rest = h.trim().strip_prefix("Bearer ").or_else(|| {
        h.trim()
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("bearer "))
            .map(|_| &h.trim()[7..])
    })?;
    let mut params: HashMap<String, String> = HashMap::new();
    let mut s = rest.trim();
    for _ in 0..32 {
        if s.is_empty() {
            break;
        }
        let (key, after) = s.split_once('=')?;
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (q[..end].to_string(), &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key, value);
        s = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(BearerChallenge {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

impl RegistryClient {
    /// A client with these HTTP settings.
    pub fn new(http: HttpConfig) -> RegistryClient {
        RegistryClient {
            http,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn scope(r: &ImageRef) -> String {
        format!("repository:{}:pull", r.repository)
    }

    /// GET with the cached token for the repository; on a 401 with a
    /// Bearer challenge, fetch a token and try once more.
    fn get(
        &self,
        r: &ImageRef,
        url: &str,
        headers: &[(&str, String)],
    ) -> Result<ureq::Response, HttpError> {
        let scope = Self::scope(r);
        let send = |token: Option<&String>| {
            let mut req = self.http.agent.get(url);
            for (k, v) in headers {
                req = req.set(k, v);
            }
            if let Some(t) = token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            req.call().map_err(HttpError::from)
        };
        let cached = self.tokens.lock().unwrap().get(&scope).cloned();
        match send(cached.as_ref()) {
            Err(HttpError::Status(401, _, Some(challenge))) => {
                let Some(ch) = parse_bearer_challenge(&challenge) else {
                    return Err(HttpError::Status(
                        401,
                        format!("Unauthorized (challenge `{challenge}`; only anonymous and bearer-token pulls are supported)"),
                        None,
                    ));
                };
                let token = self
                    .token(&ch, &scope)
                    .map_err(|e| HttpError::Transport(format!("{e:#}")))?;
                self.tokens
                    .lock()
                    .unwrap()
                    .insert(scope.clone(), token.clone());
                send(Some(&token))
            }
            other => other,
        }
    }

    /// Asks the token endpoint for a pull token.
    fn token(&self, ch: &BearerChallenge, scope: &str) -> Result<String> {
        let mut req = self.http.agent.get(&ch.realm);
        if let Some(s) = &ch.service {
            req = req.query("service", s);
        }
        req = req.query("scope", ch.scope.as_deref().unwrap_or(scope));
        let resp = req.call().map_err(|e| match e {
            ureq::Error::Status(code, r) => {
                anyhow!(
                    "token endpoint {}: HTTP status {code} {}",
                    ch.realm,
                    r.status_text()
                )
            }
            e => anyhow!("token endpoint {}: {e}", ch.realm),
        })?;
        let body: Value = serde_json::from_reader(resp.into_reader().take(1 << 20))
            .with_context(|| format!("token endpoint {}: not JSON", ch.realm))?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| anyhow!("token endpoint {}: no `token` in the answer", ch.realm))
    }

    /// Fetches a manifest or index by tag or digest; checks the digest
    /// when one is asked for. Returns (digest, media type, bytes).
    fn manifest(&self, r: &ImageRef, tag_or_digest: &str) -> Result<(String, String, Vec<u8>)> {
        let url = format!(
            "{}/{}/manifests/{tag_or_digest}",
            r.api_base(),
            r.repository
        );
        let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let mut last = None;
        for attempt in 0..self.http.tries {
            if attempt > 0 {
                std::thread::sleep(self.http.backoff(attempt));
            }
            match self.get(r, &url, &[("Accept", accept.clone())]) {
                Ok(resp) => {
                    let media = resp
                        .header("Content-Type")
                        .unwrap_or("")
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    let mut body = Vec::new();
                    if let Err(e) = resp
                        .into_reader()
                        .take(MAX_MANIFEST + 1)
                        .read_to_end(&mut body)
                    {
                        last = Some(anyhow!("GET {url}: reading body: {e}"));
                        continue;
                    }
                    if body.len() as u64 > MAX_MANIFEST {
                        bail!("GET {url}: manifest larger than {MAX_MANIFEST} bytes");
                    }
                    let digest = format!("sha256:{}", sha256_hex(&body));
                    if tag_or_digest.starts_with("sha256:") && digest != tag_or_digest {
                        bail!("GET {url}: digest mismatch: asked for {tag_or_digest}, content is {digest}");
                    }
                    let media = if media.is_empty() || media == "application/json" {
                        serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v.get("mediaType")?.as_str().map(str::to_string))
                            .unwrap_or(media)
                    } else {
                        media
                    };
                    return Ok((digest, media, body));
                }
                Err(HttpError::Status(code, text, _)) => {
                    let e = anyhow!("GET {url}: HTTP status {code} {text}");
                    if !crate::fetch::retryable_status(code) {
                        return Err(e);
                    }
                    last = Some(e);
                }
                Err(e) => last = Some(anyhow!("GET {url}: {e}")),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("GET {url}: no attempt"))
            .context(format!("after {} tries", self.http.tries)))
    }

    /// Resolves `reference` (pinned to `digest` when given) for `arch`,
    /// downloads config and layers into the store and writes the archive
    /// into the store.
    pub fn pull(
        &self,
        store: &InputStore,
        progress: &FetchProgress,
        reference: &str,
        digest: Option<&str>,
        arch: &str,
    ) -> Result<PulledImage> {
        let r = ImageRef::parse(reference)?;
        let (top, media, body) = self.manifest(&r, digest.unwrap_or(&r.tag))?;
        let (manifest_digest, manifest_media, manifest) = if is_index(&media, &body) {
            let idx: Value = serde_json::from_slice(&body)
                .with_context(|| format!("{reference}: index {top} is not JSON"))?;
            let want = pick_platform(&idx, arch).with_context(|| format!("{reference} ({top})"))?;
            let (d, m, b) = self.manifest(&r, &want)?;
            if is_index(&m, &b) {
                bail!("{reference}: {want} is an index inside an index");
            }
            (d, m, b)
        } else {
            (top.clone(), media, body)
        };
        if manifest_media != OCI_MANIFEST && manifest_media != DOCKER_MANIFEST {
            bail!("{reference}: manifest {manifest_digest} has media type `{manifest_media}` (schema 1 and others are not supported)");
        }
        let m: Value = serde_json::from_slice(&manifest)
            .with_context(|| format!("{reference}: manifest {manifest_digest} is not JSON"))?;
        let mut blobs = Vec::new();
        let config = m
            .get("config")
            .ok_or_else(|| anyhow!("{reference}: manifest has no config"))?;
        blobs.push(descriptor(config)?);
        for l in m
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("{reference}: manifest has no layers"))?
        {
            blobs.push(descriptor(l)?);
        }
        for (hex, size) in &blobs {
            let url = format!("{}/{}/blobs/sha256:{hex}", r.api_base(), r.repository);
            let what = format!("{reference}: blob sha256:{hex}");
            let opener = |offset: u64| {
                let mut h = Vec::new();
                if offset > 0 {
                    h.push(("Range", format!("bytes={offset}-")));
                }
                self.get(&r, &url, &h)
            };
            crate::fetch::download_to_store(
                store,
                &self.http,
                progress,
                &Download {
                    what: &what,
                    url: &url,
                    expected: Some(hex),
                    size_hint: Some(*size),
                    open: &opener,
                },
            )?;
        }
        let (archive_sha256, size) = write_oci_archive(
            store,
            reference,
            &r.tag,
            &manifest_digest,
            &manifest_media,
            &manifest,
            &blobs,
            arch,
        )?;
        Ok(PulledImage {
            digest: top,
            manifest_digest,
            archive_sha256,
            size,
        })
    }
}

fn is_index(media: &str, body: &[u8]) -> bool {
    if media == OCI_INDEX || media == DOCKER_LIST {
        return true;
    }
    // An OCI index served without a media type still has `manifests`.
    media.is_empty()
        && serde_json::from_slice::<Value>(body)
            .map(|v| v.get("manifests").is_some())
            .unwrap_or(false)
}

/// The digest of the `linux/<arch>` entry of an index.
pub fn pick_platform(index: &Value, arch: &str) -> Result<String> {
    let list = index
        .get("manifests")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("index has no `manifests`"))?;
    let mut seen = Vec::new();
    for m in list {
        let p = m.get("platform");
        let os = p
            .and_then(|p| p.get("os"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let a = p
            .and_then(|p| p.get("architecture"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let variant = p.and_then(|p| p.get("variant")).and_then(Value::as_str);
        seen.push(format!(
            "{os}/{a}{}",
            variant.map(|v| format!("/{v}")).unwrap_or_default()
        ));
        let variant_ok = arch != "arm64" || matches!(variant, None | Some("v8"));
        if os == "linux" && a == arch && variant_ok {
            let d = m
                .get("digest")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("index entry for linux/{arch} has no digest"))?;
            crate::spec::check_digest(d)?;
            return Ok(d.to_string());
        }
    }
    bail!(
        "no linux/{arch} image in the index (it has: {})",
        seen.join(", ")
    )
}

fn descriptor(v: &Value) -> Result<(String, u64)> {
    let d = v
        .get("digest")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("descriptor without digest"))?;
    crate::spec::check_digest(d)?;
    let size = v.get("size").and_then(Value::as_u64).unwrap_or(0);
    Ok((d["sha256:".len()..].to_ascii_lowercase(), size))
}

/// Fixed header for every archive member: mode 0644 (0755 for
/// directories), owner 0:0, mtime 0, no user or group names.
fn header(path: &str, size: u64, dir: bool) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h.set_cksum();
    Ok(h)
}

/// Writes the OCI image layout archive of one image into the store and
/// returns its hex sha256 and size. The bytes depend only on the reference,
/// the manifest and the blobs.
#[allow(clippy::too_many_arguments)]
fn write_oci_archive(
    store: &InputStore,
    reference: &str,
    tag: &str,
    manifest_digest: &str,
    manifest_media: &str,
    manifest: &[u8],
    blobs: &[(String, u64)],
    arch: &str,
) -> Result<(String, u64)> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": manifest_media,
            "digest": manifest_digest,
            "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let index = serde_json::to_vec(&index)?;
    let tmp = tempfile::NamedTempFile::new_in(store.root().join("tmp"))?;
    let w = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, tmp.as_file()));
    let mut ar = tar::Builder::new(w);
    let small: [(&str, &[u8]); 2] = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
    ];
    for (name, bytes) in small {
        ar.append(&header(name, bytes.len() as u64, false)?, bytes)?;
    }
    ar.append(&header("blobs/", 0, true)?, io::empty())?;
    ar.append(&header("blobs/sha256/", 0, true)?, io::empty())?;
    // Blobs in digest order, each once (config and layer may coincide).
    let mut entries: Vec<(String, Option<&[u8]>)> =
        blobs.iter().map(|(h, _)| (h.clone(), None)).collect();
    entries.push((
        manifest_digest["sha256:".len()..].to_string(),
        Some(manifest),
    ));
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    for (hex, bytes) in entries {
        let path = format!("blobs/sha256/{hex}");
        match bytes {
            Some(b) => ar.append(&header(&path, b.len() as u64, false)?, b)?,
            None => {
                let f = store.open_object(&hex)?;
                let len = f.metadata()?.len();
                let mut hr =
                    crate::hashio::HashingReader::new(BufReader::with_capacity(1 << 20, f));
                ar.append(&header(&path, len, false)?, &mut hr)?;
                let (d, _) = hr.finish()?;
                if d != hex {
                    bail!("store object {hex} is corrupt (content hashes to {d}); delete it and fetch again");
                }
            }
        }
    }
    let w = ar.into_inner()?;
    let (mut bw, hex, size) = w.finish();
    bw.flush()?;
    drop(bw);
    tmp.as_file().sync_all()?;
    if !store.has(&hex) {
        tmp.persist(store.object_path(&hex))
            .map_err(|e| anyhow!("storing the archive: {}", e.error))?;
    }
    Ok((hex, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let r = ImageRef::parse("registry.k8s.io/pause:3.10").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry.k8s.io", "pause", "3.10")
        );
        let r = ImageRef::parse("127.0.0.1:5000/google_containers/etcd:3.5.15-0").unwrap();
        assert_eq!(r.repository, "google_containers/etcd");
        assert_eq!(r.api_base(), "http://127.0.0.1:5000/v2");
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_str()),
            ("library/busybox", "latest")
        );
        assert_eq!(r.api_base(), "https://registry-1.docker.io/v2");
        let r = ImageRef::parse("localhost:5000/a/b").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_str()),
            ("localhost:5000", "latest")
        );
        assert!(ImageRef::parse("x/y@sha256:abc").is_err());
        assert!(ImageRef::parse("Upper/case:1").is_err());
        assert!(ImageRef::parse("a:b c").is_err());
        assert!(ImageRef::parse("https://x/y:1").is_err());
    }

    #[test]
    fn bearer_challenges_parse() {
        let c = parse_bearer_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service.as_deref(), Some("registry.docker.io"));
        assert_eq!(c.scope.as_deref(), Some("repository:library/busybox:pull"));
        let c = parse_bearer_challenge(r#"Bearer realm="http://h/t""#).unwrap();
        assert_eq!((c.service, c.scope), (None, None));
        assert!(parse_bearer_challenge(r#"Basic realm="x""#).is_none());
    }

    #[test]
    fn platform_is_picked() {
        let idx = json!({"manifests": [
            {"digest": format!("sha256:{}", "a".repeat(64)), "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"digest": format!("sha256:{}", "b".repeat(64)), "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": format!("sha256:{}", "c".repeat(64)), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ]});
        assert!(pick_platform(&idx, "amd64")
            .unwrap()
            .ends_with(&"b".repeat(64)));
        assert!(pick_platform(&idx, "arm64")
            .unwrap()
            .ends_with(&"c".repeat(64)));
        let e = pick_platform(&idx, "s390x").unwrap_err().to_string();
        assert!(e.contains("linux/arm/v7"), "{e}");
    }
}
