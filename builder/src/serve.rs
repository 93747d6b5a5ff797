//! `nodebake serve`: a small HTTP server for network boots, in the spirit of
//! Matchbox. DHCP and TFTP stay with dnsmasq (see README); this serves:
//!
//! - `GET /boot.ipxe`: chains to `/ipxe?mac=${mac:hexhyp}`;
//! - `GET /ipxe?mac=aa-bb-cc-dd-ee-ff`: that machine's iPXE script (kernel,
//!   initramfs, the image's command line plus
//!   `ds=nocloud-net;s=<base>/nodes/<mac>/`), for an unknown MAC a script
//!   that prints why and exits to the next boot device;
//! - `GET /image/vmlinuz`, `/image/initramfs.cpio.gz`: from `--image`, with
//!   `Range` support (sent with `sendfile` by `std::io::copy`);
//! - `GET /nodes/<mac>/{meta-data,user-data,network-config,vendor-data}`.
//!
//! Connections are served by hyper on a tokio runtime: hundreds of slow or
//! idle clients cost a task each, not a thread, so they cannot delay a
//! genuine request. Each connection has a deadline for its request head
//! (`HEAD_TIMEOUT`: a client dribbling its header a byte at a time is cut
//! off), a write idle timeout, an overall lifetime, and holds one of
//! `--max-connections` permits (beyond that: 503 at once). One request per
//! connection. Every request is logged to stderr once its body is sent
//! (peer, request line, status, bytes, milliseconds) with whatever the
//! client sent escaped (`escape_default`: no forged lines, no terminal
//! escapes); paths carry no secrets, bodies are never logged.
//! `nodes.json` is re-read per request, so a re-run of `cluster init` is
//! served at once.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::Semaphore;

use crate::cluster::inventory::canonical_mac;
use crate::cluster::NodeIndex;

/// Files the image directory may serve.
const IMAGE_FILES: &[&str] = &["vmlinuz", "initramfs.cpio.gz"];
/// Documents served per node.
const NODE_DOCS: &[&str] = &["meta-data", "user-data", "network-config", "vendor-data"];
/// The whole request head must arrive within this.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes nothing of a response for this long is dropped.
const WRITE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// No connection lives longer (a 1 GiB initramfs at 1 MiB/s fits).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30 * 60);

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
    /// Runtime worker threads.
    pub threads: usize,
    /// Connections served at once; more are answered 503.
    pub max_connections: usize,
    /// JSON lines instead of text: the listening address on stdout,
    /// requests, notes and warnings on stderr.
    pub json: bool,
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

/// A warning when the image was baked for another Kubernetes version than
/// the cluster's node metadata asks for (kubeadm would then look for
/// images that are not baked, or refuse the skew).
fn version_warning(image: &std::path::Path, cluster: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(image.join("manifest.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let baked = v["image"]["kubernetes_version"]
        .as_str()?
        .trim_start_matches('v');
    let name = v["image"]["name"].as_str().unwrap_or("?");
    let index = NodeIndex::load(cluster).ok()?;
    let mut other: Vec<String> = Vec::new();
    for n in &index.nodes {
        let p = cluster.join("nodes").join(&n.name).join("user-data");
        let Ok(t) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(s) = nodebake_contract::node::parse_user_data(&t) else {
            continue;
        };
        let wanted = s.kubernetes_version.trim_start_matches('v').to_string();
        if wanted != baked {
            other.push(format!("{} ({wanted})", n.name));
        }
    }
    (!other.is_empty()).then(|| {
        format!(
            "the image {name} was baked with Kubernetes {baked}, the metadata of {} asks for another \
             version (kubeadm will look for images that are not baked, or refuse the skew)",
            other.join(", ")
        )
    })
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
        if !(1..=1_000_000).contains(&opts.max_connections) {
            bail!("--max-connections must be 1-1000000");
        }
        NodeIndex::load(&opts.cluster_dir)?;
        let cmdline = match &opts.image_dir {
            Some(d) => {
                for f in IMAGE_FILES {
                    if !d.join(f).is_file() {
                        bail!("{} has no {f}: build the image first", d.display());
                    }
                }
                if let Some(w) = version_warning(d, &opts.cluster_dir) {
                    warn(opts.json, &w);
                }
                image_cmdline(d)?
            }
            None => {
                warn(
                    opts.json,
                    "no --image: kernel and initramfs requests answer 404",
                );
                String::new()
            }
        };
        let mut opts = opts;
        opts.max_connections = raise_fd_limit(opts.max_connections);
        let listener = TcpListener::bind(&opts.listen)
            .with_context(|| format!("listening on {}", opts.listen))?;
        listener.set_nonblocking(true)?;
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
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.state.opts.threads)
            .thread_name("serve")
            .enable_all()
            .build()
            .context("starting the serve runtime")?;
        if self.state.opts.json {
            println!(
                "{}",
                serde_json::json!({ "event": "listening", "url": format!("http://{addr}") })
            );
        } else {
            println!("nodebake serve: listening on http://{addr}");
        }
        std::io::stdout().flush()?;
        rt.block_on(accept_loop(self.listener, self.state))
    }
}

