//! `haproxy.cfg` for a master: a TCP frontend on the control-plane
//! endpoint port forwarding round robin to every master's apiserver, with
//! TLS health checks against the apiserver's health path.

use nodebake_contract::node::NodeConfig;

/// haproxy's configuration file.
pub const CONFIG: &str = "/etc/haproxy/haproxy.cfg";
/// The cluster CA haproxy verifies apiservers against
/// (`verify_apiserver_ca: true`).
pub const CA_FILE: &str = "/etc/haproxy/nodebake-apiserver-ca.crt";

/// Renders `haproxy.cfg`. `ca_file` is where the cluster CA lies when
/// apiserver certificates are verified. Needs haproxy 1.6 or later
/// (`option redispatch 1`); `haproxy -c` refuses it otherwise.
pub fn render_config(node: &NodeConfig, ca_file: &str) -> String {
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
    option redispatch 1
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
    default-server check check-ssl {verify} inter {inter}ms fall {fall} rise {rise}
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
        s += &format!("    server {} {}:{}\n", m.name, m.ip, lb.apiserver_port);
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
