use std::path::{Path, PathBuf};

use super::*;

fn fixture_dir(host: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/metadata/seed-ha")
        .join(host)
}

/// The seed node `host` with its Kubernetes version set to `version`.
fn seed(host: &str, version: &str) -> NodeConfig {
    let d = fixture_dir(host);
    let meta = std::fs::read_to_string(d.join("meta-data")).unwrap();
    let user = std::fs::read_to_string(d.join("user-data"))
        .unwrap()
        .replace(
            "kubernetes_version: 1.20.0",
            &format!("kubernetes_version: {version}"),
        );
    NodeConfig::from_nocloud(&meta, &user).unwrap()
}

/// Compares with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&p, actual).unwrap();
    }
    let want = std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", p.display()));
    assert_eq!(actual, want, "{name} differs from the golden file");
}

fn render(node: &NodeConfig) -> String {
    render_kubeadm_config(node, &RenderOptions::for_node(node)).unwrap()
}

#[test]
fn golden_configs_per_api_version() {
    for (version, tag) in [
        ("1.20.0", "v1beta2"),
        ("1.28.3", "v1beta3"),
        ("1.31.1", "v1beta4"),
    ] {
        for (host, what) in [
            ("k8s-master1", "init"),
            ("k8s-master2", "control-plane-join"),
            ("k8s-node1", "worker-join"),
        ] {
            let text = render(&seed(host, version));
            assert!(text.contains(&format!("apiVersion: kubeadm.k8s.io/{tag}")));
            golden(&format!("{tag}-{what}.yaml"), &text);
        }
    }
}

