//! Bad input: every case fails with an error naming the culprit, and never
//! leaves a half-written output directory.

use std::path::PathBuf;
use std::process::Command;

use nodebake_suite::*;

/// A scratch dir with a small valid base and a spec writer.
struct Case {
    dir: tempfile::TempDir,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        write_small_base(&dir.path().join("base.tar.gz"));
        Case { dir }
    }
    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn base_spec(&self, arch: &str, extra: &str) -> String {
        format!(
            "spec_version = 1\nname = \"bad\"\nversion = \"1\"\narch = \"{arch}\"\n[base]\nsource = \"base.tar.gz\"\nsha256 = \"{}\"\n[kubernetes]\nversion = \"1.31.0\"\n[outputs]\nformats = [\"rootfs\"]\n{extra}\n",
            sha256_file(&self.path("base.tar.gz"))
        )
    }
    /// An artifact entry for file `name` with its real digest.
    fn artifact(&self, name: &str, kind: &str, extra: &str) -> String {
        format!(
            "[[artifact]]\nname = \"{name}\"\nkind = \"{kind}\"\nsource = \"{name}\"\nsha256 = \"{}\"\n{extra}\n",
            sha256_file(&self.path(name))
        )
    }
    /// Builds `spec_text`; asserts failure; returns stderr. The output
    /// directory must not exist afterwards, and a pre-existing one must be
    /// unchanged.
    fn fails(&self, spec_text: &str) -> String {
        let spec = self.path("spec.toml");
        std::fs::write(&spec, spec_text).unwrap();
        let out = self.path("out");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("previous"), "earlier build").unwrap();
        let before = tree_digest(&out);
        let o = run(Command::new(bin("nodebake"))
            .arg("build")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(self.path("store"))
            .arg("--without-firstboot")
            .arg("--no-cache"));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!o.status.success(), "build should fail; stderr: {err}");
        assert_eq!(
            tree_digest(&out),
            before,
            "failed build changed the output dir: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        err
    }
}

fn assert_has(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error lacks `{p}`:\n{err}");
    }
}

#[test]
fn missing_input_file() {
    let c = Case::new();
    let spec = c.base_spec("x86_64", "[[artifact]]\nname = \"kubelet\"\nkind = \"file\"\nsource = \"nope/kubelet\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\ndest = \"/usr/bin/kubelet\"\n");
    let err = c.fails(&spec);
    assert_has(&err, &["artifact `kubelet`", "nope/kubelet"]);
}

#[test]
fn digest_mismatch_says_expected_and_actual() {
    let c = Case::new();
    std::fs::write(c.path("kubelet"), host_elf()).unwrap();
    let actual = sha256_file(&c.path("kubelet"));
    let wrong = "1".repeat(64);
    let spec = c.base_spec("x86_64", &format!("[[artifact]]\nname = \"kubelet\"\nkind = \"file\"\nsource = \"kubelet\"\nsha256 = \"{wrong}\"\ndest = \"/usr/bin/kubelet\"\n"));
    let err = c.fails(&spec);
    assert_has(
        &err,
        &["artifact `kubelet`", "digest mismatch", &wrong, &actual],
    );
}

#[test]
fn unpinned_input_outside_the_repository_is_refused() {
    let c = Case::new();
    std::fs::write(c.path("kubelet"), host_elf()).unwrap();
    let spec = c.base_spec("x86_64", "[[artifact]]\nname = \"kubelet\"\nkind = \"file\"\nsource = \"kubelet\"\ndest = \"/usr/bin/kubelet\"\n");
    let err = c.fails(&spec);
    assert_has(&err, &["artifact `kubelet`", "sha256", "required"]);
}

#[test]
fn corrupt_and_truncated_archives() {
    let c = Case::new();
    // Not an archive at all.
    std::fs::write(
        c.path("garbage.tgz"),
        vec![0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    )
    .unwrap();
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("garbage.tgz", "tarball", "")));
    assert_has(&err, &["artifact `garbage.tgz`"]);
    // A real tarball cut in half.
    let full = c.path("full.tgz");
    write_tar(
        &full,
        &[
            Member::File("big", &vec![7u8; 300_000], 0o644, 0, 0),
            Member::File("x", b"x", 0o644, 0, 0),
        ],
        true,
    );
    let bytes = std::fs::read(&full).unwrap();
    std::fs::write(c.path("cut.tgz"), &bytes[..bytes.len() / 2]).unwrap();
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("cut.tgz", "tarball", "")));
    assert_has(&err, &["artifact `cut.tgz`"]);
    // A truncated base.
    let base = std::fs::read(c.path("base.tar.gz")).unwrap();
    std::fs::write(c.path("base.tar.gz"), &base[..base.len() - 40]).unwrap();
    let err = c.fails(&c.base_spec("x86_64", ""));
    assert_has(&err, &["base"]);
}

