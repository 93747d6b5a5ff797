//! Real components for the crictl integration tests: a private containerd
//! (own root, state, socket and CNI dirs) with the CRI plugin, Debian's
//! `docker-registry` on a loopback port, small images made by
//! scripts/mkimage.py, and a bounded runner for the crictl binary. Every
//! server is killed by PID on drop, also when a test panics; every wait is
//! bounded.

#![allow(dead_code)]

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The sandbox image the private containerd is configured with.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.9";

/// Whether the tests run in CI, where a missing prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the test can run: root and every tool on PATH. Otherwise
/// prints why it is skipped, or panics in CI.
pub fn prerequisites(tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if !is_root() {
        missing.push("root".to_string());
    }
    missing.extend(tools.iter().filter(|t| !on_path(t)).map(|t| t.to_string()));
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!(
            "crictl integration test prerequisites missing in CI: {}",
            missing.join(", ")
        );
    }
    eprintln!("SKIPPED: missing prerequisites: {}", missing.join(", "));
    false
}

/// Whether this process runs as root.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether `tool` is on PATH.
fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A started server, killed by PID on drop.
pub struct ChildGuard {
    child: Child,
    name: &'static str,
}

impl ChildGuard {
    /// Whether the server is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!("stopped {} (pid {})", self.name, self.child.id());
    }
}

/// A private containerd with the CRI plugin.
pub struct Containerd {
    /// Unix socket of its gRPC API (CRI included).
    pub socket: PathBuf,
    log: PathBuf,
    process: ChildGuard,
}

impl Containerd {
    /// Starts containerd with its root, state, socket and CNI dirs in
    /// `dir`, and waits (bounded) for its socket to answer.
    pub fn start(dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        for sub in ["cni-conf", "cni-bin"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        std::fs::write(&config, containerd_config(dir, &socket)).unwrap();
        let log = dir.join("containerd.log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting containerd");
        let mut containerd = Self {
            socket,
            log,
            process: ChildGuard {
                child,
                name: "containerd",
            },
        };
        containerd.wait_ready();
        containerd
    }

    /// Waits up to 30 s for the socket to accept connections.
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                self.process.running(),
                "containerd exited:\n{}",
                self.log_text()
            );
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd's socket did not come up in 30s:\n{}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The endpoint URL of its socket.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Imports an image archive into the `k8s.io` namespace with ctr.
    pub fn import(&self, archive: &Path) {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(archive)
            .output()
            .expect("running ctr");
        assert!(
            out.status.success(),
            "ctr images import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Containerd {
    /// Stops and removes any pod sandbox a failed test left behind (so no
    /// shim outlives containerd); the process itself is then killed.
    fn drop(&mut self) {
        if self.process.running() {
            let endpoint = self.endpoint();
            let _ = crictl_with(&["-r", &endpoint, "-t", "5s", "rmp", "-a", "-f"], &[]);
        }
    }
}

/// The containerd config: everything private to `dir`, the CRI plugin on,
/// the sandbox image set and the CNI dirs empty.
fn containerd_config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = []

[grpc]
  address = "{s}"

[ttrpc]
  address = "{s}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"
  # Containers may not lower their OOM score below containerd's own here
  # (no CAP_SYS_RESOURCE in every test environment).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni-bin"
    conf_dir = "{d}/cni-conf"
"#
    )
}

/// Debian's docker-registry serving from `dir` on a free loopback port.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub address: String,
    _process: ChildGuard,
}