/// Raises the soft open-files limit so `want` connections fit (plus some
/// for files being served); returns how many fit under the hard limit.
fn raise_fd_limit(want: usize) -> usize {
    const SPARE: u64 = 64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return want;
    }
    // Each connection may hold its socket and an open image file.
    let need = (want as u64).saturating_mul(2).saturating_add(SPARE);
    if lim.rlim_cur < need {
        let target = need.min(lim.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: target,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = target;
        }
    }
    let fits = (lim.rlim_cur.saturating_sub(SPARE) / 2).max(1) as usize;
    if fits < want {
        eprintln!(
            "nodebake serve: the open-files limit ({}) fits {fits} connections, not {want}: \
             serving at most {fits} at once (raise `ulimit -n`)",
            lim.rlim_cur
        );
        return fits;
    }
    want
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let permits = Arc::new(Semaphore::new(state.opts.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                eprintln!("nodebake serve: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            eprintln!(
                "nodebake serve: {peer}: busy: {} connections open, answering 503",
                state.opts.max_connections
            );
            tokio::spawn(async move {
                // Answer, close our side, and drain what the client sent
                // (closing with unread data would reset the connection
                // before the client reads the 503). Bounded: 2 s, 64 KiB.
                let mut stream = stream;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    stream
                        .write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n",
                        )
                        .await?;
                    stream.shutdown().await?;
                    let mut buf = [0u8; 4096];
                    for _ in 0..16 {
                        if stream.read(&mut buf).await? == 0 {
                            break;
                        }
                    }
                    Ok::<_, std::io::Error>(())
                })
                .await;
            });
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            // A client that connects and sends nothing holds a permit for
            // at most HEAD_TIMEOUT (hyper's head timer may only start with
            // the first byte).
            let mut first = [0u8; 1];
            match tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) | Ok(Err(_)) => return,
                Err(_) => {
                    eprintln!("{peer} connection: nothing sent within {HEAD_TIMEOUT:?}, closed");
                    return;
                }
            }
            let local = stream.local_addr().ok();
            let mut io = tokio_io_timeout::TimeoutStream::new(stream);
            io.set_write_timeout(Some(WRITE_IDLE_TIMEOUT));
            let io = TokioIo::new(Box::pin(io));
            let service = service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, std::convert::Infallible>(respond(req, state, peer, local).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .title_case_headers(true)
                .header_read_timeout(HEAD_TIMEOUT)
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(io, service);
            match tokio::time::timeout(CONNECTION_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("{peer} connection: {}", shown(&e.to_string())),
                Err(_) => {
                    eprintln!("{peer} connection: open longer than {CONNECTION_LIFETIME:?}, closed")
                }
            }
        });
    }
}

/// What a client sent, as the log may show it.
fn shown(s: &str) -> String {
    s.escape_default().to_string()
}

type Body = BoxBody<Bytes, std::io::Error>;

/// A response body that logs the request once it is sent (or dropped).
struct Logged {
    inner: Body,
    peer: SocketAddr,
    /// Method and target; `None` for a response that could not be built.
    request: Option<(String, String)>,
    json: bool,
    status: u16,
    sent: u64,
    started: Instant,
}

