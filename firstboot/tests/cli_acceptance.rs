//! The acceptance lines of issue 3, run against the built binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, text, tree};

const BIN: &str = env!("CARGO_BIN_EXE_nodebake-firstboot");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("starting the agent")
}

#[test]
fn run_on_empty_root_prepares_the_node() {
    let r = tempfile::tempdir().unwrap();
    let root = r.path().to_str().unwrap();
    let md = fixture("k8s-node1");
    let o = run(&["run", "--root", root, "--metadata", md.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);

    let read = |p: &str| std::fs::read_to_string(r.path().join(p)).unwrap();
    assert_eq!(read("etc/hostname").trim(), "k8s-node1");
    let hosts = read("etc/hosts");
    for name in [
        "k8s-master1",
        "k8s-master2",
        "k8s-master3",
        "k8s-node1",
        "k8s-node2",
        "k8s-node3",
        "master.k8s.io",
    ] {
        assert!(hosts.contains(name), "{name} missing from hosts:\n{hosts}");
    }
    assert!(hosts.contains("192.168.147.154 master.k8s.io"));
    let sysctl_dir = r.path().join("etc/sysctl.d");
    let sysctl: String = std::fs::read_dir(&sysctl_dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(sysctl.contains("bridge-nf-call-iptables = 1"), "{sysctl}");
    let modules: String = std::fs::read_dir(r.path().join("etc/modules-load.d"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(modules.lines().any(|l| l == "br_netfilter"), "{modules}");
    assert!(
        modules.lines().any(|l| l == "ip_vs"),
        "ipvs mode: {modules}"
    );

    // Host-changing commands are listed as skipped, never run.
    for cmd in [
        "skipped: modprobe br_netfilter",
        "skipped: sysctl -p /etc/sysctl.d/",
        "skipped: org.freedesktop.hostname1",
        "skipped: systemctl restart containerd.service",
    ] {
        assert!(out.contains(cmd), "`{cmd}` not listed:\n{out}");
    }
    assert!(r.path().join("var/lib/nodebake/firstboot.done").exists());
    assert_ne!(
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "k8s-node1",
        "the host's hostname must not change"
    );

    // Second identical run: the marker makes it a no-op; with --again every
    // step is re-checked; neither changes a file outside var/lib/nodebake.
    let before = tree(r.path(), "var/lib/nodebake");
    let o = run(&["run", "--root", root, "--metadata", md.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("already complete"), "{}", text(&o));
    let o = run(&[
        "run",
        "--root",
        root,
        "--metadata",
        md.to_str().unwrap(),
        "--again",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("changed:"), "{}", text(&o));
    assert_eq!(before, tree(r.path(), "var/lib/nodebake"));

    let o = run(&["status", "--root", root]);
    let s = text(&o);
    assert!(
        s.contains("first boot: complete") && s.contains("step containerd"),
        "{s}"
    );
}

/// `run` on an empty root with `host`'s seed metadata, `from` replaced by
/// `to` once in its user-data; the output and the root.
fn run_edited(host: &str, from: &str, to: &str) -> (std::process::Output, tempfile::TempDir) {
    let md = tempfile::tempdir().unwrap();
    let dir = edited_metadata(md.path(), host, &[(from, to)]);
    let r = tempfile::tempdir().unwrap();
    let o = run(&[
        "run",
        "--root",
        r.path().to_str().unwrap(),
        "--metadata",
        dir.to_str().unwrap(),
    ]);
    (o, r)
}

/// `host`'s seed metadata under `base`, each `(from, to)` replaced once in
/// its user-data; the metadata directory.
fn edited_metadata(base: &Path, host: &str, edits: &[(&str, &str)]) -> PathBuf {
    let dir = base.join(host);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture(host);
    std::fs::copy(src.join("meta-data"), dir.join("meta-data")).unwrap();
    let mut user = std::fs::read_to_string(src.join("user-data")).unwrap();
    for (from, to) in edits {
        assert!(user.contains(from), "{host}'s user-data lacks {from}");
        user = user.replacen(from, to, 1);
    }
    std::fs::write(dir.join("user-data"), user).unwrap();
    dir
}

#[test]
fn kubeadm_patches_are_written_and_only_they_stay() {
    let md = tempfile::tempdir().unwrap();
    let patches = "  kubeadm:\n    patches:\n    - target: etcd\n      patch: |\n        spec:\n          containers:\n          - name: etcd\n            livenessProbe: {failureThreshold: 30}\n    - target: kube-apiserver\n      type: merge\n      patch: '{spec: {priority: 1}}'\n  secrets:\n";
    let dir = edited_metadata(
        md.path(),
        "k8s-master2",
        &[
            ("kubernetes_version: 1.20.0", "kubernetes_version: 1.28.7"),
            ("  secrets:\n", patches),
        ],
    );
    let r = tempfile::tempdir().unwrap();
    let root = r.path().to_str().unwrap();
    let args = ["run", "--root", root, "--metadata", dir.to_str().unwrap()];
    let o = run(&args);
    assert!(o.status.success(), "{}", text(&o));
    let pd = r.path().join("etc/nodebake/kubeadm-patches");
    let listed = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        listed(&pd),
        ["etcd00+strategic.yaml", "kube-apiserver01+merge.yaml"]
    );
    let etcd = std::fs::read_to_string(pd.join("etcd00+strategic.yaml")).unwrap();
    assert!(
        etcd.contains("livenessProbe: {failureThreshold: 30}"),
        "{etcd}"
    );
    let cfg = std::fs::read_to_string(r.path().join("etc/nodebake/kubeadm.yaml")).unwrap();
    assert!(
        cfg.contains("patches:\n  directory: /etc/nodebake/kubeadm-patches\n"),
        "{cfg}"
    );

    // A file kubeadm would also apply, left by an older inventory, goes
    // on the next run; the node's own patches stay.
    std::fs::write(pd.join("kube-scheduler07+merge.yaml"), "{}\n").unwrap();
    let mut again = args.to_vec();
    again.push("--again");
    let o = run(&again);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("kube-scheduler07+merge.yaml"),
        "{}",
        text(&o)
    );
    assert_eq!(
        listed(&pd),
        ["etcd00+strategic.yaml", "kube-apiserver01+merge.yaml"]
    );
}

#[test]
fn bad_pod_cidr_fails_and_leaves_root_empty() {
    let (o, r) = run_edited(
        "k8s-node1",
        "pod_cidr: 10.244.0.0/16",
        "pod_cidr: 10.244.0.0/99",
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("pod_cidr"), "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(r.path()).unwrap().count(),
        0,
        "root not empty"
    );
}

#[test]
fn hostile_values_fail_the_whole_run_before_anything_is_written() {
    // Values that once reached keepalived.conf, the keepalived drop-in,
    // containerd's TOML and a hosts.toml path unescaped: a full master
    // run refuses each, names the field, and leaves --root empty.
    let cases: [(&str, &str, &str); 6] = [
        (
            "vrrp_password: k8sVRRP1",
            "vrrp_password: \"ab\\n}\"",
            "vrrp_password",
        ),
        (
            "vrrp_password: k8sVRRP1",
            "vrrp_password: \"ab cd\"",
            "vrrp_password",
        ),
        ("interface: ens33", "interface: \"e}{#;\"", "interface"),
        ("interface: ens33", "interface: \"$(reboot)\"", "interface"),
        (
            "image_repository: registry.aliyuncs.com/google_containers",
            "image_repository: \"registry.example/\\\"x\"",
            "image_repository",
        ),
        ("    docker.io:", "    \"..\":", "registry_mirrors"),
    ];
    for (from, to, field) in cases {
        let (o, r) = run_edited("k8s-master1", from, to);
        assert!(!o.status.success(), "{to}: accepted");
        assert!(text(&o).contains(field), "{to}: {}", text(&o));
        assert_eq!(
            std::fs::read_dir(r.path()).unwrap().count(),
            0,
            "{to}: root not empty"
        );
    }
}

#[test]
fn plan_and_dry_run_change_nothing() {
    let r = tempfile::tempdir().unwrap();
    let root = r.path().to_str().unwrap();
    let md = fixture("k8s-master1");
    for args in [
        vec!["plan", "--root", root, "--metadata", md.to_str().unwrap()],
        vec![
            "run",
            "--dry-run",
            "--root",
            root,
            "--metadata",
            md.to_str().unwrap(),
        ],
    ] {
        let o = run(&args);
        let s = text(&o);
        assert!(o.status.success(), "{s}");
        assert!(s.contains("initialiser"), "{s}");
        assert!(
            s.contains(" 1. network")
                && s.contains(" 2. hostname")
                && s.contains(" 4. users")
                && s.contains("12. kubelet"),
            "{s}"
        );
        assert!(s.contains("will apply: write /etc/hostname"), "{s}");
    }
    assert_eq!(std::fs::read_dir(r.path()).unwrap().count(), 0);
}

#[test]
fn every_seed_node_runs() {
    for host in [
        "k8s-master1",
        "k8s-master2",
        "k8s-master3",
        "k8s-node1",
        "k8s-node2",
        "k8s-node3",
    ] {
        let r = tempfile::tempdir().unwrap();
        let md = fixture(host);
        let o = run(&[
            "run",
            "--root",
            r.path().to_str().unwrap(),
            "--metadata",
            md.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{host}: {}", text(&o));
        let hn = std::fs::read_to_string(r.path().join("etc/hostname")).unwrap();
        assert_eq!(hn.trim(), host);
    }
}

#[test]
fn users_get_accounts_keys_for_sshd_and_sudo_and_lose_them_when_removed() {
    let t = tempfile::tempdir().unwrap();
    let key = |name: &str| {
        let p = t.path().join(name);
        let o = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@test"))
            .arg("-f")
            .arg(&p)
            .output();
        match o {
            Ok(o) if o.status.success() => std::fs::read_to_string(p.with_extension("pub"))
                .unwrap()
                .trim()
                .to_string(),
            // No ssh-keygen here: a well-formed key all the same.
            _ => format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{name}QUJDREVGR0hJSktMTU5PUFFSU1RVVldY {name}@test"),
        }
    };
    let (ops, dev) = (key("ops"), key("dev"));
    let users = |with_dev: bool| {
        let mut y = format!(
            "  users:\n  - name: ops\n    ssh_authorized_keys:\n    - {ops}\n    sudo: true\n"
        );
        if with_dev {
            y += &format!("  - name: dev\n    ssh_authorized_keys: [\"{dev}\"]\n");
        }
        y + "  secrets:\n"
    };
    let root = t.path().join("root");
    // An image with sshd (its unit) and an existing account `dev`.
    std::fs::create_dir_all(root.join("usr/lib/systemd/system")).unwrap();
    std::fs::write(
        root.join("usr/lib/systemd/system/ssh.service"),
        "[Service]\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\ndev:x:1001:1001::/home/dev:/bin/bash\n",
    )
    .unwrap();
    let md = t.path().join("md1");
    let dir = edited_metadata(&md, "k8s-node1", &[("  secrets:\n", &users(true))]);
    let o = run(&[
        "run",
        "--root",
        root.to_str().unwrap(),
        "--metadata",
        dir.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // Only the missing account is created; sshd gets host keys and a reload.
    assert!(
        out.contains(
            "skipped: useradd --create-home --shell /bin/bash --comment 'nodebake user' ops"
        ),
        "{out}"
    );
    assert!(
        !out.contains("useradd --create-home --shell /bin/bash --comment 'nodebake user' dev"),
        "{out}"
    );
    assert!(out.contains("skipped: ssh-keygen -A"), "{out}");
    assert!(
        out.contains("skipped: systemctl try-reload-or-restart ssh.service"),
        "{out}"
    );
    let keys = root.join("etc/ssh/nodebake-authorized-keys");
    assert_eq!(
        std::fs::read_to_string(keys.join("ops")).unwrap(),
        format!("{ops}\n")
    );
    assert_eq!(
        std::fs::read_to_string(keys.join("dev")).unwrap(),
        format!("{dev}\n")
    );
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o7777
    };
    assert_eq!(mode(&keys.join("ops")), 0o644);
    let dropin =
        std::fs::read_to_string(root.join("etc/ssh/sshd_config.d/50-nodebake.conf")).unwrap();
    assert!(dropin.contains("AuthorizedKeysFile .ssh/authorized_keys .ssh/authorized_keys2 /etc/ssh/nodebake-authorized-keys/%u\n"), "{dropin}");
    let sudo = root.join("etc/sudoers.d/nodebake-ops");
    assert_eq!(
        std::fs::read_to_string(&sudo).unwrap(),
        "# written by nodebake-firstboot\nops ALL=(ALL) NOPASSWD: ALL\n"
    );
    assert_eq!(mode(&sudo), 0o440);
    assert!(!root.join("etc/sudoers.d/nodebake-dev").exists());
    // The real ssh-keygen reads the keys file sshd will read.
    if let Ok(o) = Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(keys.join("ops"))
        .output()
    {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    // dev leaves the metadata: its keys go, ops stays; nothing else changes.
    let md2 = t.path().join("md2");
    let dir2 = edited_metadata(&md2, "k8s-node1", &[("  secrets:\n", &users(false))]);
    let o = run(&[
        "run",
        "--root",
        root.to_str().unwrap(),
        "--metadata",
        dir2.to_str().unwrap(),
        "--again",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!keys.join("dev").exists());
    assert!(keys.join("ops").exists() && sudo.exists());
}
