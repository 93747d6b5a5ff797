//! `nodebake build` end to end on small inputs made here: reproducibility,
//! outputs readable by the real `tar`/`cpio`, usrmerge, ownership from the
//! inputs, `verify` catching a changed byte, atomic replacement, the input
//! store and the build cache, and an unprivileged build.

use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake_suite::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        write_small_base(&dir.path().join("base.tar.gz"));
        write_tar(
            &dir.path().join("cni.tgz"),
            &[
                Member::Dir("./", 0o755),
                Member::File("./bridge", &host_elf(), 0o755, 0, 0),
                Member::File("./host-local", &host_elf(), 0o755, 0, 0),
                Member::File("./README", b"cni", 0o644, 0, 0),
            ],
            true,
        );
        std::fs::write(dir.path().join("kubeadm"), host_elf()).unwrap();
        std::fs::write(dir.path().join("flannel.yml"), "kind: DaemonSet\n").unwrap();
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        for p in ["master", "worker"] {
            std::fs::copy(
                repo().join(format!("profiles/{p}.toml")),
                dir.path().join(format!("profiles/{p}.toml")),
            )
            .unwrap();
        }
        Fixture { dir }
    }

    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    fn digest(&self, n: &str) -> String {
        sha256_file(&self.path(n))
    }

    /// The standard spec, with `extra` appended.
    fn spec(&self, extra: &str) -> PathBuf {
        let text = format!(
            r#"spec_version = 1
name = "small"
version = "1.0"
arch = "x86_64"
source_date_epoch = 1700000000
profiles = ["master", "worker"]

[base]
source = "base.tar.gz"
sha256 = "{base}"

[kernel]
path = "/boot/vmlinuz-*"

[kubernetes]
version = "1.31.0"
cni = "flannel"
cni_manifest = "flannel-manifest"

[[artifact]]
name = "cni-plugins"
kind = "tarball"
source = "cni.tgz"
sha256 = "{cni}"
dest = "/opt/cni/bin"
include = ["bridge", "host-local"]

[[artifact]]
name = "kubeadm"
kind = "file"
source = "kubeadm"
sha256 = "{kubeadm}"
dest = "/bin/kubeadm"
mode = "0755"

[[artifact]]
name = "flannel-manifest"
kind = "file"
source = "flannel.yml"
sha256 = "{flannel}"
dest = "/usr/lib/nodebake/manifests/kube-flannel.yml"

[[file]]
path = "/etc/sysctl.d/90-test.conf"
content = "net.ipv4.ip_forward = 1\n"
mode = "0600"
{extra}
"#,
            base = self.digest("base.tar.gz"),
            cni = self.digest("cni.tgz"),
            kubeadm = self.digest("kubeadm"),
            flannel = self.digest("flannel.yml"),
        );
        let p = self.path("spec.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn build(&self, spec: &Path, out: &Path, extra_args: &[&str]) -> std::process::Output {
        let store = self.path("store");
        run(Command::new(bin("nodebake"))
            .arg("build")
            .arg(spec)
            .arg("--out")
            .arg(out)
            .arg("--store")
            .arg(&store)
            .arg("--firstboot")
            .arg(static_firstboot())
            .args(extra_args))
    }
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn file_entry<'a>(m: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
}