impl HttpBody for Logged {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.sent += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let ms = self.started.elapsed().as_millis();
        if self.json {
            let (method, target) = self.request.clone().unzip();
            eprintln!(
                "{}",
                serde_json::json!({
                    "event": "request", "peer": self.peer.to_string(), "method": method,
                    "target": target, "status": self.status, "bytes": self.sent, "ms": ms,
                })
            );
            return;
        }
        let line = match &self.request {
            Some((m, t)) => format!("{} \"{} {}\"", self.peer, shown(m), shown(t)),
            None => format!("{} (unbuildable response)", self.peer),
        };
        eprintln!("{line} {} {} {ms}ms", self.status, self.sent);
    }
}

/// A warning at start, on stderr.
fn warn(json: bool, w: &str) {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({ "event": "warning", "warning": w })
        );
    } else {
        eprintln!("nodebake serve: warning: {w}");
    }
}

/// A note about one request (why it failed), on stderr.
fn log_note(json: bool, peer: SocketAddr, note: &str) {
    if json {
        eprintln!(
            "{}",
            serde_json::json!({ "event": "note", "peer": peer.to_string(), "note": note })
        );
    } else {
        eprintln!("nodebake serve: {peer}: {}", shown(note));
    }
}

async fn respond(
    req: hyper::Request<hyper::body::Incoming>,
    state: Arc<State>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
) -> hyper::Response<Logged> {
    let started = Instant::now();
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let r = Request {
        method: req.method().as_str().to_string(),
        target: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.uri().to_string()),
        host: header(hyper::header::HOST),
        range: header(hyper::header::RANGE),
    };
    let request = Some((r.method.clone(), r.target.clone()));
    let json = state.opts.json;
    let head_only = r.method == "HEAD";
    // Routing reads nodes.json and opens files: blocking work, off the
    // runtime's threads.
    let routed = tokio::task::spawn_blocking(move || {
        let out = route(&r, &state, local);
        (out, r)
    })
    .await;
    let (resp, note) = match routed {
        Ok(((resp, note), _)) => (resp, note),
        Err(e) => (
            Response::text(500, "internal error\n"),
            Some(format!("routing: {e}")),
        ),
    };
    if let Some(n) = &note {
        log_note(json, peer, n);
    }
    let status = resp.status;
    let (len, body): (u64, Body) = match resp.body {
        BodyKind::Text(t) => (
            t.len() as u64,
            Full::new(Bytes::from(t)).map_err(|n| match n {}).boxed(),
        ),
        BodyKind::File { file, start, len } => (len, file_body(file, start, len)),
    };
    let body = if head_only {
        Full::new(Bytes::new()).map_err(|n| match n {}).boxed()
    } else {
        body
    };
    let mut b = hyper::Response::builder()
        .status(status)
        .header("Server", "nodebake")
        .header("Content-Type", resp.content_type)
        .header("Content-Length", len)
        .header("Connection", "close");
    for (k, v) in &resp.extra {
        b = b.header(*k, v);
    }
    let logged = Logged {
        inner: body,
        peer,
        request,
        json,
        status,
        sent: 0,
        started,
    };
    b.body(logged).unwrap_or_else(|e| {
        log_note(json, peer, &format!("building the response: {e}"));
        hyper::Response::new(Logged {
            inner: Full::new(Bytes::new()).map_err(|n| match n {}).boxed(),
            peer,
            request: None,
            json,
            status: 500,
            sent: 0,
            started,
        })
    })
}

/// `len` bytes of `file` from `start`, read in 256 KiB chunks.
fn file_body(file: File, start: u64, len: u64) -> Body {
    let stream = futures_util::stream::once(async move {
        let mut f = file;
        f.seek(SeekFrom::Start(start))?;
        Ok::<_, std::io::Error>(tokio::fs::File::from_std(f))
    })
    .map(move |f| match f {
        Ok(f) => tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 * 1024).left_stream(),
        Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
    })
    .flatten()
    .map(|chunk| chunk.map(Frame::data));
    BodyExt::boxed(StreamBody::new(stream))
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    host: Option<String>,
    range: Option<String>,
}

