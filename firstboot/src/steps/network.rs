//! The node's static address from NoCloud `network-config` (version 2,
//! the netplan-style document `nodebake cluster init` writes for every
//! machine): applied by the first-boot agent when the image has no
//! cloud-init to do it, through the network manager the image has —
//! NetworkManager (keyfile, EL8/EL9) or systemd-networkd (`.network` +
//! `.link`). Interfaces are matched by MAC when the document gives one,
//! and renamed to `set-name` now (when the name is free) and at every boot
//! (the `.link` file / keyfile interface name), so keepalived finds the
//! interface the node metadata names.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Context, Result};
use nodebake_contract::node::Ipv4Cidr;
use serde_yaml::Value;

use crate::runner::{Cmd, Outcome};
use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// One `ethernets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ethernet {
    /// Its key in `ethernets`.
    pub id: String,
    /// `match.macaddress`, lower case.
    pub mac: Option<String>,
    /// `match.name`.
    pub match_name: Option<String>,
    /// `set-name`.
    pub set_name: Option<String>,
    /// `dhcp4`.
    pub dhcp4: bool,
    /// `addresses`.
    pub addresses: Vec<Ipv4Cidr>,
    /// `gateway4` or the default route's `via`.
    pub gateway: Option<Ipv4Addr>,
    /// `nameservers.addresses`.
    pub dns: Vec<Ipv4Addr>,
    /// `nameservers.search`.
    pub search: Vec<String>,
}

impl Ethernet {
    /// The name the interface has once configured.
    pub fn name(&self) -> &str {
        self.set_name
            .as_deref()
            .or(self.match_name.as_deref())
            .unwrap_or(&self.id)
    }
}

/// A parsed, validated `network-config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The interfaces, in document order.
    pub ethernets: Vec<Ethernet>,
}

fn field<'a>(
    m: &'a serde_yaml::Mapping,
    allowed: &[&str],
    at: &str,
) -> Result<BTreeMap<String, &'a Value>> {
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let k = k
            .as_str()
            .ok_or_else(|| anyhow!("network-config: {at}: a key is not a string"))?;
        if !allowed.contains(&k) {
            let path = if at.is_empty() {
                k.to_string()
            } else {
                format!("{at}.{k}")
            };
            bail!(
                "network-config: {path}: unknown field (supported: {})",
                allowed.join(", ")
            );
        }
        out.insert(k.to_string(), v);
    }
    Ok(out)
}

fn string(v: &Value, at: &str) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => bail!("network-config: {at}: not a string"),
    }
}

fn list<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>> {
    v.as_sequence()
        .ok_or_else(|| anyhow!("network-config: {at}: not a list"))
}

fn ipv4(s: &str, at: &str) -> Result<Ipv4Addr> {
    s.parse()
        .map_err(|_| anyhow!("network-config: {at}: `{s}` is not an IPv4 address"))
}

fn ifname(s: &str, at: &str) -> Result<String> {
    if s.is_empty()
        || s.len() > 15
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        bail!("network-config: {at}: `{s}` is not an interface name (1–15 of A–Z a–z 0–9 - _ .)");
    }
    Ok(s.to_string())
}

