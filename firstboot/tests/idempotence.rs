//! Idempotence and resumability of `run` against a temporary root with the
//! recording runner: a second run changes nothing, and a run killed after
//! any step (failure injected after each step in turn) and run again ends
//! exactly like an uninterrupted run, with no duplicated lines or entries.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{fixture, tree};
use nodebake_firstboot::agent::{self, RunOptions};
use nodebake_firstboot::journal::Journal;
use nodebake_firstboot::root::Root;
use nodebake_firstboot::runner::{RecordingRunner, Runner};
use nodebake_firstboot::steps::all_steps;

/// A root that looks like a used EL machine: hosts and fstab with lines of
/// their own, SELinux enforcing, firewalld and kubelet installed, baked
/// images listed in image.json.
fn prepare(dir: &Path) {
    let w = |p: &str, s: &str| {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    };
    w("etc/hosts", "127.0.0.1 localhost\n10.0.0.9 keepme\n");
    w(
        "etc/fstab",
        "/dev/mapper/cl-root / xfs defaults 0 0\n/dev/mapper/cl-swap none swap defaults 0 0\n",
    );
    w(
        "etc/selinux/config",
        "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
    );
    w("sys/fs/selinux/enforce", "1\n");
    w("usr/lib/systemd/system/firewalld.service", "[Unit]\n");
    w("usr/lib/systemd/system/kubelet.service", "[Unit]\n");
    std::os::unix::fs::symlink("/usr/lib/systemd/system/firewalld.service", {
        let l = dir.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&l).unwrap();
        l.join("firewalld.service")
    })
    .unwrap();
    w(
        "usr/lib/nodebake/image.json",
        r#"{"schema_version":1,"name":"el9-k8s","version":"1","arch":"x86_64",
        "kubernetes_version":"1.20.0","base_os":"rocky 9",
        "images":[{"reference":"registry.aliyuncs.com/google_containers/pause:3.2","digest":null,
        "path":"/usr/lib/nodebake/images/pause.tar","format":"docker-archive"}],
        "profiles":["worker"],"cni_manifest":null,"spec_digest":"sha256:00"}"#,
    );
}

fn opts(dir: &Path, host: &str) -> RunOptions {
    let mut o = RunOptions::new(Root::new(dir));
    o.metadata = Some(fixture(host).to_string_lossy().into_owned());
    o
}

#[test]
fn second_run_changes_nothing_and_keeps_foreign_lines() {
    let t = tempfile::tempdir().unwrap();
    prepare(t.path());
    let runner = RecordingRunner::default();
    let report = agent::run(&opts(t.path(), "k8s-master2"), &runner).unwrap();
    assert!(!report.changed.is_empty());
    let skipped = runner.skipped();
    assert!(skipped.iter().any(|s| s == "swapoff -a"), "{skipped:?}");
    assert!(skipped.iter().any(|s| s == "setenforce 0"), "{skipped:?}");
    assert!(
        skipped
            .iter()
            .any(|s| s == "systemctl disable --now firewalld.service"),
        "{skipped:?}"
    );
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("images import")
                && s.ends_with("/usr/lib/nodebake/images/pause.tar")),
        "{skipped:?}"
    );

    let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
    let hosts = read("etc/hosts");
    assert!(
        hosts.starts_with("127.0.0.1 localhost\n10.0.0.9 keepme\n"),
        "{hosts}"
    );
    assert_eq!(hosts.matches("k8s-node3").count(), 1);
    assert!(read("etc/fstab").contains("#nodebake-swapoff# /dev/mapper/cl-swap"));
    assert_eq!(
        std::fs::read_link(
            t.path()
                .join("etc/systemd/system/dev-mapper-cl\\x2dswap.swap")
        )
        .unwrap(),
        Path::new("/dev/null")
    );
    assert!(read("etc/selinux/config").contains("SELINUX=permissive"));
    assert!(read("etc/containerd/config.toml")
        .contains("sandbox_image = \"registry.aliyuncs.com/google_containers/pause:3.2\""));
    assert!(read("etc/sysconfig/kubelet").contains("--node-ip=192.168.147.139"));
    let state = t.path().join("var/lib/nodebake/state.json");
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!read("var/lib/nodebake/state.json").contains("0123456789abcdef"));

    let before = tree(t.path(), "var/lib/nodebake");
    let mut again = opts(t.path(), "k8s-master2");
    again.again = true;
    let report = agent::run(&again, &RecordingRunner::default()).unwrap();
    assert!(report.changed.is_empty(), "{:?}", report.changed);
    assert_eq!(before, tree(t.path(), "var/lib/nodebake"));
}

