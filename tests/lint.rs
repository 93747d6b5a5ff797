//! `nodebake lint` and the build's lint on real images: the real EL9 root
//! filesystem (its rpm database and aarch64 ELF files), an RPM made here
//! with `rpmbuild` whose `Requires` nothing provides, and the same base
//! with one shared library removed.

use std::path::{Path, PathBuf};
use std::process::Command;

use nodebake_suite::*;

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
        .arg("--profiles-dir")
        .arg(repo().join("profiles"))
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

/// A noarch RPM `name-version` holding `files` (path, content, mode).
fn mkrpm(dir: &Path, name: &str, version: &str, files: &[(&str, &str, u32)]) -> PathBuf {
    let mut install = String::new();
    let mut list = String::new();
    for (path, content, mode) in files {
        let parent = path.rsplit_once('/').unwrap().0;
        install += &format!(
            "mkdir -p %{{buildroot}}{parent}\nprintf '%s' '{content}' > %{{buildroot}}{path}\n"
        );
        list += &format!("%attr({mode:o},root,root) {path}\n");
    }
    let spec = format!(
        "Name: {name}\nVersion: {version}\nRelease: 1.nb\nSummary: stand-in\nLicense: MIT\n\
         BuildArch: noarch\nAutoReqProv: no\n%define _binary_payload w19.zstdio\n\
         %define __os_install_post %{{nil}}\n%define _build_id_links none\n\
         %global debug_package %{{nil}}\n%description\nStand-in for the distribution's {name}.\n\
         %install\n{install}%files\n{list}"
    );
    let sp = dir.join(format!("{name}.spec"));
    std::fs::write(&sp, spec).unwrap();
    run_ok(
        Command::new("rpmbuild")
            .arg("-bb")
            .arg("--define")
            .arg(format!("_topdir {}", dir.join("top").display()))
            .arg(&sp),
    );
    dir.join(format!("top/RPMS/noarch/{name}-{version}-1.nb.noarch.rpm"))
}

fn rpm_artifact(name: &str, rpm: &Path) -> String {
    format!(
        "[[artifact]]\nname = \"{name}\"\nkind = \"rpm\"\nsource = \"{}\"\nsha256 = \"{}\"\n",
        rpm.display(),
        sha256_file(rpm)
    )
}

