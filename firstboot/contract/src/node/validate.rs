//! All-or-nothing validation of node metadata into a [`NodeConfig`].

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::str::FromStr;

use super::load_balancer::{derive_priority, derive_router_id};
use super::{
    Endpoint, FieldError, FirewalldPolicy, Ipv4Cidr, KubeProxyMode, KubeVersion, LoadBalancer,
    LoadBalancerMode, Member, MemberSettings, MetaData, NodeConfig, NodeSettings, Preempt, Secrets,
    NODE_SCHEMA_VERSION,
};
use crate::grammar;
use crate::profile::Role;

/// Collects field errors while validating.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// Records `r`'s error under `field` and returns its value.
    fn take<T>(&mut self, field: &str, r: Result<T, String>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e);
                None
            }
        }
    }
}

/// Whether `s` is an RFC 1123 host name in lower case (labels of `a-z0-9-`,
/// 1–63 characters, no leading or trailing `-`, 253 characters at most).
pub(crate) fn check_hostname(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty".into());
    }
    if s.len() > 253 {
        return Err(format!("`{s}` is longer than 253 characters"));
    }
    for label in s.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "`{s}` is not an RFC 1123 host name (lower-case labels of a-z, 0-9 and `-`, 1-63 characters, not starting or ending with `-`)"
            ));
        }
    }
    Ok(())
}

fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    Ipv4Addr::from_str(s).map_err(|_| format!("`{s}` is not an IPv4 address"))
}

fn parse_version(s: &str) -> Result<KubeVersion, String> {
    let bad = || format!("`{s}` is not a version MAJOR.MINOR.PATCH");
    let parts: Vec<u32> = s
        .strip_prefix('v')
        .unwrap_or(s)
        .split('.')
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [major, minor, patch] if major == 1 => Ok(KubeVersion {
            major,
            minor,
            patch,
        }),
        [_, _, _] => Err(format!("`{s}`: only Kubernetes 1.x exists")),
        _ => Err(bad()),
    }
}

fn check_token_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_bootstrap_token(s: &str) -> Result<(), String> {
    match s.split_once('.') {
        Some((id, secret))
            if id.len() == 6
                && secret.len() == 16
                && check_token_chars(id)
                && check_token_chars(secret) =>
        {
            Ok(())
        }
        _ => Err("is not a bootstrap token `[a-z0-9]{6}.[a-z0-9]{16}`".into()),
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A command-line flag name as given without its dashes: `a-z`, `0-9` and
/// inner `-`.
fn is_flag_name(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn check_simple_name(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!("`{s}` is not a {what} (a-z, 0-9, `-`, `_`)"));
    }
    Ok(())
}

fn members(errs: &mut Errors, field: &str, list: &[MemberSettings]) -> Vec<Member> {
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let name = errs.take(&format!("{field}[{i}].name"), check_hostname(&m.name));
        let ip = errs.take(&format!("{field}[{i}].ip"), parse_ip(&m.ip));
        if let (Some(()), Some(ip)) = (name, ip) {
            out.push(Member {
                name: m.name.clone(),
                ip,
            });
        }
    }
    out
}

