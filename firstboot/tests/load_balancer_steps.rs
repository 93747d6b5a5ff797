//! The haproxy and keepalived steps against a temporary root with the
//! recording runner: masters get both files (keepalived.conf 0600, the
//! track script in a 0755 directory), both checked with the real tools'
//! commands before systemctl enables and restarts the services; workers get
//! nothing; the VRRP password never shows up in what was recorded.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::fixture;
use nodebake_firstboot::agent::{self, RunOptions};
use nodebake_firstboot::root::Root;
use nodebake_firstboot::runner::{RecordingRunner, Runner};

fn run(host: &str) -> (tempfile::TempDir, Vec<String>) {
    let t = tempfile::tempdir().unwrap();
    let mut o = RunOptions::new(Root::new(t.path()));
    o.metadata = Some(fixture(host).to_string_lossy().into_owned());
    let r = RecordingRunner::default();
    agent::run(&o, &r).unwrap();
    (t, r.skipped())
}

#[test]
fn masters_get_checked_configs_and_running_services() {
    let (t, skipped) = run("k8s-master1");
    let mode = |p: &str| {
        std::fs::metadata(t.path().join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("etc/keepalived/keepalived.conf"), 0o600);
    assert_eq!(mode("etc/keepalived/nodebake"), 0o755);
    assert_eq!(mode("etc/keepalived/nodebake/check-haproxy.sh"), 0o755);
    assert_eq!(mode("etc/haproxy/haproxy.cfg"), 0o644);
    let k = std::fs::read_to_string(t.path().join("etc/keepalived/keepalived.conf")).unwrap();
    assert!(k.contains("priority 100\n") && k.contains("nopreempt"));
    assert!(k.contains("auth_pass k8sVRRP1"));
    assert!(k.contains("192.168.147.154/32 dev ens33"));
    // The track script runs every second but may take 3 s (a busy master
    // is not a failed haproxy).
    assert!(k.contains("    interval 1\n    timeout 3\n"), "{k}");
    let h = std::fs::read_to_string(t.path().join("etc/haproxy/haproxy.cfg")).unwrap();
    assert!(h.contains("bind *:16443"));
    assert!(
        h.contains("    timeout connect 1000ms\n") && h.contains("    timeout check 2000ms\n"),
        "{h}"
    );
    for ip in ["192.168.147.137", "192.168.147.139", "192.168.147.140"] {
        assert!(h.contains(&format!("{ip}:6443")), "{h}");
    }
    let pos = |needle: &str| {
        skipped
            .iter()
            .position(|s| s.starts_with(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {skipped:#?}"))
    };
    assert!(pos("haproxy -c -q -f") < pos("systemctl enable haproxy.service"));
    assert!(
        pos("systemctl enable haproxy.service")
            < pos("systemctl reload-or-restart haproxy.service")
    );
    assert!(pos("keepalived -t -f") < pos("systemctl enable keepalived.service"));
    assert!(pos("systemctl daemon-reload") < pos("systemctl restart keepalived.service"));
    assert!(skipped.iter().all(|s| !s.contains("k8sVRRP1")));
    // Staging files are gone.
    assert!(!t
        .path()
        .join("etc/keepalived/keepalived.conf.nodebake-check")
        .exists());
}

#[test]
fn workers_skip_the_load_balancer() {
    let (t, skipped) = run("k8s-node1");
    assert!(!t.path().join("etc/keepalived").exists());
    assert!(!t.path().join("etc/haproxy").exists());
    assert!(skipped
        .iter()
        .all(|s| !s.contains("haproxy") && !s.contains("keepalived")));
    let _ = RecordingRunner::default().is_live();
}