/// The artifacts of an EL-shaped node image over the EL9 fixture: every
/// command kubeadm's preflight and the agent need (stand-in scripts from
/// RPMs), a kernel package with config and modules of `release`, haproxy
/// and keepalived RPMs of the given versions, the CNI plugins and every
/// image kubeadm 1.31 asks for.
fn el_shaped(
    dir: &Path,
    release: &str,
    conntrack: &str,
    haproxy: &str,
    keepalived: &str,
) -> String {
    let sh = "#!/bin/sh\nexit 0\n";
    let mut tools: Vec<(String, &str, u32)> = [
        "crictl",
        "conntrack",
        "ip",
        "tc",
        "iptables",
        "ebtables",
        "mount",
        "nsenter",
        "ethtool",
        "socat",
        "kubeadm",
        "kubelet",
        "kubectl",
        "openssl",
        "modprobe",
        "sysctl",
        "ctr",
        "etcdctl",
    ]
    .iter()
    .map(|c| (format!("/usr/bin/{c}"), sh, 0o755))
    .collect();
    tools.push(("/usr/sbin/chronyd".into(), sh, 0o755));
    tools.push(("/usr/sbin/NetworkManager".into(), sh, 0o755));
    let t: Vec<(&str, &str, u32)> = tools.iter().map(|(p, c, m)| (p.as_str(), *c, *m)).collect();
    let tools = mkrpm(dir, "nb-node-tools", "1.0", &t);
    let m = format!("/usr/lib/modules/{release}");
    let mut kfiles: Vec<(String, &str, u32)> = vec![
        (format!("{m}/config"), "CONFIG_BRIDGE_NETFILTER=y\n", 0o644),
        (
            format!("{m}/modules.builtin"),
            "kernel/net/bridge/br_netfilter.ko\n",
            0o644,
        ),
    ];
    for (sub, module) in [
        ("fs/overlayfs", "overlay"),
        ("net/netfilter/ipvs", "ip_vs"),
        ("net/netfilter/ipvs", "ip_vs_rr"),
        ("net/netfilter/ipvs", "ip_vs_wrr"),
        ("net/netfilter/ipvs", "ip_vs_sh"),
        ("net/netfilter", conntrack),
    ] {
        kfiles.push((
            format!("{m}/kernel/{sub}/{module}.ko.xz"),
            "stand-in",
            0o644,
        ));
    }
    let k: Vec<(&str, &str, u32)> = kfiles
        .iter()
        .map(|(p, c, mo)| (p.as_str(), *c, *mo))
        .collect();
    let kernel = mkrpm(dir, "kernel-core", release.split('-').next().unwrap(), &k);
    let hap = mkrpm(dir, "haproxy", haproxy, &[("/usr/sbin/haproxy", sh, 0o755)]);
    let kad = mkrpm(
        dir,
        "keepalived",
        keepalived,
        &[("/usr/sbin/keepalived", sh, 0o755)],
    );
    let cni = dir.join("cni.tar");
    let members: Vec<Member> = ["loopback", "bridge", "host-local", "portmap"]
        .iter()
        .map(|p| Member::File(p, sh.as_bytes(), 0o755, 0, 0))
        .collect();
    write_tar(&cni, &members, false);
    let mut s = String::new();
    s += &rpm_artifact("nb-node-tools", &tools);
    s += &rpm_artifact("kernel-core", &kernel);
    s += &rpm_artifact("haproxy", &hap);
    s += &rpm_artifact("keepalived", &kad);
    s += &format!(
        "[[artifact]]\nname = \"cni-plugins\"\nkind = \"tarball\"\nsource = \"{}\"\nsha256 = \"{}\"\ndest = \"/opt/cni/bin\"\n",
        cni.display(),
        sha256_file(&cni)
    );
    let list = run_ok(Command::new(bin("nodebake")).args([
        "--json",
        "images",
        "--kubernetes-version",
        "1.31.0",
    ]));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    for img in list["images"].as_array().unwrap() {
        let name = img["name"].as_str().unwrap();
        let archive = dir.join(format!("{name}.tar"));
        write_tar(
            &archive,
            &[Member::File("manifest.json", b"[]", 0o644, 0, 0)],
            false,
        );
        s += &format!(
            "[[artifact]]\nname = \"img-{name}\"\nkind = \"image\"\nsource = \"{}\"\nsha256 = \"{}\"\nreference = \"{}\"\n",
            archive.display(),
            sha256_file(&archive),
            img["reference"].as_str().unwrap()
        );
    }
    s
}

/// An aarch64 spec over `base` declaring the EL base packages, with
/// top-level keys `top` and the tables `body`.
fn el_spec(dir: &Path, base: &Path, top: &str, body: &str) -> PathBuf {
    let s = format!(
        "spec_version = 1\nname = \"el-shaped\"\nversion = \"1\"\narch = \"aarch64\"\n{top}\
         [base]\nsource = \"{}\"\nsha256 = \"{}\"\npackages = [\"bash\", \"coreutils-single\"]\n\
         [kubernetes]\nversion = \"1.31.0\"\n[outputs]\nformats = [\"rootfs\"]\n{body}",
        base.display(),
        sha256_file(base)
    );
    let p = dir.join("spec.toml");
    std::fs::write(&p, s).unwrap();
    p
}

fn errors_and_warnings(r: &serde_json::Value) -> (Vec<String>, Vec<String>) {
    let pick = |sev: &str| {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == sev)
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    (pick("error"), pick("warning"))
}

