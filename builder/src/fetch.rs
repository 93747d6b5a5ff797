//! `nodebake fetch`: every URL and registry input of a spec into the
//! content-addressed store, in parallel (bounded threads), verified by
//! sha256, with retries and backoff, resumable (HTTP `Range` into a partial
//! file under `store/tmp`, verified when complete), and `--pin` writing the
//! digests into the lock file. Also the one resumable downloader the build
//! and the registry client use.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::hashio::{sha256_file, sha256_hex};
use crate::registry::RegistryClient;
use crate::spec::{LoadedSpec, LockFile, LockedInput, Source};
use crate::store::InputStore;

/// HTTP settings shared by every request of a run.
#[derive(Clone)]
pub struct HttpConfig {
    /// The agent (connection pool, timeouts).
    pub agent: ureq::Agent,
    /// Attempts per download (at least 1).
    pub tries: u32,
    /// First backoff; doubled after each failed attempt.
    pub backoff_base: Duration,
}

impl HttpConfig {
    /// Connect timeout 15 s, `read_timeout` between reads (a stalled
    /// server fails after it), `tries` attempts.
    pub fn new(read_timeout: Duration, tries: u32) -> HttpConfig {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(read_timeout)
            .timeout_write(Duration::from_secs(30))
            .user_agent(concat!("nodebake/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpConfig {
            agent,
            tries: tries.max(1),
            backoff_base: Duration::from_millis(500),
        }
    }

    /// Delay before attempt `attempt` (1-based retries): 0.5 s, 1 s, 2 s, ...
    /// capped at 8 s.
    pub fn backoff(&self, attempt: u32) -> Duration {
        (self.backoff_base * (1 << (attempt.saturating_sub(1)).min(4))).min(Duration::from_secs(8))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig::new(Duration::from_secs(60), 4)
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum HttpError {
    /// The server answered with this status (text, `WWW-Authenticate`).
    Status(u16, String, Option<String>),
    /// No answer: connection refused or cut, timeout, TLS, ...
    Transport(String),
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::Status(c, t, _) => write!(f, "HTTP status {c} {t}"),
            HttpError::Transport(t) => write!(f, "{t}"),
        }
    }
}

impl From<ureq::Error> for HttpError {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Status(code, resp) => HttpError::Status(
                code,
                resp.status_text().to_string(),
                resp.header("WWW-Authenticate").map(str::to_string),
            ),
            ureq::Error::Transport(t) => HttpError::Transport(t.to_string()),
        }
    }
}

/// Whether a status is worth another try (server trouble, rate limits).
pub fn retryable_status(code: u16) -> bool {
    matches!(code, 408 | 425 | 429) || code >= 500
}

/// One download: `open(offset)` sends the request (with `Range: bytes=
/// offset-` when `offset > 0`).
pub struct Download<'a> {
    /// Names the input in errors.
    pub what: &'a str,
    /// The URL, for errors and the partial file's name.
    pub url: &'a str,
    /// Expected hex sha256, when pinned.
    pub expected: Option<&'a str>,
    /// Size, when known before the request (registry descriptors).
    pub size_hint: Option<u64>,
    /// Sends the request for the bytes from `offset` on.
    pub open: &'a (dyn Fn(u64) -> Result<ureq::Response, HttpError> + Sync),
}

/// Downloads a plain URL into the store (see [`download_to_store`]).
pub fn download_url(
    store: &InputStore,
    http: &HttpConfig,
    progress: &FetchProgress,
    what: &str,
    url: &str,
    expected: Option<&str>,
) -> Result<String> {
    let open = |offset: u64| {
        let mut req = http.agent.get(url);
        if offset > 0 {
            req = req.set("Range", &format!("bytes={offset}-"));
        }
        req.call().map_err(HttpError::from)
    };
    download_to_store(
        store,
        http,
        progress,
        &Download {
            what,
            url,
            expected,
            size_hint: None,
            open: &open,
        },
    )
}

enum Attempt {
    Retry(anyhow::Error),
    Fatal(anyhow::Error),
}

