//! `nodebake serve` on loopback: the iPXE chain, a per-node script naming
//! that node's metadata URL, 404 for unknown MACs (logged), metadata by MAC,
//! kernel/initramfs with Range (206/416) and 50 concurrent downloads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nodebake_suite::{bin, repo, run_ok};
use sha2::{Digest, Sha256};

const NODE1_MAC: &str = "52-54-00-93-01-41";

/// A running `nodebake serve`, killed by PID on drop.
struct Serve {
    child: Child,
    addr: String,
    log: PathBuf,
    _tmp: tempfile::TempDir,
    cluster: PathBuf,
    initramfs: Vec<u8>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Deterministic pseudo-random bytes.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn start() -> Serve {
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster");
    run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "init"])
            .arg(repo().join("examples/seed-ha-cluster.toml"))
            .arg("--out")
            .arg(&cluster),
    );
    let image = tmp.path().join("image");
    std::fs::create_dir(&image).unwrap();
    let initramfs = bytes(3 << 20, 7);
    std::fs::write(image.join("vmlinuz"), bytes(1 << 20, 3)).unwrap();
    std::fs::write(image.join("initramfs.cpio.gz"), &initramfs).unwrap();
    std::fs::write(
        image.join("manifest.json"),
        r#"{"kernel":{"path":"boot/vmlinuz","sha256":"00","cmdline":"console=ttyS0 quiet"}}"#,
    )
    .unwrap();
    let log = tmp.path().join("serve.log");
    let mut child = Command::new(bin("nodebake"))
        .arg("serve")
        .arg(&cluster)
        .arg("--image")
        .arg(&image)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start nodebake serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .unwrap_or_default()
        .to_string();
    let mut s = Serve {
        child,
        addr,
        log,
        _tmp: tmp,
        cluster,
        initramfs,
    };
    assert!(
        !s.addr.is_empty(),
        "serve did not report its address: {line:?}\n{}",
        s.log()
    );
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "serve exited: {}",
        s.log()
    );
    s
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn get(addr: &str, path: &str, headers: &[&str]) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        head,
        body: all[split + 4..].to_vec(),
    }
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn ipxe_scripts_by_mac_metadata_and_unknown_macs() {
    let s = start();
    let boot = get(&s.addr, "/boot.ipxe", &[]);
    assert_eq!(boot.status, 200);
    assert!(
        text(&boot).contains(&format!("chain http://{}/ipxe?mac=${{mac:hexhyp}}", s.addr)),
        "{}",
        text(&boot)
    );

    let r = get(&s.addr, &format!("/ipxe?mac={NODE1_MAC}"), &[]);
    assert_eq!(r.status, 200, "{}", text(&r));
    let script = text(&r);
    assert!(script.starts_with("#!ipxe\n"), "{script}");
    assert!(script.contains("k8s-node1"), "{script}");
    let url = format!("http://{}/nodes/{NODE1_MAC}/", s.addr);
    assert!(
        script.contains(&format!("ds=nocloud-net;s={url}")),
        "the script does not name k8s-node1's metadata URL:\n{script}"
    );
    assert!(script.contains(&format!("kernel http://{}/image/vmlinuz", s.addr)));
    assert!(script.contains("console=ttyS0 quiet"), "{script}");
    assert!(script.contains(&format!("initrd http://{}/image/initramfs.cpio.gz", s.addr)));
    // Colons and upper case name the same machine.
    let r2 = get(&s.addr, "/ipxe?mac=52%3A54%3A00%3A93%3A01%3A41", &[]);
    assert_eq!(text(&r2), script);

    // The metadata URL serves that node's documents.
    for doc in ["meta-data", "user-data", "network-config"] {
        let r = get(&s.addr, &format!("/nodes/{NODE1_MAC}/{doc}"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            std::fs::read(s.cluster.join("nodes/k8s-node1").join(doc)).unwrap()
        );
    }
    assert_eq!(
        get(&s.addr, &format!("/nodes/{NODE1_MAC}/vendor-data"), &[]).status,
        200
    );
    assert_eq!(
        get(&s.addr, &format!("/nodes/{NODE1_MAC}/../secrets"), &[]).status,
        404
    );

    let unknown = get(&s.addr, "/ipxe?mac=de-ad-be-ef-00-01", &[]);
    assert_eq!(unknown.status, 404);
    assert_eq!(
        get(&s.addr, "/nodes/de-ad-be-ef-00-01/user-data", &[]).status,
        404
    );
    assert_eq!(get(&s.addr, "/ipxe?mac=nonsense", &[]).status, 400);
    assert_eq!(get(&s.addr, "/nothing", &[]).status, 404);

    let log = s.log();
    assert!(
        log.contains("unknown MAC de-ad-be-ef-00-01: not in"),
        "no clear log line for the unknown MAC:\n{log}"
    );
    assert!(
        log.contains(&format!("\"GET /ipxe?mac={NODE1_MAC}\" 200")),
        "{log}"
    );
    assert!(
        log.contains("\"GET /ipxe?mac=de-ad-be-ef-00-01\" 404"),
        "{log}"
    );
    // Access log carries no secret.
    let token = std::fs::read_to_string(s.cluster.join("secrets/bootstrap-token")).unwrap();
    assert!(!log.contains(token.trim()));
}

#[test]
fn kernel_and_initramfs_with_ranges() {
    let s = start();
    let full = get(&s.addr, "/image/initramfs.cpio.gz", &[]);
    assert_eq!(full.status, 200);
    assert!(full.head.contains("Accept-Ranges: bytes"));
    assert_eq!(full.body, s.initramfs);

    let r = get(
        &s.addr,
        "/image/initramfs.cpio.gz",
        &["Range: bytes=1000-1999"],
    );
    assert_eq!(r.status, 206, "{}", r.head);
    let size = s.initramfs.len();
    assert!(
        r.head
            .contains(&format!("Content-Range: bytes 1000-1999/{size}")),
        "{}",
        r.head
    );
    assert_eq!(r.body, &s.initramfs[1000..2000]);

    let tail = get(&s.addr, "/image/initramfs.cpio.gz", &["Range: bytes=-100"]);
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, &s.initramfs[size - 100..]);
    let open = get(
        &s.addr,
        "/image/initramfs.cpio.gz",
        &["Range: bytes=3000000-"],
    );
    assert_eq!(open.status, 206);
    assert_eq!(open.body, &s.initramfs[3_000_000..]);

    let bad = get(
        &s.addr,
        "/image/initramfs.cpio.gz",
        &[&format!("Range: bytes={size}-")],
    );
    assert_eq!(bad.status, 416);
    assert!(bad.head.contains(&format!("Content-Range: bytes */{size}")));
    assert_eq!(get(&s.addr, "/image/vmlinuz", &[]).body.len(), 1 << 20);
    assert_eq!(get(&s.addr, "/image/manifest.json", &[]).status, 404);
}

#[test]
fn fifty_concurrent_initramfs_downloads() {
    let s = start();
    let want = hex::encode(Sha256::digest(&s.initramfs));
    let started = std::time::Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let addr = s.addr.clone();
            std::thread::spawn(move || {
                let r = get(&addr, "/image/initramfs.cpio.gz", &[]);
                (r.status, hex::encode(Sha256::digest(&r.body)))
            })
        })
        .collect();
    for h in handles {
        let (status, sum) = h.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(sum, want);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "50 x {} MiB in {secs:.2}s = {:.0} MiB/s",
        s.initramfs.len() >> 20,
        (50 * s.initramfs.len()) as f64 / (1 << 20) as f64 / secs
    );
    assert!(secs < 60.0, "50 downloads took {secs:.1}s");
}