#[test]
fn truncated_and_corrupt_deb_and_rpm() {
    let c = Case::new();
    let debs = match debian_packages(&["runc"]) {
        Ok(d) => d,
        Err(e) if !in_ci() => {
            eprintln!("SKIPPED: cannot download runc.deb: {e:#}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    let deb = std::fs::read(&debs[0]).unwrap();
    std::fs::write(c.path("runc.deb"), &deb[..deb.len() * 2 / 3]).unwrap();
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("runc.deb", "deb", "")));
    assert_has(&err, &["artifact `runc.deb`"]);
    // An RPM that is really a deb: the lead magic is wrong.
    std::fs::write(c.path("fake.rpm"), &deb).unwrap();
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("fake.rpm", "rpm", "")));
    assert_has(&err, &["artifact `fake.rpm`", "RPM"]);
    // A deb that is a tarball.
    std::fs::copy(c.path("base.tar.gz"), c.path("notadeb.deb")).unwrap();
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("notadeb.deb", "deb", "")));
    assert_has(&err, &["artifact `notadeb.deb`"]);
}

#[test]
fn unknown_compression_is_named() {
    let c = Case::new();
    let mut bz = b"BZh91AY&SY".to_vec();
    bz.extend_from_slice(&[0u8; 64]);
    std::fs::write(c.path("plugins.tar.bz2"), bz).unwrap();
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("plugins.tar.bz2", "tarball", "")));
    assert_has(&err, &["artifact `plugins.tar.bz2`", "bzip2"]);
}

#[test]
fn path_traversal_in_archives_is_refused() {
    let cases: [(&str, Vec<Member>, &str); 5] = [
        (
            "dotdot.tar",
            vec![Member::File("../evil", b"x", 0o644, 0, 0)],
            "`..`",
        ),
        (
            "deep-dotdot.tar",
            vec![Member::File("a/../../evil", b"x", 0o644, 0, 0)],
            "`..`",
        ),
        (
            "absolute.tar",
            vec![Member::File("/etc/evil", b"x", 0o644, 0, 0)],
            "absolute",
        ),
        (
            "symlink.tar",
            vec![
                Member::Dir("a/", 0o755),
                Member::Symlink("a/link", "../../../../etc/shadow"),
            ],
            "escapes",
        ),
        (
            "hardlink.tar",
            vec![Member::Hardlink("x", "../outside")],
            "`..`",
        ),
    ];
    for (name, members, why) in cases {
        let c = Case::new();
        write_tar(&c.path(name), &members, false);
        let err =
            c.fails(&c.base_spec("x86_64", &c.artifact(name, "tarball", "dest = \"/opt/x\"")));
        assert_has(&err, &[&format!("artifact `{name}`"), why]);
    }
    // A hard link to a file of the base (outside this archive).
    let c = Case::new();
    write_tar(
        &c.path("steal.tar"),
        &[Member::Hardlink("etc/stolen", "etc/shadow")],
        false,
    );
    let err = c.fails(&c.base_spec("x86_64", &c.artifact("steal.tar", "tarball", "")));
    assert_has(
        &err,
        &["artifact `steal.tar`", "hard link", "outside this archive"],
    );
}

