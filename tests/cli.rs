//! CLI conventions of `nodebake`: shell completions and man pages made
//! from its clap definition.

use std::process::Command;

use nodebake_suite::{bin, run_ok};

#[test]
fn completions_parse_in_their_shell_and_man_pages_cover_every_subcommand() {
    let bash = run_ok(Command::new(bin("nodebake")).args(["completions", "bash"]));
    assert!(
        bash.contains("_nodebake()") && bash.contains("kubeconfig"),
        "{bash}"
    );
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("nodebake.bash");
    std::fs::write(&f, &bash).unwrap();
    // bash itself parses it, and it registers the completion.
    let o = run_ok(
        Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && complete -p nodebake", f.display())),
    );
    assert!(o.contains("nodebake"), "{o}");
    for shell in ["zsh", "fish"] {
        let s = run_ok(Command::new(bin("nodebake")).args(["completions", shell]));
        assert!(
            s.contains("nodebake") && s.contains("serve"),
            "{shell}: {s}"
        );
    }

    let out = t.path().join("man");
    run_ok(
        Command::new(bin("nodebake"))
            .arg("man")
            .arg("--out")
            .arg(&out),
    );
    for page in [
        "nodebake.1",
        "nodebake-build.1",
        "nodebake-cluster.1",
        "nodebake-serve.1",
    ] {
        let text =
            std::fs::read_to_string(out.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: {text}"
        );
    }
}

/// `--json` everywhere it is accepted: `images`, `man`, `cluster
/// kubeconfig` (a kubeconfig kubectl reads in JSON, or where it was
/// written), and a clear JSON refusal where JSON cannot apply.
#[test]
fn json_outputs_are_json() {
    let v: serde_json::Value = serde_json::from_str(&run_ok(Command::new(bin("nodebake")).args([
        "--json",
        "images",
        "--kubernetes-version",
        "1.28.7",
    ])))
    .unwrap();
    assert_eq!(v["kubernetes_version"], "1.28.7");
    let refs: Vec<&str> = v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap())
        .collect();
    assert!(
        refs.contains(&"registry.k8s.io/kube-apiserver:v1.28.7"),
        "{refs:?}"
    );

    let t = tempfile::tempdir().unwrap();
    let man = t.path().join("man");
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(bin("nodebake"))
            .args(["--json", "man", "--out"])
            .arg(&man),
    ))
    .unwrap();
    let pages = v["pages"].as_array().unwrap();
    assert!(pages.iter().any(|p| p == "nodebake-serve.1"), "{v}");
    assert!(man.join("nodebake-serve.1").is_file());

    let o = Command::new(bin("nodebake"))
        .args(["--json", "completions", "bash"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("does not apply"),
        "{v}"
    );

    let cluster = t.path().join("cluster");
    run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "init"])
            .arg(nodebake_suite::repo().join("examples/seed-ha-cluster.toml"))
            .arg("--out")
            .arg(&cluster),
    );
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(bin("nodebake"))
            .args(["--json", "cluster", "kubeconfig"])
            .arg(&cluster),
    ))
    .unwrap();
    assert_eq!(v["kind"], "Config");
    assert!(
        v["users"][0]["user"]["client-key-data"].is_string(),
        "keys present"
    );
    let file = t.path().join("admin.json");
    let v: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new(bin("nodebake"))
            .args(["--json", "cluster", "kubeconfig"])
            .arg(&cluster)
            .arg("--out")
            .arg(&file),
    ))
    .unwrap();
    assert_eq!(v["mode"], "0600");
    assert!(file.is_file());
}
