//! `nodebake fetch` against a real registry on loopback: Debian's
//! `docker-registry` (distribution v2) started on a free port with its
//! storage in a temp dir, images made by scripts/mkimage.py and pushed with
//! `skopeo`, including a multi-arch OCI index built here and pushed with
//! `skopeo copy --all`. The spec lists no images: `kubernetes.images =
//! "auto"` resolves kubeadm's list for 1.31.1 plus flannel's, from the
//! loopback repository. The archives fetch writes are then imported into a
//! real containerd (own root, state and socket) and `ctr images ls` lists
//! every reference.

mod fetch_mock;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fetch_mock::{digest, sha256_hex, OCI_INDEX, OCI_MANIFEST};
use nodebake_suite::{bin, in_ci, repo, require_tools, run_ok, sha256_file, write_small_base};

/// Kills a started server by PID on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_root() -> bool {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc_getuid() } == 0 {
        return true;
    }
    if in_ci() {
        panic!("this test needs root in CI");
    }
    eprintln!("SKIPPED: needs root");
    false
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Status of `GET path` on 127.0.0.1:port, if anything answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Body of `GET path` with an Accept header.
fn http_get(port: u16, path: &str, accept: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    all[at + 4..].to_vec()
}

fn start_registry(dir: &Path) -> (ChildGuard, u16) {
    let port = free_port();
    let conf = dir.join("registry.yml");
    std::fs::write(
        &conf,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry-data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let start = Instant::now();
    while http_status(port, "/v2/") != Some(200) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "registry did not come up: {}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, port)
}

fn push_docker_archive(dir: &Path, port: u16, path_and_tag: &str) {
    let content = dir.join(format!("{}.txt", path_and_tag.replace(['/', ':'], "_")));
    std::fs::write(&content, format!("image {path_and_tag}\n")).unwrap();
    let archive = content.with_extension("tar");
    run_ok(
        Command::new("python3")
            .arg(repo().join("scripts/mkimage.py"))
            .args(["--format", "docker-archive", "--reference"])
            .arg(format!("example.local/{path_and_tag}"))
            .arg("--file")
            .arg(format!("{}=/hello.txt", content.display()))
            .arg("--out")
            .arg(&archive),
    );
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--insecure-policy",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("docker://127.0.0.1:{port}/{path_and_tag}")),
    );
}

fn layer_tar(content: &[u8]) -> Vec<u8> {
    let mut layer = Vec::new();
    let mut b = tar::Builder::new(&mut layer);
    let mut h = tar::Header::new_ustar();
    h.set_path("hello.txt").unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append(&h, content).unwrap();
    b.finish().unwrap();
    drop(b);
    layer
}

/// An OCI layout with a two-platform index tagged `1`.
fn write_multiarch_layout(dir: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        std::fs::write(blobs.join(sha256_hex(b)), b).unwrap();
        digest(b)
    };
    let mut entries = Vec::new();
    for arch in ["arm64", "amd64"] {
        let layer = layer_tar(format!("multi {arch}\n").as_bytes());
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]},
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(&layer), "size": layer.len()}],
        }))
        .unwrap();
        let d = put(&manifest);
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": manifest.len(),
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    }))
    .unwrap();
    let index_digest = put(&index);
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": OCI_INDEX, "digest": index_digest, "size": index.len(),
                "annotations": {"org.opencontainers.image.ref.name": "1"},
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

fn start_containerd(dir: &Path) -> (ChildGuard, PathBuf) {
    let sock = dir.join("containerd.sock");
    let conf = dir.join("containerd.toml");
    std::fs::write(
        &conf,
        format!(
            "version = 2\nroot = \"{0}/ctd-root\"\nstate = \"{0}/ctd-state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n",
            dir.display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let child = Command::new("containerd")
        .arg("--config")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    let start = Instant::now();
    loop {
        let ok = Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .arg("version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "containerd did not come up: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, sock)
}

fn lock_blocks(lock: &str) -> Vec<(String, String, String, Option<String>)> {
    let field = |b: &str, k: &str| {
        b.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = \"")))
            .map(|v| v.trim_end_matches('"').to_string())
    };
    lock.split("[[input]]")
        .skip(1)
        .map(|b| {
            (
                field(b, "name").unwrap(),
                field(b, "source").unwrap(),
                field(b, "sha256").unwrap(),
                field(b, "digest"),
            )
        })
        .collect()
}