/// Makes sure the content is in the store and returns its hex sha256.
/// Bytes go to `store/tmp/<key>.part` (key: the expected digest, else the
/// URL's hash); an interrupted attempt resumes there with `Range`, the
/// whole file is hashed when complete, and only a verified file is renamed
/// to `sha256/<hex>`. A lock file serialises concurrent downloads of the
/// same content (threads or processes). Offline stores refuse.
pub fn download_to_store(
    store: &InputStore,
    http: &HttpConfig,
    progress: &FetchProgress,
    d: &Download,
) -> Result<String> {
    if let Some(e) = d.expected {
        if store.has(e) {
            return Ok(e.to_string());
        }
    }
    if store.offline {
        bail!(
            "{}: `{}` (sha256 {}) is not in the store {} and --offline forbids the network",
            d.what,
            d.url,
            d.expected.unwrap_or("unpinned"),
            store.root().display()
        );
    }
    let key = match d.expected {
        Some(e) => e.to_ascii_lowercase(),
        None => format!("url-{}", sha256_hex(d.url.as_bytes())),
    };
    let tmp = store.root().join("tmp");
    let lock = File::create(tmp.join(format!("{key}.lock")))?;
    // SAFETY: flock on a valid open descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error()).context("locking the partial download");
    }
    if let Some(e) = d.expected {
        if store.has(e) {
            return Ok(e.to_string());
        }
    }
    let part = tmp.join(format!("{key}.part"));
    if let Some(n) = d.size_hint {
        progress.add_total(n);
    }
    let mut last = None;
    for attempt in 0..http.tries {
        if attempt > 0 {
            std::thread::sleep(http.backoff(attempt));
        }
        match attempt_once(store, progress, d, &part, d.size_hint.is_none()) {
            Ok(hex) => return Ok(hex),
            Err(Attempt::Fatal(e)) => return Err(e.context(format!("{}: GET {}", d.what, d.url))),
            Err(Attempt::Retry(e)) => {
                progress.line(&format!(
                    "{}: attempt {} of {} failed: {e:#}",
                    d.what,
                    attempt + 1,
                    http.tries
                ));
                last = Some(e);
            }
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow!("no attempt made"))
        .context(format!(
            "{}: GET {} failed after {} tries",
            d.what, d.url, http.tries
        )))
}

fn attempt_once(
    store: &InputStore,
    progress: &FetchProgress,
    d: &Download,
    part: &Path,
    count_total: bool,
) -> Result<String, Attempt> {
    let fatal = |e: anyhow::Error| Attempt::Fatal(e);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(part)
        .map_err(|e| fatal(e.into()))?;
    let have = file.metadata().map_err(|e| fatal(e.into()))?.len();
    let resp = match (d.open)(have) {
        Ok(r) => r,
        Err(HttpError::Status(416, _, _)) if have > 0 => {
            // The partial file is longer than the content: start over.
            std::fs::remove_file(part).ok();
            return Err(Attempt::Retry(anyhow!(
                "HTTP status 416 for a resumed range; restarting"
            )));
        }
        Err(e @ HttpError::Status(code, ..)) if !retryable_status(code) => {
            return Err(fatal(anyhow!("{e}")));
        }
        Err(e) => return Err(Attempt::Retry(anyhow!("{e}"))),
    };
    let resumed = have > 0 && resp.status() == 206;
    let start = if resumed {
        let from = resp
            .header("Content-Range")
            .and_then(|v| v.strip_prefix("bytes "))
            .and_then(|v| v.split('-').next())
            .and_then(|v| v.parse::<u64>().ok());
        if from != Some(have) {
            std::fs::remove_file(part).ok();
            return Err(Attempt::Retry(anyhow!(
                "server resumed at {from:?}, not at byte {have}; restarting"
            )));
        }
        have
    } else {
        file.set_len(0).map_err(|e| fatal(e.into()))?;
        0
    };
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    if count_total {
        if let Some(l) = length {
            progress.add_total(l + start);
        }
    }
    if start > 0 {
        progress.inc(start);
    }
    let mut reader = resp.into_reader();
    let mut w = io::BufWriter::with_capacity(1 << 20, &mut file);
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                w.flush().ok();
                return Err(Attempt::Retry(anyhow!(
                    "reading body after {} bytes: {e}",
                    start + got
                )));
            }
        };
        w.write_all(&buf[..n]).map_err(|e| fatal(e.into()))?;
        got += n as u64;
        progress.inc(n as u64);
    }
    w.flush().map_err(|e| fatal(e.into()))?;
    drop(w);
    if let Some(len) = length {
        if got != len {
            return Err(Attempt::Retry(anyhow!(
                "truncated body: got {got} of {len} bytes (kept for resuming)"
            )));
        }
    }
    file.sync_all().map_err(|e| fatal(e.into()))?;
    file.rewind().map_err(|e| fatal(e.into()))?;
    let (hex, _) = sha256_file(part).map_err(|e| fatal(e.into()))?;
    if let Some(e) = d.expected {
        if !e.eq_ignore_ascii_case(&hex) {
            std::fs::remove_file(part).ok();
            return Err(fatal(anyhow!(
                "digest mismatch: expected sha256 {e}, got {hex}"
            )));
        }
    }
    std::fs::rename(part, store.object_path(&hex)).map_err(|e| fatal(e.into()))?;
    crate::atomic::sync_dir(&store.root().join("sha256")).map_err(fatal)?;
    Ok(hex)
}