/// Validates everything; see [`NodeConfig::from_parts`].
pub(super) fn validate(meta: &MetaData, s: &NodeSettings) -> Result<NodeConfig, Vec<FieldError>> {
    let mut e = Errors::default();
    let n = |f: &str| format!("nodebake.{f}");

    if s.schema_version != NODE_SCHEMA_VERSION {
        e.add(
            n("schema_version"),
            format!(
                "version {} is not supported (this agent reads version {NODE_SCHEMA_VERSION})",
                s.schema_version
            ),
        );
    }
    if meta.instance_id.trim().is_empty() {
        e.add("instance-id", "is empty");
    }
    let hostname = e.take("local-hostname", check_hostname(&meta.local_hostname));
    let role = match s.role.as_str() {
        "master" => Some(Role::Master),
        "worker" => Some(Role::Worker),
        other => {
            e.add(
                n("role"),
                format!("unknown role `{other}` (expected `master` or `worker`)"),
            );
            None
        }
    };
    let node_ip = e.take(&n("node_ip"), Ipv4Cidr::parse_address(&s.node_ip));
    if let Some(ip) = node_ip {
        if ip.prefix == 0 || ip.prefix > 30 {
            e.add(
                n("node_ip"),
                format!("prefix /{} leaves no usable subnet", ip.prefix),
            );
        } else if ip.addr == ip.network() || ip.addr == ip.broadcast() {
            e.add(
                n("node_ip"),
                format!("{} is the network or broadcast address of {ip}", ip.addr),
            );
        }
    }
    e.take(&n("interface"), grammar::interface_name(&s.interface));
    e.take(&n("cluster_name"), check_hostname(&s.cluster_name));
    let version = e.take(
        &n("kubernetes_version"),
        parse_version(&s.kubernetes_version),
    );

    let ep = &s.control_plane_endpoint;
    e.take(
        &n("control_plane_endpoint.dns_name"),
        check_hostname(&ep.dns_name),
    );
    let vip = e.take(&n("control_plane_endpoint.vip"), parse_ip(&ep.vip));
    if ep.port == 0 {
        e.add(n("control_plane_endpoint.port"), "port 0 is not a port");
    }

    if s.masters.is_empty() {
        e.add(n("masters"), "lists no master");
    }
    let masters = members(&mut e, &n("masters"), &s.masters);
    let workers = members(&mut e, &n("workers"), &s.workers);
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, &str> = HashMap::new();
    for (kind, list) in [("masters", &masters), ("workers", &workers)] {
        for m in list.iter() {
            if let Some(prev) = names.insert(&m.name, kind) {
                e.add(
                    n(kind),
                    format!("duplicate name `{}` (also in {prev})", m.name),
                );
            }
            if let Some(prev) = ips.insert(m.ip, &m.name) {
                e.add(
                    n(kind),
                    format!("duplicate IP {} (`{}` and `{prev}`)", m.ip, m.name),
                );
            }
            if let Some(net) = node_ip {
                if !net.contains(m.ip) {
                    e.add(
                        n(kind),
                        format!(
                            "IP {} of `{}` is outside the node subnet {}/{}",
                            m.ip,
                            m.name,
                            net.network(),
                            net.prefix
                        ),
                    );
                }
            }
        }
    }
    if let (Some(vip), Some(net)) = (vip, node_ip) {
        if !net.contains(vip) {
            e.add(
                n("control_plane_endpoint.vip"),
                format!(
                    "{vip} is outside the node subnet {}/{}",
                    net.network(),
                    net.prefix
                ),
            );
        }
        if let Some(owner) = ips.get(&vip) {
            e.add(
                n("control_plane_endpoint.vip"),
                format!("{vip} is also the IP of `{owner}`"),
            );
        }
    }
    if !masters.iter().any(|m| m.name == s.initialiser) {
        e.add(
            n("initialiser"),
            format!("`{}` is not one of the masters", s.initialiser),
        );
    }
    if let (Some(()), Some(role), Some(ip)) = (hostname, role, node_ip) {
        let (list, kind) = match role {
            Role::Master => (&masters, "masters"),
            Role::Worker => (&workers, "workers"),
        };
        match list.iter().find(|m| m.name == meta.local_hostname) {
            None => e.add(
                n(kind),
                format!(
                    "this node `{}` is not listed among the {kind}",
                    meta.local_hostname
                ),
            ),
            Some(m) if m.ip != ip.addr => e.add(
                n("node_ip"),
                format!(
                    "{} differs from the IP {} listed for `{}`",
                    ip.addr, m.ip, m.name
                ),
            ),
            Some(_) => {}
        }
    }

    let pod = e.take(&n("pod_cidr"), Ipv4Cidr::parse_block(&s.pod_cidr));
    let svc = e.take(&n("service_cidr"), Ipv4Cidr::parse_block(&s.service_cidr));
    if let (Some(p), Some(sv)) = (pod, svc) {
        if p.overlaps(&sv) {
            e.add(n("service_cidr"), format!("{sv} overlaps the pod CIDR {p}"));
        }
    }
    if let Some(net) = node_ip {
        let net = Ipv4Cidr {
            addr: net.network(),
            prefix: net.prefix,
        };
        for (f, c) in [("pod_cidr", pod), ("service_cidr", svc)] {
            if let Some(c) = c {
                if c.overlaps(&net) {
                    e.add(n(f), format!("{c} overlaps the node subnet {net}"));
                }
            }
        }
    }
    e.take(&n("dns_domain"), check_hostname(&s.dns_domain));
    let proxy = match s.kube_proxy_mode.as_str() {
        "iptables" => Some(KubeProxyMode::Iptables),
        "ipvs" => Some(KubeProxyMode::Ipvs),
        other => {
            e.add(
                n("kube_proxy_mode"),
                format!("unknown mode `{other}` (expected `iptables` or `ipvs`)"),
            );
            None
        }
    };
    e.take(&n("cni"), check_simple_name(&s.cni, "CNI name"));
    for (i, server) in s.ntp_servers.iter().enumerate() {
        if parse_ip(server).is_err() {
            e.take(&n(&format!("ntp_servers[{i}]")), check_hostname(server));
        }
    }
    e.take(
        &n("image_repository"),
        grammar::image_repository(&s.image_repository),
    );
    for (host, urls) in &s.registry_mirrors {
        // A host that passed its grammar may name the field of its URLs.
        let url_field = match grammar::registry_host(host) {
            Err(why) => {
                e.add(n("registry_mirrors"), why);
                "registry_mirrors".to_string()
            }
            Ok(()) => {
                if urls.is_empty() {
                    e.add(n("registry_mirrors"), format!("`{host}` lists no mirror"));
                }
                format!("registry_mirrors.{host}")
            }
        };
        for (i, u) in urls.iter().enumerate() {
            e.take(&n(&format!("{url_field}[{i}]")), grammar::mirror_url(u));
        }
    }
    let firewalld = match s.firewalld.as_str() {
        "disable" => Some(FirewalldPolicy::Disable),
        "open-ports" => Some(FirewalldPolicy::OpenPorts),
        other => {
            e.add(
                n("firewalld"),
                format!("unknown policy `{other}` (expected `disable` or `open-ports`)"),
            );
            None
        }
    };
    for (k, v) in &s.kubelet_extra_args {
        if !is_flag_name(k) {
            e.add(
                n("kubelet_extra_args"),
                format!("`{k}` is not a flag name (a-z, 0-9, `-`, no leading dashes)"),
            );
        } else if k == "node-ip" {
            e.add(
                n("kubelet_extra_args"),
                "`node-ip` is set from `node_ip`; remove it here",
            );
        }
        if v.contains(['\n', '"', '\'', '\\']) || v.contains(char::is_whitespace) {
            e.add(
                n(&format!("kubelet_extra_args.{k}")),
                "values may not contain spaces, quotes or backslashes",
            );
        }
    }
    validate_kubeadm(&mut e, &s.kubeadm, version);
    validate_users(&mut e, &s.users);
    if let Some(d) = &s.state_disk {
        e.take(&n("state_disk"), crate::state_disk::check_device(d));
    }
    let profile = s.profile.clone().unwrap_or_else(|| s.role.clone());
    e.take(&n("profile"), check_simple_name(&profile, "profile name"));

    let secrets = validate_secrets(&mut e, s, role, meta.local_hostname == s.initialiser);
    if let (Some(vip), Some(ip)) = (vip, node_ip) {
        if vip == ip.network() || vip == ip.broadcast() {
            e.add(
                n("control_plane_endpoint.vip"),
                format!("{vip} is the network or broadcast address of {ip}"),
            );
        }
    }
    let mut warnings = Errors::default();
    let lb = validate_load_balancer(
        &mut e,
        &mut warnings,
        s,
        role,
        &meta.local_hostname,
        vip,
        &masters,
    );

    if !e.0.is_empty() {
        return Err(e.0);
    }
    // Every Option below is Some: a None always recorded an error.
    let (Some(role), Some(node_ip), Some(version), Some(vip), Some(pod), Some(svc)) =
        (role, node_ip, version, vip, pod, svc)
    else {
        unreachable!("validation recorded no error but a value is missing")
    };
    let (Some(proxy), Some(firewalld), Some(secrets), Some(lb)) = (proxy, firewalld, secrets, lb)
    else {
        unreachable!("validation recorded no error but a value is missing")
    };
    Ok(NodeConfig {
        instance_id: meta.instance_id.clone(),
        hostname: meta.local_hostname.clone(),
        role,
        initialiser: s.initialiser.clone(),
        node_ip,
        interface: s.interface.clone(),
        cluster_name: s.cluster_name.clone(),
        kubernetes_version: version,
        endpoint: Endpoint {
            dns_name: ep.dns_name.clone(),
            vip,
            port: ep.port,
        },
        masters,
        workers,
        pod_cidr: pod,
        service_cidr: svc,
        dns_domain: s.dns_domain.clone(),
        kube_proxy_mode: proxy,
        cni: s.cni.clone(),
        ntp_servers: s.ntp_servers.clone(),
        image_repository: s.image_repository.clone(),
        registry_mirrors: s.registry_mirrors.clone(),
        firewalld,
        kubelet_extra_args: s.kubelet_extra_args.clone(),
        users: s.users.clone(),
        profile,
        secrets,
        load_balancer: lb,
        kubeadm: s.kubeadm.clone(),
        state_disk: s.state_disk.clone(),
        warnings: warnings.0,
    })
}