#[test]
fn el_shaped_images_with_every_requirement_pass_lint_and_old_haproxy_fails() {
    if !require_tools(&["rpmbuild"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let base = el9_fixture();
    // EL9-shaped: 5.14 kernel (nf_conntrack), haproxy 2.4, keepalived 2.2;
    // EL7-shaped: 3.10 kernel (nf_conntrack_ipv4), haproxy 1.5, keepalived 1.3.
    for (shape, release, conntrack, haproxy, keepalived) in [
        (
            "el9",
            "5.14.0-427.el9.aarch64",
            "nf_conntrack",
            "2.4.22",
            "2.2.8",
        ),
        (
            "el7",
            "3.10.0-1160.el7.aarch64",
            "nf_conntrack_ipv4",
            "1.5.18",
            "1.3.5",
        ),
    ] {
        let sub = dir.path().join(shape);
        std::fs::create_dir(&sub).unwrap();
        let extra = el_shaped(&sub, release, conntrack, haproxy, keepalived);
        let s = el_spec(
            &sub,
            &base,
            "profiles = [\"master\", \"worker\"]\n",
            &format!(
                "{extra}\n[lint]\nlevel = \"error\"\nipvs = true\nallow = [\"requires:(*\"]\n"
            ),
        );
        let out = sub.join("out");
        let o = build(&s, &out, &store);
        assert!(
            o.status.success(),
            "{shape}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (ok, r) = lint_json(&out, &["--ipvs"]);
        let (errors, warnings) = errors_and_warnings(&r);
        assert!(ok && errors.is_empty(), "{shape}: {errors:?}\n{r:#}");
        assert_eq!(warnings, Vec::<String>::new(), "{shape}: {r:#}");
        assert_eq!(r["kernels"][0], release);
    }
    // haproxy 1.4 cannot read the rendered configuration: the build refuses.
    let sub = dir.path().join("old");
    std::fs::create_dir(&sub).unwrap();
    let extra = el_shaped(
        &sub,
        "3.10.0-1160.el7.aarch64",
        "nf_conntrack_ipv4",
        "1.4.27",
        "1.3.5",
    );
    let s = el_spec(
        &sub,
        &base,
        "profiles = [\"master\"]\n",
        &format!("{extra}\n[lint]\nlevel = \"error\"\nallow = [\"requires:(*\"]\n"),
    );
    let o = build(&s, &sub.join("out"), &store);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("error[version:haproxy]: haproxy 1.4.27 is older than 1.5"),
        "{err}"
    );
}

#[test]
fn shipped_el_specs_list_every_input_lint_demands() {
    for spec in ["images/el7-k8s-1.20.toml", "images/el9-k8s-1.31.toml"] {
        let (ok, r) = lint_json(&repo().join(spec), &["--inputs-only"]);
        let (errors, warnings) = errors_and_warnings(&r);
        assert!(ok && errors.is_empty(), "{spec}: {errors:?}");
        assert_eq!(warnings, Vec::<String>::new(), "{spec}");
    }
    // Without its crictl and with EL7's haproxy 1.4, the EL7 spec fails,
    // naming both.
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(repo().join("images/el7-k8s-1.20.toml")).unwrap();
    let text = text
        .replace("name = \"crictl\" #", "name = \"other-tool\" #")
        .replace("haproxy-1.5.18-9.el7", "haproxy-1.4.24-4.el7");
    let p = dir.path().join("el7.toml");
    std::fs::write(&p, text).unwrap();
    let profiles = repo().join("profiles");
    let (ok, r) = lint_json(
        &p,
        &[
            "--inputs-only",
            "--profiles-dir",
            profiles.to_str().unwrap(),
        ],
    );
    let (errors, _) = errors_and_warnings(&r);
    assert!(!ok);
    assert_eq!(
        errors,
        vec!["command:crictl".to_string(), "version:haproxy".into()],
        "{r:#}"
    );
}

#[test]
fn base_packages_the_base_lacks_fail_the_build_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let base = el9_fixture();
    let s = el_spec(dir.path(), &base, "", "");
    let text = std::fs::read_to_string(&s).unwrap().replace(
        "\"coreutils-single\"]",
        "\"coreutils-single\", \"util-linux\"]",
    );
    std::fs::write(&s, text).unwrap();
    let o = build(&s, &dir.path().join("out"), &dir.path().join("store"));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("[base] packages: the base") && err.contains("does not hold util-linux"),
        "{err}"
    );
}
