//! The discovery hash equals what kubeadm's documentation computes with
//! `openssl x509 -pubkey -noout -in ca.crt | openssl pkey -pubin -outform
//! der | sha256sum`, on CAs made here by the openssl CLI.

mod common;

use std::process::Command;

use nodebake_firstboot::kubeadm::discovery::ca_cert_hash_from_pem;

fn sh(script: &str, dir: &std::path::Path) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn matches_the_openssl_pipeline() {
    if !common::require("discovery_hash", &["openssl", "sha256sum"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let keys = [
        ("rsa2048", "-newkey rsa:2048"),
        ("ec256", "-newkey ec -pkeyopt ec_paramgen_curve:P-256"),
        ("ed25519", "-newkey ed25519"),
    ];
    for (name, newkey) in keys {
        sh(
            &format!(
                "openssl req -x509 {newkey} -nodes -keyout {name}.key -out {name}.crt \
                 -days 1 -subj /CN=kubernetes -addext basicConstraints=critical,CA:TRUE 2>/dev/null"
            ),
            d.path(),
        );
        let want = sh(
            &format!(
                "openssl x509 -pubkey -noout -in {name}.crt | openssl pkey -pubin -outform der | sha256sum"
            ),
            d.path(),
        );
        let want = format!("sha256:{}", want.split_whitespace().next().unwrap());
        let pem = std::fs::read_to_string(d.path().join(format!("{name}.crt"))).unwrap();
        assert_eq!(ca_cert_hash_from_pem(&pem).unwrap(), want, "{name}");
        // A chain file: the first certificate counts.
        let chain = format!("{pem}{pem}");
        assert_eq!(ca_cert_hash_from_pem(&chain).unwrap(), want, "{name} chain");
    }
}

#[test]
fn v1_certificate_without_version_field() {
    if !common::require("discovery_hash", &["openssl", "sha256sum"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // `openssl x509 -req` without extensions writes a v1 certificate (no
    // [0] version field).
    sh(
        "openssl req -new -newkey rsa:2048 -nodes -keyout v1.key -out v1.csr -subj /CN=v1 2>/dev/null && \
         openssl x509 -req -in v1.csr -signkey v1.key -days 1 -out v1.crt 2>/dev/null",
        d.path(),
    );
    let text = sh("openssl x509 -in v1.crt -noout -text", d.path());
    let want = sh(
        "openssl x509 -pubkey -noout -in v1.crt | openssl pkey -pubin -outform der | sha256sum",
        d.path(),
    );
    let want = format!("sha256:{}", want.split_whitespace().next().unwrap());
    let pem = std::fs::read_to_string(d.path().join("v1.crt")).unwrap();
    assert_eq!(ca_cert_hash_from_pem(&pem).unwrap(), want, "{text}");
}