/// `kubeadm.skip_phases`: phases `kubeadm init` or `join` knows, by
/// top-level name, each once; `kubeadm.control_plane_timeout`: a Go
/// duration; `kubeadm.extra_args`: flag names, values without control
/// characters.
fn validate_kubeadm(e: &mut Errors, k: &super::KubeadmSettings, version: Option<KubeVersion>) {
    use super::{kubeadm_phase_root, KUBEADM_INIT_PHASES, KUBEADM_JOIN_PHASES};
    let n = |f: &str| format!("nodebake.{f}");
    for (i, phase) in k.skip_phases.iter().enumerate() {
        let root = kubeadm_phase_root(phase);
        let grammar = !phase.is_empty()
            && phase.split('/').count() <= 2
            && phase.split('/').all(|p| {
                !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            });
        if !grammar || !(KUBEADM_INIT_PHASES.contains(&root) || KUBEADM_JOIN_PHASES.contains(&root))
        {
            e.add(
                n(&format!("kubeadm.skip_phases[{i}]")),
                format!(
                    "`{phase}` is not a kubeadm init or join phase (init: {}; join: {})",
                    KUBEADM_INIT_PHASES.join(", "),
                    KUBEADM_JOIN_PHASES.join(", ")
                ),
            );
        } else if k.skip_phases[..i].contains(phase) {
            e.add(
                n(&format!("kubeadm.skip_phases[{i}]")),
                format!("`{phase}` is listed twice"),
            );
        }
    }
    if let Some(a) = k.attempts {
        if !(1..=20).contains(&a) {
            e.add(n("kubeadm.attempts"), format!("{a} attempts: 1 to 20"));
        }
    }
    if let Some(p) = &k.image_pull_policy {
        if !["Always", "IfNotPresent", "Never"].contains(&p.as_str()) {
            e.add(
                n("kubeadm.image_pull_policy"),
                format!("`{p}` is not a pull policy (Always, IfNotPresent or Never)"),
            );
        }
    }
    for (field, value) in [
        ("control_plane_timeout", &k.control_plane_timeout),
        ("discovery_timeout", &k.discovery_timeout),
    ] {
        if let Some(t) = value {
            if !crate::profile::is_go_duration(t) {
                e.add(
                    n(&format!("kubeadm.{field}")),
                    format!("{} is not a duration like 4m0s or 20m", grammar::shown(t)),
                );
            }
        }
    }
    for gate in k.feature_gates.keys() {
        let ok = gate.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            && gate.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            e.add(
                n("kubeadm.feature_gates"),
                format!(
                    "{} is not a feature gate name (CamelCase letters and digits, e.g. EtcdLearnerMode)",
                    grammar::shown(gate)
                ),
            );
        }
    }
    validate_patches(e, k, version);
    // Rendered through the YAML serializer, so any printable value is
    // safe; names follow the flag grammar, nothing holds a control byte.
    for (component, flags) in k.extra_args.components() {
        for (flag, value) in flags {
            let field = n(&format!("kubeadm.extra_args.{component}"));
            if !is_flag_name(flag) {
                e.add(
                    field,
                    format!("`{flag}` is not a flag name (a-z, 0-9, `-`, no leading dashes)"),
                );
            } else if value.chars().any(char::is_control) {
                e.add(
                    format!("{field}.{flag}"),
                    "the value holds a control character (newline, tab, ...)",
                );
            }
        }
    }
}

