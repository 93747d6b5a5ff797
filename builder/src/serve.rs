//! `nodebake serve`: a small HTTP server for network boots, in the spirit of
//! Matchbox. DHCP and TFTP stay with dnsmasq (see README); this serves:
//!
//! - `GET /boot.ipxe`: chains to `/ipxe?mac=${mac:hexhyp}`;
//! - `GET /ipxe?mac=aa-bb-cc-dd-ee-ff`: that machine's iPXE script (kernel,
//!   initramfs, the image's command line plus
//!   `ds=nocloud-net;s=<base>/nodes/<mac>/`), 404 for an unknown MAC;
//! - `GET /image/vmlinuz`, `/image/initramfs.cpio.gz`: from `--image`, with
//!   `Range` support (sent with `sendfile` by `std::io::copy`);
//! - `GET /nodes/<mac>/{meta-data,user-data,network-config,vendor-data}`.
//!
//! One accept thread hands connections to a fixed pool of workers through a
//! bounded queue (a full queue answers 503); every socket has read and
//! write timeouts; one request per connection. Every request is logged to
//! stderr (peer, request line, status, bytes, milliseconds); paths carry no
//! secrets, bodies are never logged. `nodes.json` is re-read per request,
//! so a re-run of `cluster init` is served at once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::inventory::canonical_mac;
use crate::cluster::NodeIndex;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Files the image directory may serve.
const IMAGE_FILES: &[&str] = &["vmlinuz", "initramfs.cpio.gz"];
/// Documents served per node.
const NODE_DOCS: &[&str] = &["meta-data", "user-data", "network-config", "vendor-data"];

/// Options of `nodebake serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Cluster directory (`cluster init --out`).
    pub cluster_dir: PathBuf,
    /// Built image output directory.
    pub image_dir: Option<PathBuf>,
    /// `ADDR:PORT` to listen on (port 0 picks one).
    pub listen: String,
    /// Base URL machines use to reach this server.
    pub advertise: Option<String>,
    /// Worker threads.
    pub threads: usize,
}

/// Shared, read-only server state.
struct State {
    opts: ServeOptions,
    /// The image's kernel command line (manifest.json `kernel.cmdline`).
    cmdline: String,
}

/// A bound server; [`Server::run`] serves until the process ends.
pub struct Server {
    listener: TcpListener,
    state: Arc<State>,
}

fn image_cmdline(dir: &std::path::Path) -> Result<String> {
    let p = dir.join("manifest.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    Ok(v["kernel"]["cmdline"].as_str().unwrap_or("").to_string())
}

impl Server {
    /// Checks the directories and binds the listening socket.
    pub fn new(opts: ServeOptions) -> Result<Self> {
        if !(1..=1024).contains(&opts.threads) {
            bail!("--threads must be 1-1024");
        }
        NodeIndex::load(&opts.cluster_dir)?;
        let cmdline = match &opts.image_dir {
            Some(d) => {
                for f in IMAGE_FILES {
                    if !d.join(f).is_file() {
                        bail!("{} has no {f}: build the image first", d.display());
                    }
                }
                image_cmdline(d)?
            }
            None => {
                eprintln!("nodebake serve: no --image: kernel and initramfs requests answer 404");
                String::new()
            }
        };
        let listener = TcpListener::bind(&opts.listen)
            .with_context(|| format!("listening on {}", opts.listen))?;
        Ok(Self {
            listener,
            state: Arc::new(State { opts, cmdline }),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Prints `listening on http://ADDR` on stdout and serves forever.
    pub fn run(self) -> Result<()> {
        let addr = self.local_addr()?;
        println!("nodebake serve: listening on http://{addr}");
        std::io::stdout().flush()?;
        let threads = self.state.opts.threads;
        let (tx, rx) = sync_channel::<TcpStream>(threads * 4);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let state = Arc::clone(&self.state);
            std::thread::Builder::new()
                .name(format!("serve-{i}"))
                .spawn(move || worker(&rx, &state))?;
        }
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("nodebake serve: accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            match tx.try_send(stream) {
                Ok(()) => {}
                Err(TrySendError::Full(mut s)) => {
                    eprintln!(
                        "nodebake serve: busy: every worker and queue slot is taken, answering 503"
                    );
                    let _ = s.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
                    );
                }
                Err(TrySendError::Disconnected(_)) => bail!("every worker thread ended"),
            }
        }
        Ok(())
    }
}

fn worker(rx: &Mutex<Receiver<TcpStream>>, state: &State) {
    loop {
        let next = rx.lock().map(|r| r.recv());
        let Ok(Ok(stream)) = next else { return };
        handle(stream, state);
    }
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    host: Option<String>,
    range: Option<String>,
}

fn read_head(stream: &TcpStream) -> Result<Request> {
    let mut r = BufReader::new(stream.take(MAX_HEAD as u64));
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        bail!("bad request line");
    };
    let mut req = Request {
        method: method.to_string(),
        target: target.to_string(),
        host: None,
        range: None,
    };
    for _ in 0..100 {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            bail!("connection closed in the request head");
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Ok(req);
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "host" => req.host = Some(v.trim().to_string()),
                "range" => req.range = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    bail!("too many header lines")
}

/// A response body.
enum Body {
    Text(String),
    File { file: File, start: u64, len: u64 },
}

struct Response {
    status: u16,
    content_type: &'static str,
    extra: Vec<String>,
    body: Body,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            extra: Vec::new(),
            body: Body::Text(body.into()),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

fn handle(mut stream: TcpStream, state: &State) {
    let started = Instant::now();
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
    let req = match read_head(&stream) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{peer} bad request: {e}");
            let _ = send(&mut stream, Response::text(400, "bad request\n"), false);
            return;
        }
    };
    let local = stream.local_addr().ok();
    let (resp, note) = route(&req, state, local);
    if let Some(n) = &note {
        eprintln!("nodebake serve: {peer}: {n}");
    }
    let status = resp.status;
    let head_only = req.method == "HEAD";
    let sent = send(&mut stream, resp, head_only);
    let (bytes, err) = match sent {
        Ok(b) => (b, String::new()),
        Err(e) => (0, format!(" (send failed: {e})")),
    };
    eprintln!(
        "{peer} \"{} {}\" {status} {bytes} {}ms{err}",
        req.method,
        req.target,
        started.elapsed().as_millis()
    );
}

