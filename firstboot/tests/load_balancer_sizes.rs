//! keepalived and haproxy configurations for inventories of 1, 3 and 5
//! masters, checked by the real tools (`keepalived -t`, `haproxy -c`) in a
//! private network namespace that has the node's interface (a veth): a single
//! master gets no unicast block (keepalived refuses unicast without
//! peers), larger ones list every other master as a peer, and haproxy
//! balances over every master.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{fixture, require, require_root};
use nodebake_contract::node::NodeConfig;
use nodebake_firstboot::steps::load_balancer::{haproxy, keepalived};

/// Master `i` (1-based) of an inventory of `n` masters, from the seed
/// fixture of k8s-master1 with its masters list replaced.
fn master(i: usize, n: usize) -> NodeConfig {
    let dir = fixture("k8s-master1");
    let ip = |k: usize| format!("192.168.147.{}", 10 + k);
    let meta = std::fs::read_to_string(dir.join("meta-data"))
        .unwrap()
        .replace("k8s-master1", &format!("k8s-master{i}"));
    let user = std::fs::read_to_string(dir.join("user-data")).unwrap();
    let (head, rest) = user.split_once("  masters:\n").unwrap();
    let (_, tail) = rest.split_once("  workers:\n").unwrap();
    let masters: String = (1..=n)
        .map(|k| format!("    - {{ name: k8s-master{k}, ip: {} }}\n", ip(k)))
        .collect();
    let user = format!("{head}  masters:\n{masters}  workers:\n{tail}").replace(
        "node_ip: 192.168.147.137/24",
        &format!("node_ip: {}/24", ip(i)),
    );
    NodeConfig::from_nocloud(&meta, &user).unwrap_or_else(|e| panic!("master {i}/{n}: {e}"))
}

/// Runs `cmd` in a new network namespace holding a veth `ens33`.
fn in_netns(cmd: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["--net", "sh", "-c"])
        .arg(format!(
            "ip link add ens33 type veth peer name ens33peer && ip link set ens33 up && ip link set lo up && {cmd}"
        ))
        .output()
        .unwrap()
}

#[test]
fn keepalived_and_haproxy_accept_1_3_and_5_masters() {
    if !require_root("load_balancer_sizes")
        || !require(
            "load_balancer_sizes",
            &["keepalived", "haproxy", "unshare", "ip"],
        )
    {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let script = t.path().join("check.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    for n in [1, 3, 5] {
        for i in 1..=n {
            let node = master(i, n);
            let k = keepalived::render_config(&node, script.to_str().unwrap());
            let h = haproxy::render_config(&node, haproxy::CA_FILE);
            let peers = k
                .split("unicast_peer {\n")
                .nth(1)
                .map(|b| b.split('}').next().unwrap().split_whitespace().count())
                .unwrap_or(0);
            assert_eq!(peers, n - 1, "{n} masters, master {i}: {k}");
            assert_eq!(k.contains("unicast_src_ip"), n > 1, "{k}");
            assert_eq!(h.matches(":6443 check check-ssl verify ").count(), n, "{h}");
            // EL7's haproxy 1.5 dialect: no redispatch interval.
            let h15 = haproxy::render_config_for(&node, haproxy::CA_FILE, Some((1, 5)));
            assert!(h15.contains("    option redispatch\n") && h.contains("option redispatch 1\n"));
            let hc15 = t.path().join(format!("h15-{n}-{i}.cfg"));
            std::fs::write(&hc15, &h15).unwrap();
            let o = in_netns(&format!("haproxy -c -q -f {}", hc15.display()));
            assert!(
                o.status.success(),
                "haproxy -c (1.5 dialect): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            let kc = t.path().join(format!("k{n}-{i}.conf"));
            let hc = t.path().join(format!("h{n}-{i}.cfg"));
            std::fs::write(&kc, &k).unwrap();
            std::fs::set_permissions(&kc, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::write(&hc, &h).unwrap();
            for (tool, cmd) in [
                ("keepalived", format!("keepalived -t -f {}", kc.display())),
                ("haproxy", format!("haproxy -c -q -f {}", hc.display())),
            ] {
                let o = in_netns(&cmd);
                assert!(
                    o.status.success(),
                    "{tool} refuses the config of master {i} of {n}: {}{}\n{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr),
                    if tool == "keepalived" { &k } else { &h }
                );
            }
        }
    }
}