/// SSH public key types sshd accepts in authorized_keys.
const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// `users`: account names as useradd takes them (each once), at least one
/// key each, every key `type base64 [comment]` of a type sshd knows, on
/// one line, without options (no `command=`: keys grant a login, nothing
/// more or less).
fn validate_users(e: &mut Errors, users: &[super::UserSettings]) {
    for (i, u) in users.iter().enumerate() {
        let f = |x: &str| format!("nodebake.users[{i}].{x}");
        let name_ok = u.name.len() <= 32
            && u.name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
            && u.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !name_ok {
            e.add(
                f("name"),
                format!(
                    "{} is not an account name ([a-z_][a-z0-9_-], at most 32)",
                    grammar::shown(&u.name)
                ),
            );
        } else if users[..i].iter().any(|o| o.name == u.name) {
            e.add(f("name"), format!("`{}` is listed twice", u.name));
        }
        if u.ssh_authorized_keys.is_empty() {
            e.add(
                f("ssh_authorized_keys"),
                "no key: nodebake accounts log in with SSH keys only",
            );
        }
        for (k, key) in u.ssh_authorized_keys.iter().enumerate() {
            let field = f(&format!("ssh_authorized_keys[{k}]"));
            if key.chars().any(char::is_control) {
                e.add(
                    field,
                    "holds a control character (one key per entry, one line)",
                );
                continue;
            }
            let mut parts = key.split_whitespace();
            let (ty, body) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !SSH_KEY_TYPES.contains(&ty) {
                e.add(
                    field,
                    format!(
                        "does not start with a key type sshd knows ({}); options such as command= are not taken",
                        SSH_KEY_TYPES.join(", ")
                    ),
                );
            } else if body.len() < 16
                || !body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
            {
                e.add(field, format!("the {ty} key data is not base64"));
            }
        }
    }
}

