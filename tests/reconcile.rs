//! Membership changes reach a running node: `nodebake cluster init` on an
//! edited inventory (a master removed, a worker added), then
//! `nodebake-firstboot reconcile` on an existing master's root converges
//! its hosts block, haproxy backends and keepalived peers (each file
//! checked by the real haproxy/keepalived where installed), changes
//! nothing the second time, and refuses metadata of another machine or a
//! node whose first boot has not completed.

use std::path::Path;
use std::process::Command;

use nodebake_suite::{bin, repo, run, run_ok, tree_digest};

fn init(inv: &str, dir: &Path) {
    let p = dir.join("inventory.toml");
    std::fs::write(&p, inv).unwrap();
    run_ok(
        Command::new(bin("nodebake"))
            .args(["cluster", "init"])
            .arg(&p)
            .arg("--out")
            .arg(dir.join("cluster")),
    );
}

fn agent(args: &[&str], root: &Path, meta: &Path) -> std::process::Output {
    run(Command::new(bin("nodebake-firstboot"))
        .args(args)
        .arg("--root")
        .arg(root)
        .arg("--metadata")
        .arg(meta))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `reconcile` on `root` succeeds and reports nothing to change.
fn reconcile_changes_nothing(root: &Path, meta: &Path) {
    let o = agent(&["reconcile"], root, meta);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("reconciled: nothing to change"),
        "{}",
        text(&o)
    );
}

fn read(root: &Path, abs: &str) -> String {
    std::fs::read_to_string(root.join(abs.trim_start_matches('/'))).unwrap()
}

#[test]
fn reconcile_converges_hosts_haproxy_and_keepalived_after_membership_changes() {
    let t = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(repo().join("examples/seed-ha-cluster.toml")).unwrap();
    init(&seed, t.path());
    let meta = t.path().join("cluster/nodes/k8s-master2");
    let root = t.path().join("root");
    std::fs::create_dir(&root).unwrap();

    // Before first boot: nothing to reconcile.
    let o = agent(&["reconcile"], &root, &meta);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("first boot has not completed"),
        "{}",
        text(&o)
    );

    let o = agent(&["run"], &root, &meta);
    assert!(o.status.success(), "{}", text(&o));
    let hosts = read(&root, "/etc/hosts");
    assert!(hosts.contains("192.168.147.140 k8s-master3"), "{hosts}");
    assert!(read(&root, "/etc/haproxy/haproxy.cfg").contains("192.168.147.140:6443"));
    assert!(read(&root, "/etc/keepalived/keepalived.conf").contains("192.168.147.140"));
    reconcile_changes_nothing(&root, &meta);

    // k8s-master3 leaves, k8s-node4 joins: same secrets, new metadata.
    let start = seed.find("[[machines]]\nname = \"k8s-master3\"").unwrap();
    let end = seed[start..]
        .find("[[machines]]\nname = \"k8s-node1\"")
        .unwrap()
        + start;
    let edited = format!(
        "{}{}\n[[machines]]\nname = \"k8s-node4\"\nrole = \"worker\"\nip = \"192.168.147.144\"\nmac = \"52:54:00:93:01:44\"\n",
        &seed[..start],
        &seed[end..]
    );
    init(&edited, t.path());
    let o = agent(&["reconcile"], &root, &meta);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for changed in [
        "changed: /etc/hosts",
        "changed: /etc/haproxy/haproxy.cfg",
        "changed: /etc/keepalived/keepalived.conf",
        "reconciled: changes applied",
    ] {
        assert!(out.contains(changed), "`{changed}` missing:\n{out}");
    }
    let hosts = read(&root, "/etc/hosts");
    assert!(!hosts.contains("k8s-master3"), "{hosts}");
    assert!(hosts.contains("192.168.147.144 k8s-node4"), "{hosts}");
    let haproxy = read(&root, "/etc/haproxy/haproxy.cfg");
    assert!(!haproxy.contains("192.168.147.140"), "{haproxy}");
    assert!(haproxy.contains("192.168.147.137:6443") && haproxy.contains("192.168.147.139:6443"));
    let keepalived = read(&root, "/etc/keepalived/keepalived.conf");
    assert!(!keepalived.contains("192.168.147.140"), "{keepalived}");
    assert!(keepalived.contains("192.168.147.137"), "{keepalived}");
    if which("haproxy") {
        let o = run(Command::new("haproxy")
            .args(["-c", "-q", "-f"])
            .arg(root.join("etc/haproxy/haproxy.cfg")));
        assert!(o.status.success(), "haproxy: {}", text(&o));
    }
    // keepalived -t wants the VRRP interface: a dummy one in a network
    // namespace of its own.
    if which("keepalived") && which("unshare") && which("ip") {
        // The track script where this root has it.
        let conf = t.path().join("keepalived-check.conf");
        std::fs::write(
            &conf,
            keepalived.replace(
                "/etc/keepalived/nodebake/",
                &format!("{}/etc/keepalived/nodebake/", root.display()),
            ),
        )
        .unwrap();
        let o = run(Command::new("unshare").args(["-n", "sh", "-c"]).arg(format!(
            "ip link add name ens33 type veth peer name nbpeer && ip link set dev ens33 up && keepalived -t -f {}",
            conf.display()
        )));
        assert!(o.status.success(), "keepalived: {}", text(&o));
    }
    // A reload, never a restart of keepalived (the VIP holder keeps it).
    assert!(
        out.contains("systemctl reload-or-restart keepalived.service"),
        "{out}"
    );
    assert!(
        !out.contains("systemctl restart keepalived.service"),
        "{out}"
    );

    // Converged: the second reconcile changes nothing.
    let before = tree_digest(&root);
    reconcile_changes_nothing(&root, &meta);
    assert_eq!(before, tree_digest(&root));

    // Another machine's metadata is refused and changes nothing.
    let o = agent(
        &["reconcile"],
        &root,
        &t.path().join("cluster/nodes/k8s-master1"),
    );
    assert!(!o.status.success());
    assert!(
        text(&o).contains("is for k8s-master1, this node is k8s-master2"),
        "{}",
        text(&o)
    );
    assert_eq!(before, tree_digest(&root));
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool} || test -x /usr/sbin/{tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
