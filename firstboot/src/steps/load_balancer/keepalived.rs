//! `keepalived.conf` for a master (one VRRP instance holding the VIP), the
//! track script that checks the local haproxy, and the systemd drop-in that
//! removes the VIP when keepalived dies without cleaning up.

use nodebake_contract::node::{NodeConfig, Preempt};

use crate::quote::systemd_exec_word;

/// keepalived's configuration file (holds the VRRP password: 0600).
pub const CONFIG: &str = "/etc/keepalived/keepalived.conf";
/// Root-owned 0755 directory of the track script. keepalived with
/// `enable_script_security` refuses scripts in directories others can
/// write to, and then runs the instance with no health tracking at all.
pub const SCRIPT_DIR: &str = "/etc/keepalived/nodebake";
/// The track script.
pub const CHECK_SCRIPT: &str = "/etc/keepalived/nodebake/check-haproxy.sh";
/// systemd drop-in for `keepalived.service`.
pub const DROPIN: &str = "/etc/systemd/system/keepalived.service.d/10-nodebake.conf";

/// The track script: a TCP connect to the local haproxy frontend (a
/// process can exist and not serve; a connect shows it serves).
pub fn render_check_script(port: u16) -> String {
    format!(
        "#!/bin/bash
# Managed by nodebake-firstboot: keepalived track script. Succeeds when the
# local haproxy accepts a TCP connection on the control-plane port.
exec 3<>/dev/tcp/127.0.0.1/{port} || exit 1
exec 3>&-
exit 0
"
    )
}

/// `ip` arguments that remove the VIP from the interface (what the
/// drop-in runs after keepalived stopped, however it stopped).
pub fn vip_cleanup_args(node: &NodeConfig) -> Vec<String> {
    vec![
        "address".into(),
        "del".into(),
        format!("{}/32", node.endpoint.vip),
        "dev".into(),
        node.interface.clone(),
    ]
}

/// The drop-in: a keepalived killed with SIGKILL (or crashed) leaves the
/// VIP on the interface, and once a backup takes over two nodes would hold
/// it. systemd runs `ExecStopPost` however the service stopped. The
/// restarted keepalived comes back as a backup.
pub fn render_dropin(node: &NodeConfig) -> String {
    format!(
        "# Managed by nodebake-firstboot.
[Service]
ExecStopPost=-/usr/sbin/ip {}
Restart=on-failure
RestartSec=2s
",
        vip_cleanup_args(node)
            .iter()
            .map(|a| systemd_exec_word(a))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The advert interval as keepalived writes it (seconds, decimals for
/// VRRPv3).
fn advert_int(ms: u32) -> String {
    if (ms / 1000) * 1000 == ms {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:02}", ms / 1000, (ms % 1000) / 10)
    }
}

/// Shortest track-script timeout, seconds.
pub const CHECK_TIMEOUT_MIN_S: u32 = 3;

/// Renders `keepalived.conf`; `check_script` is the track script's path.
/// The instance starts as BACKUP everywhere: the highest priority wins the
/// first election, and with `nopreempt` (or `preempt_delay`) a recovered
/// master does not take the VIP back at once. The track script has no
/// weight, so a failing check moves the node to FAULT (it releases the VIP
/// at once and a backup takes over after its skew time). The check's
/// timeout is at least [`CHECK_TIMEOUT_MIN_S`]: a dead haproxy refuses the
/// connect at once, so a longer timeout does not slow detection, while a
/// one-second timeout sent busy masters (the script is a fork and exec) to
/// FAULT one after the other and left no VIP at all in the e2e test.
pub fn render_config(node: &NodeConfig, check_script: &str) -> String {
    let lb = &node.load_balancer;
    let v3 = lb.vrrp_version() == 3;
    let mut s = format!(
        "# Managed by nodebake-firstboot from the node metadata. Mode 0600.
global_defs {{
    router_id {host}
    script_user root
    enable_script_security
    vrrp_version {version}
    # Gratuitous ARPs spread over a second and repeated a second later:
    # Linux ignores an ARP update within 1 s (locktime) of the last one.
    vrrp_garp_interval 0.2
    vrrp_garp_master_delay 1
    vrrp_garp_master_repeat 5
}}

vrrp_script nodebake_check_haproxy {{
    script \"{check_script}\"
    interval {interval}
    timeout {timeout}
    fall {fall}
    rise {rise}
}}

vrrp_instance nodebake_apiserver {{
    state BACKUP
    interface {iface}
    virtual_router_id {vrid}
    priority {prio}
    advert_int {adv}
",
        host = node.hostname,
        version = lb.vrrp_version(),
        interval = lb.check_interval_s,
        timeout = lb.check_interval_s.max(CHECK_TIMEOUT_MIN_S),
        fall = lb.check_fall,
        rise = lb.check_rise,
        iface = node.interface,
        vrid = lb.virtual_router_id,
        prio = lb.priority,
        adv = advert_int(lb.advert_interval_ms),
    );
    match lb.preempt {
        Preempt::Never => s += "    nopreempt\n",
        Preempt::AfterSeconds(d) => s += &format!("    preempt_delay {d}\n"),
    }
    // keepalived refuses unicast without peers: a single master holds the
    // VIP alone and sends its (unanswered) adverts by multicast.
    let peers: Vec<_> = node
        .masters
        .iter()
        .filter(|m| m.ip != node.node_ip.addr)
        .collect();
    if lb.unicast && !peers.is_empty() {
        s += &format!(
            "    unicast_src_ip {}\n    unicast_peer {{\n",
            node.node_ip.addr
        );
        for m in peers {
            s += &format!("        {}\n", m.ip);
        }
        s += "    }\n    check_unicast_src\n";
    }
    if !v3 {
        if let Some(p) = &node.secrets.vrrp_password {
            s += &format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {}\n    }}\n",
                p.expose()
            );
        }
    }
    s += &format!(
        "    virtual_ipaddress {{
        {vip}/32 dev {iface}
    }}
    track_script {{
        nodebake_check_haproxy
    }}
}}
",
        vip = node.endpoint.vip,
        iface = node.interface
    );
    s
}

#[cfg(test)]
mod tests {
    use super::advert_int;

    #[test]
    fn advert_intervals() {
        assert_eq!(advert_int(1000), "1");
        assert_eq!(advert_int(100), "0.10");
        assert_eq!(advert_int(1250), "1.25");
    }
}
