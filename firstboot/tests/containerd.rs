//! Baked image import against a real containerd (state in a temporary
//! directory, socket on a private path) with a small docker-archive image
//! built in the test.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{require, require_root, ChildGuard};
use nodebake_contract::image::BakedImage;
use nodebake_firstboot::root::Root;
use nodebake_firstboot::runner::SystemRunner;
use nodebake_firstboot::steps::containerd::{import_and_verify, present_images};
use sha2::{Digest, Sha256};

const REF: &str = "example.local/nodebake/test:1";

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A one-layer docker-archive tagged `tag`, written to `out`.
fn make_image(work: &Path, tag: &str, out: &Path) {
    let layer_dir = work.join("layer");
    std::fs::create_dir_all(&layer_dir).unwrap();
    std::fs::write(layer_dir.join("hello.txt"), "hello from nodebake\n").unwrap();
    let img = work.join("img");
    std::fs::create_dir_all(&img).unwrap();
    sh(Command::new("tar")
        .arg("-cf")
        .arg(img.join("layer.tar"))
        .arg("-C")
        .arg(&layer_dir)
        .arg("hello.txt"));
    let diff_id = hex::encode(Sha256::digest(
        std::fs::read(img.join("layer.tar")).unwrap(),
    ));
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Cmd":["/hello.txt"]}},"rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
    );
    std::fs::write(img.join("config.json"), config).unwrap();
    std::fs::write(
        img.join("manifest.json"),
        format!(r#"[{{"Config":"config.json","RepoTags":["{tag}"],"Layers":["layer.tar"]}}]"#),
    )
    .unwrap();
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    sh(Command::new("tar")
        .arg("-cf")
        .arg(out)
        .arg("-C")
        .arg(&img)
        .args(["manifest.json", "config.json", "layer.tar"]));
}

#[test]
fn imports_baked_images_into_k8s_namespace() {
    if !require_root("containerd import")
        || !require("containerd import", &["containerd", "ctr", "tar"])
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("containerd.sock");
    let conf = t.path().join("config.toml");
    std::fs::write(
        &conf,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{1}\"\n[ttrpc]\n  address = \"{1}.ttrpc\"\n",
            t.path().display(),
            sock.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(t.path().join("containerd.log")).unwrap();
    let _containerd = ChildGuard::new(
        Command::new("containerd")
            .arg("--config")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let address = sock.to_string_lossy().into_owned();
    let runner = SystemRunner::default();
    let start = Instant::now();
    while present_images(&runner, &address).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "containerd did not come up: {}",
            std::fs::read_to_string(t.path().join("containerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let root_dir = t.path().join("rootfs");
    let archive = "/usr/lib/nodebake/images/test.tar";
    make_image(
        t.path(),
        REF,
        &root_dir.join(archive.trim_start_matches('/')),
    );
    let root = Root::new(&root_dir);
    let images = vec![BakedImage {
        reference: REF.into(),
        digest: None,
        path: archive.into(),
        format: "docker-archive".into(),
    }];
    assert!(!present_images(&runner, &address)
        .unwrap()
        .unwrap()
        .contains(REF));
    let imported = import_and_verify(&runner, &root, &images, &address).unwrap();
    assert_eq!(imported, vec![REF.to_string()]);
    assert!(present_images(&runner, &address)
        .unwrap()
        .unwrap()
        .contains(REF));
    // Second time: already present, nothing imported.
    assert!(import_and_verify(&runner, &root, &images, &address)
        .unwrap()
        .is_empty());

    // An archive that does not hold the reference it is listed under fails
    // verification with the reference named.
    let wrong = vec![BakedImage {
        reference: "example.local/nodebake/other:2".into(),
        digest: None,
        path: archive.into(),
        format: "docker-archive".into(),
    }];
    let e = import_and_verify(&runner, &root, &wrong, &address).unwrap_err();
    assert!(
        format!("{e:#}").contains("example.local/nodebake/other:2"),
        "{e:#}"
    );
}
