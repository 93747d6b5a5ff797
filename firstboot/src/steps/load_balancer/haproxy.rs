//! `haproxy.cfg` for a master: a TCP frontend on the control-plane
//! endpoint port forwarding round robin to every master's apiserver, with
//! TLS health checks against the apiserver's health path.

use nodebake_contract::node::NodeConfig;

/// haproxy's configuration file.
pub const CONFIG: &str = "/etc/haproxy/haproxy.cfg";
/// The cluster CA haproxy verifies apiservers against
/// (`verify_apiserver_ca: true`).
pub const CA_FILE: &str = "/etc/haproxy/nodebake-apiserver-ca.crt";

/// The `major.minor` of `haproxy -v` output (`HA-Proxy version 1.5.18
/// 2016/05/10`, `HAProxy version 2.6.12-1+deb12u1 2023/...`).
pub fn parse_version(out: &str) -> Option<(u32, u32)> {
    let line = out.lines().find(|l| l.contains("version"))?;
    let v = line
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?;
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Renders `haproxy.cfg` for a current haproxy (1.6 or later).
pub fn render_config(node: &NodeConfig, ca_file: &str) -> String {
    render_config_for(node, ca_file, None)
}

/// Renders `haproxy.cfg` for the baked haproxy `version` (`None`: 1.6 or
/// later). `ca_file` is where the cluster CA lies when apiserver
/// certificates are verified. Health-check options sit on each `server`
/// line (haproxy takes `check`/`check-ssl` in `default-server` only from
/// 1.8); haproxy 1.5 (EL7) gets `option redispatch` without the interval
/// it does not know. Older than 1.5 has no `check-ssl`: lint refuses it.
pub fn render_config_for(node: &NodeConfig, ca_file: &str, version: Option<(u32, u32)>) -> String {
    let redispatch = match version {
        Some(v) if v < (1, 6) => "option redispatch",
        _ => "option redispatch 1",
    };
    let lb = &node.load_balancer;
    let verify = if lb.verify_apiserver_ca {
        format!("verify required ca-file {ca_file}")
    } else {
        "verify none".to_string()
    };
    let mut s = format!(
        "# Managed by nodebake-firstboot from the node metadata.
global
    log /dev/log local0 warning
    # No maxconn: haproxy derives it from the file-descriptor limit.

defaults
    mode tcp
    log global
    option dontlognull
    # A refused or timed-out connection is retried on another apiserver at
    # once, so clients do not see a backend that died between two checks.
    retries 3
    {redispatch}
    # Also bounds a health check's TLS handshake.
    timeout connect {connect}ms
    timeout client 1h
    timeout server 1h
    timeout check {check}ms
    timeout queue 5s

frontend nodebake-apiserver
    bind *:{port}
    option tcplog
    default_backend nodebake-apiservers

backend nodebake-apiservers
    balance roundrobin
    option httpchk GET {path}
    http-check expect status 200
    default-server inter {inter}ms fall {fall} rise {rise}
",
        port = node.endpoint.port,
        path = lb.health_path,
        connect = lb.connect_timeout_ms,
        check = lb.connect_timeout_ms.max(2000),
        inter = lb.backend_inter_ms,
        fall = lb.backend_fall,
        rise = lb.backend_rise,
    );
    for m in &node.masters {
        s += &format!(
            "    server {} {}:{} check check-ssl {verify}\n",
            m.name, m.ip, lb.apiserver_port
        );
    }
    if let Some(p) = lb.stats_port {
        s += &format!(
            "
# Statistics, on the loopback address only (no password: nothing but
# local users can reach it).
listen nodebake-stats
    bind 127.0.0.1:{p}
    mode http
    stats enable
    stats uri /
    stats refresh 10s
"
        );
    }
    s
}

#[cfg(test)]
mod version_tests {
    use super::parse_version;

    #[test]
    fn haproxy_versions_parse() {
        assert_eq!(
            parse_version(
                "HA-Proxy version 1.5.18 2016/05/10\nCopyright 2000-2016 Willy Tarreau\n"
            ),
            Some((1, 5))
        );
        assert_eq!(
            parse_version("HAProxy version 2.6.12-1+deb12u1 2023/12/16 - https://haproxy.org/\n"),
            Some((2, 6))
        );
        assert_eq!(parse_version("nonsense"), None);
    }
}