impl Registry {
    /// Starts the registry and waits (bounded) for `/v2/` to answer 200.
    pub fn start(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry-data").display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting docker-registry");
        let registry = Self {
            address: format!("127.0.0.1:{port}"),
            _process: ChildGuard {
                child,
                name: "docker-registry",
            },
        };
        let start = Instant::now();
        while http_status(port, "/v2/") != Some(200) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not come up in 20s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// Pushes a docker-archive as `path:tag` with skopeo.
    pub fn push(&self, archive: &Path, path_and_tag: &str) {
        let out = run_bounded(
            Command::new("skopeo")
                .args([
                    "copy",
                    "--quiet",
                    "--insecure-policy",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("docker-archive:{}", archive.display()))
                .arg(format!("docker://{}/{path_and_tag}", self.address)),
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "skopeo copy failed: {}", out.stderr);
    }
}

/// The HTTP status of `GET path` on the loopback port, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Makes a docker-archive image `reference` holding one small file.
pub fn small_image(dir: &Path, reference: &str) -> PathBuf {
    let name = reference.replace(['/', ':'], "_");
    let content = dir.join(format!("{name}.txt"));
    std::fs::write(&content, format!("hello from {reference}\n")).unwrap();
    let archive = dir.join(format!("{name}.tar"));
    mkimage(
        reference,
        &[format!("{}=/hello.txt", content.display())],
        None,
        &archive,
    );
    archive
}

/// Makes a docker-archive pause image `reference`: `/pause`, a shell
/// script that sleeps forever, with `/bin/sh`, `/bin/sleep` and the
/// libraries they load copied from this machine.
pub fn pause_image(dir: &Path, reference: &str) -> PathBuf {
    let script = dir.join("pause.sh");
    std::fs::write(&script, "#!/bin/sh\nexec /bin/sleep infinity\n").unwrap();
    let mut files = vec![format!("{}=/pause", script.display())];
    for binary in ["/bin/sh", "/bin/sleep"] {
        files.push(format!("{binary}={binary}"));
        files.extend(
            shared_libraries(binary)
                .into_iter()
                .map(|lib| format!("{lib}={lib}")),
        );
    }
    files.sort();
    files.dedup();
    let archive = dir.join("pause.tar");
    mkimage(reference, &files, Some("/pause"), &archive);
    archive
}

/// The absolute paths of the shared libraries `binary` loads (from ldd).
fn shared_libraries(binary: &str) -> Vec<String> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("running ldd");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// Runs scripts/mkimage.py.
fn mkimage(reference: &str, files: &[String], entrypoint: Option<&str>, out: &Path) {
    let mut command = Command::new("python3");
    command
        .arg(repo().join("scripts/mkimage.py"))
        .args([
            "--format",
            "docker-archive",
            "--reference",
            reference,
            "--out",
        ])
        .arg(out);
    for file in files {
        command.arg("--file").arg(file);
    }
    if let Some(entrypoint) = entrypoint {
        command.args(["--entrypoint", entrypoint]);
    }
    let result = run_bounded(&mut command, Duration::from_secs(60));
    assert!(
        result.status.success(),
        "mkimage.py failed: {}",
        result.stderr
    );
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Outcome {
    /// Exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs a command, killing it (and failing) if it outlives `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Outcome {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Reads a pipe to the end on a thread.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Runs the crictl under test with `args` and extra environment `env`
/// (crictl's own environment variables are cleared first).
pub fn crictl_with(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crictl"));
    command.args(args);
    for var in [
        "CONTAINER_RUNTIME_ENDPOINT",
        "IMAGE_SERVICE_ENDPOINT",
        "CRI_CONFIG_FILE",
        "CRICTL_CREDS",
        "CRICTL_AUTH",
    ] {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let outcome = run_bounded(&mut command, Duration::from_secs(120));
    eprintln!(
        "$ crictl {}\n  exit {}\n  stdout: {}\n  stderr: {}",
        args.join(" "),
        outcome.code(),
        outcome.stdout.trim_end().replace('\n', "\n          "),
        outcome.stderr.trim_end()
    );
    outcome
}

/// Runs `crictl -r SOCK -i SOCK ARGS...`, as kubeadm does.
pub fn crictl(containerd: &Containerd, args: &[&str]) -> Outcome {
    let endpoint = containerd.endpoint();
    let mut full = vec!["-r", endpoint.as_str(), "-i", endpoint.as_str()];
    full.extend_from_slice(args);
    crictl_with(&full, &[])
}