#[test]
fn api_version_boundaries() {
    let v = |minor| KubeVersion {
        major: 1,
        minor,
        patch: 0,
    };
    assert_eq!(KubeadmApi::for_version(v(15)).unwrap(), KubeadmApi::V1beta2);
    assert_eq!(KubeadmApi::for_version(v(21)).unwrap(), KubeadmApi::V1beta2);
    assert_eq!(KubeadmApi::for_version(v(22)).unwrap(), KubeadmApi::V1beta3);
    assert_eq!(KubeadmApi::for_version(v(30)).unwrap(), KubeadmApi::V1beta3);
    assert_eq!(KubeadmApi::for_version(v(31)).unwrap(), KubeadmApi::V1beta4);
    assert_eq!(KubeadmApi::for_version(v(33)).unwrap(), KubeadmApi::V1beta4);
    let e = KubeadmApi::for_version(v(14)).unwrap_err().to_string();
    assert!(
        e.contains("kubernetes_version") && e.contains("1.14.0"),
        "{e}"
    );
    let two = KubeVersion {
        major: 2,
        minor: 0,
        patch: 0,
    };
    assert!(KubeadmApi::for_version(two).is_err());
    let e = render_kubeadm_config(
        &seed("k8s-master1", "1.14.2"),
        &RenderOptions::for_node(&seed("k8s-master1", "1.20.0")),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not supported"), "{e}");
}

#[test]
fn v1beta4_uses_name_value_lists_and_v1beta3_maps() {
    let b4 = render(&seed("k8s-node1", "1.31.0"));
    assert!(
        b4.contains("kubeletExtraArgs:\n  - name: node-ip\n    value: \"192.168.147.141\""),
        "{b4}"
    );
    let b3 = render(&seed("k8s-node1", "1.28.0"));
    assert!(
        b3.contains("kubeletExtraArgs:\n    node-ip: \"192.168.147.141\""),
        "{b3}"
    );
    assert!(b3.contains("criSocket: unix:///run/containerd/containerd.sock"));
    let b2 = render(&seed("k8s-node1", "1.20.0"));
    assert!(b2.contains("criSocket: /run/containerd/containerd.sock"));
}

#[test]
fn upload_certs_path_carries_the_certificate_key_only_without_ca() {
    let m1 = seed("k8s-master1", "1.28.0");
    assert!(!uses_shared_ca(&m1));
    let init = render(&m1);
    assert!(init.contains("certificateKey: \"0b1c2d3e"), "{init}");
    let join = render(&seed("k8s-master2", "1.28.0"));
    assert!(join.contains("controlPlane:") && join.contains("certificateKey: \"0b1c2d3e"));
    let worker = render(&seed("k8s-node1", "1.28.0"));
    assert!(!worker.contains("certificateKey") && !worker.contains("controlPlane"));
}

#[test]
fn worker_cannot_render_master_paths() {
    let w = seed("k8s-node1", "1.28.0");
    let o = RenderOptions {
        path: JoinPath::Init,
        token_ttl: DEFAULT_TOKEN_TTL.into(),
        patches_dir: PATCHES_DIR.into(),
    };
    assert!(render_kubeadm_config(&w, &o).is_err());
}

#[test]
fn token_ttl_is_checked() {
    for ok in ["24h", "24h0m0s", "0s", "1h30m", "90m"] {
        check_token_ttl(ok).unwrap();
    }
    for bad in ["", "24", "h", "1d", "-1h", "24h "] {
        assert!(check_token_ttl(bad).is_err(), "{bad:?}");
    }
    let t = render_token_config(&seed("k8s-master2", "1.28.0"), "0s").unwrap();
    assert!(
        t.contains("kind: InitConfiguration") && t.contains("ttl: 0s"),
        "{t}"
    );
    assert!(!t.contains("ClusterConfiguration"));
}

/// A tiny deterministic generator (xorshift) for property-style tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn every_master_name_and_ip_lands_in_cert_sans() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..200 {
        let n = 1 + (rng.next() % 7) as usize;
        let mut ips: Vec<u32> = Vec::new();
        while ips.len() < n {
            let host = 1 + (rng.next() % 65000) as u32;
            if !ips.contains(&host) && host != 65001 {
                ips.push(host);
            }
        }
        let ip = |h: u32| format!("10.20.{}.{}", h >> 8, h & 0xff);
        let masters: Vec<String> = ips
            .iter()
            .enumerate()
            .map(|(i, h)| format!("    - {{ name: cp-{case}-{i}, ip: {} }}\n", ip(*h)))
            .collect();
        let me = (rng.next() % n as u64) as usize;
        let user = format!(
            "nodebake:\n  schema_version: 1\n  role: master\n  initialiser: cp-{case}-0\n  \
             node_ip: {}/16\n  interface: eth0\n  kubernetes_version: 1.{}.0\n  \
             control_plane_endpoint: {{ dns_name: api-{case}.example, vip: 10.20.253.233, port: 16443 }}\n  \
             masters:\n{}  pod_cidr: 10.244.0.0/16\n  service_cidr: 10.96.0.0/12\n  \
             secrets:\n    bootstrap_token: abcdef.0123456789abcdef\n    \
             ca_cert_hash: sha256:{}\n    certificate_key: {}\n    vrrp_password: pw\n",
            ip(ips[me]),
            15 + rng.next() % 20,
            masters.concat(),
            "ab".repeat(32),
            "cd".repeat(32),
        );
        let meta = format!("instance-id: i-{case}\nlocal-hostname: cp-{case}-{me}\n");
        let node = NodeConfig::from_nocloud(&meta, &user).unwrap();
        let text = render_kubeadm_config(
            &node,
            &RenderOptions {
                path: JoinPath::Init,
                token_ttl: DEFAULT_TOKEN_TTL.into(),
                patches_dir: PATCHES_DIR.into(),
            },
        )
        .unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde_yaml::Value::deserialize(d).unwrap())
            .collect();
        let cluster = docs
            .iter()
            .find(|d| d["kind"] == "ClusterConfiguration")
            .unwrap();
        let sans: Vec<&str> = cluster["apiServer"]["certSANs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for m in &node.masters {
            assert!(sans.contains(&m.name.as_str()), "case {case}: {}", m.name);
            assert!(
                sans.contains(&m.ip.to_string().as_str()),
                "case {case}: {}",
                m.ip
            );
        }
        for must in ["10.20.253.233", "127.0.0.1"] {
            assert!(sans.contains(&must), "case {case}: {must}");
        }
        assert!(sans.contains(&format!("api-{case}.example").as_str()));
        let mut dedup = sans.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), sans.len(), "case {case}: duplicate SANs");
    }
}

use serde::Deserialize as _;