/// The overall progress of a run: one bar (total bytes grow as sizes
/// become known) on a terminal, plain lines otherwise.
#[derive(Clone)]
pub struct FetchProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl FetchProgress {
    /// A bar when stderr is a terminal and not `quiet`.
    pub fn new(quiet: bool, jobs: usize) -> FetchProgress {
        let bar = (!quiet && io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "[{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b.set_message(format!("0/{jobs} inputs"));
            b
        });
        FetchProgress { bar, quiet }
    }

    /// No output at all.
    pub fn hidden() -> FetchProgress {
        FetchProgress {
            bar: None,
            quiet: true,
        }
    }

    fn add_total(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc_length(n);
        }
    }

    fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    fn message(&self, m: String) {
        if let Some(b) = &self.bar {
            b.set_message(m);
        }
    }

    /// A line above the bar (or on stderr).
    pub fn line(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(format!("nodebake: {msg}")),
            None => eprintln!("nodebake: {msg}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// What `nodebake fetch` was asked to do.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The spec.
    pub spec: PathBuf,
    /// Lock file [default: SPEC.lock].
    pub lock: Option<PathBuf>,
    /// Store root.
    pub store: PathBuf,
    /// Write every digest into the lock file.
    pub pin: bool,
    /// Parallel downloads (1..=16).
    pub jobs: usize,
    /// Read timeout of every request.
    pub read_timeout: Duration,
    /// Attempts per download.
    pub tries: u32,
    /// No progress output.
    pub quiet: bool,
}

/// One fetched input.
#[derive(Debug, Clone, Serialize)]
pub struct FetchedInput {
    /// Input name.
    pub name: String,
    /// URL, reference or path.
    pub source: String,
    /// Hex sha256 of the content (registry images: of the archive).
    pub sha256: String,
    /// Registry images: the digest the reference resolved to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Size in bytes.
    pub size: u64,
}

/// The result of a fetch.
#[derive(Debug, Clone, Serialize)]
pub struct FetchReport {
    /// Every input that is now in the store (or local).
    pub inputs: Vec<FetchedInput>,
    /// The lock file written by `--pin`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_written: Option<PathBuf>,
    /// Wall time.
    pub seconds: f64,
}

enum Job {
    Url {
        url: String,
    },
    Registry {
        reference: String,
        digest: Option<String>,
    },
    Local {
        path: PathBuf,
    },
}

/// The lock file a spec uses: `--lock FILE`, else `SPEC.lock`.
pub fn lock_path(spec: &Path, lock: Option<&Path>) -> PathBuf {
    lock.map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{}.lock", spec.display())))
}

/// Runs `nodebake fetch`.
pub fn fetch(opts: &FetchOptions) -> Result<FetchReport> {
    let start = std::time::Instant::now();
    let loaded = LoadedSpec::load_with(&opts.spec, opts.lock.as_deref(), true)?;
    let store = InputStore::open(&opts.store, false)?;
    let arch = crate::registry::oci_arch(&loaded.spec.arch)?;

    let mut unpinned = Vec::new();
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    for (i, inp) in loaded.inputs.iter().enumerate() {
        let job = match &inp.source {
            Source::Url(u) => Job::Url { url: u.clone() },
            Source::Registry { reference, digest } => Job::Registry {
                reference: reference.clone(),
                digest: digest.clone(),
            },
            Source::Path(p) if p.is_file() => Job::Local { path: p.clone() },
            Source::Path(_) => continue,
        };
        if inp.sha256.is_none() && !matches!(job, Job::Local { .. }) {
            unpinned.push(format!("`{}` ({})", inp.name, inp.source_text));
        }
        jobs.push((i, job));
    }
    if !unpinned.is_empty() && !opts.pin {
        bail!(
            "unpinned inputs: {} — refusing to download what nothing pins; run `nodebake fetch --pin` to record their digests in {}",
            unpinned.join(", "),
            lock_path(&opts.spec, opts.lock.as_deref()).display()
        );
    }

    let http = HttpConfig::new(opts.read_timeout, opts.tries);
    let registry = RegistryClient::new(http.clone());
    let progress = FetchProgress::new(opts.quiet, jobs.len());
    let total = jobs.len();
    let queue = Arc::new(Mutex::new(jobs.into_iter().collect::<VecDeque<_>>()));
    let results: Mutex<BTreeMap<usize, Result<FetchedInput>>> = Mutex::new(BTreeMap::new());
    let threads = opts.jobs.clamp(1, 16).min(total.max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().pop_front();
                let Some((i, job)) = next else { break };
                let inp = &loaded.inputs[i];
                let what = format!("`{}`", inp.name);
                let r = run_job(&store, &http, &registry, &progress, arch, inp, &what, job);
                let mut done = results.lock().unwrap();
                match &r {
                    Ok(f) => progress.line(&format!(
                        "fetched {} ({} bytes, sha256 {})",
                        inp.name, f.size, f.sha256
                    )),
                    Err(e) => progress.line(&format!("FAILED {}: {e:#}", inp.name)),
                }
                done.insert(i, r);
                progress.message(format!("{}/{total} inputs", done.len()));
            });
        }
    });
    progress.finish();

    let mut inputs = Vec::new();
    let mut errors = Vec::new();
    for (_, r) in results.into_inner().unwrap() {
        match r {
            Ok(f) => inputs.push(f),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} of {total} inputs failed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    let lock_written = if opts.pin {
        let path = lock_path(&opts.spec, opts.lock.as_deref());
        write_lock(&path, &loaded, &inputs)?;
        Some(path)
    } else {
        None
    };
    Ok(FetchReport {
        inputs,
        lock_written,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn run_job(
    store: &InputStore,
    http: &HttpConfig,
    registry: &RegistryClient,
    progress: &FetchProgress,
    arch: &str,
    inp: &crate::spec::InputRef,
    what: &str,
    job: Job,
) -> Result<FetchedInput> {
    let (sha, digest) = match job {
        Job::Url { url } => (
            download_url(store, http, progress, what, &url, inp.sha256.as_deref())?,
            None,
        ),
        Job::Registry { reference, digest } => {
            if let Some(s) = &inp.sha256 {
                if store.has(s) {
                    let size = std::fs::metadata(store.object_path(s))?.len();
                    return Ok(FetchedInput {
                        name: inp.name.clone(),
                        source: inp.source_text.clone(),
                        sha256: s.clone(),
                        digest,
                        size,
                    });
                }
            }
            let p = registry
                .pull(store, progress, &reference, digest.as_deref(), arch)
                .with_context(|| format!("{what}: pulling {reference}"))?;
            if let Some(s) = &inp.sha256 {
                if !s.eq_ignore_ascii_case(&p.archive_sha256) {
                    bail!(
                        "{what}: {reference} ({}) gives an archive with sha256 {}, the lock pins {s}",
                        p.digest,
                        p.archive_sha256
                    );
                }
            }
            (p.archive_sha256, Some(p.digest))
        }
        Job::Local { path } => {
            let (hex, _) =
                sha256_file(&path).with_context(|| format!("{what}: {}", path.display()))?;
            if let Some(s) = &inp.sha256 {
                if !s.eq_ignore_ascii_case(&hex) {
                    bail!("{what}: {} has sha256 {hex}, expected {s}", path.display());
                }
            }
            let size = std::fs::metadata(&path)?.len();
            return Ok(FetchedInput {
                name: inp.name.clone(),
                source: inp.source_text.clone(),
                sha256: hex,
                digest: None,
                size,
            });
        }
    };
    let size = std::fs::metadata(store.object_path(&sha))?.len();
    Ok(FetchedInput {
        name: inp.name.clone(),
        source: inp.source_text.clone(),
        sha256: sha,
        digest,
        size,
    })
}

/// Writes the lock (atomically): every URL and registry input, and every
/// local file outside the spec's repository.
fn write_lock(path: &Path, loaded: &LoadedSpec, fetched: &[FetchedInput]) -> Result<()> {
    let mut lock = LockFile {
        lock_version: 1,
        inputs: Vec::new(),
    };
    for f in fetched {
        let Some(inp) = loaded.inputs.iter().find(|i| i.name == f.name) else {
            continue;
        };
        let keep = match &inp.source {
            Source::Url(_) | Source::Registry { .. } => true,
            Source::Path(p) => match &loaded.repo_root {
                Some(root) => !std::fs::canonicalize(p)
                    .map(|c| c.starts_with(root))
                    .unwrap_or(false),
                None => true,
            },
        };
        if keep {
            lock.inputs.push(LockedInput {
                name: f.name.clone(),
                source: f.source.clone(),
                sha256: f.sha256.clone(),
                digest: f.digest.clone(),
            });
        }
    }
    let text = format!(
        "# Written by `nodebake fetch --pin` for {}.\n{}",
        loaded
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        toml::to_string(&lock)?
    );
    crate::atomic::write_file(path, text.as_bytes(), 0o644)
        .with_context(|| format!("writing lock file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let h = HttpConfig::default();
        assert_eq!(h.backoff(1), Duration::from_millis(500));
        assert_eq!(h.backoff(2), Duration::from_secs(1));
        assert_eq!(h.backoff(3), Duration::from_secs(2));
        assert_eq!(h.backoff(30), Duration::from_secs(8));
        assert!(retryable_status(503) && retryable_status(429) && !retryable_status(404));
    }
}