#[test]
fn two_builds_are_byte_identical_and_real_tools_read_them() {
    let f = Fixture::new();
    let spec = f.spec("");
    let (a, b) = (f.path("out-a"), f.path("out-b"));
    ok(&f.build(&spec, &a, &["--no-cache"]));
    ok(&f.build(&spec, &b, &["--no-cache"]));
    let sums_a = std::fs::read_to_string(a.join("SHA256SUMS")).unwrap();
    assert_eq!(
        sums_a,
        std::fs::read_to_string(b.join("SHA256SUMS")).unwrap()
    );
    for n in [
        "rootfs.tar.gz",
        "initramfs.cpio.gz",
        "vmlinuz",
        "manifest.json",
    ] {
        assert!(
            sums_a.contains(&format!("  {n}\n")),
            "{n} missing from SHA256SUMS:\n{sums_a}"
        );
    }
    // sha256sum itself agrees with SHA256SUMS.
    run_ok(
        Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(&a),
    );

    // The real tar reads the rootfs: usrmerge kept, artifacts landed through it.
    let listing = run_ok(
        Command::new("tar")
            .arg("-tvzf")
            .arg(a.join("rootfs.tar.gz")),
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('l') && l.contains(" bin -> usr/bin")),
        "{listing}"
    );
    assert!(
        listing.contains(" usr/bin/kubeadm"),
        "kubeadm must land in /usr/bin: {listing}"
    );
    assert!(
        listing.contains(" opt/cni/bin/bridge") && !listing.contains("README"),
        "{listing}"
    );
    assert!(listing.contains(" usr/lib/nodebake/bin/nodebake-firstboot"));
    assert!(listing.contains(" etc/systemd/system/multi-user.target.wants/nodebake-firstboot.service -> /usr/lib/systemd/system/nodebake-firstboot.service"), "{listing}");
    // The bootstrap token keep-alive: its service and an enabled timer.
    assert!(
        listing.contains(" usr/lib/systemd/system/nodebake-keep-token.service"),
        "{listing}"
    );
    assert!(listing.contains(" etc/systemd/system/timers.target.wants/nodebake-keep-token.timer -> /usr/lib/systemd/system/nodebake-keep-token.timer"), "{listing}");
    assert!(listing.contains(" etc/systemd/system/timers.target.wants/nodebake-reconcile.timer -> /usr/lib/systemd/system/nodebake-reconcile.timer"), "{listing}");
    assert!(listing.contains(" usr/lib/nodebake/profiles/master.toml"));
    assert!(listing.contains(" usr/lib/nodebake/image.json"));
    // Fixed timestamps on every entry.
    assert!(
        listing.lines().all(|l| l.contains("2023-11-14")),
        "every entry carries source_date_epoch"
    );

    // The real cpio reads the initramfs.
    let gz = std::fs::read(a.join("initramfs.cpio.gz")).unwrap();
    let mut cpio_in = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut cpio_in).unwrap();
    std::fs::write(f.path("initramfs.cpio"), &cpio_in).unwrap();
    let names = run_ok(Command::new("sh").arg("-c").arg(format!(
        "cpio -it --quiet < {}",
        f.path("initramfs.cpio").display()
    )));
    for n in [
        "init",
        "dev/console",
        "usr/bin/kubeadm",
        "usr/sbin/init",
        "usr/lib/nodebake/image.json",
    ] {
        assert!(names.lines().any(|l| l == n), "initramfs lacks {n}");
    }

    // Manifest: modes/owners from the inputs, origins, SBOM inputs.
    let m = manifest(&a);
    let shadow = file_entry(&m, "/etc/shadow").unwrap();
    assert_eq!(
        (shadow["mode"].as_str(), shadow["uid"].as_u64()),
        (Some("0000"), Some(0))
    );
    let sysctl = file_entry(&m, "/etc/sysctl.d/90-test.conf").unwrap();
    assert_eq!(sysctl["mode"], "0600");
    assert_eq!(
        file_entry(&m, "/usr/bin/kubeadm").unwrap()["origin"],
        "kubeadm"
    );
    assert_eq!(
        file_entry(&m, "/usr/bin/true2").unwrap()["sha256"],
        file_entry(&m, "/usr/bin/true").unwrap()["sha256"]
    );
    assert_eq!(m["base"]["id"], "testel");
    assert_eq!(m["kernel"]["path"], "/boot/vmlinuz-9.9.0");
    let inputs: Vec<&str> = m["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        [
            "base",
            "cni-plugins",
            "kubeadm",
            "flannel-manifest",
            "firstboot",
            "profile:master",
            "profile:worker"
        ]
    );
    let image_json: serde_json::Value = {
        let out = run_ok(
            Command::new("tar")
                .arg("-xzOf")
                .arg(a.join("rootfs.tar.gz"))
                .arg("usr/lib/nodebake/image.json"),
        );
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(
        image_json["cni_manifest"],
        "/usr/lib/nodebake/manifests/kube-flannel.yml"
    );
    assert_eq!(image_json["kubernetes_version"], "1.31.0");

    // verify passes, then catches one changed byte and names the file.
    run_ok(Command::new(bin("nodebake")).arg("verify").arg(&a));
    let rootfs = a.join("rootfs.tar.gz");
    let mut bytes = std::fs::read(&rootfs).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x01;
    std::fs::write(&rootfs, &bytes).unwrap();
    let o = run(Command::new(bin("nodebake")).arg("verify").arg(&a));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rootfs.tar.gz") && err.contains("mismatch"),
        "{err}"
    );

    // inspect summarises.
    let s = run_ok(Command::new(bin("nodebake")).arg("inspect").arg(&b));
    assert!(
        s.contains("Test EL 9.9") && s.contains("master, worker") && s.contains("rootfs.tar.gz"),
        "{s}"
    );
    // --json: data, not sentences.
    let j: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(bin("nodebake"))
            .args(["--json", "inspect"])
            .arg(&b),
    ))
    .unwrap();
    assert!(j["name"].is_string() && j["version"].is_string(), "{j}");
    let outputs = j["outputs"].as_array().unwrap();
    assert!(
        outputs
            .iter()
            .any(|o| o["name"] == "rootfs.tar.gz" && o["size_bytes"].as_u64().unwrap_or(0) > 0),
        "{j}"
    );
    assert!(j["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "master"));
    for p in j["key_packages"].as_array().unwrap() {
        assert!(p["name"].is_string() && p["version"].is_string(), "{p}");
    }
}

#[test]
fn verify_catches_content_that_disagrees_with_the_manifest() {
    let f = Fixture::new();
    let out = f.path("out");
    ok(&f.build(&f.spec(""), &out, &["--no-cache"]));
    // Rewrite the manifest so one file's mode differs, and re-sum it: the
    // archive no longer matches even though SHA256SUMS does.
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    for file in m["files"].as_array_mut().unwrap() {
        if file["path"] == "/usr/bin/kubeadm" {
            file["mode"] = "0700".into();
        }
    }
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    let sums = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg("sha256sum initramfs.cpio.gz manifest.json rootfs.tar.gz vmlinuz")
            .current_dir(&out),
    );
    std::fs::write(out.join("SHA256SUMS"), sums).unwrap();
    let o = run(Command::new(bin("nodebake")).arg("verify").arg(&out));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("rootfs.tar.gz: `/usr/bin/kubeadm` differs"),
        "{err}"
    );
    assert!(
        err.contains("initramfs.cpio.gz: `/usr/bin/kubeadm` differs"),
        "{err}"
    );
}

