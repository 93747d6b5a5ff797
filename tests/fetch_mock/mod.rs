//! Loopback test servers for the fetch and bundle tests, on Rust threads:
//! a scripted HTTP server (full, cut and stalled replies, `Range`) and a
//! mock Docker Registry v2 (manifests, indexes, blobs, optional bearer
//! auth with a token endpoint that checks the scope).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The `bytes=N-` start of a Range header.
    pub fn range_start(&self) -> Option<usize> {
        self.header("Range")?
            .strip_prefix("bytes=")?
            .strip_suffix('-')?
            .parse()
            .ok()
    }
}

/// What the server does with a request.
pub enum Reply {
    /// A whole response.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Announces the whole body, sends `send` bytes, closes the connection.
    Cut { body: Vec<u8>, send: usize },
    /// Sends headers, then nothing for `secs` seconds.
    Stall { secs: u64 },
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: vec![],
            body: format!("status {status}\n").into_bytes(),
        }
    }
    pub fn json(status: u16, media: &str, body: Vec<u8>) -> Reply {
        Reply::Full {
            status,
            headers: vec![("Content-Type".into(), media.into())],
            body,
        }
    }
}

/// A file with `Range` support.
pub fn file_reply(req: &Request, body: &[u8]) -> Reply {
    match req.range_start() {
        Some(n) if n < body.len() => Reply::Full {
            status: 206,
            headers: vec![(
                "Content-Range".into(),
                format!("bytes {n}-{}/{}", body.len() - 1, body.len()),
            )],
            body: body[n..].to_vec(),
        },
        Some(_) => Reply::status(416),
        None => Reply::Full {
            status: 200,
            headers: vec![],
            body: body.to_vec(),
        },
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A server on 127.0.0.1; stopped (and joined) on drop.
pub struct MockServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Request>>>,
    thread: Option<JoinHandle<()>>,
}

impl MockServer {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> MockServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, l) = (stop.clone(), log.clone());
        let thread = std::thread::spawn(move || {
            // Bounded: every test finishes well within 10 minutes.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !s.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (h, l, s) = (handler.clone(), l.clone(), s.clone());
                        std::thread::spawn(move || serve(stream, &*h, &l, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        MockServer {
            port,
            stop,
            log,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>, stop: &AtomicBool) {
    stream.set_nonblocking(false).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    // Keep-alive: several requests per connection, bounded.
    for _ in 0..1000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        for _ in 0..200 {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let req = Request {
            method,
            path,
            headers,
        };
        log.lock().unwrap().push(req.clone());
        let mut w = stream.try_clone().unwrap();
        match handler(&req) {
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if w.write_all(head.as_bytes()).is_err() {
                    return;
                }
                if req.method != "HEAD" && w.write_all(&body).is_err() {
                    return;
                }
            }
            Reply::Cut { body, send } => {
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                let _ = w.write_all(head.as_bytes());
                let _ = w.write_all(&body[..send.min(body.len())]);
                let _ = w.flush();
                let _ = w.shutdown(std::net::Shutdown::Both);
                return;
            }
            Reply::Stall { secs } => {
                let _ = w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                }
                return;
            }
        }
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn digest(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A single-platform image: config, one layer, docker v2 manifest.
pub struct TestImage {
    pub arch: String,
    pub config: Vec<u8>,
    pub layer: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl TestImage {
    pub fn new(arch: &str, file_content: &[u8]) -> TestImage {
        let mut layer = Vec::new();
        {
            let mut b = tar::Builder::new(&mut layer);
            let mut h = tar::Header::new_ustar();
            h.set_path("hello.txt").unwrap();
            h.set_size(file_content.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, file_content).unwrap();
            b.finish().unwrap();
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": ["/hello"]},
            "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar", "digest": digest(&layer), "size": layer.len()}],
        }))
        .unwrap();
        TestImage {
            arch: arch.into(),
            config,
            layer,
            manifest,
        }
    }
}

/// An OCI index over images.
pub fn index_of(images: &[&TestImage]) -> Vec<u8> {
    let manifests: Vec<_> = images
        .iter()
        .map(|i| {
            serde_json::json!({
                "mediaType": DOCKER_MANIFEST, "digest": digest(&i.manifest), "size": i.manifest.len(),
                "platform": {"architecture": i.arch, "os": "linux"},
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests,
    }))
    .unwrap()
}

/// The content of a mock registry: manifests by repository and tag or
/// digest, blobs by digest.
#[derive(Default, Clone)]
pub struct Registry {
    pub manifests: HashMap<(String, String), (String, Vec<u8>)>,
    pub blobs: HashMap<String, Vec<u8>>,
}

impl Registry {
    /// Adds an image under `repo:tag` (and by digest).
    pub fn add_image(&mut self, repo: &str, tag: &str, img: &TestImage) {
        self.add_platform(repo, img);
        self.manifests.insert(
            (repo.into(), tag.into()),
            (DOCKER_MANIFEST.into(), img.manifest.clone()),
        );
    }
    fn add_platform(&mut self, repo: &str, img: &TestImage) {
        self.blobs.insert(digest(&img.config), img.config.clone());
        self.blobs.insert(digest(&img.layer), img.layer.clone());
        self.manifests.insert(
            (repo.into(), digest(&img.manifest)),
            (DOCKER_MANIFEST.into(), img.manifest.clone()),
        );
    }
    /// Adds a multi-platform index under `repo:tag`; returns its digest.
    pub fn add_index(&mut self, repo: &str, tag: &str, images: &[&TestImage]) -> String {
        for i in images {
            self.add_platform(repo, i);
        }
        let idx = index_of(images);
        let d = digest(&idx);
        self.manifests
            .insert((repo.into(), tag.into()), (OCI_INDEX.into(), idx.clone()));
        self.manifests
            .insert((repo.into(), d.clone()), (OCI_INDEX.into(), idx));
        d
    }

    /// Answers a `/v2/...` request.
    pub fn reply(&self, req: &Request) -> Reply {
        let path = req.path.split('?').next().unwrap_or("");
        let Some(rest) = path.strip_prefix("/v2/") else {
            return Reply::status(404);
        };
        if rest.is_empty() {
            return Reply::json(200, "application/json", b"{}".to_vec());
        }
        if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
            return match self
                .manifests
                .get(&(repo.to_string(), reference.to_string()))
            {
                Some((media, body)) => Reply::Full {
                    status: 200,
                    headers: vec![
                        ("Content-Type".into(), media.clone()),
                        ("Docker-Content-Digest".into(), digest(body)),
                    ],
                    body: body.clone(),
                },
                None => Reply::status(404),
            };
        }
        if let Some((_, d)) = rest.rsplit_once("/blobs/") {
            return match self.blobs.get(d) {
                Some(b) => file_reply(req, b),
                None => Reply::status(404),
            };
        }
        Reply::status(404)
    }
}

/// The registry behind bearer auth: `/token?service=mock&scope=...`
/// hands out `tok-<scope>`; `/v2/` needs `Authorization: Bearer
/// tok-repository:<repo>:pull` for that repository.
pub fn bearer_reply(reg: &Registry, req: &Request) -> Reply {
    let host = req.header("Host").unwrap_or("127.0.0.1").to_string();
    if let Some(q) = req.path.strip_prefix("/token?") {
        let params: HashMap<&str, &str> =
            q.split('&').filter_map(|kv| kv.split_once('=')).collect();
        let scope = params
            .get("scope")
            .map(|s| s.replace("%3A", ":").replace("%2F", "/"));
        if params.get("service") != Some(&"mock") || scope.is_none() {
            return Reply::status(400);
        }
        let body =
            serde_json::to_vec(&serde_json::json!({"token": format!("tok-{}", scope.unwrap())}))
                .unwrap();
        return Reply::json(200, "application/json", body);
    }
    let repo = req
        .path
        .strip_prefix("/v2/")
        .and_then(|r| r.split("/manifests/").next())
        .and_then(|r| r.split("/blobs/").next())
        .unwrap_or("");
    let want = format!("Bearer tok-repository:{repo}:pull");
    if req.header("Authorization") != Some(want.as_str()) {
        return Reply::Full {
            status: 401,
            headers: vec![(
                "WWW-Authenticate".into(),
                format!("Bearer realm=\"http://{host}/token\",service=\"mock\",scope=\"repository:{repo}:pull\""),
            )],
            body: b"{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}".to_vec(),
        };
    }
    reg.reply(req)
}
