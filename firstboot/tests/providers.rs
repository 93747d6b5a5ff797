//! Metadata providers against real inputs: seed images made here with
//! genisoimage, xorriso and mkfs.vfat + mcopy; an HTTP server on loopback;
//! kernel command lines; gzip and base64 documents; and bad inputs.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{fixture, require};
use nodebake_firstboot::metadata::http::RetryPolicy;
use nodebake_firstboot::metadata::nocloud_seed::{self, SeedDevice};
use nodebake_firstboot::metadata::path::PathSource;
use nodebake_firstboot::metadata::{self, DiscoveryOptions, Documents, MetadataProvider};
use nodebake_firstboot::root::Root;

fn seed_docs(host: &str) -> (String, String) {
    let d = fixture(host);
    (
        std::fs::read_to_string(d.join("meta-data")).unwrap(),
        std::fs::read_to_string(d.join("user-data")).unwrap(),
    )
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes the seed files of `host` into a fresh directory.
fn seed_dir(t: &Path, host: &str) -> PathBuf {
    let src = t.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (m, u) = seed_docs(host);
    std::fs::write(src.join("meta-data"), m).unwrap();
    std::fs::write(src.join("user-data"), u).unwrap();
    src
}

fn assert_node(docs: &Documents, host: &str) {
    let Documents::NoCloud {
        meta_data,
        user_data,
        ..
    } = docs
    else {
        panic!("expected NoCloud documents")
    };
    let (m, u) = seed_docs(host);
    assert_eq!(meta_data, &m);
    assert_eq!(user_data, &u);
}

fn opts(root: &Path) -> DiscoveryOptions {
    DiscoveryOptions {
        root: Root::new(root),
        live: false,
        retry: fast_retry(3),
    }
}

fn fast_retry(tries: u32) -> RetryPolicy {
    RetryPolicy {
        tries,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        timeout: Duration::from_secs(2),
    }
}

/// Checks an image both as an explicit path and as the by-label device.
fn check_image(img: &Path, host: &str) {
    let m = PathSource::new(img.to_path_buf(), false)
        .fetch()
        .unwrap()
        .unwrap();
    assert_node(&m.documents, host);
    assert!(m.source.contains("label"), "{}", m.source);
    assert_eq!(m.node_config().unwrap().hostname, host);

    let root = tempfile::tempdir().unwrap();
    let by_label = root.path().join("dev/disk/by-label");
    std::fs::create_dir_all(&by_label).unwrap();
    std::os::unix::fs::symlink(img, by_label.join("cidata")).unwrap();
    let found = SeedDevice::new(Root::new(root.path()), false)
        .fetch()
        .unwrap()
        .unwrap();
    assert_node(&found.documents, host);
    // Discovery picks the seed when the command line names nothing.
    let m = metadata::fetch_first(&metadata::discover(&opts(root.path()))).unwrap();
    assert!(m.source.starts_with("NoCloud seed"), "{}", m.source);
}

#[test]
fn iso_seed_made_by_genisoimage() {
    if !require("iso_seed_made_by_genisoimage", &["genisoimage"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = seed_dir(t.path(), "k8s-master3");
    let img = t.path().join("seed.iso");
    // As cloud-localds does it: Joliet and Rock Ridge.
    sh(Command::new("genisoimage")
        .args(["-quiet", "-output"])
        .arg(&img)
        .args(["-volid", "cidata", "-joliet", "-rock"])
        .arg(src.join("user-data"))
        .arg(src.join("meta-data")));
    check_image(&img, "k8s-master3");

    // Rock Ridge only (no Joliet tree).
    let img2 = t.path().join("seed-rr.iso");
    sh(Command::new("genisoimage")
        .args(["-quiet", "-V", "cidata", "-r", "-o"])
        .arg(&img2)
        .arg(&src));
    check_image(&img2, "k8s-master3");
}

#[test]
fn iso_seed_made_by_xorriso() {
    if !require("iso_seed_made_by_xorriso", &["xorriso"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = seed_dir(t.path(), "k8s-node2");
    let img = t.path().join("seed.iso");
    sh(Command::new("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-V", "cidata", "-J", "-r", "-o"])
        .arg(&img)
        .arg(&src));
    check_image(&img, "k8s-node2");
}

#[test]
fn vfat_seed_made_by_mkfs_vfat_and_mcopy() {
    if !require("vfat_seed", &["mkfs.vfat", "mcopy"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = seed_dir(t.path(), "k8s-node3");
    for (name, kb, extra) in [
        ("fat12.img", "2048", vec![]),
        ("fat32.img", "40960", vec!["-F", "32"]),
    ] {
        let img = t.path().join(name);
        sh(Command::new("mkfs.vfat")
            .args(["-n", "cidata", "-C"])
            .args(&extra)
            .arg(&img)
            .arg(kb));
        sh(Command::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg(src.join("meta-data"))
            .arg(src.join("user-data"))
            .arg("::"));
        check_image(&img, "k8s-node3");
    }
}

#[test]
fn image_without_cidata_label_is_not_the_seed() {
    if !require("image_without_cidata_label", &["genisoimage"]) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = seed_dir(t.path(), "k8s-node1");
    let img = t.path().join("other.iso");
    sh(Command::new("genisoimage")
        .args(["-quiet", "-V", "other", "-J", "-r", "-o"])
        .arg(&img)
        .arg(&src));
    let (_, label) = nocloud_seed::probe_path(&img).unwrap().unwrap();
    assert_eq!(label, "other");
    let root = tempfile::tempdir().unwrap();
    let by_label = root.path().join("dev/disk/by-label");
    std::fs::create_dir_all(&by_label).unwrap();
    std::os::unix::fs::symlink(&img, by_label.join("cidata")).unwrap();
    assert!(SeedDevice::new(Root::new(root.path()), false)
        .fetch()
        .unwrap()
        .is_none());
    // A seed missing user-data is an error that says so.
    std::fs::remove_file(src.join("user-data")).unwrap();
    let img = t.path().join("half.iso");
    sh(Command::new("genisoimage")
        .args(["-quiet", "-V", "cidata", "-J", "-r", "-o"])
        .arg(&img)
        .arg(&src));
    let e = PathSource::new(img, false).fetch().unwrap_err();
    assert!(format!("{e:#}").contains("user-data"), "{e:#}");
}

/// A loopback HTTP server answering nocloud-net paths. The first
/// `fail_first` requests get a 503. Serves at most `max` requests.
struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    _thread: std::thread::JoinHandle<()>,
}

fn serve(files: Vec<(String, Vec<u8>)>, fail_first: usize, max: usize) -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/n1/", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let thread = std::thread::spawn(move || {
        for stream in l.incoming().take(max) {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(2))).ok();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let path = req.split_whitespace().nth(1).unwrap_or("").to_string();
            let i = h.fetch_add(1, Ordering::SeqCst);
            let (status, body) = if i < fail_first {
                ("503 Service Unavailable", b"busy".to_vec())
            } else {
                match files.iter().find(|(p, _)| format!("/n1/{p}") == path) {
                    Some((_, b)) => ("200 OK", b.clone()),
                    None => ("404 Not Found", b"no".to_vec()),
                }
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    Server {
        url,
        hits,
        _thread: thread,
    }
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn b64(data: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(data)
        .into_bytes()
}

#[test]
fn http_with_retries_and_encodings() {
    let (m, u) = seed_docs("k8s-node1");
    // gzip user-data, base64 meta-data, after two failures.
    let s = serve(
        vec![
            ("meta-data".into(), b64(m.as_bytes())),
            ("user-data".into(), gz(u.as_bytes())),
        ],
        2,
        8,
    );
    let t = tempfile::tempdir().unwrap();
    let got = metadata::explicit(&s.url, &opts(t.path()))
        .fetch()
        .unwrap()
        .unwrap();
    assert_node(&got.documents, "k8s-node1");
    // Two failures, meta-data, user-data, and network-config's 404 (it is
    // optional, so not retried and not an error).
    assert_eq!(s.hits.load(Ordering::SeqCst), 5);
    assert!(matches!(
        got.documents,
        metadata::Documents::NoCloud {
            network_config: None,
            ..
        }
    ));
}

#[test]
fn http_gives_up_with_a_clear_error() {
    let s = serve(vec![], 100, 3);
    let t = tempfile::tempdir().unwrap();
    let e = metadata::explicit(&s.url, &opts(t.path()))
        .fetch()
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("gave up after 3 tries"), "{msg}");
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
    // 404 is an answer, not a reason to retry.
    let s = serve(vec![("meta-data".into(), b"x".to_vec())], 0, 4);
    let e = metadata::explicit(&s.url, &opts(t.path()))
        .fetch()
        .unwrap_err();
    assert!(format!("{e:#}").contains("404"), "{e:#}");
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = metadata::explicit(&format!("http://127.0.0.1:{port}/"), &opts(t.path()))
        .fetch()
        .unwrap_err();
    assert!(format!("{e:#}").contains("gave up"), "{e:#}");
}

#[test]
fn kernel_command_line_wins_over_local_file() {
    let (m, u) = seed_docs("k8s-node2");
    let s = serve(
        vec![
            ("meta-data".into(), m.into_bytes()),
            ("user-data".into(), u.into_bytes()),
        ],
        0,
        4,
    );
    let root = tempfile::tempdir().unwrap();
    let w = |p: &str, c: &str| {
        let p = root.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    };
    let (m3, u3) = seed_docs("k8s-node3");
    w(
        "etc/nodebake/node.yaml",
        &format!("{m3}{}", u3.replace("#cloud-config\n", "")),
    );
    // Only the local file: it is used.
    let got = metadata::fetch_first(&metadata::discover(&opts(root.path()))).unwrap();
    assert!(got.source.contains("local file"), "{}", got.source);
    assert_eq!(got.node_config().unwrap().hostname, "k8s-node3");
    // The command line names the HTTP source: it wins.
    w(
        "proc/cmdline",
        &format!("BOOT_IMAGE=/vmlinuz ro ds=nocloud-net;s={} quiet\n", s.url),
    );
    let got = metadata::fetch_first(&metadata::discover(&opts(root.path()))).unwrap();
    assert!(
        got.source.starts_with("kernel command line"),
        "{}",
        got.source
    );
    assert_eq!(got.node_config().unwrap().hostname, "k8s-node2");
    // A path on the command line is read under the root.
    let dir = root.path().join("var/seed");
    std::fs::create_dir_all(&dir).unwrap();
    let (m1, u1) = seed_docs("k8s-node1");
    std::fs::write(dir.join("meta-data"), m1).unwrap();
    std::fs::write(dir.join("user-data"), u1).unwrap();
    w("proc/cmdline", "ro nodebake.metadata=/var/seed\n");
    let got = metadata::fetch_first(&metadata::discover(&opts(root.path()))).unwrap();
    assert_eq!(got.node_config().unwrap().hostname, "k8s-node1");
    // A named source that is missing is an error, not a fall-through.
    w("proc/cmdline", "ro ds=nocloud;s=/nope/\n");
    assert!(metadata::fetch_first(&metadata::discover(&opts(root.path()))).is_err());
}

#[test]
fn no_source_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let e = metadata::fetch_first(&metadata::discover(&opts(root.path()))).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("no metadata source yielded"), "{msg}");
    assert!(
        msg.contains("kernel command line") && msg.contains("node.yaml"),
        "{msg}"
    );
}

#[test]
fn bad_documents_are_refused_with_the_reason() {
    let t = tempfile::tempdir().unwrap();
    let (m, u) = seed_docs("k8s-node1");
    let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
        (
            "not utf8",
            m.clone().into_bytes(),
            vec![0xff, 0xfe, 0x00, 0x41],
            "UTF-8",
        ),
        (
            "broken gzip",
            m.clone().into_bytes(),
            vec![0x1f, 0x8b, 8, 0, 1, 2],
            "gunzip",
        ),
        (
            "unknown field",
            m.clone().into_bytes(),
            u.replace("  cni: flannel\n", "  cni: flannel\n  colour: red\n")
                .into_bytes(),
            "unknown field `colour`",
        ),
        (
            "unknown role",
            m.clone().into_bytes(),
            u.replace("role: worker", "role: king").into_bytes(),
            "nodebake.role",
        ),
        (
            "bad hostname",
            m.replace("local-hostname: k8s-node1", "local-hostname: K8S_node1")
                .into_bytes(),
            u.clone().into_bytes(),
            "local-hostname",
        ),
        (
            "no nodebake key",
            m.clone().into_bytes(),
            b"#cloud-config\npackages: [vim]\n".to_vec(),
            "no top-level `nodebake`",
        ),
        (
            "meta-data not yaml",
            b"{{{".to_vec(),
            u.clone().into_bytes(),
            "meta-data",
        ),
    ];
    for (name, meta, user, want) in cases {
        let d = t.path().join(name.replace(' ', "-"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("meta-data"), &meta).unwrap();
        std::fs::write(d.join("user-data"), &user).unwrap();
        let r = PathSource::new(d, false)
            .fetch()
            .and_then(|m| m.unwrap().node_config().map(|_| ()));
        let e = r.expect_err(name);
        assert!(format!("{e:#}").contains(want), "{name}: {e:#}");
    }
}