#[test]
fn failed_build_leaves_previous_outputs_untouched() {
    let f = Fixture::new();
    let out = f.path("out");
    ok(&f.build(&f.spec(""), &out, &["--no-cache"]));
    let before = tree_digest(&out);
    // Same spec, but one artifact's digest no longer matches its file.
    std::fs::write(f.path("kubeadm"), b"tampered").unwrap();
    let spec = f.path("spec.toml");
    let o = f.build(&spec, &out, &["--no-cache"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("kubeadm") && err.contains("digest mismatch"),
        "{err}"
    );
    assert_eq!(
        tree_digest(&out),
        before,
        "a failed build must not touch the previous outputs"
    );
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".nodebake-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "work directories must be removed: {leftovers:?}"
    );
}

#[test]
fn cached_rebuild_restores_identical_outputs_and_detects_a_damaged_cache() {
    let f = Fixture::new();
    let spec = f.spec("");
    let (a, b, c) = (f.path("a"), f.path("b"), f.path("c"));
    ok(&f.build(&spec, &a, &["--json"]));
    let report: serde_json::Value =
        serde_json::from_str(&ok(&f.build(&spec, &b, &["--json"]))).unwrap();
    assert_eq!(report["cached"], true);
    assert_eq!(
        std::fs::read(a.join("SHA256SUMS")).unwrap(),
        std::fs::read(b.join("SHA256SUMS")).unwrap()
    );
    run_ok(Command::new(bin("nodebake")).arg("verify").arg(&b));
    // Damage the cached copy through the shared inode: the next build must
    // notice, rebuild, and still produce the right bytes.
    let mut bytes = std::fs::read(b.join("vmlinuz")).unwrap();
    bytes[0] ^= 0xff;
    std::fs::remove_file(b.join("vmlinuz")).unwrap_or(());
    let builds = f.path("store/builds");
    for e in std::fs::read_dir(&builds).unwrap().flatten() {
        let p = e.path().join("vmlinuz");
        if p.exists() {
            std::fs::remove_file(&p).unwrap();
            std::fs::write(&p, &bytes).unwrap();
        }
    }
    let report: serde_json::Value =
        serde_json::from_str(&ok(&f.build(&spec, &c, &["--json"]))).unwrap();
    assert_eq!(
        report["cached"], false,
        "a damaged cache entry must not be served"
    );
    assert_eq!(
        std::fs::read(a.join("SHA256SUMS")).unwrap(),
        std::fs::read(c.join("SHA256SUMS")).unwrap()
    );
}