/// At most this many patches (file names carry a two-digit index).
const MAX_PATCHES: usize = 100;

/// `kubeadm.patches`: a known target (the kubelet configuration from
/// 1.25), a known type, and a patch that is one YAML document of the
/// type's shape (a mapping; a list of operations for `json`), without
/// control characters other than newline and tab. kubeadm itself checks
/// the fields a patch names when it applies it.
fn validate_patches(e: &mut Errors, k: &super::KubeadmSettings, version: Option<KubeVersion>) {
    use super::KUBEADM_PATCH_TARGETS;
    if let (Some(v), false) = (version, k.patches.is_empty()) {
        if (v.major, v.minor) < (1, 22) {
            e.add(
                "nodebake.kubeadm.patches".to_string(),
                format!(
                    "kubeadm takes patches in its configuration from Kubernetes 1.22 (this is {v})"
                ),
            );
        }
    }
    if k.patches.len() > MAX_PATCHES {
        e.add(
            "nodebake.kubeadm.patches".to_string(),
            format!("{} patches; at most {MAX_PATCHES}", k.patches.len()),
        );
    }
    for (i, p) in k.patches.iter().enumerate() {
        let f = |x: &str| format!("nodebake.kubeadm.patches[{i}].{x}");
        if !KUBEADM_PATCH_TARGETS.contains(&p.target.as_str()) {
            e.add(
                f("target"),
                format!(
                    "{} is not a kubeadm patch target ({})",
                    grammar::shown(&p.target),
                    KUBEADM_PATCH_TARGETS.join(", ")
                ),
            );
        } else if let (Some(v), "kubeletconfiguration") = (version, p.target.as_str()) {
            if (v.major, v.minor) < (1, 25) {
                e.add(
                    f("target"),
                    format!("kubeadm patches the kubelet configuration from Kubernetes 1.25 (this is {v})"),
                );
            }
        }
        let want_list = match p.patch_type.as_str() {
            "strategic" | "merge" => false,
            "json" => true,
            other => {
                e.add(
                    f("type"),
                    format!(
                        "{} is not a patch type (strategic, merge or json)",
                        grammar::shown(other)
                    ),
                );
                continue;
            }
        };
        if p.patch
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            e.add(
                f("patch"),
                "holds a control character other than newline and tab",
            );
            continue;
        }
        match serde_yaml::from_str::<serde_yaml::Value>(&p.patch) {
            Err(err) => e.add(f("patch"), format!("not a YAML document: {err}")),
            Ok(serde_yaml::Value::Sequence(s)) if want_list && !s.is_empty() => {}
            Ok(serde_yaml::Value::Mapping(m)) if !want_list && !m.is_empty() => {}
            Ok(_) if want_list => e.add(
                f("patch"),
                "a json patch is a non-empty list of operations ({op, path, value})",
            ),
            Ok(_) => e.add(
                f("patch"),
                format!("a {} patch is a non-empty mapping", p.patch_type),
            ),
        }
    }
}

