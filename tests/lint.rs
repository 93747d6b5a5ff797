//! `nodebake lint` and the build's lint on real images: the real EL9 root
//! filesystem (its rpm database and aarch64 ELF files), an RPM made here
//! with `rpmbuild` whose `Requires` nothing provides, and the same base
//! with one shared library removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake_suite::*;

fn el9_fixture() -> PathBuf {
    [
        std::env::var_os("NODEBAKE_FIXTURES")
            .map(|d| PathBuf::from(d).join("el/almalinux-9-micro-aarch64.tar.xz")),
        Some(repo().join("../shared/fixtures/el/almalinux-9-micro-aarch64.tar.xz")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
    .expect("EL9 fixture (set NODEBAKE_FIXTURES)")
}

const RPM_SPEC: &str = r#"
Name: nbreq
Version: 1
Release: 1.el9
Summary: nodebake lint test payload
License: MIT
BuildArch: noarch
AutoReqProv: no
Requires: nodebake-missing-capability
Requires: libc.so.6()(64bit)
Requires: /usr/bin/bash
Requires: /usr/bin/no-such-interpreter
%define _binary_payload w19.zstdio
%define __os_install_post %{nil}
%define _build_id_links none
%global debug_package %{nil}
%description
Test.
%install
mkdir -p %{buildroot}/usr/share/nbreq
echo data > %{buildroot}/usr/share/nbreq/data
%files
/usr/share/nbreq/data
"#;

fn rpmbuild(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("nbreq.spec"), RPM_SPEC).unwrap();
    run_ok(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("top").display()))
            .arg(dir.join("nbreq.spec")),
    );
    dir.join("top/RPMS/noarch/nbreq-1-1.el9.noarch.rpm")
}

/// A spec over `base` (and the RPM, when given) with `extra` appended.
fn spec(dir: &Path, base: &Path, rpm: Option<&Path>, extra: &str) -> PathBuf {
    let mut s = format!(
        "spec_version = 1\nname = \"el9-lint\"\nversion = \"1\"\narch = \"aarch64\"\n\
         [base]\nsource = \"{}\"\nsha256 = \"{}\"\n[kubernetes]\nversion = \"1.31.0\"\n",
        base.display(),
        sha256_file(base)
    );
    if let Some(r) = rpm {
        s += &format!(
            "[[artifact]]\nname = \"nbreq\"\nkind = \"rpm\"\nsource = \"{}\"\nsha256 = \"{}\"\n",
            r.display(),
            sha256_file(r)
        );
    }
    s += "[outputs]\nformats = [\"rootfs\"]\n";
    s += extra;
    let p = dir.join(format!("spec-{}.toml", sha256_hex(s.as_bytes())));
    std::fs::write(&p, s).unwrap();
    p
}

fn build(spec: &Path, out: &Path, store: &Path) -> std::process::Output {
    run(Command::new(bin("nodebake"))
        .arg("build")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .arg("--store")
        .arg(store)
        .arg("--without-firstboot")
        .arg("--no-cache"))
}

fn lint_json(target: &Path, extra: &[&str]) -> (bool, serde_json::Value) {
    let o = run(Command::new(bin("nodebake"))
        .arg("--json")
        .arg("lint")
        .arg(target)
        .args(extra));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "lint --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o.status.success(), v)
}

fn finding<'a>(report: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
}

