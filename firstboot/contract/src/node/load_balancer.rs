//! The masters' load balancer settings (keepalived VIP + haproxy), as
//! written in metadata under `nodebake.load_balancer`, and their validated
//! form [`LoadBalancer`]. Every field has a default, so metadata without the
//! key gets the seed's behaviour: host services, VRRPv2 with a 1 s advert
//! interval, unicast peers, `nopreempt`, haproxy checks `inter 1s fall 2
//! rise 2`.
//!
//! # Failover trade-off
//!
//! keepalived's backups take the VIP `3 × advert_interval + skew` after the
//! last advert of a dead master. With the default 1 s that is about 3.5 s
//! after a crash. Intervals below one second need VRRPv3 (used
//! automatically for intervals that are not whole seconds); VRRPv3 has no
//! authentication (RFC 5798), so the VRRP password is not sent and the
//! peers are pinned instead (unicast only, `check_unicast_src`: adverts
//! from any address but the other masters are dropped). Short intervals
//! fail over faster but a node that stalls for `3 × interval` (CPU
//! starvation, a busy network) makes a backup take the VIP while the
//! master still holds it, until the next advert sorts it out. 100–300 ms is
//! fine on an idle LAN; stay at 1 s on loaded or virtualised networks.
//! `check_fall` × `check_interval_s` bounds how long a dead local haproxy
//! keeps the VIP; `backend_fall` × `backend_inter_ms` how long a dead
//! apiserver stays in rotation (haproxy redispatches refused connections,
//! so clients rarely notice).

use serde::{Deserialize, Serialize};

/// Where keepalived and haproxy run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancerMode {
    /// Host services (`keepalived.service`, `haproxy.service`), as the seed.
    Host,
    /// Static pods in `/etc/kubernetes/manifests` (kubeadm's HA guide).
    StaticPods,
}

/// `nodebake.load_balancer` as written in metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// `host` (default) or `static-pods`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// VRRP virtual router id (1–255); derived from the VIP and the master
    /// list when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_router_id: Option<u32>,
    /// This node's VRRP priority (1–254); derived from its place in the
    /// master list when absent (100, 90, 80, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// VRRP advert interval in milliseconds (default 1000). Whole seconds
    /// use VRRPv2 with authentication; anything else VRRPv3 (10 ms steps).
    #[serde(default = "default_advert_ms")]
    pub advert_interval_ms: u32,
    /// Unicast adverts to the other masters (default); `false` uses
    /// multicast.
    #[serde(default = "default_true")]
    pub unicast: bool,
    /// Seconds a recovered higher-priority master waits before taking the
    /// VIP back; absent means never (`nopreempt`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt_delay_s: Option<u32>,
    /// Seconds between track-script runs (keepalived accepts whole seconds).
    #[serde(default = "default_one")]
    pub check_interval_s: u32,
    /// Failed checks before the node goes to FAULT.
    #[serde(default = "default_two")]
    pub check_fall: u32,
    /// Good checks before it leaves FAULT.
    #[serde(default = "default_two")]
    pub check_rise: u32,
    /// haproxy health-check interval per apiserver, milliseconds.
    #[serde(default = "default_backend_inter_ms")]
    pub backend_inter_ms: u32,
    /// Failed health checks before an apiserver leaves the rotation.
    #[serde(default = "default_two")]
    pub backend_fall: u32,
    /// Good health checks before it comes back.
    #[serde(default = "default_two")]
    pub backend_rise: u32,
    /// haproxy `timeout connect`, milliseconds (default 1000): how long a
    /// connection to an apiserver that does not answer (a dead host sends
    /// no RST) waits before haproxy retries another one, and how long a
    /// health check's TLS handshake may take. Raise it on slow or heavily
    /// loaded masters (kubeadm's HA guide uses 5000), where 1 s handshakes
    /// time out and apiservers flap out of the rotation.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u32,
    /// apiserver health path: `/healthz` (default) or `/readyz`.
    #[serde(default = "default_health_path")]
    pub health_path: String,
    /// Verify the apiserver certificates against the cluster CA
    /// (`secrets.ca.ca_crt`) instead of `verify none`.
    #[serde(default)]
    pub verify_apiserver_ca: bool,
    /// Port every master's apiserver listens on.
    #[serde(default = "default_apiserver_port")]
    pub apiserver_port: u16,
    /// haproxy statistics page on `127.0.0.1:<port>` (never another
    /// address, no password); absent means no statistics page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_port: Option<u16>,
    /// keepalived image for `static-pods` mode.
    #[serde(default = "default_keepalived_image")]
    pub keepalived_image: String,
    /// haproxy image for `static-pods` mode.
    #[serde(default = "default_haproxy_image")]
    pub haproxy_image: String,
}