#[test]
fn killed_after_any_step_resumes_to_the_same_tree() {
    let reference = tempfile::tempdir().unwrap();
    prepare(reference.path());
    agent::run(
        &opts(reference.path(), "k8s-node2"),
        &RecordingRunner::default(),
    )
    .unwrap();
    let want = tree(reference.path(), "var/lib/nodebake");
    let loaded = agent::load(&opts(reference.path(), "k8s-node2"), false).unwrap();
    let ids: Vec<&str> = all_steps(&loaded.node, &loaded.profile)
        .iter()
        .map(|s| s.id())
        .collect();

    for id in &ids {
        let t = tempfile::tempdir().unwrap();
        prepare(t.path());
        let mut o = opts(t.path(), "k8s-node2");
        o.fail_after = Some(id.to_string());
        let err = agent::run(&o, &RecordingRunner::default()).unwrap_err();
        assert!(format!("{err:#}").contains("injected failure"), "{err:#}");
        assert!(!t.path().join("var/lib/nodebake/firstboot.done").exists());
        let j = Journal::load(&Root::new(t.path())).unwrap();
        assert_eq!(j.last_error.as_ref().unwrap().step, *id);
        assert!(!j.is_done(id));

        let status = agent::status(&Root::new(t.path())).unwrap();
        assert!(
            status.contains(&format!("last error: step {id}")),
            "{status}"
        );

        let runner = RecordingRunner::default();
        agent::run(&opts(t.path(), "k8s-node2"), &runner).unwrap();
        assert_eq!(
            want,
            tree(t.path(), "var/lib/nodebake"),
            "after failure at {id}"
        );
        let j = Journal::load(&Root::new(t.path())).unwrap();
        let mut seen: Vec<&str> = j.steps.iter().map(|s| s.id.as_str()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            ids.len(),
            "journal entries after failure at {id}"
        );
        assert_eq!(j.steps.len(), ids.len());
        assert!(j.last_error.is_none());
        assert!(t.path().join("var/lib/nodebake/firstboot.done").exists());
        // Steps journaled before the failure are not run again.
        let pos = ids.iter().position(|x| x == id).unwrap();
        if pos > 0 {
            assert!(!runner
                .skipped()
                .iter()
                .any(|s| s.starts_with("org.freedesktop.hostname1")));
        }
    }
}

#[test]
fn new_metadata_restarts_the_journal() {
    let t = tempfile::tempdir().unwrap();
    let mut o = opts(t.path(), "k8s-node1");
    o.fail_after = Some("sysctl".into());
    assert!(agent::run(&o, &RecordingRunner::default()).is_err());
    let j = Journal::load(&Root::new(t.path())).unwrap();
    assert!(j.is_done("hostname"));
    // Same root, other node: nothing of the old journal is trusted.
    agent::run(&opts(t.path(), "k8s-node3"), &RecordingRunner::default()).unwrap();
    let hn = std::fs::read_to_string(t.path().join("etc/hostname")).unwrap();
    assert_eq!(hn, "k8s-node3\n");
    let hosts = std::fs::read_to_string(t.path().join("etc/hosts")).unwrap();
    assert_eq!(hosts.matches("# BEGIN nodebake").count(), 1);
}
