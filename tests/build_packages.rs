//! Builds with real package inputs: the real EL9 root filesystem (usrmerge,
//! rpmdb.sqlite), an RPM made here with `rpmbuild`, and real Debian
//! packages fetched with `apt-get download`.

use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake_suite::*;

fn build(spec: &Path, out: &Path, store: &Path, firstboot: bool) {
    let mut cmd = Command::new(bin("nodebake"));
    cmd.arg("build")
        .arg(spec)
        .arg("--out")
        .arg(out)
        .arg("--store")
        .arg(store)
        .arg("--no-cache");
    if firstboot {
        cmd.arg("--firstboot").arg(static_firstboot());
    } else {
        cmd.arg("--without-firstboot");
    }
    run_ok(&mut cmd);
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

fn file<'a>(m: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in the manifest"))
}

const RPM_SPEC: &str = r#"
Name: nbnode
Version: 1.31.0
Release: 1.el9
Summary: nodebake test payload
License: MIT
BuildArch: noarch
%define _binary_payload w19.zstdio
%define __os_install_post %{nil}
%define _build_id_links none
%global debug_package %{nil}
%description
Test.
%install
mkdir -p %{buildroot}/usr/bin %{buildroot}/etc/nbnode %{buildroot}/bin
echo '#!/bin/sh' > %{buildroot}/usr/bin/nbnode
echo 'token' > %{buildroot}/etc/nbnode/secret
%files
%attr(0755,root,root) /usr/bin/nbnode
%attr(0600,nobody,nobody) /etc/nbnode/secret
%dir /etc/nbnode
"#;

fn rpmbuild(dir: &Path) -> PathBuf {
    std::fs::write(dir.join("nbnode.spec"), RPM_SPEC).unwrap();
    run_ok(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("top").display()))
            .arg(dir.join("nbnode.spec")),
    );
    dir.join("top/RPMS/noarch/nbnode-1.31.0-1.el9.noarch.rpm")
}