impl Default for LoadBalancerSettings {
    fn default() -> Self {
        Self {
            mode: default_mode(),
            virtual_router_id: None,
            priority: None,
            advert_interval_ms: default_advert_ms(),
            unicast: true,
            preempt_delay_s: None,
            check_interval_s: 1,
            check_fall: 2,
            check_rise: 2,
            backend_inter_ms: default_backend_inter_ms(),
            backend_fall: 2,
            backend_rise: 2,
            connect_timeout_ms: default_connect_timeout_ms(),
            health_path: default_health_path(),
            verify_apiserver_ca: false,
            apiserver_port: default_apiserver_port(),
            stats_port: None,
            keepalived_image: default_keepalived_image(),
            haproxy_image: default_haproxy_image(),
        }
    }
}

impl LoadBalancerSettings {
    /// Whether these are exactly the defaults (then the key is not written).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_mode() -> String {
    "host".into()
}
fn default_advert_ms() -> u32 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_one() -> u32 {
    1
}
fn default_two() -> u32 {
    2
}
fn default_backend_inter_ms() -> u32 {
    1000
}
fn default_connect_timeout_ms() -> u32 {
    1000
}
fn default_health_path() -> String {
    "/healthz".into()
}
fn default_apiserver_port() -> u16 {
    6443
}
fn default_keepalived_image() -> String {
    "docker.io/osixia/keepalived:2.0.20".into()
}
fn default_haproxy_image() -> String {
    "docker.io/library/haproxy:2.8".into()
}

/// How a recovered master treats a VIP another master holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preempt {
    /// Never take it back (`nopreempt`).
    Never,
    /// Take it back after this many seconds (`preempt_delay`).
    AfterSeconds(u32),
}

/// Validated load balancer settings, resolved for this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    /// Host services or static pods.
    pub mode: LoadBalancerMode,
    /// VRRP virtual router id.
    pub virtual_router_id: u8,
    /// This node's VRRP priority (masters only; 0 on workers).
    pub priority: u8,
    /// Advert interval, milliseconds.
    pub advert_interval_ms: u32,
    /// Unicast (true) or multicast adverts.
    pub unicast: bool,
    /// Pre-emption.
    pub preempt: Preempt,
    /// Track-script interval, seconds.
    pub check_interval_s: u32,
    /// Track-script fall.
    pub check_fall: u32,
    /// Track-script rise.
    pub check_rise: u32,
    /// haproxy check interval, milliseconds.
    pub backend_inter_ms: u32,
    /// haproxy check fall.
    pub backend_fall: u32,
    /// haproxy check rise.
    pub backend_rise: u32,
    /// haproxy `timeout connect`, milliseconds.
    pub connect_timeout_ms: u32,
    /// apiserver health path.
    pub health_path: String,
    /// Verify apiservers against the cluster CA.
    pub verify_apiserver_ca: bool,
    /// apiserver port.
    pub apiserver_port: u16,
    /// Statistics port on 127.0.0.1.
    pub stats_port: Option<u16>,
    /// Static-pod keepalived image.
    pub keepalived_image: String,
    /// Static-pod haproxy image.
    pub haproxy_image: String,
}

impl LoadBalancer {
    /// The VRRP version the advert interval needs: 2 for whole seconds
    /// (with authentication), 3 below or between seconds.
    pub fn vrrp_version(&self) -> u8 {
        if self.advert_interval_ms.is_multiple_of(1000) {
            2
        } else {
            3
        }
    }
}

/// The virtual router id every master derives alike: FNV-1a of the VIP and
/// the master IPs in metadata order, folded into 1–255.
pub fn derive_router_id(vip: std::net::Ipv4Addr, masters: &[std::net::Ipv4Addr]) -> u8 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    for b in vip.octets() {
        eat(b);
    }
    for ip in masters {
        for b in ip.octets() {
            eat(b);
        }
    }
    (h % 255) as u8 + 1
}

/// The priority of the master at `index` among `count`: 100, 90, 80, ...
/// (steps of 1 when there are more than ten masters).
pub fn derive_priority(index: usize, count: usize) -> u8 {
    let step = if count <= 10 { 10 } else { 1 };
    let p = 100usize.saturating_sub(step * index).max(1);
    p as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_are_stable() {
        let ips: Vec<std::net::Ipv4Addr> =
            ["192.168.147.137", "192.168.147.139", "192.168.147.140"]
                .iter()
                .map(|s| s.parse().unwrap())
                .collect();
        let vip = "192.168.147.154".parse().unwrap();
        let id = derive_router_id(vip, &ips);
        assert!(id >= 1);
        assert_eq!(id, derive_router_id(vip, &ips));
        assert_ne!(
            id,
            derive_router_id("192.168.147.155".parse().unwrap(), &ips)
        );
        assert_eq!(
            (0..3).map(|i| derive_priority(i, 3)).collect::<Vec<_>>(),
            [100, 90, 80]
        );
        assert_eq!(derive_priority(11, 12), 89);
    }
}
