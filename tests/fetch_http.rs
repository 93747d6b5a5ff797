//! `nodebake fetch` against loopback servers on Rust threads: pinning,
//! parallel downloads, 404, wrong digest, truncated bodies, a stalled
//! server (bounded by --timeout), resume with `Range` after a cut
//! connection, and a mock registry that demands bearer tokens (checking the
//! scope) and serves a multi-platform index.

mod fetch_mock;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fetch_mock::{bearer_reply, digest, file_reply, MockServer, Registry, Reply, TestImage};
use nodebake_suite::{bin, sha256_file, sha256_hex, write_small_base};

fn spec(dir: &Path, arch: &str, artifacts: &str) -> PathBuf {
    let base = dir.join("base.tar.gz");
    write_small_base(&base);
    let p = dir.join("t.toml");
    std::fs::write(
        &p,
        format!(
            "spec_version = 1\nname = \"t\"\nversion = \"1\"\narch = \"{arch}\"\n[base]\nsource = \"base.tar.gz\"\nsha256 = \"{}\"\n[kubernetes]\nversion = \"1.31.1\"\n[outputs]\nformats = [\"rootfs\"]\n{artifacts}",
            sha256_file(&base)
        ),
    )
    .unwrap();
    p
}

fn file_artifact(name: &str, url: &str, sha: Option<&str>) -> String {
    format!(
        "[[artifact]]\nname = \"{name}\"\nkind = \"file\"\nsource = \"{url}\"\ndest = \"/opt/{name}\"\n{}\n",
        sha.map(|s| format!("sha256 = \"{s}\"")).unwrap_or_default()
    )
}