impl NetworkConfig {
    /// Parses `network-config` version 2; everything is checked (unknown
    /// fields, addresses, MACs, names) before anything is applied.
    pub fn parse(text: &str) -> Result<NetworkConfig> {
        let doc: Value = serde_yaml::from_str(text).context("network-config: not YAML")?;
        // cloud-init also accepts the document under a `network:` key.
        let doc = match doc.get("network") {
            Some(inner) => inner.clone(),
            None => doc,
        };
        let top = doc
            .as_mapping()
            .ok_or_else(|| anyhow!("network-config: not a mapping"))?;
        match top
            .get("version")
            .map(|v| string(v, "version"))
            .transpose()?
            .as_deref()
        {
            Some("2") => {}
            Some(v) => bail!("network-config: version {v} is not supported (use version 2)"),
            None => bail!("network-config: field `version` is missing"),
        }
        let top = field(top, &["version", "ethernets", "renderer"], "")?;
        let mut ethernets = Vec::new();
        if let Some(e) = top.get("ethernets") {
            let e = e
                .as_mapping()
                .ok_or_else(|| anyhow!("network-config: ethernets: not a mapping"))?;
            for (id, v) in e {
                let id = ifname(&string(id, "ethernets")?, "ethernets")?;
                let at = format!("ethernets.{id}");
                let m = v
                    .as_mapping()
                    .ok_or_else(|| anyhow!("network-config: {at}: not a mapping"))?;
                let f = field(
                    m,
                    &[
                        "match",
                        "set-name",
                        "dhcp4",
                        "dhcp6",
                        "addresses",
                        "gateway4",
                        "routes",
                        "nameservers",
                    ],
                    &at,
                )?;
                let mut eth = Ethernet {
                    id: id.clone(),
                    mac: None,
                    match_name: None,
                    set_name: None,
                    dhcp4: false,
                    addresses: Vec::new(),
                    gateway: None,
                    dns: Vec::new(),
                    search: Vec::new(),
                };
                if let Some(mv) = f.get("match") {
                    let mm = mv
                        .as_mapping()
                        .ok_or_else(|| anyhow!("network-config: {at}.match: not a mapping"))?;
                    let mf = field(mm, &["macaddress", "name"], &format!("{at}.match"))?;
                    if let Some(mac) = mf.get("macaddress") {
                        let mac =
                            string(mac, &format!("{at}.match.macaddress"))?.to_ascii_lowercase();
                        let ok = mac.len() == 17
                            && mac.split(':').count() == 6
                            && mac
                                .split(':')
                                .all(|b| b.len() == 2 && b.bytes().all(|c| c.is_ascii_hexdigit()));
                        if !ok {
                            bail!("network-config: {at}.match.macaddress: `{mac}` is not a MAC address");
                        }
                        eth.mac = Some(mac);
                    }
                    if let Some(n) = mf.get("name") {
                        eth.match_name = Some(ifname(
                            &string(n, &format!("{at}.match.name"))?,
                            &format!("{at}.match.name"),
                        )?);
                    }
                }
                if let Some(n) = f.get("set-name") {
                    eth.set_name = Some(ifname(
                        &string(n, &format!("{at}.set-name"))?,
                        &format!("{at}.set-name"),
                    )?);
                }
                if let Some(d) = f.get("dhcp4") {
                    eth.dhcp4 = d
                        .as_bool()
                        .ok_or_else(|| anyhow!("network-config: {at}.dhcp4: not true/false"))?;
                }
                if let Some(a) = f.get("addresses") {
                    for (i, v) in list(a, &format!("{at}.addresses"))?.iter().enumerate() {
                        let s = string(v, &format!("{at}.addresses[{i}]"))?;
                        if s.contains(':') {
                            bail!("network-config: {at}.addresses[{i}]: `{s}`: only IPv4 addresses are supported");
                        }
                        eth.addresses
                            .push(Ipv4Cidr::parse_address(&s).map_err(|e| {
                                anyhow!("network-config: {at}.addresses[{i}]: {e}")
                            })?);
                    }
                }
                if let Some(g) = f.get("gateway4") {
                    eth.gateway = Some(ipv4(
                        &string(g, &format!("{at}.gateway4"))?,
                        &format!("{at}.gateway4"),
                    )?);
                }
                if let Some(r) = f.get("routes") {
                    for (i, v) in list(r, &format!("{at}.routes"))?.iter().enumerate() {
                        let rat = format!("{at}.routes[{i}]");
                        let rm = v
                            .as_mapping()
                            .ok_or_else(|| anyhow!("network-config: {rat}: not a mapping"))?;
                        let rf = field(rm, &["to", "via"], &rat)?;
                        let to = rf
                            .get("to")
                            .map(|t| string(t, &rat))
                            .transpose()?
                            .unwrap_or_default();
                        if to != "0.0.0.0/0" && to != "default" {
                            bail!("network-config: {rat}.to: `{to}`: only the default route is supported");
                        }
                        let via = rf
                            .get("via")
                            .ok_or_else(|| anyhow!("network-config: {rat}.via is missing"))?;
                        eth.gateway = Some(ipv4(&string(via, &rat)?, &format!("{rat}.via"))?);
                    }
                }
                if let Some(ns) = f.get("nameservers") {
                    let nm = ns.as_mapping().ok_or_else(|| {
                        anyhow!("network-config: {at}.nameservers: not a mapping")
                    })?;
                    let nf = field(nm, &["addresses", "search"], &format!("{at}.nameservers"))?;
                    if let Some(a) = nf.get("addresses") {
                        for (i, v) in list(a, &format!("{at}.nameservers.addresses"))?
                            .iter()
                            .enumerate()
                        {
                            let at = format!("{at}.nameservers.addresses[{i}]");
                            eth.dns.push(ipv4(&string(v, &at)?, &at)?);
                        }
                    }
                    if let Some(s) = nf.get("search") {
                        for (i, v) in list(s, &format!("{at}.nameservers.search"))?
                            .iter()
                            .enumerate()
                        {
                            eth.search
                                .push(string(v, &format!("{at}.nameservers.search[{i}]"))?);
                        }
                    }
                }
                if !eth.dhcp4 && eth.addresses.is_empty() {
                    bail!("network-config: {at}: neither `addresses` nor `dhcp4: true`");
                }
                if let Some(g) = eth.gateway {
                    if !eth.addresses.iter().any(|a| a.contains(g)) && !eth.dhcp4 {
                        bail!(
                            "network-config: {at}: gateway {g} is outside every address's network"
                        );
                    }
                }
                ethernets.push(eth);
            }
        }
        Ok(NetworkConfig { ethernets })
    }
}