#[test]
fn fetch_from_real_registry_and_import_into_containerd() {
    if !require_root()
        || !require_tools(&["docker-registry", "skopeo", "containerd", "ctr", "python3"])
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (_registry, port) = start_registry(t.path());

    let images = [
        "google_containers/kube-apiserver:v1.31.1",
        "google_containers/kube-controller-manager:v1.31.1",
        "google_containers/kube-scheduler:v1.31.1",
        "google_containers/kube-proxy:v1.31.1",
        "google_containers/pause:3.10",
        "google_containers/etcd:3.5.15-0",
        "google_containers/coredns:v1.11.3",
        "flannel/flannel:v0.25.6",
        "flannel/flannel-cni-plugin:v1.5.1-flannel2",
    ];
    for i in images {
        push_docker_archive(t.path(), port, i);
    }
    let layout = t.path().join("multi-layout");
    write_multiarch_layout(&layout);
    run_ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--all",
                "--insecure-policy",
                "--dest-tls-verify=false",
            ])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://127.0.0.1:{port}/multi/img:1")),
    );

    let base = t.path().join("base.tar.gz");
    write_small_base(&base);
    let spec = t.path().join("k8s.toml");
    std::fs::write(
        &spec,
        format!(
            r#"spec_version = 1
name = "k8s"
version = "1"
arch = "x86_64"
[base]
source = "base.tar.gz"
sha256 = "{}"
[kubernetes]
version = "1.31.1"
cni = "flannel"
images = "auto"
image_repository = "127.0.0.1:{port}/google_containers"
cni_image_repository = "127.0.0.1:{port}/flannel"
[outputs]
formats = ["rootfs"]

[[artifact]]
name = "multi"
kind = "image"
source = "registry"
reference = "127.0.0.1:{port}/multi/img:1"
"#,
            sha256_file(&base)
        ),
    )
    .unwrap();
    let store = t.path().join("store");
    let start = Instant::now();
    let out = run_ok(
        Command::new(bin("nodebake"))
            .arg("fetch")
            .arg(&spec)
            .arg("--pin")
            .args(["-j", "4", "--store"])
            .arg(&store),
    );
    eprintln!("fetch of 10 images: {:.2}s", start.elapsed().as_secs_f64());
    let lock = std::fs::read_to_string(t.path().join("k8s.toml.lock")).unwrap();
    let blocks = lock_blocks(&lock);
    let image_blocks: Vec<_> = blocks.iter().filter(|b| b.3.is_some()).collect();
    assert_eq!(image_blocks.len(), 10, "{lock}");
    for i in images {
        let reference = format!("127.0.0.1:{port}/{i}");
        assert!(
            image_blocks.iter().any(|b| b.1 == reference),
            "{reference} in {lock}"
        );
        assert!(out.contains(&reference), "{out}");
    }
    // What the registry serves for the tag (skopeo may re-serialise the
    // index it pushed): the lock pins exactly that, and the archive holds
    // its amd64 manifest.
    let served = http_get(port, "/v2/multi/img/manifests/1", OCI_INDEX);
    let index_digest = digest(&served);
    let served: serde_json::Value = serde_json::from_slice(&served).unwrap();
    let manifests = served["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2, "{served}");
    let amd_manifest = manifests
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let multi = image_blocks.iter().find(|b| b.0 == "multi").unwrap();
    assert_eq!(
        multi.3.as_deref(),
        Some(index_digest.as_str()),
        "pinned by the index digest"
    );
    // The archive holds the amd64 manifest of the index.
    let index_json = {
        let mut ar =
            tar::Archive::new(std::fs::File::open(store.join("sha256").join(&multi.2)).unwrap());
        let mut s = String::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("index.json") {
                e.read_to_string(&mut s).unwrap();
            }
        }
        s
    };
    assert!(index_json.contains(&amd_manifest), "{index_json}");

    // Pinned and in the store: a second fetch is a no-op that agrees.
    run_ok(
        Command::new(bin("nodebake"))
            .arg("fetch")
            .arg(&spec)
            .arg("--store")
            .arg(&store),
    );
    // A fresh store pulls byte-identical archives by digest.
    let store2 = t.path().join("store2");
    run_ok(
        Command::new(bin("nodebake"))
            .arg("fetch")
            .arg(&spec)
            .arg("--store")
            .arg(&store2),
    );
    for b in &image_blocks {
        assert!(
            store2.join("sha256").join(&b.2).is_file(),
            "{} deterministic",
            b.0
        );
    }

    // Import every archive into a real containerd.
    let (_containerd, sock) = start_containerd(t.path());
    for b in &image_blocks {
        run_ok(
            Command::new("ctr")
                .arg("-a")
                .arg(&sock)
                .args(["-n", "k8s.io", "images", "import"])
                .arg(store.join("sha256").join(&b.2)),
        );
    }
    let listed = run_ok(
        Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args(["-n", "k8s.io", "images", "ls", "-q"]),
    );
    for b in &image_blocks {
        assert!(
            listed.lines().any(|l| l == b.1),
            "{} not in:\n{listed}",
            b.1
        );
    }
}
