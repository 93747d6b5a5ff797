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
        // An earlier build's output (a build may replace only that).
        std::fs::write(
            out.join("manifest.json"),
            "{\"manifest_version\": 1, \"builder\": \"nodebake 0.0.0\"}\n",
        )
        .unwrap();
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

/// Runs a rootfs build of a small valid spec into `out`.
fn build_into(c: &Case, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let spec = c.path("ok.toml");
    std::fs::write(&spec, c.base_spec("x86_64", "")).unwrap();
    run(Command::new(bin("nodebake"))
        .arg("build")
        .arg(&spec)
        .arg("--out")
        .arg(out)
        .arg("--store")
        .arg(c.path("store"))
        .arg("--without-firstboot")
        .arg("--no-cache")
        .args(extra))
}

/// A build replaces --out as a whole: a non-empty directory that is not an
/// earlier nodebake output is refused (named, untouched) unless --force.
#[test]
fn out_that_is_not_a_nodebake_output_is_refused_unless_forced() {
    let c = Case::new();
    let out = c.path("home-of-someone");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("thesis.tex"), "years of work").unwrap();
    let o = build_into(&c, &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "replaced a foreign directory");
    assert_has(
        &err,
        &[
            "--out",
            "home-of-someone",
            "not an earlier nodebake output",
            "--force",
        ],
    );
    assert_eq!(
        std::fs::read_to_string(out.join("thesis.tex")).unwrap(),
        "years of work"
    );
    // A file or a symbolic link is never an output directory.
    std::fs::write(c.path("afile"), "x").unwrap();
    let o = build_into(&c, &c.path("afile"), &["--force"]);
    assert!(!o.status.success());
    std::os::unix::fs::symlink(&out, c.path("link")).unwrap();
    let o = build_into(&c, &c.path("link"), &[]);
    assert_has(&String::from_utf8_lossy(&o.stderr), &["symbolic link"]);
    // --force replaces it; from then on it is a nodebake output.
    let o = build_into(&c, &out, &["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("thesis.tex").exists() && out.join("manifest.json").exists());
    let o = build_into(&c, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // An empty directory is fine.
    let empty = c.path("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(build_into(&c, &empty, &[]).status.success());
}

/// A killed build leaves its work directory beside --out; the next build
/// removes it (its lock is free) but never one a running build holds.
#[test]
fn work_directories_of_killed_builds_are_removed_by_the_next_build() {
    let c = Case::new();
    let parent = c.path("outs");
    std::fs::create_dir_all(&parent).unwrap();
    let dead = parent.join(".nodebake-work-dead01");
    std::fs::create_dir_all(dead.join("blobs")).unwrap();
    std::fs::write(dead.join(".lock"), "").unwrap();
    std::fs::write(dead.join("blobs/big"), vec![0u8; 3 << 20]).unwrap();
    let live = parent.join(".nodebake-work-live01");
    std::fs::create_dir_all(&live).unwrap();
    std::fs::write(live.join(".lock"), "").unwrap();
    // Another build's lock, held by a process of its own (flock(1)).
    let mut holder = Command::new("flock")
        .arg(live.join(".lock"))
        .args(["sleep", "120"])
        .spawn()
        .expect("flock (util-linux)");
    let mut held = false;
    for _ in 0..100 {
        let probe = Command::new("flock")
            .args(["-n"])
            .arg(live.join(".lock"))
            .arg("true")
            .status()
            .unwrap();
        if !probe.success() {
            held = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(held, "flock(1) did not take the lock");
    let o = build_into(&c, &parent.join("img"), &[]);
    let _ = holder.kill();
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        !dead.exists(),
        "the killed build's work directory is still there"
    );
    assert!(
        live.exists(),
        "a running build's work directory was removed"
    );
    assert!(
        err.contains(".nodebake-work-dead01") && err.contains("killed"),
        "{err}"
    );
    // The build's own work directory is gone too.
    let left: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".nodebake-work-") && n != ".nodebake-work-live01")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn special_files_outside_their_places_are_refused_naming_path_and_input() {
    let cases: [(&str, Vec<Member>, &[&str]); 3] = [
        (
            "mem.tar",
            vec![Member::CharDev("mem", 1, 1, 0o4777)],
            &[
                "/opt/x/mem",
                "character device 1,1",
                "mode 4777",
                "`mem.tar`",
                "never allowed",
            ],
        ),
        (
            "fifo.tar",
            vec![Member::Fifo("pipe", 0o644)],
            &["/opt/x/pipe", "FIFO", "`fifo.tar`", "special_files"],
        ),
        (
            "suid.tar",
            vec![Member::File("helper", b"x", 0o4755, 0, 0)],
            &[
                "/opt/x/helper",
                "set-id file",
                "mode 4755",
                "`suid.tar`",
                "special_files",
            ],
        ),
    ];
    for (name, members, want) in cases {
        let c = Case::new();
        write_tar(&c.path(name), &members, false);
        let err =
            c.fails(&c.base_spec("x86_64", &c.artifact(name, "tarball", "dest = \"/opt/x\"")));
        assert_has(&err, want);
    }
}

#[test]
fn special_files_the_spec_allows_are_built_and_set_id_ones_listed() {
    let c = Case::new();
    write_tar(
        &c.path("suid.tar"),
        &[
            Member::File("helper", b"x", 0o4755, 0, 0),
            Member::Fifo("pipe", 0o600),
        ],
        false,
    );
    let spec = c.path("spec.toml");
    std::fs::write(
        &spec,
        // `special_files` is a top-level field: before the first table.
        c.base_spec(
            "x86_64",
            &c.artifact("suid.tar", "tarball", "dest = \"/opt/x\""),
        )
        .replacen("[base]", "special_files = [\"/opt/x/*\"]\n[base]", 1),
    )
    .unwrap();
    let out = c.path("out");
    run_ok(
        Command::new(bin("nodebake"))
            .arg("build")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--store")
            .arg(c.path("store"))
            .arg("--without-firstboot")
            .arg("--no-cache"),
    );
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["setid_files"], serde_json::json!(["/opt/x/helper"]));
}

#[test]
fn a_name_holding_a_character_reserved_for_raw_bytes_is_refused() {
    // Names that are not UTF-8 keep their bytes (tests/build_outputs.rs);
    // the private-use characters that stand for those bytes inside
    // nodebake cannot also come from a UTF-8 name.
    let c = Case::new();
    write_tar(
        &c.path("pua.tar"),
        &[Member::File("caf\u{10FFE9}", b"x", 0o644, 0, 0)],
        false,
    );
    let err = c.fails(&c.base_spec(
        "x86_64",
        &c.artifact("pua.tar", "tarball", "dest = \"/opt/x\""),
    ));
    assert_has(
        &err,
        &[
            "artifact `pua.tar`",
            "member name",
            "\\u{10ffe9}",
            "U+10FF80..U+10FFFF",
        ],
    );
}