/// How the image manages its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// cloud-init is installed: it applies network-config itself.
    CloudInit,
    /// NetworkManager keyfiles.
    NetworkManager,
    /// systemd-networkd.
    Networkd,
}

/// Which backend the root has. On the running system none is an error
/// naming what is missing (the node would come up without its address);
/// under `--root` (a directory being prepared or inspected) it is a
/// warning and the step has nothing to do.
pub fn backend(cx: &Ctx<'_>) -> Result<Option<Backend>> {
    let has = |paths: &[&str]| paths.iter().any(|p| cx.root.exists(p));
    if has(&["/usr/bin/cloud-init"]) {
        Ok(Some(Backend::CloudInit))
    } else if has(&["/usr/sbin/NetworkManager"]) {
        Ok(Some(Backend::NetworkManager))
    } else if has(&[
        "/usr/lib/systemd/systemd-networkd",
        "/lib/systemd/systemd-networkd",
    ]) {
        Ok(Some(Backend::Networkd))
    } else if cx.live() {
        bail!("network-config: the image has neither NetworkManager nor systemd-networkd (nor cloud-init) to apply it")
    } else {
        eprintln!(
            "nodebake-firstboot: warning: network-config not applied: the root has neither NetworkManager nor systemd-networkd"
        );
        Ok(None)
    }
}