fn ids(report: &serde_json::Value, prefix: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .filter(|i| i.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn unmet_requires_and_a_removed_library_are_named_with_their_package_and_file() {
    if !require_tools(&["rpmbuild", "tar"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let base = el9_fixture();
    let rpm = rpmbuild(dir.path());

    // The real EL9 base: every ELF's libraries and every package's
    // Requires resolve (the one rich dependency of glibc is reported as
    // unsupported, not guessed).
    let out = dir.path().join("clean");
    let s = spec(dir.path(), &base, None, "");
    let o = build(&s, &out, &store);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, r) = lint_json(&out, &[]);
    assert!(!ok, "images, CNI and kubeadm are missing: lint must fail");
    assert!(r["elf_checked"].as_u64().unwrap() > 20, "{r}");
    assert_eq!(r["packages_checked"], 23, "{r}");
    assert_eq!(ids(&r, "elf:"), Vec::<String>::new(), "{r:#}");
    let req = ids(&r, "requires:");
    assert_eq!(req.len(), 1, "{req:?}");
    let rich = finding(&r, &req[0]).unwrap();
    assert_eq!(rich["severity"], "warning");
    assert!(rich["requirement"]
        .as_str()
        .unwrap()
        .contains("unsupported"));
    // What kubeadm 1.31 asks for is named exactly, with its tag.
    let pause = finding(&r, "image:pause").unwrap();
    assert_eq!(pause["severity"], "error");
    assert!(
        pause["requirement"]
            .as_str()
            .unwrap()
            .contains("registry.k8s.io/pause:3.10"),
        "{pause}"
    );
    assert_eq!(finding(&r, "cni:bridge").unwrap()["severity"], "error");

    // The RPM artifact's Requires: the unmet capability and file are
    // errors naming the package and where it came from; what the base
    // provides (a soname, a file) is met.
    let out = dir.path().join("rpm");
    let s = spec(dir.path(), &base, Some(&rpm), "");
    let o = build(&s, &out, &store);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, r) = lint_json(&out, &[]);
    let mut req = ids(&r, "requires:");
    req.retain(|i| !i.starts_with("requires:("));
    assert_eq!(
        req,
        vec![
            "requires:/usr/bin/no-such-interpreter".to_string(),
            "requires:nodebake-missing-capability".into()
        ],
        "{r:#}"
    );
    let cap = finding(&r, "requires:nodebake-missing-capability").unwrap();
    assert_eq!(cap["severity"], "error");
    assert!(
        cap["needed_by"]
            .as_str()
            .unwrap()
            .contains("nbreq-1-1.el9.noarch (artifact:nbreq)"),
        "{cap}"
    );
    // The build recorded the same findings in the manifest.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert!(m["lint"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == "requires:nodebake-missing-capability"));

    // The base with libacl's file removed: coreutils cannot start.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xJf")
            .arg(&base)
            .arg("-C")
            .arg(&root),
    );
    std::fs::remove_file(root.join("usr/lib64/libacl.so.1.1.2301")).unwrap();
    let broken = dir.path().join("broken.tar.gz");
    run_ok(
        Command::new("tar")
            .arg("-czf")
            .arg(&broken)
            .arg("-C")
            .arg(&root)
            .arg("."),
    );
    let out = dir.path().join("broken");
    let s = spec(dir.path(), &broken, None, "");
    let o = build(&s, &out, &store);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, r) = lint_json(&out, &[]);
    let acl = finding(&r, "elf:libacl.so.1").unwrap_or_else(|| panic!("{r:#}"));
    assert_eq!(acl["severity"], "error");
    let by = acl["needed_by"].as_str().unwrap();
    assert!(by.contains("/usr/bin/coreutils (base)"), "{by}");
    assert!(acl["requirement"].as_str().unwrap().contains("aarch64"));
    assert_eq!(ids(&r, "elf:"), vec!["elf:libacl.so.1".to_string()]);

    // `[lint] level = "error"` fails the build naming the findings;
    // allowing them by id lets it through.
    let out = dir.path().join("strict");
    let s = spec(
        dir.path(),
        &broken,
        None,
        "[lint]\nlevel = \"error\"\nallow = [\"image:*\", \"cni:*\", \"command:*\"]\n",
    );
    let o = build(&s, &out, &store);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fails lint with 1 errors"), "{err}");
    assert!(err.contains("error[elf:libacl.so.1]"), "{err}");
    assert!(!out.exists(), "a failed build leaves no output");
    let s = spec(
        dir.path(),
        &base,
        None,
        "[lint]\nlevel = \"error\"\nallow = [\"image:*\", \"cni:*\", \"command:*\"]\n",
    );
    let o = build(&s, &out, &store);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // `nodebake lint SPEC` builds nothing and reports the same; --allow
    // on the command line adds to the spec's.
    let s = spec(dir.path(), &broken, None, "");
    let (ok, r) = lint_json(&s, &["--store", store.to_str().unwrap()]);
    assert!(!ok);
    assert!(finding(&r, "elf:libacl.so.1").is_some(), "{r:#}");
    let (ok, r) = lint_json(
        &s,
        &[
            "--store",
            store.to_str().unwrap(),
            "--allow",
            "image:*",
            "--allow",
            "cni:*",
            "--allow",
            "elf:*",
        ],
    );
    assert!(ok, "{r:#}");
    assert_eq!(
        finding(&r, "elf:libacl.so.1").unwrap()["severity"],
        "allowed"
    );
}

#[test]
fn the_inventorys_image_repository_must_be_the_baked_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let base = el9_fixture();
    let out = dir.path().join("out");
    let s = spec(dir.path(), &base, None, "");
    let o = build(&s, &out, &store);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Kubernetes 1.20 without image_repository: kubeadm's k8s.gcr.io, as
    // the spec's `images = "auto"` would bake.
    let inv = dir.path().join("inventory.toml");
    let text = std::fs::read_to_string(repo().join("examples/seed-ha-cluster.toml")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("image_repository"))
        .map(|l| {
            if l.starts_with("kubernetes_version") {
                "kubernetes_version = \"1.20.2\"".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&inv, &text).unwrap();
    let (_, r) = lint_json(&out, &["--inventory", inv.to_str().unwrap()]);
    let pause = finding(&r, "image:pause").unwrap();
    assert!(
        pause["requirement"]
            .as_str()
            .unwrap()
            .contains("k8s.gcr.io/pause:3.10"),
        "{pause}"
    );
}