#[test]
fn component_extra_args_land_in_the_cluster_configuration_per_api() {
    let with = |host: &str, version: &str| {
        let mut n = seed(host, version);
        let x = &mut n.kubeadm.extra_args;
        x.etcd.insert("heartbeat-interval".into(), "500".into());
        x.etcd.insert("election-timeout".into(), "5000".into());
        x.api_server.insert("audit-log-maxage".into(), "7".into());
        x.controller_manager
            .insert("node-monitor-grace-period".into(), "60s".into());
        x.scheduler.insert("v".into(), "2".into());
        n
    };
    let b3 = render(&with("k8s-master1", "1.28.3"));
    for want in [
        "etcd:\n  local:\n    extraArgs:\n      election-timeout: \"5000\"\n      heartbeat-interval: \"500\"\n",
        "  extraArgs:\n    audit-log-maxage: \"7\"\n",
        "controllerManager:\n  extraArgs:\n    node-monitor-grace-period: 60s\n",
        "scheduler:\n  extraArgs:\n    v: \"2\"\n",
    ] {
        assert!(b3.contains(want), "want {want:?} in\n{b3}");
    }
    let b4 = render(&with("k8s-master1", "1.31.1"));
    assert!(
        b4.contains(
            "etcd:\n  local:\n    extraArgs:\n    - name: election-timeout\n      value: \"5000\"\n"
        ),
        "{b4}"
    );
    let b2 = render(&with("k8s-master1", "1.20.0"));
    assert!(b2.contains("    heartbeat-interval: \"500\"\n"), "{b2}");
    // Only the initialiser's ClusterConfiguration carries them (joining
    // masters take the cluster's from kubeadm-config).
    let join = render(&with("k8s-master2", "1.28.3"));
    assert!(!join.contains("extraArgs"), "{join}");
    // None set: no empty mappings.
    let plain = render(&seed("k8s-master1", "1.28.3"));
    assert!(
        !plain.contains("extraArgs") && !plain.contains("etcd:"),
        "{plain}"
    );
}

#[test]
fn etcd_learner_mode_is_on_for_1_27_and_1_28_unless_the_inventory_says() {
    let init = render(&seed("k8s-master1", "1.28.3"));
    assert!(
        init.contains("featureGates:\n  EtcdLearnerMode: true\n"),
        "{init}"
    );
    assert!(render(&seed("k8s-master1", "1.27.11")).contains("EtcdLearnerMode: true"));
    // kubeadm's own default from 1.29; unknown to 1.26 and earlier.
    for v in ["1.26.5", "1.29.0", "1.31.1", "1.20.0"] {
        let text = render(&seed("k8s-master1", v));
        assert!(!text.contains("featureGates"), "{v}: {text}");
    }
    let mut n = seed("k8s-master1", "1.28.3");
    n.kubeadm
        .feature_gates
        .insert("EtcdLearnerMode".into(), false);
    n.kubeadm
        .feature_gates
        .insert("PublicKeysECDSA".into(), true);
    let text = render(&n);
    assert!(
        text.contains("featureGates:\n  EtcdLearnerMode: false\n  PublicKeysECDSA: true\n"),
        "{text}"
    );
    // Joining masters take the gates from the cluster's kubeadm-config.
    assert!(!render(&seed("k8s-master2", "1.28.3")).contains("featureGates"));
}

#[test]
fn skip_phases_go_to_the_configuration_whose_kubeadm_has_them() {
    let with = |host: &str, version: &str| {
        let mut n = seed(host, version);
        n.kubeadm.skip_phases = vec![
            "addon/coredns".into(),
            "preflight".into(),
            "control-plane-join/etcd".into(),
        ];
        n.kubeadm.control_plane_timeout = Some("20m0s".into());
        n.kubeadm.discovery_timeout = Some("15m0s".into());
        n
    };
    let init = render(&with("k8s-master1", "1.28.3"));
    assert!(
        init.contains("skipPhases:\n- addon/coredns\n- preflight\n"),
        "{init}"
    );
    assert!(!init.contains("control-plane-join/etcd"), "{init}");
    assert!(init.contains("timeoutForControlPlane: 20m0s"), "{init}");
    let join = render(&with("k8s-master2", "1.28.3"));
    assert!(
        join.contains("skipPhases:\n- preflight\n- control-plane-join/etcd\n"),
        "{join}"
    );
    assert!(!join.contains("addon/coredns"), "{join}");
    assert!(join.contains("  timeout: 15m0s\n"), "{join}");
    assert!(!init.contains("15m0s"), "{init}");
    let join4 = render(&with("k8s-node1", "1.31.1"));
    assert!(join4.contains("timeouts:\n  discovery: 15m0s\n"), "{join4}");
    let b4 = render(&with("k8s-master1", "1.31.1"));
    assert!(
        b4.contains("timeouts:\n  controlPlaneComponentHealthCheck: 20m0s"),
        "{b4}"
    );
    assert!(!b4.contains("timeoutForControlPlane"), "{b4}");
    let n = with("k8s-master1", "1.20.0");
    let e = render_kubeadm_config(&n, &RenderOptions::for_node(&n))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("kubeadm.skip_phases") && e.contains("1.22"),
        "{e}"
    );
}