/// The files for `cfg` with `backend`.
pub fn render(cfg: &NetworkConfig, backend: Backend) -> Vec<FileSpec> {
    let mut out = Vec::new();
    for e in &cfg.ethernets {
        match backend {
            Backend::CloudInit => {}
            Backend::Networkd => {
                let matcher = match (&e.mac, &e.match_name) {
                    (Some(m), _) => format!("MACAddress={m}\n"),
                    (None, _) => format!("Name={}\n", e.match_name.as_deref().unwrap_or(&e.id)),
                };
                let mut s = format!(
                    "# Managed by nodebake-firstboot from the node's network-config.\n[Match]\n{matcher}\n[Network]\nDHCP={}\n",
                    if e.dhcp4 { "ipv4" } else { "no" }
                );
                for a in &e.addresses {
                    s += &format!("Address={a}\n");
                }
                if let Some(g) = e.gateway {
                    s += &format!("Gateway={g}\n");
                }
                for d in &e.dns {
                    s += &format!("DNS={d}\n");
                }
                if !e.search.is_empty() {
                    s += &format!("Domains={}\n", e.search.join(" "));
                }
                out.push(FileSpec::new(
                    &format!("/etc/systemd/network/10-nodebake-{}.network", e.id),
                    s,
                ));
                if let (Some(mac), Some(name)) = (&e.mac, &e.set_name) {
                    out.push(FileSpec::new(
                        &format!("/etc/systemd/network/10-nodebake-{}.link", e.id),
                        format!("# Managed by nodebake-firstboot from the node's network-config.\n[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n"),
                    ));
                }
            }
            Backend::NetworkManager => {
                let mut s = format!(
                    "# Managed by nodebake-firstboot from the node's network-config.\n[connection]\nid=nodebake-{id}\ntype=ethernet\ninterface-name={name}\nautoconnect=true\nautoconnect-priority=100\n\n[ethernet]\n",
                    id = e.id,
                    name = e.name()
                );
                if let Some(m) = &e.mac {
                    s += &format!("mac-address={}\n", m.to_ascii_uppercase());
                }
                s += "\n[ipv4]\n";
                if e.dhcp4 {
                    s += "method=auto\n";
                } else {
                    s += "method=manual\n";
                }
                for (i, a) in e.addresses.iter().enumerate() {
                    match (i, e.gateway) {
                        (0, Some(g)) => s += &format!("address1={a},{g}\n"),
                        _ => s += &format!("address{}={a}\n", i + 1),
                    }
                }
                if !e.dns.is_empty() {
                    s += &format!(
                        "dns={};\n",
                        e.dns
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(";")
                    );
                }
                if !e.search.is_empty() {
                    s += &format!("dns-search={};\n", e.search.join(";"));
                }
                s += "\n[ipv6]\nmethod=ignore\n";
                let mut f = FileSpec::new(
                    &format!(
                        "/etc/NetworkManager/system-connections/nodebake-{}.nmconnection",
                        e.id
                    ),
                    s,
                );
                // NetworkManager ignores keyfiles others can read.
                f.mode = 0o600;
                out.push(f);
            }
        }
    }
    out
}

/// Interface names and their MACs and IPv4 addresses on the running
/// system (`ip -o link` / `ip -o -4 addr`).
fn live_links(cx: &Ctx<'_>) -> Result<Vec<(String, String, Vec<String>)>> {
    let links = match cx.run(Cmd::new("ip", ["-o", "link", "show"]))? {
        Outcome::Ran(s) => s,
        Outcome::Skipped => return Ok(Vec::new()),
    };
    let addrs = match cx.run(Cmd::new("ip", ["-o", "-4", "addr", "show"]))? {
        Outcome::Ran(s) => s,
        Outcome::Skipped => String::new(),
    };
    Ok(parse_links(&links, &addrs))
}

/// Parses `ip -o link show` and `ip -o -4 addr show` output.
pub fn parse_links(links: &str, addrs: &str) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for l in links.lines() {
        let mut w = l.split_whitespace();
        let (Some(_), Some(name)) = (w.next(), w.next()) else {
            continue;
        };
        let name = name
            .trim_end_matches(':')
            .split('@')
            .next()
            .unwrap_or("")
            .to_string();
        let mac = l
            .split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("")
            .to_ascii_lowercase();
        let a = addrs
            .lines()
            .filter_map(|al| {
                let mut w = al.split_whitespace();
                let (_, n, fam, addr) = (w.next()?, w.next()?, w.next()?, w.next()?);
                (n == name && fam == "inet").then(|| addr.to_string())
            })
            .collect();
        out.push((name, mac, a));
    }
    out
}

/// Applies `network-config`.
pub struct Network;

