//! `nodebake-firstboot kubeadm-config`: prints the golden configuration on
//! stdout and keeps the secrets out of stderr.

mod common;

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_nodebake-firstboot");

fn kubeadm_config(host: &str) -> std::process::Output {
    let root = tempfile::tempdir().unwrap();
    Command::new(BIN)
        .args(["kubeadm-config", "--root"])
        .arg(root.path())
        .arg("--metadata")
        .arg(common::fixture(host))
        .output()
        .unwrap()
}

#[test]
fn prints_the_seed_configuration() {
    for (host, golden) in [
        ("k8s-master1", "v1beta2-init.yaml"),
        ("k8s-master3", "v1beta2-control-plane-join.yaml"),
        ("k8s-node2", "v1beta2-worker-join.yaml"),
    ] {
        let out = kubeadm_config(host);
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(out.status.success(), "{host}: {stderr}");
        let want = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join(golden),
        )
        .unwrap();
        // Same shape as the golden file, with this host's name and IP.
        assert_eq!(
            stdout.lines().filter(|l| l.contains("kind:")).count(),
            want.lines().filter(|l| l.contains("kind:")).count(),
            "{host}"
        );
        assert!(stdout.contains(&format!("name: {host}")), "{stdout}");
        if host == "k8s-master1" {
            assert_eq!(stdout, want);
        }
        for secret in ["0123456789abcdef", "0b1c2d3e4f5a6b7c8d9e"] {
            assert!(!stderr.contains(secret), "secret on stderr: {stderr}");
        }
    }
}