fn fetch(spec: &Path, store: &Path, extra: &[&str]) -> Output {
    Command::new(bin("nodebake"))
        .arg("fetch")
        .arg(spec)
        .arg("--store")
        .arg(store)
        .args(extra)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn pin_then_fetch_in_parallel() {
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| payload(i, 300_000)).collect();
    let b2 = bodies.clone();
    let srv = MockServer::start(move |r| {
        let i: usize = r.path.trim_start_matches("/f").parse().unwrap_or(99);
        match b2.get(i) {
            Some(b) => file_reply(r, b),
            None => Reply::status(404),
        }
    });
    let t = tempfile::tempdir().unwrap();
    let arts: String = (0..3)
        .map(|i| file_artifact(&format!("f{i}"), &srv.url(&format!("/f{i}")), None))
        .collect();
    let spec = spec(t.path(), "x86_64", &arts);
    let store = t.path().join("store");

    // Unpinned: refused, naming every input and --pin; nothing downloaded.
    let o = fetch(&spec, &store, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("f0") && e.contains("f2") && e.contains("--pin"),
        "{e}"
    );
    assert!(srv.requests().is_empty());

    let o = fetch(&spec, &store, &["--pin", "-j", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lock = std::fs::read_to_string(t.path().join("t.toml.lock")).unwrap();
    for (i, b) in bodies.iter().enumerate() {
        let h = sha256_hex(b);
        assert!(out.contains(&h), "digest shown: {out}");
        assert!(
            lock.contains(&h) && lock.contains(&format!("name = \"f{i}\"")),
            "{lock}"
        );
        assert!(store.join("sha256").join(&h).is_file());
    }
    // The lock now pins everything: a plain fetch needs no --pin and, with
    // everything in the store, touches no URL.
    let before = srv.requests().len();
    let o = fetch(&spec, &store, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(srv.requests().len(), before);
}

#[test]
fn not_found_is_fatal_and_names_url_and_status() {
    let srv = MockServer::start(|_| Reply::status(404));
    let t = tempfile::tempdir().unwrap();
    let url = srv.url("/missing.bin");
    let spec = spec(
        t.path(),
        "x86_64",
        &file_artifact("m", &url, Some(&"a".repeat(64))),
    );
    let o = fetch(&spec, &t.path().join("store"), &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&url) && e.contains("404"), "{e}");
    assert_eq!(srv.requests().len(), 1, "a 404 is not retried");
}

#[test]
fn wrong_digest_is_refused_and_not_stored() {
    let body = payload(7, 10_000);
    let b = body.clone();
    let srv = MockServer::start(move |r| file_reply(r, &b));
    let t = tempfile::tempdir().unwrap();
    let url = srv.url("/f");
    let wrong = sha256_hex(b"something else");
    let spec = spec(t.path(), "x86_64", &file_artifact("f", &url, Some(&wrong)));
    let store = t.path().join("store");
    let o = fetch(&spec, &store, &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("digest mismatch") && e.contains(&url) && e.contains(&wrong),
        "{e}"
    );
    assert!(!store.join("sha256").join(sha256_hex(&body)).exists());
    assert_eq!(std::fs::read_dir(store.join("sha256")).unwrap().count(), 0);
}

#[test]
fn always_truncated_body_fails_after_bounded_tries() {
    let body = payload(3, 50_000);
    let b = body.clone();
    // Ignores Range: every answer is cut at 1000 bytes.
    let srv = MockServer::start(move |_| Reply::Cut {
        body: b.clone(),
        send: 1000,
    });
    let t = tempfile::tempdir().unwrap();
    let url = srv.url("/t");
    let spec = spec(
        t.path(),
        "x86_64",
        &file_artifact("t", &url, Some(&sha256_hex(&body))),
    );
    let start = Instant::now();
    let o = fetch(&spec, &t.path().join("store"), &["--tries", "3"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&url) && e.contains("3 tries"), "{e}");
    assert_eq!(srv.requests().len(), 3);
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn stalled_server_is_bounded_by_timeout() {
    let srv = MockServer::start(|_| Reply::Stall { secs: 60 });
    let t = tempfile::tempdir().unwrap();
    let url = srv.url("/slow");
    let spec = spec(
        t.path(),
        "x86_64",
        &file_artifact("s", &url, Some(&"b".repeat(64))),
    );
    let start = Instant::now();
    let o = fetch(
        &spec,
        &t.path().join("store"),
        &["--timeout", "1", "--tries", "2"],
    );
    let took = start.elapsed();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(&url), "{e}");
    assert!(took < Duration::from_secs(20), "took {took:?}: {e}");
}

#[test]
fn cut_connection_resumes_with_range() {
    let body = payload(9, 400_000);
    let b = body.clone();
    let first = Arc::new(AtomicUsize::new(0));
    let f = first.clone();
    let srv = MockServer::start(move |r| {
        if f.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::Cut {
                body: b.clone(),
                send: 150_000,
            }
        } else {
            file_reply(r, &b)
        }
    });
    let t = tempfile::tempdir().unwrap();
    let url = srv.url("/big");
    let sha = sha256_hex(&body);
    let spec = spec(t.path(), "x86_64", &file_artifact("big", &url, Some(&sha)));
    let store = t.path().join("store");
    let o = fetch(&spec, &store, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[0].header("Range"), None);
    // The second request asks only for what is missing; the result is
    // verified whole.
    let start = reqs[1].range_start().expect("second request resumes");
    assert!(start > 0 && start <= 150_000, "{start}");
    assert_eq!(sha256_file(&store.join("sha256").join(&sha)), sha);
    let leftovers: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty());
}