#[test]
fn url_inputs_are_fetched_once_into_the_store() {
    if !require_tools(&["python3"]) {
        return;
    }
    let f = Fixture::new();
    // Serve the fixture directory on a loopback port chosen by the OS.
    let mut server = std::process::Command::new("python3")
        .args(["-c", "import http.server,socketserver,sys,os\nos.chdir(sys.argv[1])\nh=http.server.SimpleHTTPRequestHandler\nh.log_message=lambda *a: None\ns=socketserver.TCPServer(('127.0.0.1',0),h)\nprint(s.server_address[1],flush=True)\ns.serve_forever()"])
        .arg(f.dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let guard = Kill(server);
    let spec_text = std::fs::read_to_string(f.spec("")).unwrap().replace(
        "source = \"kubeadm\"",
        &format!("source = \"http://127.0.0.1:{port}/kubeadm\""),
    );
    std::fs::write(f.path("spec.toml"), spec_text).unwrap();
    let spec = f.path("spec.toml");
    ok(&f.build(&spec, &f.path("o1"), &["--no-cache"]));
    assert!(
        f.path("store/sha256").join(f.digest("kubeadm")).is_file(),
        "the download is kept by digest"
    );
    drop(guard); // the server is gone: the store must serve the input
    ok(&f.build(&spec, &f.path("o2"), &["--no-cache", "--offline"]));
    assert_eq!(
        std::fs::read(f.path("o1/SHA256SUMS")).unwrap(),
        std::fs::read(f.path("o2/SHA256SUMS")).unwrap()
    );
    // Offline with an input missing from the store names it.
    let o = run(Command::new(bin("nodebake"))
        .args(["build", "--no-cache", "--offline", "--store"])
        .arg(f.path("empty-store"))
        .arg("--firstboot")
        .arg(static_firstboot())
        .arg(&spec)
        .arg("--out")
        .arg(f.path("o3")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("artifact `kubeadm`") && err.contains("--offline"),
        "{err}"
    );
}

#[test]
fn build_runs_unprivileged_with_owners_from_the_inputs() {
    if !nix_is_root() {
        // Already unprivileged: the other tests prove it.
        eprintln!("not root: every build here is unprivileged already");
        return;
    }
    if !require_tools(&["setpriv"]) {
        return;
    }
    let f = Fixture::new();
    let spec = f.spec("");
    run_ok(
        Command::new("chmod")
            .arg("-R")
            .arg("a+rwX")
            .arg(f.dir.path()),
    );
    let out = f.path("out-nobody");
    let o = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bin("nodebake"))
        .arg("build")
        .arg(&spec)
        .arg("--out")
        .arg(&out)
        .arg("--store")
        .arg(f.path("store-nobody"))
        .arg("--no-cache")
        .arg("--firstboot")
        .arg(static_firstboot())
        .env("HOME", f.dir.path()));
    if !o.status.success()
        && String::from_utf8_lossy(&o.stderr).contains("Permission denied")
        && !in_ci()
    {
        eprintln!(
            "SKIPPED: the build tree is not readable by nobody here: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return;
    }
    ok(&o);
    let m = manifest(&out);
    // Owned by root in the archive although built by nobody.
    assert_eq!(file_entry(&m, "/etc/shadow").unwrap()["uid"], 0);
    let listing = run_ok(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-tvzf")
            .arg(out.join("rootfs.tar.gz")),
    );
    assert!(
        listing.lines().all(|l| !l.contains("65534/65534")),
        "no host owner may leak into the archive"
    );
    // And byte-identical to a build by root.
    let root_out = f.path("out-root");
    ok(&f.build(&spec, &root_out, &["--no-cache"]));
    assert_eq!(
        std::fs::read(out.join("SHA256SUMS")).unwrap(),
        std::fs::read(root_out.join("SHA256SUMS")).unwrap()
    );
}

fn nix_is_root() -> bool {
    run_ok(Command::new("id").arg("-u")).trim() == "0"
}

/// The standard spec plus `extra` and an artifact `latin1.tar` whose names
/// are not UTF-8 (Latin-1, as old archives have them), unpacked to /opt/l.
fn latin1_spec(f: &Fixture, extra: &str) -> PathBuf {
    write_latin1_tar(&f.path("latin1.tar"));
    f.spec(&format!(
        "[[artifact]]\nname = \"latin1\"\nkind = \"tarball\"\nsource = \"latin1.tar\"\nsha256 = \"{}\"\ndest = \"/opt/l\"\n{extra}",
        f.digest("latin1.tar")
    ))
}

fn write_latin1_tar(path: &Path) {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let p = |b: &'static [u8]| Path::new(OsStr::from_bytes(b));
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let head = |t: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(t);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    };
    b.append_data(
        &mut head(tar::EntryType::Directory, 0o755, 0),
        p(b"r\xe9p/"),
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut head(tar::EntryType::Regular, 0o644, 5),
        p(b"r\xe9p/caf\xe9"),
        &b"latin"[..],
    )
    .unwrap();
    b.append_link(
        &mut head(tar::EntryType::Symlink, 0o777, 0),
        p(b"lien"),
        p(b"r\xe9p/caf\xe9"),
    )
    .unwrap();
    b.append_data(
        &mut head(tar::EntryType::Regular, 0o644, 2),
        p(b"back\\slash"),
        &b"ok"[..],
    )
    .unwrap();
    b.finish().unwrap();
}

