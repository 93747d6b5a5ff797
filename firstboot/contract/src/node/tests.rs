//! Tests of node metadata parsing and validation against the seed fixtures.

use super::*;

fn fixture(host: &str, file: &str) -> String {
    let path = format!(
        "{}/../../tests/fixtures/metadata/seed-ha/{host}/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn seed(host: &str) -> (MetaData, NodeSettings) {
    (
        parse_meta_data(&fixture(host, "meta-data")).unwrap(),
        parse_user_data(&fixture(host, "user-data")).unwrap(),
    )
}

fn field_errors(meta: &MetaData, s: &NodeSettings) -> Vec<FieldError> {
    match NodeConfig::from_parts(meta, s) {
        Err(NodeError::Invalid(v)) => v,
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn assert_field(meta: &MetaData, s: &NodeSettings, field: &str, reason_part: &str) {
    let errs = field_errors(meta, s);
    assert!(
        errs.iter()
            .any(|e| e.field == field && e.reason.contains(reason_part)),
        "no error on {field} containing {reason_part:?}: {errs:?}"
    );
}

#[test]
fn every_seed_node_validates() {
    for host in [
        "k8s-master1",
        "k8s-master2",
        "k8s-master3",
        "k8s-node1",
        "k8s-node2",
        "k8s-node3",
    ] {
        let (m, s) = seed(host);
        let c = NodeConfig::from_parts(&m, &s).unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(c.hostname, host);
        assert_eq!(c.endpoint.port, 16443);
        assert_eq!(c.endpoint.vip.to_string(), "192.168.147.154");
        assert_eq!(c.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(c.members().count(), 6);
        assert_eq!(c.is_initialiser(), host == "k8s-master1");
        assert_eq!(c.kubernetes_version.to_string(), "1.20.0");
    }
}

#[test]
fn secrets_are_redacted_in_debug() {
    let (m, s) = seed("k8s-master2");
    let c = NodeConfig::from_parts(&m, &s).unwrap();
    let text = format!("{c:?}");
    assert!(!text.contains("0123456789abcdef"), "{text}");
    assert!(!text.contains("k8sVRRP1"), "{text}");
    assert!(text.contains("<redacted>"));
}

#[test]
fn bad_pod_cidr_names_the_field() {
    let (m, mut s) = seed("k8s-node1");
    s.pod_cidr = "10.244.0.0/99".into();
    assert_field(&m, &s, "nodebake.pod_cidr", "larger than 32");
    let err = NodeConfig::from_parts(&m, &s).unwrap_err().to_string();
    assert!(err.contains("pod_cidr"), "{err}");
}

#[test]
fn every_bad_input_is_named() {
    let (m, s) = seed("k8s-node1");
    let mut bad = m.clone();
    bad.local_hostname = "K8s_Node1".into();
    assert_field(&bad, &s, "local-hostname", "RFC 1123");

    let mut t = s.clone();
    t.role = "king".into();
    assert_field(&m, &t, "nodebake.role", "unknown role");

    let mut t = s.clone();
    t.workers[1].name = "k8s-master1".into();
    assert_field(&m, &t, "nodebake.workers", "duplicate name");

    let mut t = s.clone();
    t.workers[1].ip = "192.168.147.137".into();
    assert_field(&m, &t, "nodebake.workers", "duplicate IP");

    let mut t = s.clone();
    t.masters[2].ip = "10.9.9.9".into();
    assert_field(&m, &t, "nodebake.masters", "outside the node subnet");

    let mut t = s.clone();
    t.control_plane_endpoint.vip = "192.168.147.141".into();
    assert_field(&m, &t, "nodebake.control_plane_endpoint.vip", "also the IP");

    let mut t = s.clone();
    t.node_ip = "192.168.147.142/24".into();
    assert_field(&m, &t, "nodebake.node_ip", "differs");

    let mut t = s.clone();
    t.service_cidr = "10.244.0.0/16".into();
    assert_field(&m, &t, "nodebake.service_cidr", "overlaps");

    let mut t = s.clone();
    t.kube_proxy_mode = "nftables".into();
    assert_field(&m, &t, "nodebake.kube_proxy_mode", "unknown mode");

    let mut t = s.clone();
    t.initialiser = "k8s-node1".into();
    assert_field(&m, &t, "nodebake.initialiser", "not one of the masters");

    let mut t = s.clone();
    t.secrets.ca_cert_hash = None;
    assert_field(&m, &t, "nodebake.secrets.ca_cert_hash", "missing");

    let mut t = s.clone();
    t.secrets.bootstrap_token = Some(Secret::new("nope"));
    assert_field(
        &m,
        &t,
        "nodebake.secrets.bootstrap_token",
        "bootstrap token",
    );

    let mut t = s.clone();
    t.kubernetes_version = "1.20".into();
    assert_field(&m, &t, "nodebake.kubernetes_version", "not a version");
}

#[test]
fn masters_need_their_secrets() {
    let (m, mut s) = seed("k8s-master2");
    s.secrets.vrrp_password = None;
    s.secrets.certificate_key = None;
    let errs = field_errors(&m, &s);
    let fields: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(
        fields.contains(&"nodebake.secrets.vrrp_password"),
        "{errs:?}"
    );
    assert!(
        fields.contains(&"nodebake.secrets.certificate_key"),
        "{errs:?}"
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let (m, mut s) = seed("k8s-node1");
    s.pod_cidr = "x".into();
    s.service_cidr = "y".into();
    assert!(field_errors(&m, &s).len() >= 2);
}

#[test]
fn unknown_fields_are_refused() {
    let text = fixture("k8s-node1", "user-data")
        .replace("  cni: flannel\n", "  cni: flannel\n  colour: blue\n");
    let err = parse_user_data(&text).unwrap_err().to_string();
    assert!(err.contains("unknown field `colour`"), "{err}");
    assert!(parse_user_data("#cloud-config\npackages: [vim]\n")
        .unwrap_err()
        .to_string()
        .contains("no top-level `nodebake`"));
}

#[test]
fn render_round_trips() {
    let (_, s) = seed("k8s-master1");
    let text = render_user_data(&s);
    assert!(text.starts_with("#cloud-config\n"));
    assert_eq!(parse_user_data(&text).unwrap(), s);
}

#[test]
fn local_file_holds_both_documents() {
    let text = format!(
        "{}{}",
        fixture("k8s-node2", "meta-data"),
        fixture("k8s-node2", "user-data").replace("#cloud-config\n", "")
    );
    let c = NodeConfig::from_local_file(&text).unwrap();
    assert_eq!(c.hostname, "k8s-node2");
}

#[test]
fn secret_parse_errors_do_not_echo_the_value() {
    let text = fixture("k8s-node1", "user-data").replace(
        "bootstrap_token: abcdef.0123456789abcdef",
        "bootstrap_token: 987654321",
    );
    let err = parse_user_data(&text).unwrap_err().to_string();
    assert!(err.contains("bootstrap_token"), "{err}");
    assert!(!err.contains("987654321"), "{err}");
}

#[test]
fn load_balancer_defaults_follow_the_seed() {
    for (host, prio) in [
        ("k8s-master1", 100),
        ("k8s-master2", 90),
        ("k8s-master3", 80),
    ] {
        let (m, s) = seed(host);
        let c = NodeConfig::from_parts(&m, &s).unwrap();
        let lb = &c.load_balancer;
        assert_eq!(lb.priority, prio);
        assert_eq!(lb.mode, LoadBalancerMode::Host);
        assert_eq!(lb.advert_interval_ms, 1000);
        assert_eq!(lb.vrrp_version(), 2);
        assert_eq!(lb.preempt, Preempt::Never);
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }
    let id = |h| {
        NodeConfig::from_parts(&seed(h).0, &seed(h).1)
            .unwrap()
            .load_balancer
            .virtual_router_id
    };
    assert_eq!(id("k8s-master1"), id("k8s-master3"));
    assert_eq!(id("k8s-master1"), id("k8s-node2"));
}

#[test]
fn load_balancer_errors_name_their_fields() {
    let (m, s) = seed("k8s-master2");
    let mut t = s.clone();
    t.load_balancer.virtual_router_id = Some(256);
    assert_field(
        &m,
        &t,
        "nodebake.load_balancer.virtual_router_id",
        "outside 1-255",
    );
    t.load_balancer.virtual_router_id = Some(0);
    assert_field(
        &m,
        &t,
        "nodebake.load_balancer.virtual_router_id",
        "outside 1-255",
    );

    let mut t = s.clone();
    t.control_plane_endpoint.vip = "192.168.148.154".into();
    assert_field(
        &m,
        &t,
        "nodebake.control_plane_endpoint.vip",
        "outside the node subnet",
    );
    t.control_plane_endpoint.vip = "192.168.147.139".into();
    assert_field(
        &m,
        &t,
        "nodebake.control_plane_endpoint.vip",
        "also the IP of `k8s-master2`",
    );

    let mut t = s.clone();
    t.masters[2].ip = t.masters[0].ip.clone();
    assert_field(&m, &t, "nodebake.masters", "duplicate IP 192.168.147.137");

    let mut t = s.clone();
    t.control_plane_endpoint.port = 6443;
    assert_field(
        &m,
        &t,
        "nodebake.control_plane_endpoint.port",
        "clashes with the apiserver",
    );
    t.control_plane_endpoint.port = 2379;
    assert_field(
        &m,
        &t,
        "nodebake.control_plane_endpoint.port",
        "etcd client",
    );
    let mut t = s.clone();
    t.load_balancer.stats_port = Some(16443);
    assert_field(
        &m,
        &t,
        "nodebake.load_balancer.stats_port",
        "load balancer frontend",
    );

    let mut t = s.clone();
    t.load_balancer.advert_interval_ms = 200;
    t.load_balancer.unicast = false;
    assert_field(
        &m,
        &t,
        "nodebake.load_balancer.advert_interval_ms",
        "VRRPv3",
    );
    t.load_balancer.advert_interval_ms = 5;
    assert_field(
        &m,
        &t,
        "nodebake.load_balancer.advert_interval_ms",
        "not a VRRP advert interval",
    );

    let mut t = s.clone();
    t.load_balancer.mode = "pods".into();
    t.load_balancer.health_path = "/".into();
    t.load_balancer.check_fall = 0;
    t.load_balancer.connect_timeout_ms = 50;
    assert_field(&m, &t, "nodebake.load_balancer.mode", "unknown mode");
    assert_field(&m, &t, "nodebake.load_balancer.health_path", "health path");
    assert_field(&m, &t, "nodebake.load_balancer.check_fall", "outside 1-10");
    assert_field(
        &m,
        &t,
        "nodebake.load_balancer.connect_timeout_ms",
        "outside 100-60000",
    );
}

#[test]
fn even_master_count_is_a_warning() {
    let (m, mut s) = seed("k8s-master1");
    s.masters.pop();
    let c = NodeConfig::from_parts(&m, &s).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert_eq!(c.warnings[0].field, "nodebake.masters");
    assert!(c.warnings[0].reason.contains("odd"));
}

#[test]
fn load_balancer_settings_parse_and_round_trip() {
    let text = fixture("k8s-master1", "user-data").replace(
        "  secrets:\n",
        "  load_balancer:\n    mode: static-pods\n    advert_interval_ms: 200\n    preempt_delay_s: 30\n    stats_port: 8404\n  secrets:\n",
    );
    let s = parse_user_data(&text).unwrap();
    let c = NodeConfig::from_parts(&seed("k8s-master1").0, &s).unwrap();
    assert_eq!(c.load_balancer.mode, LoadBalancerMode::StaticPods);
    assert_eq!(c.load_balancer.vrrp_version(), 3);
    assert_eq!(c.load_balancer.preempt, Preempt::AfterSeconds(30));
    assert_eq!(parse_user_data(&render_user_data(&s)).unwrap(), s);
    assert!(!render_user_data(&seed("k8s-master1").1).contains("load_balancer"));
}

#[test]
fn kubeadm_settings_are_checked_and_named() {
    let (m, mut s) = seed("k8s-master1");
    s.kubeadm.skip_phases = vec!["addon/coredns".into(), "control-plane-join/etcd".into()];
    s.kubeadm.control_plane_timeout = Some("20m".into());
    let c = NodeConfig::from_parts(&m, &s).unwrap();
    assert_eq!(c.kubeadm.skip_phases.len(), 2);
    for (phase, why) in [
        ("addons/coredns", "not a kubeadm init or join phase"),
        ("addon/CoreDNS", "not a kubeadm init or join phase"),
        ("addon/coredns/x", "not a kubeadm init or join phase"),
        ("", "not a kubeadm init or join phase"),
    ] {
        let mut b = s.clone();
        b.kubeadm.skip_phases = vec![phase.into()];
        assert_field(&m, &b, "nodebake.kubeadm.skip_phases[0]", why);
    }
    let mut b = s.clone();
    b.kubeadm.skip_phases = vec!["preflight".into(), "preflight".into()];
    assert_field(&m, &b, "nodebake.kubeadm.skip_phases[1]", "twice");
    for bad in [0, 21] {
        let mut b = s.clone();
        b.kubeadm.attempts = Some(bad);
        assert_field(&m, &b, "nodebake.kubeadm.attempts", "1 to 20");
    }
    let mut b = s.clone();
    b.kubeadm.attempts = Some(6);
    assert_eq!(
        NodeConfig::from_parts(&m, &b).unwrap().kubeadm.attempts,
        Some(6)
    );
    let mut b = s.clone();
    b.kubeadm.image_pull_policy = Some("never".into());
    assert_field(&m, &b, "nodebake.kubeadm.image_pull_policy", "pull policy");
    let mut b = s.clone();
    b.kubeadm.control_plane_timeout = Some("20 minutes".into());
    assert_field(&m, &b, "nodebake.kubeadm.control_plane_timeout", "duration");
    for (flag, value, field, why) in [
        (
            "--heartbeat-interval",
            "500",
            "nodebake.kubeadm.extra_args.etcd",
            "flag name",
        ),
        (
            "Heartbeat",
            "500",
            "nodebake.kubeadm.extra_args.etcd",
            "flag name",
        ),
        (
            "heartbeat_interval",
            "500",
            "nodebake.kubeadm.extra_args.etcd",
            "flag name",
        ),
        ("", "500", "nodebake.kubeadm.extra_args.etcd", "flag name"),
        (
            "heartbeat-interval",
            "500\n- bad",
            "nodebake.kubeadm.extra_args.etcd.heartbeat-interval",
            "control character",
        ),
    ] {
        let mut b = s.clone();
        b.kubeadm.extra_args.etcd.insert(flag.into(), value.into());
        assert_field(&m, &b, field, why);
    }
    for gate in ["etcdLearnerMode", "Etcd-Learner", "", "Etcd\nX"] {
        let mut b = s.clone();
        b.kubeadm.feature_gates.insert(gate.into(), true);
        assert_field(
            &m,
            &b,
            "nodebake.kubeadm.feature_gates",
            "not a feature gate name",
        );
    }
    let mut b = s.clone();
    b.kubeadm
        .feature_gates
        .insert("EtcdLearnerMode".into(), false);
    b.kubeadm
        .extra_args
        .scheduler
        .insert("v".into(), "2".into());
    b.kubeadm
        .extra_args
        .api_server
        .insert("feature-gates".into(), "A=true,B=false".into());
    let c = NodeConfig::from_parts(&m, &b).unwrap();
    assert_eq!(
        c.kubeadm.extra_args.api_server["feature-gates"],
        "A=true,B=false"
    );
    assert_eq!(parse_user_data(&render_user_data(&b)).unwrap(), b);
    // Not written when left at the defaults.
    let mut d = s.clone();
    d.kubeadm = KubeadmSettings::default();
    assert!(!serde_yaml::to_string(&d).unwrap().contains("kubeadm"));
}

#[test]
fn kubeadm_patches_are_checked_and_named() {
    let (m, mut s) = seed("k8s-master1");
    s.kubernetes_version = "1.28.7".into();
    let patch = |target: &str, t: &str, body: &str| KubeadmPatch {
        target: target.into(),
        patch_type: t.into(),
        patch: body.into(),
    };
    let probe =
        "spec:\n  containers:\n  - name: etcd\n    livenessProbe:\n      failureThreshold: 30\n";
    s.kubeadm.patches = vec![
        patch("etcd", "strategic", probe),
        patch(
            "kube-apiserver",
            "json",
            "[{op: replace, path: /spec/priority, value: 1}]",
        ),
        patch("kubeletconfiguration", "merge", "{maxPods: 50}"),
    ];
    let c = NodeConfig::from_parts(&m, &s).unwrap();
    assert_eq!(c.kubeadm.patches.len(), 3);
    // Through the user-data text and back, `type` defaulting to strategic.
    assert_eq!(parse_user_data(&render_user_data(&s)).unwrap(), s);
    let text = render_user_data(&s).replace("      type: strategic\n", "");
    assert_ne!(text, render_user_data(&s));
    assert_eq!(parse_user_data(&text).unwrap(), s);
    for (p, field, why) in [
        (
            patch("kube-proxy", "strategic", probe),
            "target",
            "not a kubeadm patch target",
        ),
        (
            patch("Etcd", "strategic", probe),
            "target",
            "not a kubeadm patch target",
        ),
        (patch("etcd", "apply", probe), "type", "not a patch type"),
        (
            patch("etcd", "strategic", "spec: [unclosed"),
            "patch",
            "not a YAML document",
        ),
        (
            patch("etcd", "strategic", "- op: add"),
            "patch",
            "non-empty mapping",
        ),
        (patch("etcd", "strategic", ""), "patch", "non-empty mapping"),
        (patch("etcd", "json", probe), "patch", "list of operations"),
        (
            patch("etcd", "merge", "spec: {}\u{0}"),
            "patch",
            "control character",
        ),
    ] {
        let mut b = s.clone();
        b.kubeadm.patches = vec![patch("etcd", "strategic", probe), p];
        assert_field(&m, &b, &format!("nodebake.kubeadm.patches[1].{field}"), why);
    }
    // The kubelet configuration is a target from Kubernetes 1.25.
    let mut b = s.clone();
    b.kubernetes_version = "1.24.9".into();
    assert_field(&m, &b, "nodebake.kubeadm.patches[2].target", "1.25");
    b.kubernetes_version = "1.21.3".into();
    assert_field(&m, &b, "nodebake.kubeadm.patches", "from Kubernetes 1.22");
    let mut b = s.clone();
    b.kubeadm.patches = vec![patch("etcd", "strategic", probe); 101];
    assert_field(&m, &b, "nodebake.kubeadm.patches", "at most 100");
}

#[test]
fn users_are_checked_and_named() {
    let (m, mut s) = seed("k8s-master1");
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGz0b3VjaGVkLWJ5LW5vZGViYWtlLXRlc3Qta2V5 ops@example";
    let user = |name: &str, keys: &[&str], sudo: bool| UserSettings {
        name: name.into(),
        ssh_authorized_keys: keys.iter().map(|k| k.to_string()).collect(),
        sudo,
    };
    s.users = vec![user("ops", &[key], true), user("root", &[key], false)];
    let c = NodeConfig::from_parts(&m, &s).unwrap();
    assert_eq!(c.users.len(), 2);
    assert_eq!(parse_user_data(&render_user_data(&s)).unwrap(), s);
    for (u, field, why) in [
        (user("Ops", &[key], false), "name", "not an account name"),
        (user("9ops", &[key], false), "name", "not an account name"),
        (user("a/b", &[key], false), "name", "not an account name"),
        (
            user(&"a".repeat(33), &[key], false),
            "name",
            "not an account name",
        ),
        (user("ops", &[key], false), "name", "listed twice"),
        (user("dev", &[], false), "ssh_authorized_keys", "keys only"),
        (
            user(
                "dev",
                &["command=\"/bin/sh\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA"],
                false,
            ),
            "ssh_authorized_keys[0]",
            "key type",
        ),
        (
            user("dev", &["ssh-ed25519 not*base64!!!!!!!!!!!"], false),
            "ssh_authorized_keys[0]",
            "not base64",
        ),
        (
            user("dev", &["ssh-dss AAAAB3NzaC1kc3MAAACBAP"], false),
            "ssh_authorized_keys[0]",
            "key type",
        ),
        (
            user(
                "dev",
                &[&format!("{key}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI")],
                false,
            ),
            "ssh_authorized_keys[0]",
            "control character",
        ),
    ] {
        let mut b = s.clone();
        b.users.push(u);
        assert_field(&m, &b, &format!("nodebake.users[2].{field}"), why);
    }
}
