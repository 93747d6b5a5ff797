//! The hostname step against the real systemd-hostnamed on a private
//! system bus: dbus-daemon with its own config, hostnamed inside
//! `unshare --uts --mount` with an overlay on /etc. The host's hostname and
//! /etc/hostname never change.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, require, require_root, ChildGuard};
use nodebake_contract::node::NodeConfig;
use nodebake_firstboot::agent::load_profile;
use nodebake_firstboot::hostnamed;
use nodebake_firstboot::root::Root;
use nodebake_firstboot::runner::{Runner, SystemRunner};
use nodebake_firstboot::step::{ContainerdSettings, Ctx, Step};
use nodebake_firstboot::steps::hostname::Hostname;

const HOSTNAMED: &str = "/lib/systemd/systemd-hostnamed";

fn bus_config(sock: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        sock.display()
    )
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node(host: &str) -> NodeConfig {
    let d = fixture(host);
    NodeConfig::from_nocloud(
        &std::fs::read_to_string(d.join("meta-data")).unwrap(),
        &std::fs::read_to_string(d.join("user-data")).unwrap(),
    )
    .unwrap()
}

#[test]
fn hostname_through_real_hostnamed_on_a_private_bus() {
    if !require_root("hostnamed") || !require("hostnamed", &["dbus-daemon", "unshare", HOSTNAMED]) {
        return;
    }
    let host_name_before = nix::unistd::gethostname().unwrap();
    let host_file_before = std::fs::read("/etc/hostname").ok();

    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("system_bus_socket");
    let conf = t.path().join("bus.conf");
    std::fs::write(&conf, bus_config(&sock)).unwrap();
    let _bus = ChildGuard::new(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the private bus socket", Duration::from_secs(10), || {
        sock.exists()
    });
    let address = format!("unix:path={}", sock.display());

    let (upper, work) = (t.path().join("upper"), t.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc && exec {HOSTNAMED}",
        upper.display(),
        work.display()
    );
    let _hostnamed = ChildGuard::new(
        Command::new("unshare")
            .args(["--uts", "--mount", "--", "sh", "-c", &script])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
            .env("SYSTEMD_LOG_LEVEL", "info")
            .spawn()
            .unwrap(),
    );
    wait_until(
        "org.freedesktop.hostname1 on the bus",
        Duration::from_secs(15),
        || hostnamed::query(&address).is_ok(),
    );

    let root_dir = tempfile::tempdir().unwrap();
    let root = Root::new(root_dir.path());
    let runner = SystemRunner {
        bus_address: Some(address.clone()),
    };
    let node = node("k8s-node2");
    let profile = load_profile(&root, &node).unwrap();
    let cs = ContainerdSettings::default();
    let mut cx = Ctx {
        root: &root,
        runner: &runner,
        node: &node,
        network: None,
        image: None,
        profile: &profile,
        containerd: &cs,
        join: &Default::default(),
        changed: Vec::new(),
    };
    let before = runner.query_hostname().unwrap().unwrap();
    assert_ne!(before.static_name, "k8s-node2");
    assert!(!Hostname.check(&cx).unwrap().is_empty());
    Hostname.apply(&mut cx).unwrap();
    assert!(
        Hostname.check(&cx).unwrap().is_empty(),
        "hostname still pending"
    );
    let after = runner.query_hostname().unwrap().unwrap();
    assert_eq!(after.static_name, "k8s-node2");
    assert_eq!(after.transient, "k8s-node2");
    // hostnamed wrote /etc/hostname in its overlay, not on the host.
    assert_eq!(
        std::fs::read_to_string(upper.join("hostname"))
            .unwrap()
            .trim(),
        "k8s-node2"
    );
    assert_eq!(
        std::fs::read_to_string(root_dir.path().join("etc/hostname")).unwrap(),
        "k8s-node2\n"
    );
    // Idempotent: applying again changes nothing.
    Hostname.apply(&mut cx).unwrap();
    assert_eq!(cx.changed, vec!["/etc/hostname".to_string()]);

    assert_eq!(nix::unistd::gethostname().unwrap(), host_name_before);
    assert_eq!(std::fs::read("/etc/hostname").ok(), host_file_before);
}