/// A response body.
enum BodyKind {
    Text(String),
    File { file: File, start: u64, len: u64 },
}

struct Response {
    status: u16,
    content_type: &'static str,
    extra: Vec<(&'static str, String)>,
    body: BodyKind,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            extra: Vec::new(),
            body: BodyKind::Text(body.into()),
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
/// The iPXE script for a MAC that is not in the inventory: the reason on
/// the console for 30 s, then `exit 1` (the firmware's next boot device).
pub fn unknown_mac_script(mac: &str, cluster: &str) -> String {
    format!(
        "#!ipxe\n\
         echo nodebake: this machine (MAC {mac}) is not in the inventory of cluster {cluster}.\n\
         echo nodebake: add it to the inventory, run nodebake cluster init, then boot it again.\n\
         echo nodebake: trying the next boot device in 30 s.\n\
         sleep 30\n\
         exit 1\n"
    )
}

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
pub fn node_script(base: &str, cmdline: &str, n: &crate::cluster::NodeIndexEntry) -> String {
    let (name, role, ip, mac) = (&n.name, &n.role, &n.ip, &n.mac);
    let hyp = hexhyp(mac);
    let mut cmdline = if cmdline.is_empty() {
        String::new()
    } else {
        format!("{cmdline} ")
    };
    if let Some(d) = &n.state_disk {
        cmdline += &format!("{}={d} ", nodebake_contract::state_disk::CMDLINE_PARAM);
    }
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
                    Response::text(400, format!("{} is not a MAC address\n", shown(raw))),
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
                    Response::text(200, node_script(&base, &state.cmdline, n)),
                    None,
                ),
                // A machine not in the inventory: a script that says why
                // on its console, then lets the firmware try the next
                // boot device (a 404 shows only an iPXE error code).
                Err((resp, log)) if resp.status == 404 => (
                    Response::text(
                        200,
                        unknown_mac_script(
                            &canonical_mac(&raw).map(|m| hexhyp(&m)).unwrap_or_default(),
                            &index.cluster,
                        ),
                    ),
                    log,
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
/// bytes: `Ok(None)` to send the whole file. As RFC 9110 (section 14)
/// has it, a header that is not a valid single byte range (another unit,
/// several ranges, no digits, a last position before the first) is
/// ignored; a valid one no byte satisfies (starting at or past the end, a
/// suffix of 0 bytes) is [`Unsatisfiable`].
pub fn parse_range(h: &str, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let number = |s: &str| s.parse::<u64>().ok();
    if a.is_empty() {
        // A suffix: the last n bytes.
        let Some(n) = digits(b).then(|| number(b)).flatten() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(Unsatisfiable);
        }
        return Ok(Some((size.saturating_sub(n), n.min(size))));
    }
    let Some(start) = digits(a).then(|| number(a)).flatten() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        None
    } else {
        match digits(b).then(|| number(b)).flatten() {
            Some(e) if e >= start => Some(e),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(Unsatisfiable);
    }
    let end = end.unwrap_or(u64::MAX).min(size - 1);
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
            r.extra.push(("Content-Range", format!("bytes */{size}")));
            return (r, None);
        }
    };
    let (status, start, len) = match range {
        Some((s, l)) => (206, s, l),
        None => (200, 0, size),
    };
    let mut extra = vec![("Accept-Ranges", "bytes".to_string())];
    if status == 206 {
        extra.push((
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        ));
    }
    (
        Response {
            status,
            content_type: "application/octet-stream",
            extra,
            body: BodyKind::File { file, start, len },
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
        // Invalid ranges are ignored (the whole file), not 416.
        for bad in [
            "bytes=5-2",
            "bytes=abc",
            "bytes=a-b",
            "bytes=-",
            "bytes=1-x",
            "bytes=+1-2",
        ] {
            assert_eq!(parse_range(bad, 100), Ok(None), "{bad}");
        }
        assert_eq!(parse_range("bytes=-0", 100), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=-500", 100), Ok(Some((0, 100))));
        assert_eq!(parse_range("bytes=0-", 0), Err(Unsatisfiable));
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
