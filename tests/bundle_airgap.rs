//! Air-gap proof: fetch a spec's inputs (files over loopback HTTP, an image
//! from a loopback mock registry), build online, write a bundle (twice:
//! byte-identical), then — inside a network namespace that has only `lo`
//! (`unshare --net`) — import the bundle into a fresh store and build with
//! `--offline`. The two builds' SHA256SUMS must be identical. Also: a
//! corrupt bundle adds nothing to the store, and `--offline` names the
//! inputs missing from the store.

mod fetch_mock;

use std::path::Path;
use std::process::Command;

use fetch_mock::{file_reply, MockServer, Registry, Reply, TestImage};
use nodebake_suite::{bin, in_ci, require_tools, run, run_ok, sha256_file, write_small_base};

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn store_objects(store: &Path) -> usize {
    std::fs::read_dir(store.join("sha256"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn offline_build_from_bundle_in_netns_matches_online_build() {
    if !require_tools(&["unshare", "ip"]) {
        return;
    }
    if !is_root() {
        assert!(!in_ci(), "the network-namespace test needs root in CI");
        eprintln!("SKIPPED: needs root for unshare --net");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let base = t.path().join("base.tar.gz");
    write_small_base(&base);
    let base_bytes = std::fs::read(&base).unwrap();
    let tool = b"#!/bin/sh\necho offline tool\n".to_vec();
    let img = TestImage::new("amd64", b"offline image\n");
    let mut reg = Registry::default();
    reg.add_image("airgap/img", "1", &img);
    let (b, f) = (base_bytes.clone(), tool.clone());
    let srv = MockServer::start(move |r| match r.path.as_str() {
        "/base.tar.gz" => file_reply(r, &b),
        "/tool.sh" => file_reply(r, &f),
        p if p.starts_with("/v2/") => reg.reply(r),
        _ => Reply::status(404),
    });
    let spec_dir = t.path().join("spec");
    std::fs::create_dir_all(spec_dir.join("oci")).unwrap();
    let spec = spec_dir.join("airgap.toml");
    std::fs::write(
        &spec,
        format!(
            r#"spec_version = 1
name = "airgap"
version = "1"
arch = "x86_64"
source_date_epoch = 1700000000
[base]
source = "{base}"
[kubernetes]
version = "1.31.1"
[outputs]
formats = ["rootfs"]

[[artifact]]
name = "tool"
kind = "file"
source = "{tool}"
dest = "/usr/bin/tool.sh"
mode = "0755"

[[artifact]]
name = "img"
kind = "image"
source = "registry"
reference = "127.0.0.1:{port}/airgap/img:1"

[[file]]
path = "/etc/airgap"
content = "built offline\n"
"#,
            base = srv.url("/base.tar.gz"),
            tool = srv.url("/tool.sh"),
            port = srv.port
        ),
    )
    .unwrap();
    let online_store = t.path().join("store-online");
    run_ok(
        Command::new(bin("nodebake"))
            .arg("fetch")
            .arg(&spec)
            .arg("--pin")
            .arg("--store")
            .arg(&online_store),
    );
    let build = |spec: &Path, store: &Path, out: &Path, offline: bool| {
        let mut c = Command::new(bin("nodebake"));
        c.arg("build")
            .arg(spec)
            .arg("--store")
            .arg(store)
            .arg("--out")
            .arg(out)
            .arg("--without-firstboot")
            .arg("--no-cache");
        if offline {
            c.arg("--offline");
        }
        c
    };
    let online_out = t.path().join("out-online");
    run_ok(&mut build(&spec, &online_store, &online_out, false));

    let bundle = t.path().join("airgap.bundle");
    run_ok(
        Command::new(bin("nodebake"))
            .args(["bundle", "create"])
            .arg(&spec)
            .arg("-o")
            .arg(&bundle)
            .arg("--store")
            .arg(&online_store),
    );
    let bundle2 = t.path().join("airgap2.bundle");
    run_ok(
        Command::new(bin("nodebake"))
            .args(["bundle", "create"])
            .arg(&spec)
            .arg("-o")
            .arg(&bundle2)
            .arg("--store")
            .arg(&online_store),
    );
    assert_eq!(
        sha256_file(&bundle),
        sha256_file(&bundle2),
        "bundles are deterministic"
    );
    drop(srv); // nothing serves the inputs any more

    // A corrupt bundle: refused, naming the member, and nothing is added.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let corrupt = t.path().join("corrupt.bundle");
    std::fs::write(&corrupt, &bytes).unwrap();
    let corrupt_store = t.path().join("store-corrupt");
    let o = run(Command::new(bin("nodebake"))
        .args(["bundle", "import"])
        .arg(&corrupt)
        .arg("--store")
        .arg(&corrupt_store));
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("sha256") || e.contains("corrupt"), "{e}");
    assert_eq!(
        store_objects(&corrupt_store),
        0,
        "nothing added from a corrupt bundle"
    );

    // An extra member, listed in a consistently rewritten SHA256SUMS but
    // not an input of the spec: refused, and nothing is added.
    let extra = t.path().join("extra.bundle");
    {
        let payload = b"not an input of this spec".to_vec();
        let hex = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload));
        let mut ar = tar::Archive::new(std::fs::File::open(&bundle).unwrap());
        let mut members: Vec<(String, Vec<u8>)> = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut b).unwrap();
            members.push((name, b));
        }
        assert_eq!(members[0].0, "SHA256SUMS");
        let member = format!("store/sha256/{hex}");
        members[0]
            .1
            .extend_from_slice(format!("{hex}  {member}\n").as_bytes());
        members.push((member, payload));
        let mut b = tar::Builder::new(std::fs::File::create(&extra).unwrap());
        for (name, data) in &members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.finish().unwrap();
    }
    let extra_store = t.path().join("store-extra");
    let o = run(Command::new(bin("nodebake"))
        .args(["bundle", "import"])
        .arg(&extra)
        .arg("--store")
        .arg(&extra_store));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("not among the inputs"), "{e}");
    assert_eq!(store_objects(&extra_store), 0, "nothing added: {e}");

    // --offline with an empty store names what is missing.
    let empty = t.path().join("store-empty");
    let o = run(&mut build(&spec, &empty, &t.path().join("out-x"), true));
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("base (")
            && e.contains("artifact `tool`")
            && e.contains("artifact `img`")
            && e.contains("--offline"),
        "every missing input is named: {e}"
    );

    // The air gap: a network namespace with nothing but lo.
    let offline_store = t.path().join("store-offline");
    let unpacked = t.path().join("unpacked");
    let offline_out = t.path().join("out-offline");
    let nb = bin("nodebake");
    let script = format!(
        "set -e\nip link set lo up\nip -o link show\n{nb} bundle import {bundle} --store {store} --spec-dir {dir}\n{nb} build {dir}/airgap.toml --offline --store {store} --out {out} --without-firstboot --no-cache\n",
        nb = nb.display(),
        bundle = bundle.display(),
        store = offline_store.display(),
        dir = unpacked.display(),
        out = offline_out.display()
    );
    let out = run_ok(Command::new("unshare").args(["--net", "--", "sh", "-c", &script]));
    let links: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(": ") && l.contains("mtu"))
        .collect();
    assert_eq!(links.len(), 1, "only lo in the namespace: {out}");
    assert!(links[0].contains(": lo:"), "{out}");
    let online = std::fs::read_to_string(online_out.join("SHA256SUMS")).unwrap();
    let offline = std::fs::read_to_string(offline_out.join("SHA256SUMS")).unwrap();
    assert_eq!(online, offline, "offline build equals online build");
    eprintln!("identical SHA256SUMS:\n{online}");
}