#[test]
fn conflicting_inputs_need_an_explicit_winner() {
    let c = Case::new();
    write_tar(
        &c.path("a.tar"),
        &[Member::File(
            "etc/containerd/config.toml",
            b"version = 2\n",
            0o644,
            0,
            0,
        )],
        false,
    );
    write_tar(
        &c.path("b.tar"),
        &[Member::File(
            "etc/containerd/config.toml",
            b"version = 3\n",
            0o644,
            0,
            0,
        )],
        false,
    );
    let both = format!(
        "{}{}",
        c.artifact("a.tar", "tarball", ""),
        c.artifact("b.tar", "tarball", "")
    );
    let err = c.fails(&c.base_spec("x86_64", &both));
    assert_has(
        &err,
        &[
            "/etc/containerd/config.toml",
            "`a.tar`",
            "`b.tar`",
            "overwrite",
        ],
    );
    // With `overwrite`, b wins and the build succeeds.
    let spec = c.base_spec(
        "x86_64",
        &format!(
            "{}{}",
            c.artifact("a.tar", "tarball", ""),
            c.artifact("b.tar", "tarball", "overwrite = [\"/etc/containerd/*\"]")
        ),
    );
    std::fs::write(c.path("ok.toml"), spec).unwrap();
    run_ok(
        Command::new(bin("nodebake"))
            .arg("build")
            .arg(c.path("ok.toml"))
            .arg("--out")
            .arg(c.path("ok-out"))
            .arg("--store")
            .arg(c.path("store"))
            .arg("--without-firstboot"),
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(c.path("ok-out/manifest.json")).unwrap()).unwrap();
    let f = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "/etc/containerd/config.toml")
        .unwrap();
    assert_eq!(f["origin"], "b.tar");
}

#[test]
fn unknown_fields_and_versions_are_named() {
    let c = Case::new();
    let err = c.fails(&c.base_spec("x86_64", "colour = \"blue\""));
    assert_has(&err, &["colour"]);
    let err = c.fails(
        &c.base_spec("x86_64", "")
            .replace("spec_version = 1", "spec_version = 2"),
    );
    assert_has(&err, &["spec_version", "2"]);
    let err = c.fails(&c.base_spec(
        "x86_64",
        "[[artifact]]\nname = \"x\"\nkind = \"zip\"\nsource = \"x\"\n",
    ));
    assert_has(&err, &["zip"]);
    let err = c.fails(&c.base_spec("sparc", ""));
    assert_has(&err, &["arch", "sparc"]);
}

#[test]
fn foreign_architecture_is_refused_naming_file_and_both_arches() {
    let c = Case::new();
    // A real aarch64 EL9 base for an x86_64 image.
    let fixture = el9_fixture();
    std::fs::copy(&fixture, c.path("alma.tar.xz")).unwrap();
    let spec = c
        .base_spec("x86_64", "")
        .replace("base.tar.gz", "alma.tar.xz")
        .replace(
            &sha256_file(&c.path("base.tar.gz")),
            &sha256_file(&c.path("alma.tar.xz")),
        );
    let err = c.fails(&spec);
    assert_has(&err, &["base", "aarch64", "x86_64", "ELF"]);
    assert!(err.contains("`/usr/"), "the file is named: {err}");
    // An x86_64 artifact in an aarch64 image.
    std::fs::write(c.path("kubelet"), host_elf()).unwrap();
    let spec = format!(
        "{spec}{}",
        c.artifact("kubelet", "file", "dest = \"/usr/bin/kubelet\"")
    )
    .replace("arch = \"x86_64\"", "arch = \"aarch64\"");
    let err = c.fails(&spec);
    assert_has(
        &err,
        &[
            "artifact `kubelet`",
            "/usr/bin/kubelet",
            "x86_64",
            "aarch64",
        ],
    );
}

#[test]
fn dynamic_firstboot_is_refused() {
    let c = Case::new();
    let spec = c.path("spec.toml");
    std::fs::write(&spec, c.base_spec("x86_64", "")).unwrap();
    let o = run(Command::new(bin("nodebake"))
        .arg("build")
        .arg(&spec)
        .arg("--out")
        .arg(c.path("out"))
        .arg("--store")
        .arg(c.path("store"))
        .arg("--firstboot")
        .arg("/bin/true"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_has(&err, &["/bin/true", "dynamically linked"]);
    assert!(!c.path("out").exists());
}

/// The real EL9 root filesystem fixture (aarch64).
pub fn el9_fixture() -> PathBuf {
    let candidates = [
        std::env::var_os("NODEBAKE_FIXTURES")
            .map(|d| PathBuf::from(d).join("el/almalinux-9-micro-aarch64.tar.xz")),
        Some(repo().join("../shared/fixtures/el/almalinux-9-micro-aarch64.tar.xz")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("EL9 fixture not found (set NODEBAKE_FIXTURES)"))
}