fn send(stream: &mut TcpStream, resp: Response, head_only: bool) -> std::io::Result<u64> {
    let len = match &resp.body {
        Body::Text(t) => t.len() as u64,
        Body::File { len, .. } => *len,
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nServer: nodebake\r\nContent-Type: {}\r\nContent-Length: {len}\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type
    );
    for h in &resp.extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if head_only {
        return Ok(0);
    }
    match resp.body {
        Body::Text(t) => {
            stream.write_all(t.as_bytes())?;
            Ok(len)
        }
        Body::File {
            mut file, start, ..
        } => {
            file.seek(SeekFrom::Start(start))?;
            let n = std::io::copy(&mut file.take(len), stream)?;
            if n != len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while being sent",
                ));
            }
            Ok(n)
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && s.is_char_boundary(i + 1) && s.is_char_boundary(i + 3)
        {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// `aa-bb-cc-dd-ee-ff`: the MAC as iPXE's `${mac:hexhyp}` writes it.
pub fn hexhyp(mac: &str) -> String {
    mac.replace(':', "-")
}

fn base_url(req: &Request, state: &State, local: Option<SocketAddr>) -> String {
    if let Some(a) = &state.opts.advertise {
        return a.trim_end_matches('/').to_string();
    }
    match (&req.host, local) {
        (Some(h), _) => format!("http://{h}"),
        (None, Some(l)) => format!("http://{l}"),
        (None, None) => "http://127.0.0.1".into(),
    }
}

/// The iPXE script for one node.
pub fn node_script(
    base: &str,
    cmdline: &str,
    name: &str,
    role: &str,
    ip: &str,
    mac: &str,
) -> String {
    let hyp = hexhyp(mac);
    let cmdline = if cmdline.is_empty() {
        String::new()
    } else {
        format!("{cmdline} ")
    };
    format!(
        "#!ipxe\n# nodebake: {name} ({role}, {ip}, {mac})\nkernel {base}/image/vmlinuz initrd=initramfs.cpio.gz {cmdline}ds=nocloud-net;s={base}/nodes/{hyp}/\ninitrd {base}/image/initramfs.cpio.gz\nboot\n"
    )
}

fn route(req: &Request, state: &State, local: Option<SocketAddr>) -> (Response, Option<String>) {
    if req.method != "GET" && req.method != "HEAD" {
        return (Response::text(405, "only GET and HEAD\n"), None);
    }
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let base = base_url(req, state, local);
    let index = match NodeIndex::load(&state.opts.cluster_dir) {
        Ok(i) => i,
        Err(e) => {
            return (
                Response::text(500, "no node index\n"),
                Some(format!("{e:#}")),
            )
        }
    };
    let lookup =
        |raw: &str| -> Result<&crate::cluster::NodeIndexEntry, (Response, Option<String>)> {
            let Some(mac) = canonical_mac(raw) else {
                return Err((
                    Response::text(400, format!("`{raw}` is not a MAC address\n")),
                    Some(format!("bad MAC `{raw}`")),
                ));
            };
            index.nodes.iter().find(|n| n.mac == mac).ok_or_else(|| {
                (
                    Response::text(404, format!("unknown MAC {}\n", hexhyp(&mac))),
                    Some(format!(
                        "unknown MAC {}: not in {}",
                        hexhyp(&mac),
                        state.opts.cluster_dir.join("nodes.json").display()
                    )),
                )
            })
        };
    match path {
        "/boot.ipxe" => (
            Response::text(
                200,
                format!("#!ipxe\nchain {base}/ipxe?mac=${{mac:hexhyp}}\n"),
            ),
            None,
        ),
        "/ipxe" => {
            let Some(raw) = query_param(query, "mac") else {
                return (Response::text(400, "missing ?mac=\n"), None);
            };
            match lookup(&raw) {
                Ok(n) => (
                    Response::text(
                        200,
                        node_script(&base, &state.cmdline, &n.name, &n.role, &n.ip, &n.mac),
                    ),
                    None,
                ),
                Err(r) => r,
            }
        }
        _ => {
            if let Some(rest) = path.strip_prefix("/nodes/") {
                let (raw, doc) = rest.split_once('/').unwrap_or((rest, ""));
                let n = match lookup(raw) {
                    Ok(n) => n,
                    Err(r) => return r,
                };
                if !NODE_DOCS.contains(&doc) {
                    return (Response::text(404, "not found\n"), None);
                }
                if doc == "vendor-data" {
                    return (Response::text(200, ""), None);
                }
                let p = state.opts.cluster_dir.join("nodes").join(&n.name).join(doc);
                return match std::fs::read_to_string(&p) {
                    Ok(t) => (Response::text(200, t), None),
                    Err(e) => (
                        Response::text(404, "not found\n"),
                        Some(format!("{}: {e}", p.display())),
                    ),
                };
            }
            if let Some(f) = path.strip_prefix("/image/") {
                return image_file(req, state, f);
            }
            (Response::text(404, "not found\n"), None)
        }
    }
}

/// A `Range` header no byte of the file satisfies (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// `(start, len)` of a `Range: bytes=...` header over a file of `size`
/// bytes: `Ok(None)` to send the whole file (no header, or several ranges).
pub fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let e: u64 = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            b.parse::<u64>()
                .map_err(|_| Unsatisfiable)?
                .min(size.saturating_sub(1))
        };
        (s, e)
    };
    if size == 0 || start >= size || end < start {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end - start + 1)))
}