/// Seconds the step waits for the addresses to appear after applying.
const ADDRESS_WAIT_SECS: u64 = 20;
/// Seconds the step waits for the interfaces to appear (driver loading).
const LINK_WAIT_SECS: u64 = 30;

fn runtime_pending(cx: &Ctx<'_>, cfg: &NetworkConfig) -> Result<Vec<Pending>> {
    let mut p = Vec::new();
    if !cx.live() {
        return Ok(p);
    }
    let links = live_links(cx)?;
    for e in &cfg.ethernets {
        let link = links.iter().find(|(n, mac, _)| match &e.mac {
            Some(m) => mac == m,
            None => n == e.name(),
        });
        match link {
            None => p.push(Pending::Runtime(format!(
                "no interface {} on this machine",
                e.mac.as_deref().unwrap_or(e.name())
            ))),
            Some((name, _, have)) => {
                if name != e.name() {
                    p.push(Pending::Runtime(format!(
                        "interface {name} should be named {}",
                        e.name()
                    )));
                }
                for a in &e.addresses {
                    if !have.contains(&a.to_string()) {
                        p.push(Pending::Runtime(format!("{name} lacks {a}")));
                    }
                }
            }
        }
    }
    Ok(p)
}

impl Step for Network {
    fn id(&self) -> &'static str {
        "network"
    }

    fn describe(&self) -> &'static str {
        "the node's address from network-config (NetworkManager or systemd-networkd)"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        let Some(cfg) = cx.network else {
            return Ok(Vec::new());
        };
        let b = match backend(cx)? {
            None | Some(Backend::CloudInit) => return Ok(Vec::new()),
            Some(b) => b,
        };
        let mut p = pending_files(cx.root, &render(cfg, b))?;
        p.extend(runtime_pending(cx, cfg)?);
        Ok(p)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let Some(cfg) = cx.network else {
            return Ok(());
        };
        let Some(b) = backend(cx)? else {
            return Ok(());
        };
        write_files(cx, &render(cfg, b))?;
        // First boot may start before udev has loaded the NIC driver: let
        // udev finish (bounded), then wait (bounded) for every interface
        // the document names before renaming anything.
        if cx.live() {
            let _ = cx.run(Cmd::new("udevadm", ["settle", "--timeout=30"]));
            for _ in 0..LINK_WAIT_SECS * 4 {
                let links = live_links(cx)?;
                let all_there = cfg.ethernets.iter().all(|e| {
                    links.iter().any(|(n, m, _)| match &e.mac {
                        Some(mac) => m == mac,
                        None => n == e.name(),
                    })
                });
                if all_there {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        // Rename now what the .link file / keyfile name for later boots,
        // when the wanted name is free (a running interface is taken down
        // for the rename: this runs before anything uses the network).
        let links = live_links(cx)?;
        for e in &cfg.ethernets {
            let (Some(mac), Some(want)) = (&e.mac, &e.set_name) else {
                continue;
            };
            let Some((have, _, _)) = links.iter().find(|(_, m, _)| m == mac) else {
                continue;
            };
            if have != want && !links.iter().any(|(n, _, _)| n == want) {
                cx.run(Cmd::new("ip", ["link", "set", "dev", have, "down"]))?;
                cx.run(Cmd::new("ip", ["link", "set", "dev", have, "name", want]))?;
                cx.run(Cmd::new("ip", ["link", "set", "dev", want, "up"]))?;
            }
        }
        match b {
            Backend::Networkd => {
                cx.run(Cmd::new(
                    "systemctl",
                    ["enable", "systemd-networkd.service"],
                ))?;
                cx.run(Cmd::new(
                    "systemctl",
                    ["restart", "systemd-networkd.service"],
                ))?;
            }
            Backend::NetworkManager => {
                cx.run(Cmd::new("nmcli", ["connection", "reload"]))?;
                for e in &cfg.ethernets {
                    cx.run(Cmd::new(
                        "nmcli",
                        ["connection", "up", &format!("nodebake-{}", e.id)],
                    ))?;
                }
            }
            Backend::CloudInit => {}
        }
        if cx.live() {
            // The manager applies asynchronously: wait (bounded) for the
            // addresses, so later steps (keepalived, kubeadm) find them.
            for _ in 0..ADDRESS_WAIT_SECS * 4 {
                if runtime_pending(cx, cfg)?.is_empty() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nodebake cluster init` writes for k8s-node1.
    const NODE1: &str = "version: 2\nethernets:\n  ens33:\n    match:\n      macaddress: \"52:54:00:93:01:41\"\n    set-name: ens33\n    addresses:\n      - 192.168.147.141/24\n    routes:\n      - to: 0.0.0.0/0\n        via: 192.168.147.2\n    nameservers:\n      addresses:\n        - 192.168.147.2\n";

    #[test]
    fn parses_what_cluster_init_writes() {
        let c = NetworkConfig::parse(NODE1).unwrap();
        let e = &c.ethernets[0];
        assert_eq!(e.mac.as_deref(), Some("52:54:00:93:01:41"));
        assert_eq!(e.name(), "ens33");
        assert_eq!(e.addresses[0].to_string(), "192.168.147.141/24");
        assert_eq!(e.gateway, Some("192.168.147.2".parse().unwrap()));
        assert_eq!(e.dns.len(), 1);
    }

    #[test]
    fn renders_networkd_and_networkmanager() {
        let c = NetworkConfig::parse(NODE1).unwrap();
        let f = render(&c, Backend::Networkd);
        assert_eq!(f[0].path, "/etc/systemd/network/10-nodebake-ens33.network");
        assert!(f[0]
            .content
            .contains("[Match]\nMACAddress=52:54:00:93:01:41\n"));
        assert!(f[0]
            .content
            .contains("Address=192.168.147.141/24\nGateway=192.168.147.2\nDNS=192.168.147.2\n"));
        assert!(f[1].content.contains("[Link]\nName=ens33\n"));
        let f = render(&c, Backend::NetworkManager);
        assert_eq!(f[0].mode, 0o600);
        assert!(f[0].content.contains("\nmac-address=52:54:00:93:01:41\n"));
        assert!(f[0].content.contains(
            "method=manual\naddress1=192.168.147.141/24,192.168.147.2\ndns=192.168.147.2;\n"
        ));
        assert!(render(&c, Backend::CloudInit).is_empty());
    }

    #[test]
    fn bad_documents_name_the_field() {
        for (doc, want) in [
            ("version: 1\nconfig: []\n", "version 1"),
            ("ethernets: {}\n", "`version`"),
            ("version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.1]\n", "ethernets.eth0.addresses[0]"),
            ("version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.1/24]\n    mtu: 9000\n", "ethernets.eth0.mtu"),
            ("version: 2\nethernets:\n  eth0:\n    match: {macaddress: zz}\n    addresses: [10.0.0.1/24]\n", "macaddress"),
            ("version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.1/24]\n    gateway4: 10.9.9.9\n", "outside"),
            ("version: 2\nethernets:\n  eth0: {}\n", "neither"),
            ("version: 2\nethernets:\n  eth0:\n    addresses: [10.0.0.1/24]\n    routes: [{to: 10.1.0.0/16, via: 10.0.0.2}]\n", "default route"),
        ] {
            let e = NetworkConfig::parse(doc).unwrap_err().to_string();
            assert!(e.contains(want), "{doc:?}: {e}");
        }
    }

    #[test]
    fn parses_ip_output() {
        let links = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc pfifo_fast state UP mode DEFAULT group default qlen 1000\\    link/ether 52:54:00:93:01:41 brd ff:ff:ff:ff:ff:ff\n";
        let addrs = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n2: eth0    inet 192.168.147.141/24 brd 192.168.147.255 scope global eth0\\       valid_lft forever preferred_lft forever\n";
        let l = parse_links(links, addrs);
        assert_eq!(
            l[1],
            (
                "eth0".into(),
                "52:54:00:93:01:41".into(),
                vec!["192.168.147.141/24".to_string()]
            )
        );
    }
}