#[test]
fn el9_base_keeps_usrmerge_lists_rpmdb_and_resolves_rpm_owners() {
    if !require_tools(&["rpmbuild", "rpm", "tar"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = el9_fixture();
    let rpm = rpmbuild(dir.path());
    std::fs::write(
        dir.path().join("wrapper.sh"),
        "#!/bin/sh\nexec kubeadm \"$@\"\n",
    )
    .unwrap();
    let spec = format!(
        r#"spec_version = 1
name = "el9"
version = "1"
arch = "aarch64"
[base]
source = "{base}"
sha256 = "{base_sha}"
[kubernetes]
version = "1.31.0"
[[artifact]]
name = "wrapper"
kind = "file"
source = "wrapper.sh"
sha256 = "{w}"
dest = "/bin/kubeadm-wrapper"
mode = "0755"
[[artifact]]
name = "nbnode"
kind = "rpm"
source = "{rpm}"
sha256 = "{rpm_sha}"
[outputs]
formats = ["rootfs"]
"#,
        base = base.display(),
        base_sha = sha256_file(&base),
        w = sha256_file(&dir.path().join("wrapper.sh")),
        rpm = rpm.display(),
        rpm_sha = sha256_file(&rpm),
    );
    std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
    let out = dir.path().join("out");
    build(
        &dir.path().join("spec.toml"),
        &out,
        &dir.path().join("store"),
        false,
    );
    let m = manifest(&out);
    // EL layout: os-release detected, usrmerge links kept, artifacts routed.
    assert_eq!(m["base"]["id"], "almalinux");
    assert_eq!(m["base"]["version_id"], "9.3");
    assert_eq!(file(&m, "/bin")["type"], "symlink");
    assert_eq!(file(&m, "/bin")["target"], "usr/bin");
    assert_eq!(file(&m, "/usr/bin/kubeadm-wrapper")["origin"], "wrapper");
    // The RPM's owner names resolved through the EL base's /etc/passwd.
    let secret = file(&m, "/etc/nbnode/secret");
    assert_eq!(
        (
            secret["uid"].as_u64(),
            secret["gid"].as_u64(),
            secret["mode"].as_str()
        ),
        (Some(65534), Some(65534), Some("0600"))
    );
    // SBOM: every package of the base's rpmdb, as rpm itself lists them, plus the RPM.
    let root = dir.path().join("unpacked");
    std::fs::create_dir(&root).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xJf")
            .arg(&base)
            .arg("-C")
            .arg(&root)
            .arg("--wildcards")
            .arg("*var/lib/rpm*"),
    );
    let expected = run_ok(
        Command::new("rpm")
            .arg("--root")
            .arg(&root)
            .arg("--dbpath")
            .arg("/var/lib/rpm")
            .arg("-qa")
            .arg("--qf")
            .arg("%{NAME} %{VERSION}-%{RELEASE}\\n"),
    );
    let mut expected: Vec<String> = expected.lines().map(str::to_string).collect();
    expected.push("nbnode 1.31.0-1.el9".into());
    expected.sort();
    let mut got: Vec<String> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {}-{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["release"].as_str().unwrap()
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(m["base"]["package_db"], "rpmdb.sqlite");
    run_ok(Command::new(bin("nodebake")).arg("verify").arg(&out));
}

#[test]
fn real_debian_packages_unpack_into_the_image() {
    let names = [
        "containerd",
        "runc",
        "containernetworking-plugins",
        "keepalived",
        "haproxy",
        "kubernetes-client",
    ];
    let debs = match debian_packages(&names) {
        Ok(d) => d,
        Err(e) if !in_ci() => {
            eprintln!("SKIPPED: cannot fetch Debian packages: {e:#}");
            return;
        }
        Err(e) => panic!("{e:#}"),
    };
    if !require_tools(&["dpkg-deb"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_small_base(&dir.path().join("base.tar.gz"));
    let mut spec = format!(
        "spec_version = 1\nname = \"debs\"\nversion = \"1\"\narch = \"x86_64\"\n[base]\nsource = \"base.tar.gz\"\nsha256 = \"{}\"\n[kubernetes]\nversion = \"1.20.2\"\n[outputs]\nformats = [\"rootfs\"]\n[systemd]\nenable = [\"containerd.service\"]\n",
        sha256_file(&dir.path().join("base.tar.gz"))
    );
    for (n, d) in names.iter().zip(&debs) {
        let extra = if *n == "containernetworking-plugins" {
            "include = [\"usr/lib/cni/*\"]\nstrip_components = 3\ndest = \"/opt/cni/bin\"\n"
        } else {
            ""
        };
        spec.push_str(&format!(
            "[[artifact]]\nname = \"{n}\"\nkind = \"deb\"\nsource = \"{}\"\nsha256 = \"{}\"\n{extra}",
            d.display(),
            sha256_file(d)
        ));
    }
    std::fs::write(dir.path().join("spec.toml"), spec).unwrap();
    let out = dir.path().join("out");
    build(
        &dir.path().join("spec.toml"),
        &out,
        &dir.path().join("store"),
        true,
    );
    let m = manifest(&out);
    for (path, origin) in [
        ("/usr/bin/containerd", "containerd"),
        ("/usr/sbin/runc", "runc"),
        ("/opt/cni/bin/bridge", "containernetworking-plugins"),
        ("/opt/cni/bin/host-local", "containernetworking-plugins"),
        ("/usr/sbin/keepalived", "keepalived"),
        ("/usr/sbin/haproxy", "haproxy"),
        ("/usr/bin/kubectl", "kubernetes-client"),
    ] {
        let f = file(&m, path);
        assert_eq!(f["origin"], origin, "{path}");
        assert_eq!(f["mode"], "0755", "{path}");
    }
    // Every regular file dpkg-deb lists for runc is there with its size.
    let listing = run_ok(Command::new("dpkg-deb").arg("-c").arg(&debs[1]));
    for line in listing.lines().filter(|l| l.starts_with('-')) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let size: u64 = cols[2].parse().unwrap();
        let path = cols[5].trim_start_matches('.');
        let resolved = path.replacen(
            "/lib/",
            "/usr/lib/",
            if path.starts_with("/lib/") { 1 } else { 0 },
        );
        assert_eq!(file(&m, &resolved)["size"].as_u64(), Some(size), "{path}");
    }
    // The SBOM carries each package's version as dpkg-deb reads it.
    for (n, d) in names.iter().zip(&debs) {
        let version = run_ok(Command::new("dpkg-deb").arg("-f").arg(d).arg("Version"))
            .trim()
            .to_string();
        let p = m["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *n)
            .unwrap_or_else(|| panic!("{n} not in SBOM"));
        let epoch = p["epoch"]
            .as_u64()
            .map(|e| format!("{e}:"))
            .unwrap_or_default();
        let rel = p["release"].as_str().unwrap();
        let full = format!(
            "{epoch}{}{}",
            p["version"].as_str().unwrap(),
            if rel.is_empty() {
                String::new()
            } else {
                format!("-{rel}")
            }
        );
        assert_eq!(full, version, "{n}");
    }
    // containerd enabled the way systemctl would.
    let link = file(
        &m,
        "/etc/systemd/system/multi-user.target.wants/containerd.service",
    );
    assert_eq!(link["type"], "symlink");
    // The baked firstboot is static: no PT_INTERP, no dynamic section.
    let tmp = dir.path().join("x");
    std::fs::create_dir(&tmp).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(out.join("rootfs.tar.gz"))
            .arg("-C")
            .arg(&tmp)
            .arg("usr/lib/nodebake/bin/nodebake-firstboot"),
    );
    let fb = tmp.join("usr/lib/nodebake/bin/nodebake-firstboot");
    let ph = run_ok(Command::new("readelf").arg("-lW").arg(&fb));
    assert!(
        !ph.contains("INTERP") && !ph.contains("DYNAMIC"),
        "baked firstboot must be static:\n{ph}"
    );
    let dynsec = run_ok(Command::new("readelf").arg("-d").arg(&fb));
    assert!(dynsec.contains("no dynamic section"), "{dynsec}");
}