#[test]
fn names_that_are_not_utf8_keep_their_bytes_in_every_output() {
    let f = Fixture::new();
    let spec = latin1_spec(&f, "");
    let out = f.path("out");
    ok(&f.build(&spec, &out, &["--no-cache"]));
    let want: [&[u8]; 3] = [b"opt/l/r\xe9p/caf\xe9", b"opt/l/lien", b"opt/l/back\\slash"];
    let has = |listing: &[u8], name: &[u8]| listing.split(|&c| c == b'\n').any(|l| l == name);

    // The real tar lists the very bytes and extracts them as such.
    let o = run(Command::new("tar")
        .arg("-tzf")
        .arg(out.join("rootfs.tar.gz")));
    assert!(o.status.success());
    let mut listing = o.stdout.clone();
    // GNU tar lists names as they are with --quoting-style=literal only.
    if !has(&listing, want[0]) {
        listing = run(Command::new("tar")
            .args(["--quoting-style=literal", "-tzf"])
            .arg(out.join("rootfs.tar.gz")))
        .stdout;
    }
    for w in want {
        assert!(has(&listing, w), "rootfs lacks {}", w.escape_ascii());
    }
    let x = f.path("x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(out.join("rootfs.tar.gz"))
            .arg("-C")
            .arg(&x)
            .arg("opt/l"),
    );
    use std::os::unix::ffi::OsStrExt;
    let caf = x.join(std::ffi::OsStr::from_bytes(b"opt/l/r\xe9p/caf\xe9"));
    assert_eq!(std::fs::read(&caf).unwrap(), b"latin");
    assert_eq!(
        std::fs::read_link(x.join("opt/l/lien"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"r\xe9p/caf\xe9"
    );

    // The real cpio reads the initramfs with the same bytes.
    let gz = std::fs::read(out.join("initramfs.cpio.gz")).unwrap();
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
    std::fs::write(f.path("i.cpio"), &raw).unwrap();
    let o = run(Command::new("sh")
        .arg("-c")
        .arg(format!("cpio -it --quiet < {}", f.path("i.cpio").display())));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for w in want {
        assert!(has(&o.stdout, w), "initramfs lacks {}", w.escape_ascii());
    }

    // The manifest says so, escaped and flagged; verify agrees.
    let m = manifest(&out);
    let e = file_entry(&m, "/opt/l/r\\xe9p/caf\\xe9").expect("escaped entry");
    assert_eq!(e["escaped"], true);
    assert_eq!(e["size"], 5);
    let l = file_entry(&m, "/opt/l/lien").unwrap();
    assert_eq!(l["escaped"], true);
    assert_eq!(l["target"], "r\\xe9p/caf\\xe9");
    // A UTF-8 name keeps its backslash as is, unflagged.
    let b = file_entry(&m, "/opt/l/back\\slash").unwrap();
    assert!(b.get("escaped").is_none(), "{b}");
    run_ok(Command::new(bin("nodebake")).arg("verify").arg(&out));

    // Reproducible like any other build.
    let again = f.path("again");
    ok(&f.build(&spec, &again, &["--no-cache"]));
    for n in ["rootfs.tar.gz", "initramfs.cpio.gz", "manifest.json"] {
        assert_eq!(
            sha256_file(&out.join(n)),
            sha256_file(&again.join(n)),
            "{n}"
        );
    }
}

#[test]
fn names_that_are_not_utf8_keep_their_bytes_on_the_disk_image() {
    if !require_tools(&[
        "mkfs.ext4",
        "debugfs",
        "mkfs.fat",
        "mcopy",
        "syslinux",
        "qemu-img",
    ]) {
        return;
    }
    let f = Fixture::new();
    let spec = latin1_spec(&f, "[outputs]\nformats = [\"disk\"]\n");
    let out = f.path("out");
    ok(&f.build(&spec, &out, &["--no-cache"]));
    // The ext4 root is the MBR's Linux (0x83) partition.
    let disk = std::fs::read(out.join("disk.raw")).unwrap();
    let start = (0..4)
        .map(|i| &disk[446 + 16 * i..462 + 16 * i])
        .find(|p| p[4] == 0x83)
        .map(|p| u64::from(u32::from_le_bytes(p[8..12].try_into().unwrap())) * 512)
        .expect("a Linux partition");
    let image = format!("{}?offset={start}", out.join("disk.raw").display());
    let ls = |dir: &[u8]| {
        use std::os::unix::ffi::OsStrExt;
        let mut req = b"ls -p ".to_vec();
        req.extend_from_slice(dir);
        let o = run(Command::new("debugfs")
            .arg("-R")
            .arg(std::ffi::OsStr::from_bytes(&req))
            .arg(&image));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    // `ls -p`: /inode/mode/uid/gid/name/size/
    let has = |listing: &[u8], name: &[u8]| {
        listing
            .split(|&c| c == b'\n')
            .any(|l| l.split(|&c| c == b'/').nth(5) == Some(name))
    };
    let l = ls(b"/opt/l");
    assert!(has(&l, b"r\xe9p"), "{}", l.escape_ascii());
    assert!(has(&l, b"lien"), "{}", l.escape_ascii());
    let l = ls(b"/opt/l/r\xe9p");
    assert!(has(&l, b"caf\xe9"), "{}", l.escape_ascii());
    run_ok(Command::new(bin("nodebake")).arg("verify").arg(&out));
}