/// The `sha256` of input `name` in lock text.
fn lock_sha(lock: &str, name: &str) -> String {
    let block = lock
        .split("[[input]]")
        .find(|b| b.contains(&format!("name = \"{name}\"")))
        .unwrap_or_else(|| panic!("no `{name}` in {lock}"));
    block
        .lines()
        .find_map(|l| l.strip_prefix("sha256 = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

fn read_archive(p: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let mut m = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(std::fs::File::open(p).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        m.insert(name, b);
    }
    m
}

/// Bearer flow against a Rust mock registry (the Debian registry with a
/// token server is heavier; the real registry is exercised anonymously in
/// fetch_registry.rs): 401 + challenge → token endpoint with service and
/// scope → retried with the token. The reference resolves through an OCI
/// index to the spec's platform.
#[test]
fn registry_bearer_auth_and_platform_index() {
    let amd = TestImage::new("amd64", b"hello amd64\n");
    let arm = TestImage::new("arm64", b"hello arm64\n");
    let mut reg = Registry::default();
    let index_digest = reg.add_index("test/img", "1", &[&arm, &amd]);
    let srv = MockServer::start(move |r| bearer_reply(&reg, r));
    let reference = format!("127.0.0.1:{}/test/img:1", srv.port);
    let art = format!(
        "[[artifact]]\nname = \"img\"\nkind = \"image\"\nsource = \"registry\"\nreference = \"{reference}\"\n"
    );
    let mut archives = Vec::new();
    for (arch, want) in [("x86_64", &amd), ("aarch64", &arm), ("x86_64", &amd)] {
        let t = tempfile::tempdir().unwrap();
        let spec = spec(t.path(), arch, &art);
        let store = t.path().join("store");
        let o = fetch(&spec, &store, &["--pin"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let lock = std::fs::read_to_string(t.path().join("t.toml.lock")).unwrap();
        assert!(
            lock.contains(&format!("digest = \"{index_digest}\"")),
            "{lock}"
        );
        assert!(
            lock.contains(&format!("source = \"{reference}\"")),
            "{lock}"
        );
        let sha = lock_sha(&lock, "img");
        let archive = store.join("sha256").join(&sha);
        let files = read_archive(&archive);
        let index = String::from_utf8(files["index.json"].clone()).unwrap();
        assert!(
            index.contains(&format!("\"io.containerd.image.name\":\"{reference}\"")),
            "{index}"
        );
        assert!(index.contains(&digest(&want.manifest)), "{index}");
        assert!(files.contains_key("oci-layout"));
        for blob in [&want.manifest, &want.config, &want.layer] {
            assert_eq!(&files[&format!("blobs/sha256/{}", sha256_hex(blob))], blob);
        }
        archives.push(sha);
        // Pinned now: a second fetch into a fresh store gives the same bytes.
        let o = fetch(&spec, &t.path().join("store2"), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(t
            .path()
            .join("store2/sha256")
            .join(&archives[archives.len() - 1])
            .is_file());
    }
    assert_eq!(archives[0], archives[2], "archives are deterministic");
    assert_ne!(archives[0], archives[1]);
    let reqs = srv.requests();
    let tokens: Vec<_> = reqs
        .iter()
        .filter(|r| r.path.starts_with("/token?"))
        .collect();
    assert!(!tokens.is_empty());
    assert!(tokens
        .iter()
        .all(|r| r.path.contains("scope=repository%3Atest%2Fimg%3Apull")
            || r.path.contains("scope=repository:test/img:pull")));
    assert!(reqs.iter().any(|r| r.header("Authorization").is_some()));
}

#[test]
fn registry_digest_mismatch_is_refused() {
    let amd = TestImage::new("amd64", b"x\n");
    let mut reg = Registry::default();
    reg.add_image("test/one", "1", &amd);
    let srv = MockServer::start(move |r| reg.reply(r));
    let t = tempfile::tempdir().unwrap();
    let reference = format!("127.0.0.1:{}/test/one:1", srv.port);
    let wrong = format!("sha256:{}", "c".repeat(64));
    let art = format!(
        "[[artifact]]\nname = \"one\"\nkind = \"image\"\nsource = \"registry\"\nreference = \"{reference}\"\ndigest = \"{wrong}\"\n"
    );
    let spec = spec(t.path(), "x86_64", &art);
    let o = fetch(&spec, &t.path().join("store"), &["--pin"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("404") || e.contains("mismatch"), "{e}");
    assert!(e.contains(&reference), "{e}");
}