/// Ports a master's own components listen on (apiserver aside): etcd,
/// kubelet, controller-manager, scheduler.
const MASTER_PORTS: [(u16, &str); 5] = [
    (2379, "etcd client"),
    (2380, "etcd peer"),
    (10250, "kubelet"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
];

/// Checks `nodebake.load_balancer` and the endpoint against it, and
/// resolves router id and priority. Masters' problems are errors; an even
/// number of masters is a warning.
fn validate_load_balancer(
    e: &mut Errors,
    warnings: &mut Errors,
    s: &NodeSettings,
    role: Option<Role>,
    hostname: &str,
    vip: Option<Ipv4Addr>,
    masters: &[Member],
) -> Option<LoadBalancer> {
    let lb = &s.load_balancer;
    let f = |x: &str| format!("nodebake.load_balancer.{x}");
    let before = e.0.len();
    let mode = match lb.mode.as_str() {
        "host" => Some(LoadBalancerMode::Host),
        "static-pods" => Some(LoadBalancerMode::StaticPods),
        other => {
            e.add(
                f("mode"),
                format!("unknown mode `{other}` (expected `host` or `static-pods`)"),
            );
            None
        }
    };
    let router_id = match lb.virtual_router_id {
        Some(id) if !(1..=255).contains(&id) => {
            e.add(
                f("virtual_router_id"),
                format!("{id} is outside 1-255 (VRRP router ids are one byte, 0 is reserved)"),
            );
            None
        }
        Some(id) => Some(id as u8),
        None => {
            let ips: Vec<Ipv4Addr> = masters.iter().map(|m| m.ip).collect();
            vip.map(|v| derive_router_id(v, &ips))
        }
    };
    let priority = match lb.priority {
        Some(p) if !(1..=254).contains(&p) => {
            e.add(
                f("priority"),
                format!("{p} is outside 1-254 (255 is reserved for the address owner)"),
            );
            None
        }
        Some(p) => Some(p as u8),
        None => Some(
            masters
                .iter()
                .position(|m| m.name == hostname)
                .map(|i| derive_priority(i, masters.len()))
                .unwrap_or(0),
        ),
    };
    let adv = lb.advert_interval_ms;
    if !(10..=40_950).contains(&adv) || !adv.is_multiple_of(10) {
        e.add(
            f("advert_interval_ms"),
            format!("{adv} ms is not a VRRP advert interval (10-40950 ms in steps of 10)"),
        );
    } else if adv.is_multiple_of(1000) && adv > 255_000 {
        e.add(f("advert_interval_ms"), "at most 255 s");
    } else if !adv.is_multiple_of(1000) && !lb.unicast {
        e.add(
            f("advert_interval_ms"),
            format!(
                "{adv} ms needs VRRPv3, which has no authentication: use `unicast: true` so only the other masters' adverts are accepted"
            ),
        );
    }
    for (name, v, lo, hi) in [
        ("check_interval_s", lb.check_interval_s, 1, 60),
        ("check_fall", lb.check_fall, 1, 10),
        ("check_rise", lb.check_rise, 1, 10),
        ("backend_inter_ms", lb.backend_inter_ms, 100, 60_000),
        ("backend_fall", lb.backend_fall, 1, 10),
        ("backend_rise", lb.backend_rise, 1, 10),
        ("connect_timeout_ms", lb.connect_timeout_ms, 100, 60_000),
    ] {
        if !(lo..=hi).contains(&v) {
            e.add(f(name), format!("{v} is outside {lo}-{hi}"));
        }
    }
    if let Some(d) = lb.preempt_delay_s {
        if d > 1000 {
            e.add(f("preempt_delay_s"), format!("{d} is above 1000 s"));
        }
    }
    if !matches!(lb.health_path.as_str(), "/healthz" | "/readyz" | "/livez") {
        e.add(
            f("health_path"),
            format!(
                "`{}` is not an apiserver health path (`/healthz`, `/readyz` or `/livez`)",
                lb.health_path
            ),
        );
    }
    if lb.verify_apiserver_ca && s.secrets.ca.is_none() && role == Some(Role::Master) {
        e.add(
            f("verify_apiserver_ca"),
            "needs the cluster CA in `secrets.ca.ca_crt`",
        );
    }
    let port = s.control_plane_endpoint.port;
    if lb.apiserver_port == 0 {
        e.add(f("apiserver_port"), "port 0 is not a port");
    }
    if port == lb.apiserver_port {
        e.add(
            "nodebake.control_plane_endpoint.port",
            format!(
                "{port} clashes with the apiserver port on every master (haproxy and the apiserver would both bind it)"
            ),
        );
    }
    let mut used: Vec<(u16, String)> = MASTER_PORTS
        .iter()
        .map(|(p, w)| (*p, w.to_string()))
        .collect();
    used.push((lb.apiserver_port, "apiserver".into()));
    for (p, what) in &used {
        if port == *p && *p != lb.apiserver_port {
            e.add(
                "nodebake.control_plane_endpoint.port",
                format!("{port} clashes with the {what} port on masters"),
            );
        }
    }
    if let Some(sp) = lb.stats_port {
        used.push((port, "load balancer frontend".into()));
        if sp == 0 {
            e.add(f("stats_port"), "port 0 is not a port");
        }
        if let Some((_, what)) = used.iter().find(|(p, _)| *p == sp) {
            e.add(
                f("stats_port"),
                format!("{sp} clashes with the {what} port on masters"),
            );
        }
    }
    for (name, img) in [
        ("keepalived_image", &lb.keepalived_image),
        ("haproxy_image", &lb.haproxy_image),
    ] {
        if img.is_empty() || img.contains(char::is_whitespace) || img.contains("://") {
            e.add(f(name), format!("`{img}` is not an image reference"));
        }
    }
    if role == Some(Role::Master) && !masters.is_empty() && masters.len().is_multiple_of(2) {
        warnings.add(
            "nodebake.masters",
            format!(
                "{} masters: an even count tolerates no more failures than one master fewer (etcd quorum); use an odd count >= 3",
                masters.len()
            ),
        );
    }
    if e.0.len() != before {
        return None;
    }
    Some(LoadBalancer {
        mode: mode?,
        virtual_router_id: router_id?,
        priority: priority?,
        advert_interval_ms: adv,
        unicast: lb.unicast,
        preempt: match lb.preempt_delay_s {
            Some(d) => Preempt::AfterSeconds(d),
            None => Preempt::Never,
        },
        check_interval_s: lb.check_interval_s,
        check_fall: lb.check_fall,
        check_rise: lb.check_rise,
        backend_inter_ms: lb.backend_inter_ms,
        backend_fall: lb.backend_fall,
        backend_rise: lb.backend_rise,
        connect_timeout_ms: lb.connect_timeout_ms,
        health_path: lb.health_path.clone(),
        verify_apiserver_ca: lb.verify_apiserver_ca,
        apiserver_port: lb.apiserver_port,
        stats_port: lb.stats_port,
        keepalived_image: lb.keepalived_image.clone(),
        haproxy_image: lb.haproxy_image.clone(),
    })
}

/// Checks secret formats and that the role has the secrets it needs:
/// every node a bootstrap token; joining nodes the CA cert hash; masters
/// the VRRP password and either the CA material or a certificate key.
fn validate_secrets(
    e: &mut Errors,
    s: &NodeSettings,
    role: Option<Role>,
    is_initialiser: bool,
) -> Option<Secrets> {
    let sec = &s.secrets;
    let f = |x: &str| format!("nodebake.secrets.{x}");
    let before = e.0.len();
    let role_name = s.role.as_str();
    match &sec.bootstrap_token {
        Some(t) => {
            e.take(&f("bootstrap_token"), check_bootstrap_token(t.expose()));
        }
        None => e.add(
            f("bootstrap_token"),
            format!("missing (required for role `{role_name}`)"),
        ),
    }
    match &sec.ca_cert_hash {
        Some(h) => {
            let ok = h.strip_prefix("sha256:").is_some_and(|x| is_hex(x, 64));
            if !ok {
                e.add(
                    f("ca_cert_hash"),
                    "is not `sha256:` followed by 64 hex digits",
                );
            }
        }
        None if !(role == Some(Role::Master) && is_initialiser) => e.add(
            f("ca_cert_hash"),
            format!("missing (required for role `{role_name}` to join)"),
        ),
        None => {}
    }
    if let Some(k) = &sec.certificate_key {
        if !is_hex(k.expose(), 64) {
            e.add(f("certificate_key"), "is not 64 hex digits");
        }
    }
    if let Some(p) = &sec.vrrp_password {
        e.take(&f("vrrp_password"), grammar::vrrp_password(p.expose()));
    }
    if let Some(ca) = &sec.ca {
        let pems: BTreeMap<&str, &str> = [
            ("ca.ca_crt", ca.ca_crt.as_str()),
            ("ca.ca_key", ca.ca_key.expose()),
            ("ca.front_proxy_ca_crt", ca.front_proxy_ca_crt.as_str()),
            ("ca.front_proxy_ca_key", ca.front_proxy_ca_key.expose()),
            ("ca.etcd_ca_crt", ca.etcd_ca_crt.as_str()),
            ("ca.etcd_ca_key", ca.etcd_ca_key.expose()),
            ("ca.sa_key", ca.sa_key.expose()),
            ("ca.sa_pub", ca.sa_pub.as_str()),
        ]
        .into_iter()
        .collect();
        for (name, pem) in pems {
            if !pem.trim_start().starts_with("-----BEGIN ") {
                e.add(f(name), "is not PEM text");
            }
        }
    }
    if role == Some(Role::Master) {
        if sec.vrrp_password.is_none() {
            e.add(f("vrrp_password"), "missing (required for role `master`)");
        }
        if sec.ca.is_none() && sec.certificate_key.is_none() {
            e.add(
                f("certificate_key"),
                "missing: masters need either `ca` material or a `certificate_key`",
            );
        }
    }
    if e.0.len() != before {
        return None;
    }
    Some(Secrets {
        bootstrap_token: sec.bootstrap_token.clone()?,
        ca_cert_hash: sec.ca_cert_hash.clone(),
        certificate_key: sec.certificate_key.clone(),
        vrrp_password: sec.vrrp_password.clone(),
        ca: sec.ca.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_follow_rfc1123() {
        assert!(check_hostname("k8s-node1").is_ok());
        assert!(check_hostname("master.k8s.io").is_ok());
        assert!(check_hostname("K8s").is_err());
        assert!(check_hostname("-a").is_err());
        assert!(check_hostname("a-").is_err());
        assert!(check_hostname("a..b").is_err());
        assert!(check_hostname("a_b").is_err());
        assert!(check_hostname(&"a".repeat(64)).is_err());
        assert!(check_hostname("").is_err());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v1.20.0").unwrap().minor, 20);
        assert!(parse_version("1.20").is_err());
        assert!(parse_version("2.0.0").is_err());
        assert!(parse_version("1.x.0").is_err());
    }

    #[test]
    fn tokens() {
        assert!(check_bootstrap_token("abcdef.0123456789abcdef").is_ok());
        assert!(check_bootstrap_token("abcdef0123456789abcdef").is_err());
        assert!(check_bootstrap_token("ABCDEF.0123456789abcdef").is_err());
    }
}
