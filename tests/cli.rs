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