fn image_file(req: &Request, state: &State, name: &str) -> (Response, Option<String>) {
    let Some(dir) = &state.opts.image_dir else {
        return (
            Response::text(404, "no image configured\n"),
            Some("no --image: cannot serve the kernel or initramfs".into()),
        );
    };
    if !IMAGE_FILES.contains(&name) {
        return (Response::text(404, "not found\n"), None);
    }
    let p = dir.join(name);
    let file = match File::open(&p) {
        Ok(f) => f,
        Err(e) => {
            return (
                Response::text(404, "not found\n"),
                Some(format!("{}: {e}", p.display())),
            )
        }
    };
    let size = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return (Response::text(500, "stat failed\n"), Some(e.to_string())),
    };
    let range = match req.range.as_deref().map(|h| parse_range(h, size)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(Unsatisfiable)) => {
            let mut r = Response::text(416, "range not satisfiable\n");
            r.extra.push(format!("Content-Range: bytes */{size}"));
            return (r, None);
        }
    };
    let (status, start, len) = match range {
        Some((s, l)) => (206, s, l),
        None => (200, 0, size),
    };
    let mut extra = vec!["Accept-Ranges: bytes".to_string()];
    if status == 206 {
        extra.push(format!(
            "Content-Range: bytes {start}-{}/{size}",
            start + len - 1
        ));
    }
    (
        Response {
            status,
            content_type: "application/octet-stream",
            extra,
            body: Body::File { file, start, len },
        },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 10))));
        assert_eq!(parse_range("bytes=-5", 100), Ok(Some((95, 5))));
        assert_eq!(parse_range("bytes=50-500", 100), Ok(Some((50, 50))));
        assert_eq!(parse_range("bytes=100-", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
    }

    #[test]
    fn queries() {
        assert_eq!(
            query_param("a=1&mac=aa%3Abb", "mac").as_deref(),
            Some("aa:bb")
        );
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