#[test]
fn image_pull_policy_and_the_images_a_node_runs() {
    use crate::steps::kubeadm::join::images_this_node_runs;
    let list = "registry.k8s.io/kube-apiserver:v1.28.7\nregistry.k8s.io/kube-controller-manager:v1.28.7\n\
                registry.k8s.io/kube-scheduler:v1.28.7\nregistry.k8s.io/kube-proxy:v1.28.7\n\
                registry.k8s.io/pause:3.9\nregistry.k8s.io/etcd:3.5.10-0\nregistry.k8s.io/coredns/coredns:v1.10.1\n";
    let mut m = seed("k8s-master1", "1.28.3");
    m.kubeadm.image_pull_policy = Some("Never".into());
    assert!(render(&m).contains("imagePullPolicy: Never"));
    assert_eq!(images_this_node_runs(&m, list).len(), 7);
    m.kubeadm.skip_phases = vec!["addon/coredns".into()];
    let got = images_this_node_runs(&m, list);
    assert_eq!(got.len(), 6);
    assert!(!got.iter().any(|i| i.contains("coredns")));
    let mut w = seed("k8s-node1", "1.28.3");
    w.kubeadm.skip_phases = vec!["addon".into()];
    assert_eq!(
        images_this_node_runs(&w, list),
        vec!["registry.k8s.io/pause:3.9"]
    );
    w.kubeadm.skip_phases.clear();
    assert_eq!(
        images_this_node_runs(&w, list),
        vec![
            "registry.k8s.io/kube-proxy:v1.28.7",
            "registry.k8s.io/pause:3.9"
        ]
    );
    let mut old = seed("k8s-master1", "1.20.0");
    old.kubeadm.image_pull_policy = Some("Never".into());
    let e = render_kubeadm_config(&old, &RenderOptions::for_node(&old))
        .unwrap_err()
        .to_string();
    assert!(e.contains("image_pull_policy"), "{e}");
}

#[test]
fn patches_name_their_directory_in_init_and_join_and_keep_their_order() {
    use nodebake_contract::node::KubeadmPatch;
    let p = |target: &str, t: &str| KubeadmPatch {
        target: target.into(),
        patch_type: t.into(),
        patch: "spec: {priority: 1}".into(),
    };
    for (host, kind) in [
        ("k8s-master1", "InitConfiguration"),
        ("k8s-master2", "JoinConfiguration"),
        ("k8s-node1", "JoinConfiguration"),
    ] {
        for version in ["1.28.3", "1.31.1"] {
            let mut n = seed(host, version);
            assert!(!render(&n).contains("patches"), "no patches, no directory");
            n.kubeadm.patches = vec![p("kube-apiserver", "strategic"), p("etcd", "merge")];
            let text = render(&n);
            let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
                .map(|d| serde_yaml::Value::deserialize(d).unwrap())
                .collect();
            let doc = docs.iter().find(|d| d["kind"] == kind).unwrap();
            assert_eq!(doc["patches"]["directory"], PATCHES_DIR, "{host} {version}");
            let mut o = RenderOptions::for_node(&n);
            o.patches_dir = "/tmp/elsewhere".into();
            assert!(render_kubeadm_config(&n, &o)
                .unwrap()
                .contains("directory: /tmp/elsewhere"));
        }
    }
    let mut n = seed("k8s-master1", "1.28.3");
    n.kubeadm.patches = vec![p("kube-apiserver", "strategic"), p("etcd", "merge")];
    let names: Vec<String> = patch_files(&n).into_iter().map(|(f, _)| f).collect();
    assert_eq!(
        names,
        ["kube-apiserver00+strategic.yaml", "etcd01+merge.yaml"]
    );
    assert!(patch_files(&n).iter().all(|(_, c)| c.ends_with('\n')));
    // kubeadm.k8s.io/v1beta2 has no patches: refused, naming the field.
    let mut old = seed("k8s-master1", "1.20.0");
    old.kubeadm.patches = n.kubeadm.patches.clone();
    let e = render_kubeadm_config(&old, &RenderOptions::for_node(&old)).unwrap_err();
    assert!(format!("{e:#}").contains("kubeadm.patches"), "{e:#}");
}
